/*
 * config.h - the validated, immutable configuration.
 *
 * config_load() reads one INI file (inih), checks every key against the
 * key table, and returns a struct config that is never modified
 * afterwards: it may be shared by every worker loop.  Errors are written
 * as "FILE:LINE: message" lines.
 */
#ifndef STARTTLS_PROXY_CONFIG_H
#define STARTTLS_PROXY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#include "netaddr.h"

#define CONFIG_DEFAULT_PATH "/etc/starttls-proxy/starttls-proxy.ini"

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum log_target { LOG_TO_STDERR = 0, LOG_TO_SYSLOG };

enum client_tls { CLIENT_TLS_NONE = 0, CLIENT_TLS_MAY, CLIENT_TLS_ENCRYPT };

enum backend_tls {
    BACKEND_TLS_NONE = 0,
    BACKEND_TLS_MAY,
    BACKEND_TLS_ENCRYPT,
    BACKEND_TLS_VERIFY,
    BACKEND_TLS_DANE,       /* RFC 7672: TLSA when DNSSEC says so, else may */
    BACKEND_TLS_DANE_ONLY,  /* ... and refuse without usable TLSA */
    BACKEND_TLS_FINGERPRINT, /* TLS, the certificate must match a pin */
    BACKEND_TLS_STS         /* RFC 8461: dane, then the domain's MTA-STS
                               policy for hosts without usable TLSA */
};

/* backend_tls_fingerprints: one pin, a SHA-256 digest of the whole
 * certificate (DER) or of its SubjectPublicKeyInfo (DER) */
struct tls_pin {
    bool pubkey;
    unsigned char sha256[32];
};

/* RFC 3030-era smuggling defence: what a bare CR or LF in DATA gets */
enum bare_newline { BARE_NEWLINE_NORMALIZE = 0, BARE_NEWLINE_REJECT };

/* how the backend learns the client's address */
enum client_address {
    CLIENT_ADDRESS_NONE = 0,
    CLIENT_ADDRESS_PROXY_V1,
    CLIENT_ADDRESS_PROXY_V2,
    CLIENT_ADDRESS_XCLIENT
};

/* [service] backend_health: the probe the main thread runs (health.h) */
enum backend_health {
    BACKEND_HEALTH_NONE = 0,
    BACKEND_HEALTH_CONNECT,        /* a TCP connect, then close */
    BACKEND_HEALTH_SMTP            /* read the greeting, send QUIT */
};

enum client_cert { CLIENT_CERT_NONE = 0, CLIENT_CERT_ASK, CLIENT_CERT_REQUIRE };

/* backend_auth: how the proxy logs in to the backend (issue 14 2) */
enum backend_auth { BACKEND_AUTH_NONE = 0, BACKEND_AUTH_PLAIN,
                    BACKEND_AUTH_LOGIN };

/* transparent interception: where the backend is the connection's
 * original destination, and how it is learnt */
enum transparent {
    TRANSPARENT_OFF = 0,
    TRANSPARENT_REDIRECT,   /* nftables REDIRECT/DNAT: SO_ORIGINAL_DST */
    TRANSPARENT_TPROXY      /* nftables TPROXY, IP_TRANSPARENT listeners:
                               the accepted socket's own address */
};

/* transparent = tproxy: the source address of the backend connection */
enum transparent_source { TRANSPARENT_SOURCE_PROXY = 0,
                          TRANSPARENT_SOURCE_CLIENT };

/*
 * TLS settings of one leg.  Strings are OpenSSL's syntax and are checked
 * when the contexts are built (tls.c), so "-t" reports a bad list.
 */
struct tls_knobs {
    int min_protocol;              /* TLS1_VERSION .. TLS1_3_VERSION (the
                                      OpenSSL numbers, 0x301..0x304);
                                      default TLS 1.2 (0x303) */
    char *ciphers;                 /* TLS <= 1.2 cipher list; NULL: default */
    char *ciphersuites;            /* TLS 1.3 suites; NULL: default */
    char *groups;                  /* key exchange groups; NULL: default */
    int security_level;            /* 0..5; -1: OpenSSL's default */
    bool session_tickets;          /* resumption by tickets; default yes */
};

/* one certificate chain with its key (several per service: RSA + ECDSA,
 * or other names chosen by SNI) */
struct cert_pair {
    char *cert;
    char *key;
};

/*
 * [profile NAME]: client-leg overrides for clients from some networks
 * (old printers that need TLS 1.0 or plaintext AUTH...).  A service lists
 * the profiles it uses; the first whose sources match the client applies.
 * A has_* flag says the key was given; otherwise the service's value holds.
 */
struct profile {
    char *name;
    int line;
    struct cidr *sources;          /* at least one */
    size_t nsources;
    bool has_client_tls;
    enum client_tls client_tls;
    bool has_client_plaintext_auth;
    bool client_plaintext_auth;
    bool has_min_protocol;
    int min_protocol;
    char *ciphers;                 /* NULL: the service's */
    char *ciphersuites;            /* NULL: the service's */
    bool has_security_level;
    int security_level;
    int *key_lines;                /* private: config_profile_key_line() */
};

struct listen_addr {
    struct sockaddr_storage addr;  /* numeric address, port set */
    socklen_t addr_len;
    char text[64];                 /* as written: "0.0.0.0:25", "[::1]:25" */
};

struct service {
    char *name;                    /* section name */
    int line;                      /* line of the section header */

    struct listen_addr *listen;    /* at least one */
    size_t nlisten;

    char *backend_host;            /* name or numeric address, no brackets;
                                      with backend_mx the mail domain */
    char *backend_port;            /* decimal port, 1..65535 */
    bool backend_mx;               /* "backend = mx:DOMAIN[:PORT]": the
                                      next hop is the domain's MX */

    enum client_tls client_tls;    /* default: may */
    bool client_implicit_tls;      /* default: no */
    char *cert;                    /* NULL when not set */
    char *key;                     /* NULL when not set */
    bool client_plaintext_auth;    /* default: no */

    enum backend_tls backend_tls;  /* default: may */
    struct tls_pin *backend_pins;  /* backend_tls_fingerprints */
    size_t nbackend_pins;
    enum backend_health backend_health;   /* the probe of health.h */
    unsigned backend_health_interval;     /* seconds between probes */
    bool backend_implicit_tls;     /* default: no */
    char *backend_ca_file;         /* NULL: the system store */
    char *backend_verify_name;     /* defaults to backend_host; NULL for
                                      mx: backends (the MX host name) */

    unsigned idle_timeout;         /* seconds, default 300, 1..86400 */
    unsigned max_line_length;      /* bytes incl. CRLF, default 2048,
                                      512..65536 */

    /* ---- hardening (issue 3) ---- */
    struct cert_pair *certs;       /* cert/key given as equal-length comma
                                      lists; certs[0] is also cert/key */
    size_t ncerts;
    struct tls_knobs client_tls_knobs;  /* keys client_tls_min_protocol,
                                           client_tls_ciphers, ... */
    struct tls_knobs backend_tls_knobs; /* keys backend_tls_min_protocol,
                                           backend_tls_ciphers, ... */
    char *client_ca_file;          /* NULL: none */
    enum client_cert client_cert;  /* default none; ask/require need
                                      client_ca_file */
    enum bare_newline bare_newline;     /* default normalize */
    bool trace_header;             /* default no */
    enum client_address backend_client_address; /* default none */
    bool client_proxy_protocol;    /* default no; needs trusted_proxies */
    struct cidr *trusted_proxies;
    size_t ntrusted_proxies;
    unsigned max_connections;      /* per service, default 1000, 1..1000000 */
    unsigned max_connections_per_ip; /* default 50; 0: no limit */
    unsigned max_errors;           /* default 10, 1..1000 */
    unsigned command_timeout;      /* seconds for one whole command line,
                                      default 300, 1..86400 */
    unsigned tls_handshake_timeout; /* seconds, default 30, 1..3600 */
    unsigned min_data_rate;        /* bytes/s over a message, default 1024;
                                      0: off */
    bool enforce;                  /* default yes; no: strict policies are
                                      only logged as would_refuse=... */
    const struct profile **profiles; /* key profiles = a, b (order kept) */
    size_t nprofiles;
    char **ehlo_pass;              /* EHLO keywords passed besides the
                                      proxy's own list, upper case */
    size_t nehlo_pass;

    /* ---- upstream AUTH (issue 14 2) ---- */
    struct cidr *sources;          /* who may connect at all; NULL: anyone
                                      (required with backend_auth) */
    size_t nsources;
    enum backend_auth backend_auth; /* default none */
    char *backend_auth_file;       /* "user NAME" / "password SECRET" */
    char *backend_auth_user;       /* overrides the file's user line */
    char *auth_user;               /* loaded: the account (NULL: none) */
    char *auth_password;           /* loaded: its secret, wiped on free */

    /* ---- transparent interception (issue 14) ---- */
    enum transparent transparent;  /* default off; not off: no backend
                                      key, backend_host is NULL */
    enum transparent_source transparent_source; /* default proxy */
    struct cidr *transparent_destinations; /* NULL: any but our own */
    size_t ntransparent_destinations;
    unsigned backend_mark;         /* SO_MARK of backend sockets; 0: none */
    int *key_lines;                /* private: config_service_key_line() */
};

struct config {
    char *path;
    char *hostname;                /* default: gethostname() */
    enum log_level log_level;      /* default: info */
    enum log_target log_target;    /* "log": default stderr */
    struct service *services;      /* at least one */
    size_t nservices;
    unsigned workers;              /* event loops (threads); 0: one per CPU */
    unsigned drain_timeout;        /* seconds a stop waits for messages in
                                      flight; default 30, 0..3600 */
    char *user;                    /* drop to this user; NULL: see main.c */
    char *group;                   /* ... and group; NULL: the user's */
    char *chroot_dir;              /* chroot here after loading; NULL */
    char *pid_file;                /* "none": no pid file */
    char *dns_resolver;            /* "system" or "ADDR[@PORT], ..." */
    char *dns_trust_anchor;        /* DS/DNSKEY file; default root.key */
    unsigned dns_timeout;          /* seconds per query, default 10 */
    char *state_dir;               /* the MTA-STS policy cache's home */
    unsigned sts_timeout;          /* seconds per policy fetch, default 10 */
    unsigned sts_policy_port;      /* of the policy host: 443 (tests) */
    bool tlsrpt;                   /* send TLS reports (RFC 8460) */
    char *tlsrpt_dir;              /* their counts and files */
    char *tlsrpt_organization;     /* organization-name */
    char *tlsrpt_contact;          /* contact-info: an address */
    unsigned tlsrpt_interval;      /* seconds per report, default 86400 */
    struct listen_addr *metrics_listen; /* the metrics endpoint; NULL: off */
    size_t nmetrics_listen;
    struct profile *profiles;      /* every [profile NAME] section */
    size_t nprofiles;
};

/*
 * config_load - read and validate path.
 * On success returns 0 and sets *out (free with config_free).  On failure
 * returns -1 and writes one or more "path:line: message\n" lines (line 0
 * when the problem has no line, e.g. an unreadable file or a missing
 * required key, which names the section's header line instead) into
 * err[0..err_len), always NUL-terminated.
 */
int config_load(const char *path, struct config **out, char *err,
                size_t err_len);

/*
 * config_load_stream - config_load() on an already open stream.
 * path only names the file in error messages (and is copied to
 * cfg->path); f is read to its end and not closed.  Same results as
 * config_load(), which opens the file and calls this.  Also the entry
 * point of the fuzz target (fmemopen).
 */
int config_load_stream(FILE *f, const char *path, struct config **out,
                       char *err, size_t err_len);

/*
 * config_service_key_line, config_profile_key_line - the line of key
 * (e.g. "cert") in the section, or the section header's line when the key
 * was not given: errors found after loading (a certificate that does not
 * load) name the line of the key that caused them.
 */
int config_service_key_line(const struct service *svc, const char *key);
int config_profile_key_line(const struct profile *pr, const char *key);

/* config_service_dns - does svc find its next hop with the in-process
 * resolver (an mx: backend, or backend_tls = dane | dane-only | sts)? */
bool config_service_dns(const struct service *svc);

/* config_service_sts - does svc look up MTA-STS policies
 * (backend_tls = sts)? */
bool config_service_sts(const struct service *svc);

/* config_sts_needed - does any service of cfg? */
bool config_sts_needed(const struct config *cfg);

/* config_service_tlsrpt - are svc's backend-leg results counted for
 * TLS reports (tlsrpt = yes, an mx: backend, backend_tls = dane,
 * dane-only or sts)? */
bool config_service_tlsrpt(const struct config *cfg,
                           const struct service *svc);

/* config_tlsrpt_needed - does any service of cfg? */
bool config_tlsrpt_needed(const struct config *cfg);

/* config_free - release a config from config_load (NULL is fine). */
void config_free(struct config *cfg);

#endif
