/*
 * config.c - read the INI file into a validated struct config.
 *
 * inih splits "key = value" (or "key: value") lines and trims both sides.
 * It is fed through config_read_line(), which reads the file one line at
 * a time, so the handler always knows the line it is looking at (Debian's
 * inih has no line number in the handler).  The reader deals with
 * everything else itself: blank and comment lines are skipped, inline
 * comments (';' or '#' after a blank) are cut, section headers are parsed
 * here, and leading whitespace is removed so that an indented line is
 * never taken for a continuation of the previous value.  inih therefore
 * only ever sees key lines, and its own section tracking is unused.  Its
 * line buffer (ini_max_line, 200 on Debian) caps a key line at 199 bytes
 * before any comment; longer lines are an error, never split.
 *
 * Every key is described once in key_table: the section kind it belongs
 * to ([proxy], a service, or a [profile NAME]), its type and bounds, its
 * default (as text, parsed by the same code as a value from the file) and
 * the field it fills.  Errors are collected, not stopped at: the caller
 * gets every "path:line: message" found.
 *
 * Rules between keys, and between sections (a service's profiles may be
 * defined anywhere in the file), are checked once the whole file is read:
 * only then are the arrays of services and profiles in their final place.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ini.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/tls1.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "smtp.h"

#define CONFIG_MAX_SERVICES 256   /* service sections */
#define CONFIG_MAX_PROFILES 256   /* [profile NAME] sections */
#define CONFIG_MAX_LISTEN 1024    /* listen addresses, all services */
#define CONFIG_LINE_BUF 1024      /* bytes of one line we keep */
#define CONFIG_SECTION_MAX 64     /* length of a service or profile name */
#define CONFIG_QUOTE_MAX 60       /* bytes of file text shown in a message */
#define CONFIG_QUOTE_BUF (CONFIG_QUOTE_MAX * 4 + 8)
#define CONFIG_WHY_BUF 512

/* Where the parser is: before any header, in a section whose header was
 * bad or repeated (its keys are ignored), in [proxy], or (>= 0) in that
 * service or profile (parser.cur_scope tells which). */
#define CUR_NONE (-1)
#define CUR_SKIP (-2)
#define CUR_PROXY (-3)

enum key_id {
    K_HOSTNAME,
    K_LOG_LEVEL,
    K_LOG,
    K_WORKERS,
    K_DRAIN_TIMEOUT,
    K_USER,
    K_GROUP,
    K_CHROOT,
    K_PID_FILE,
    K_DNS_RESOLVER,
    K_DNS_TRUST_ANCHOR,
    K_DNS_TIMEOUT,
    K_STATE_DIR,
    K_STS_TIMEOUT,
    K_STS_POLICY_PORT,
    K_TLSRPT,
    K_TLSRPT_DIR,
    K_TLSRPT_ORGANIZATION,
    K_TLSRPT_CONTACT,
    K_TLSRPT_INTERVAL,
    K_METRICS_LISTEN,
    K_LISTEN,
    K_BACKEND,
    K_CLIENT_TLS,
    K_CLIENT_IMPLICIT_TLS,
    K_CERT,
    K_KEY,
    K_CLIENT_PLAINTEXT_AUTH,
    K_BACKEND_TLS,
    K_BACKEND_IMPLICIT_TLS,
    K_BACKEND_CA_FILE,
    K_BACKEND_VERIFY_NAME,
    K_IDLE_TIMEOUT,
    K_MAX_LINE_LENGTH,
    K_CLIENT_TLS_MIN_PROTOCOL,
    K_CLIENT_TLS_CIPHERS,
    K_CLIENT_TLS_CIPHERSUITES,
    K_CLIENT_TLS_GROUPS,
    K_CLIENT_TLS_SECURITY_LEVEL,
    K_CLIENT_TLS_SESSION_TICKETS,
    K_BACKEND_TLS_MIN_PROTOCOL,
    K_BACKEND_TLS_CIPHERS,
    K_BACKEND_TLS_CIPHERSUITES,
    K_BACKEND_TLS_GROUPS,
    K_BACKEND_TLS_SECURITY_LEVEL,
    K_BACKEND_TLS_SESSION_TICKETS,
    K_CLIENT_CA_FILE,
    K_CLIENT_CERT,
    K_BARE_NEWLINE,
    K_TRACE_HEADER,
    K_BACKEND_CLIENT_ADDRESS,
    K_CLIENT_PROXY_PROTOCOL,
    K_TRUSTED_PROXIES,
    K_MAX_CONNECTIONS,
    K_MAX_CONNECTIONS_PER_IP,
    K_MAX_ERRORS,
    K_COMMAND_TIMEOUT,
    K_TLS_HANDSHAKE_TIMEOUT,
    K_MIN_DATA_RATE,
    K_ENFORCE,
    K_PROFILES,
    K_EHLO_PASS,
    K_BACKEND_TLS_FINGERPRINTS,
    K_SOURCES,
    K_BACKEND_AUTH,
    K_BACKEND_AUTH_FILE,
    K_BACKEND_AUTH_USER,
    K_BACKEND_HEALTH,
    K_BACKEND_HEALTH_INTERVAL,
    K_TRANSPARENT,
    K_TRANSPARENT_SOURCE,
    K_TRANSPARENT_DESTINATIONS,
    K_BACKEND_MARK,
    KP_SOURCES,
    KP_CLIENT_TLS,
    KP_CLIENT_PLAINTEXT_AUTH,
    KP_CLIENT_TLS_MIN_PROTOCOL,
    KP_CLIENT_TLS_CIPHERS,
    KP_CLIENT_TLS_CIPHERSUITES,
    KP_CLIENT_TLS_SECURITY_LEVEL,
    K_COUNT
};

/* The section kind a key belongs to. */
enum key_scope { SCOPE_PROXY, SCOPE_SERVICE, SCOPE_PROFILE };

enum key_type {
    KT_PATH,      /* any text: char * */
    KT_DOMAIN,    /* our own host name, letters digits '.' '-': char * */
    KT_NAME,      /* a host name or a numeric address: char * */
    KT_BOOL,      /* bool */
    KT_ENUM,      /* an enum, stored as int */
    KT_UINT,      /* unsigned within [min, max] */
    KT_INT,       /* int within [min, max], or one of names (-1...) */
    KT_TOKEN,     /* an OpenSSL list: printable ASCII, no blanks: char * */
    KT_ACCOUNT,   /* a user or group name: char * */
    KT_LISTEN,    /* struct listen_addr * at off, size_t count at off2 */
    KT_HOSTPORT,  /* host char * at off, port char * at off2, bool at
                     off3: "mx:DOMAIN[:PORT]" */
    KT_RESOLVERS, /* "system" or "ADDR[@PORT], ...": char * */
    KT_PINS,      /* "sha256:HEX, pubkey-sha256:HEX": struct tls_pin * at
                     off, size_t count at off2 */
    KT_PATHS,     /* comma list into one member (at .member) of the
                     struct cert_pair * at off, size_t count at off2 */
    KT_CIDRS,     /* struct cidr * at off, size_t count at off2 */
    KT_KEYWORDS,  /* EHLO keywords: char ** (one allocation, upper
                     case) at off, size_t count at off2 */
    KT_PROFILES   /* profile names: checked here, resolved by
                     config_resolve_profiles() once the file is read */
};

struct enum_name {
    const char *name;
    int value;
};

struct key_def {
    const char *name;
    enum key_scope scope;
    enum key_type type;
    size_t off;                    /* field in struct config or service */
    size_t off2;                   /* second field (KT_LISTEN, ...) */
    size_t off3;                   /* third (KT_HOSTPORT) */
    size_t member;                 /* KT_PATHS: field of struct cert_pair */
    unsigned min, max;             /* KT_UINT, KT_INT */
    const struct enum_name *names; /* KT_ENUM, KT_INT: NULL-terminated */
    const char *def;               /* default, as text; NULL: unset */
    bool has_flag;                 /* profile keys: set the bool at */
    size_t flag_off;               /* flag_off when the key is given */
};

_Static_assert(sizeof(enum log_level) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum client_tls) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum backend_tls) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum client_cert) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum bare_newline) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum backend_health) == sizeof(int),
               "enum stored as int");
_Static_assert(sizeof(enum client_address) == sizeof(int),
               "enum stored as int");
_Static_assert(sizeof(enum backend_auth) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum transparent) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum transparent_source) == sizeof(int),
               "enum stored as int");

static const struct enum_name log_level_names[] = {
    { "error", LOG_ERROR }, { "warn", LOG_WARN },
    { "info", LOG_INFO },   { "debug", LOG_DEBUG },
    { NULL, 0 }
};

static const struct enum_name log_target_names[] = {
    { "stderr", LOG_TO_STDERR }, { "syslog", LOG_TO_SYSLOG },
    { NULL, 0 }
};

static const struct enum_name client_tls_names[] = {
    { "none", CLIENT_TLS_NONE }, { "may", CLIENT_TLS_MAY },
    { "encrypt", CLIENT_TLS_ENCRYPT },
    { NULL, 0 }
};

static const struct enum_name backend_tls_names[] = {
    { "none", BACKEND_TLS_NONE },       { "may", BACKEND_TLS_MAY },
    { "encrypt", BACKEND_TLS_ENCRYPT }, { "verify", BACKEND_TLS_VERIFY },
    { "dane", BACKEND_TLS_DANE },       { "dane-only", BACKEND_TLS_DANE_ONLY },
    { "fingerprint", BACKEND_TLS_FINGERPRINT }, { "sts", BACKEND_TLS_STS },
    { NULL, 0 }
};

/* RFC 8446 and its predecessors: the protocol floor of a TLS leg */
static const struct enum_name tls_version_names[] = {
    { "TLSv1", TLS1_VERSION },     { "TLSv1.1", TLS1_1_VERSION },
    { "TLSv1.2", TLS1_2_VERSION }, { "TLSv1.3", TLS1_3_VERSION },
    { NULL, 0 }
};

/* event loops: a number, or "auto" (stored as 0): one per CPU */
static const struct enum_name workers_names[] = {
    { "auto", 0 },
    { NULL, 0 }
};

/* OpenSSL security level: a number 0..5, or "default" (the library's) */
static const struct enum_name security_level_names[] = {
    { "default", -1 },
    { NULL, 0 }
};

static const struct enum_name client_cert_names[] = {
    { "none", CLIENT_CERT_NONE }, { "ask", CLIENT_CERT_ASK },
    { "require", CLIENT_CERT_REQUIRE },
    { NULL, 0 }
};

static const struct enum_name bare_newline_names[] = {
    { "normalize", BARE_NEWLINE_NORMALIZE }, { "reject", BARE_NEWLINE_REJECT },
    { NULL, 0 }
};

static const struct enum_name backend_auth_names[] = {
    { "none", BACKEND_AUTH_NONE }, { "plain", BACKEND_AUTH_PLAIN },
    { "login", BACKEND_AUTH_LOGIN },
    { NULL, 0 }
};

static const struct enum_name backend_health_names[] = {
    { "none", BACKEND_HEALTH_NONE }, { "connect", BACKEND_HEALTH_CONNECT },
    { "smtp", BACKEND_HEALTH_SMTP },
    { NULL, 0 }
};

static const struct enum_name client_address_names[] = {
    { "none", CLIENT_ADDRESS_NONE },         { "proxy-v1", CLIENT_ADDRESS_PROXY_V1 },
    { "proxy-v2", CLIENT_ADDRESS_PROXY_V2 }, { "xclient", CLIENT_ADDRESS_XCLIENT },
    { NULL, 0 }
};

static const struct enum_name transparent_names[] = {
    { "off", TRANSPARENT_OFF }, { "redirect", TRANSPARENT_REDIRECT },
    { "tproxy", TRANSPARENT_TPROXY },
    { NULL, 0 }
};

static const struct enum_name transparent_source_names[] = {
    { "proxy", TRANSPARENT_SOURCE_PROXY },
    { "client", TRANSPARENT_SOURCE_CLIENT },
    { NULL, 0 }
};

/* One key_table entry; the last arguments set .def, bounds, names... */
#define PROXY_KEY(id, n, t, field, ...)                                    \
    [id] = { .name = n, .scope = SCOPE_PROXY, .type = t,                   \
             .off = offsetof(struct config, field), __VA_ARGS__ }
#define SERVICE_KEY(id, n, t, field, ...)                                  \
    [id] = { .name = n, .scope = SCOPE_SERVICE, .type = t,                 \
             .off = offsetof(struct service, field), __VA_ARGS__ }
#define PROFILE_KEY(id, n, t, field, ...)                                  \
    [id] = { .name = n, .scope = SCOPE_PROFILE, .type = t,                 \
             .off = offsetof(struct profile, field), __VA_ARGS__ }
/* a profile key whose presence is recorded in the bool field f */
#define HAS(f) .has_flag = true, .flag_off = offsetof(struct profile, f)
/* the TLS knobs of one leg (client_tls_knobs or backend_tls_knobs) */
#define TLS_KEYS(pre, leg, knobs)                                          \
    SERVICE_KEY(pre##_MIN_PROTOCOL, leg "_tls_min_protocol", KT_ENUM,      \
                knobs.min_protocol, .names = tls_version_names,            \
                .def = "TLSv1.2"),                                         \
    SERVICE_KEY(pre##_CIPHERS, leg "_tls_ciphers", KT_TOKEN,               \
                knobs.ciphers, .def = NULL),                               \
    SERVICE_KEY(pre##_CIPHERSUITES, leg "_tls_ciphersuites", KT_TOKEN,     \
                knobs.ciphersuites, .def = NULL),                          \
    SERVICE_KEY(pre##_GROUPS, leg "_tls_groups", KT_TOKEN, knobs.groups,   \
                .def = NULL),                                              \
    SERVICE_KEY(pre##_SECURITY_LEVEL, leg "_tls_security_level", KT_INT,   \
                knobs.security_level, .min = 0, .max = 5,                  \
                .names = security_level_names, .def = "default"),          \
    SERVICE_KEY(pre##_SESSION_TICKETS, leg "_tls_session_tickets",         \
                KT_BOOL, knobs.session_tickets, .def = "yes")

/* The one description of every key. */
static const struct key_def key_table[K_COUNT] = {
    PROXY_KEY(K_HOSTNAME, "hostname", KT_DOMAIN, hostname,
              .def = NULL),  /* gethostname(), in config_check() */
    PROXY_KEY(K_LOG_LEVEL, "log_level", KT_ENUM, log_level,
              .names = log_level_names, .def = "info"),
    PROXY_KEY(K_LOG, "log", KT_ENUM, log_target, .names = log_target_names,
              .def = "stderr"),
    PROXY_KEY(K_WORKERS, "workers", KT_INT, workers,
              .min = 0, .max = 256, .names = workers_names, .def = "auto"),
    PROXY_KEY(K_DRAIN_TIMEOUT, "drain_timeout", KT_UINT, drain_timeout,
              .min = 0, .max = 3600, .def = "30"),
    PROXY_KEY(K_USER, "user", KT_ACCOUNT, user, .def = NULL),
    PROXY_KEY(K_GROUP, "group", KT_ACCOUNT, group, .def = NULL),
    PROXY_KEY(K_CHROOT, "chroot", KT_PATH, chroot_dir, .def = NULL),
    PROXY_KEY(K_PID_FILE, "pid_file", KT_PATH, pid_file,
              .def = "/run/starttls-proxy/starttls-proxy.pid"),
    PROXY_KEY(K_DNS_RESOLVER, "dns_resolver", KT_RESOLVERS, dns_resolver,
              .def = "system"),
    PROXY_KEY(K_DNS_TRUST_ANCHOR, "dns_trust_anchor", KT_PATH,
              dns_trust_anchor, .def = "/usr/share/dns/root.key"),
    PROXY_KEY(K_DNS_TIMEOUT, "dns_timeout", KT_UINT, dns_timeout,
              .min = 1, .max = 300, .def = "10"),
    PROXY_KEY(K_STATE_DIR, "state_dir", KT_PATH, state_dir,
              .def = "/var/lib/starttls-proxy"),
    PROXY_KEY(K_STS_TIMEOUT, "sts_timeout", KT_UINT, sts_timeout,
              .min = 1, .max = 300, .def = "10"),
    PROXY_KEY(K_STS_POLICY_PORT, "sts_policy_port", KT_UINT, sts_policy_port,
              .min = 1, .max = 65535, .def = "443"),
    PROXY_KEY(K_TLSRPT, "tlsrpt", KT_BOOL, tlsrpt, .def = "no"),
    PROXY_KEY(K_TLSRPT_DIR, "tlsrpt_dir", KT_PATH, tlsrpt_dir,
              .def = "/var/lib/starttls-proxy/tlsrpt"),
    PROXY_KEY(K_TLSRPT_ORGANIZATION, "tlsrpt_organization", KT_PATH,
              tlsrpt_organization, .def = NULL),
    PROXY_KEY(K_TLSRPT_CONTACT, "tlsrpt_contact", KT_PATH, tlsrpt_contact,
              .def = NULL),
    PROXY_KEY(K_TLSRPT_INTERVAL, "tlsrpt_interval", KT_UINT, tlsrpt_interval,
              .min = 10, .max = 604800, .def = "86400"),
    PROXY_KEY(K_METRICS_LISTEN, "metrics_listen", KT_LISTEN, metrics_listen,
              .off2 = offsetof(struct config, nmetrics_listen), .def = NULL),
    SERVICE_KEY(K_LISTEN, "listen", KT_LISTEN, listen,
                .off2 = offsetof(struct service, nlisten)),
    SERVICE_KEY(K_BACKEND, "backend", KT_HOSTPORT, backend_host,
                .off2 = offsetof(struct service, backend_port),
                .off3 = offsetof(struct service, backend_mx)),
    SERVICE_KEY(K_CLIENT_TLS, "client_tls", KT_ENUM, client_tls,
                .names = client_tls_names, .def = "may"),
    SERVICE_KEY(K_CLIENT_IMPLICIT_TLS, "client_implicit_tls", KT_BOOL,
                client_implicit_tls, .def = "no"),
    /* cert/key of the service are certs[0], in config_check_service() */
    SERVICE_KEY(K_CERT, "cert", KT_PATHS, certs,
                .off2 = offsetof(struct service, ncerts),
                .member = offsetof(struct cert_pair, cert), .def = NULL),
    SERVICE_KEY(K_KEY, "key", KT_PATHS, certs,
                .off2 = offsetof(struct service, ncerts),
                .member = offsetof(struct cert_pair, key), .def = NULL),
    SERVICE_KEY(K_CLIENT_PLAINTEXT_AUTH, "client_plaintext_auth", KT_BOOL,
                client_plaintext_auth, .def = "no"),
    SERVICE_KEY(K_BACKEND_TLS, "backend_tls", KT_ENUM, backend_tls,
                .names = backend_tls_names, .def = "may"),
    SERVICE_KEY(K_BACKEND_IMPLICIT_TLS, "backend_implicit_tls", KT_BOOL,
                backend_implicit_tls, .def = "no"),
    SERVICE_KEY(K_BACKEND_CA_FILE, "backend_ca_file", KT_PATH,
                backend_ca_file, .def = NULL),  /* the system store */
    SERVICE_KEY(K_BACKEND_VERIFY_NAME, "backend_verify_name", KT_NAME,
                backend_verify_name,
                .def = NULL),  /* the backend host, in config_check() */
    SERVICE_KEY(K_IDLE_TIMEOUT, "idle_timeout", KT_UINT, idle_timeout,
                .min = 1, .max = 86400, .def = "300"),
    SERVICE_KEY(K_MAX_LINE_LENGTH, "max_line_length", KT_UINT,
                max_line_length, .min = 512, .max = 65536, .def = "2048"),
    TLS_KEYS(K_CLIENT_TLS, "client", client_tls_knobs),
    TLS_KEYS(K_BACKEND_TLS, "backend", backend_tls_knobs),
    SERVICE_KEY(K_CLIENT_CA_FILE, "client_ca_file", KT_PATH, client_ca_file,
                .def = NULL),
    SERVICE_KEY(K_CLIENT_CERT, "client_cert", KT_ENUM, client_cert,
                .names = client_cert_names, .def = "none"),
    SERVICE_KEY(K_BARE_NEWLINE, "bare_newline", KT_ENUM, bare_newline,
                .names = bare_newline_names, .def = "normalize"),
    SERVICE_KEY(K_TRACE_HEADER, "trace_header", KT_BOOL, trace_header,
                .def = "no"),
    SERVICE_KEY(K_BACKEND_CLIENT_ADDRESS, "backend_client_address", KT_ENUM,
                backend_client_address, .names = client_address_names,
                .def = "none"),
    SERVICE_KEY(K_CLIENT_PROXY_PROTOCOL, "client_proxy_protocol", KT_BOOL,
                client_proxy_protocol, .def = "no"),
    SERVICE_KEY(K_TRUSTED_PROXIES, "trusted_proxies", KT_CIDRS,
                trusted_proxies,
                .off2 = offsetof(struct service, ntrusted_proxies)),
    SERVICE_KEY(K_MAX_CONNECTIONS, "max_connections", KT_UINT,
                max_connections, .min = 1, .max = 1000000, .def = "1000"),
    SERVICE_KEY(K_MAX_CONNECTIONS_PER_IP, "max_connections_per_ip", KT_UINT,
                max_connections_per_ip, .min = 0, .max = 1000000,
                .def = "50"),  /* 0: no limit */
    SERVICE_KEY(K_MAX_ERRORS, "max_errors", KT_UINT, max_errors, .min = 1,
                .max = 1000, .def = "10"),
    SERVICE_KEY(K_COMMAND_TIMEOUT, "command_timeout", KT_UINT,
                command_timeout, .min = 1, .max = 86400,
                .def = NULL),  /* idle_timeout, in config_check_service() */
    SERVICE_KEY(K_TLS_HANDSHAKE_TIMEOUT, "tls_handshake_timeout", KT_UINT,
                tls_handshake_timeout, .min = 1, .max = 3600, .def = "30"),
    SERVICE_KEY(K_MIN_DATA_RATE, "min_data_rate", KT_UINT, min_data_rate,
                .min = 0, .max = 1000000000, .def = "1024"),  /* 0: off */
    SERVICE_KEY(K_ENFORCE, "enforce", KT_BOOL, enforce, .def = "yes"),
    SERVICE_KEY(K_PROFILES, "profiles", KT_PROFILES, profiles,
                .off2 = offsetof(struct service, nprofiles)),
    SERVICE_KEY(K_EHLO_PASS, "ehlo_pass", KT_KEYWORDS, ehlo_pass,
                .off2 = offsetof(struct service, nehlo_pass)),
    SERVICE_KEY(K_BACKEND_TLS_FINGERPRINTS, "backend_tls_fingerprints",
                KT_PINS, backend_pins,
                .off2 = offsetof(struct service, nbackend_pins)),
    /* the service's own sources: who may connect at all (a profile's
     * sources only choose its settings) */
    SERVICE_KEY(K_SOURCES, "sources", KT_CIDRS, sources,
                .off2 = offsetof(struct service, nsources)),
    SERVICE_KEY(K_BACKEND_AUTH, "backend_auth", KT_ENUM, backend_auth,
                .names = backend_auth_names, .def = "none"),
    SERVICE_KEY(K_BACKEND_AUTH_FILE, "backend_auth_file", KT_PATH,
                backend_auth_file, .def = NULL),
    SERVICE_KEY(K_BACKEND_AUTH_USER, "backend_auth_user", KT_PATH,
                backend_auth_user, .def = NULL),
    SERVICE_KEY(K_BACKEND_HEALTH, "backend_health", KT_ENUM, backend_health,
                .names = backend_health_names, .def = "none"),
    SERVICE_KEY(K_BACKEND_HEALTH_INTERVAL, "backend_health_interval", KT_UINT,
                backend_health_interval, .min = 1, .max = 3600, .def = "10"),
    SERVICE_KEY(K_TRANSPARENT, "transparent", KT_ENUM, transparent,
                .names = transparent_names, .def = "off"),
    SERVICE_KEY(K_TRANSPARENT_SOURCE, "transparent_source", KT_ENUM,
                transparent_source, .names = transparent_source_names,
                .def = "proxy"),
    SERVICE_KEY(K_TRANSPARENT_DESTINATIONS, "transparent_destinations",
                KT_CIDRS, transparent_destinations,
                .off2 = offsetof(struct service, ntransparent_destinations)),
    SERVICE_KEY(K_BACKEND_MARK, "backend_mark", KT_UINT, backend_mark,
                .min = 0, .max = 4294967295u, .def = "0"),  /* 0: none */
    /* [profile NAME]: no defaults; a key not given leaves has_* false */
    PROFILE_KEY(KP_SOURCES, "sources", KT_CIDRS, sources,
                .off2 = offsetof(struct profile, nsources)),
    PROFILE_KEY(KP_CLIENT_TLS, "client_tls", KT_ENUM, client_tls,
                .names = client_tls_names, HAS(has_client_tls)),
    PROFILE_KEY(KP_CLIENT_PLAINTEXT_AUTH, "client_plaintext_auth", KT_BOOL,
                client_plaintext_auth, HAS(has_client_plaintext_auth)),
    PROFILE_KEY(KP_CLIENT_TLS_MIN_PROTOCOL, "client_tls_min_protocol",
                KT_ENUM, min_protocol, .names = tls_version_names,
                HAS(has_min_protocol)),
    PROFILE_KEY(KP_CLIENT_TLS_CIPHERS, "client_tls_ciphers", KT_TOKEN,
                ciphers),
    PROFILE_KEY(KP_CLIENT_TLS_CIPHERSUITES, "client_tls_ciphersuites",
                KT_TOKEN, ciphersuites),
    PROFILE_KEY(KP_CLIENT_TLS_SECURITY_LEVEL, "client_tls_security_level",
                KT_INT, security_level, .min = 0, .max = 5,
                .names = security_level_names, HAS(has_security_level)),
};

/* What one section has seen: the line of each key (0: not given) and
 * whether its value was rejected. */
struct sect_state {
    int line[K_COUNT];
    bool bad[K_COUNT];
    char *profiles;                /* a service's profiles value, resolved
                                      when the whole file is read */
};

struct parser {
    const char *path;
    FILE *f;
    struct config *cfg;
    struct sect_state proxy;       /* [proxy] */
    struct sect_state *svc_state;  /* parallel to cfg->services */
    size_t svc_cap;
    struct sect_state *prof_state; /* parallel to cfg->profiles */
    size_t prof_cap;
    size_t nlisten_total;
    int proxy_line;                /* header line of [proxy], 0: none */
    int cur;                       /* CUR_* or a service/profile index */
    enum key_scope cur_scope;      /* which, when cur >= 0 */
    int lineno;
    bool expect_key;               /* the line handed to inih is a key line */
    bool got_key;                  /* ... and inih called the handler */
    bool read_failed;
    char *err;
    size_t err_len, err_used;
    unsigned nerr;
    char line[CONFIG_LINE_BUF];
};

static void config_error(struct parser *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* config_error - append one "path:line: message" line to the error text. */
static void config_error(struct parser *p, int line, const char *fmt, ...)
{
    va_list ap;
    char *dst;
    size_t room;
    int n, m;

    p->nerr++;
    if (p->err == NULL || p->err_used + 1 >= p->err_len)
        return;
    dst = p->err + p->err_used;
    room = p->err_len - p->err_used;
    n = snprintf(dst, room, "%s:%d: ", p->path, line);
    if (n < 0) {
        *dst = '\0';
        return;
    }
    if ((size_t)n < room) {
        va_start(ap, fmt);
        m = vsnprintf(dst + n, room - (size_t)n, fmt, ap);
        va_end(ap);
        if (m < 0) {
            *dst = '\0';
            return;
        }
        n += m;
    }
    if ((size_t)n < room)
        n += snprintf(dst + n, room - (size_t)n, "\n");
    /* A line that did not fit fills the buffer: later errors are dropped
     * rather than printed after a cut one. */
    p->err_used += (size_t)n < room ? (size_t)n : room - 1;
}

/* config_quote - s as a double-quoted string for a message: non-printable
 * bytes as \xNN, long text cut with "...".  Returns buf. */
static const char *config_quote(char *buf, size_t len, const char *s)
{
    size_t o = 0, i;

    if (len < CONFIG_QUOTE_BUF)
        return "\"?\"";
    buf[o++] = '"';
    for (i = 0; s[i] != '\0'; i++) {
        unsigned char c = (unsigned char)s[i];

        if (i == CONFIG_QUOTE_MAX) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            snprintf(buf + o, 5, "\\x%02x", c);
            o += 4;
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* config_valid_name - a host name: dot-separated labels of 1..63
 * letters, digits and '-' (and '_' when underscore), no label starting or
 * ending with '-', 253 bytes at most. */
static bool config_numeric_address(const char *s)
{
    unsigned char a[16];

    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

static bool config_valid_name(const char *s, bool underscore)
{
    size_t len = strlen(s), label = 0, i;

    if (len == 0 || len > 253)
        return false;
    for (i = 0; i <= len; i++) {
        char c = s[i];

        if (c == '.' || c == '\0') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || (underscore && c == '_')))
            return false;
        if (c == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return true;
}

/* config_parse_uint - a decimal number in [min, max]: digits only (no
 * sign, no blanks, no base prefix). */
static int config_parse_uint(const char *s, unsigned min, unsigned max,
                             unsigned *out, char *why, size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    char *end;
    unsigned long v;

    if (!(*s >= '0' && *s <= '9')) {
        snprintf(why, why_len, "%s is not a number",
                 config_quote(q, sizeof q, s));
        return -1;
    }
    errno = 0;
    v = strtoul(s, &end, 10);
    if (*end != '\0') {
        snprintf(why, why_len, "%s is not a number",
                 config_quote(q, sizeof q, s));
        return -1;
    }
    if (errno == ERANGE || v < min || v > max) {
        snprintf(why, why_len, "%s is out of range (%u..%u)",
                 config_quote(q, sizeof q, s), min, max);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* config_parse_enum - one of the names (any case). */
static int config_parse_enum(const struct enum_name *names, const char *s,
                             int *out, char *why, size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    size_t i, o;
    int n;

    for (i = 0; names[i].name != NULL; i++) {
        if (strcasecmp(names[i].name, s) == 0) {
            *out = names[i].value;
            return 0;
        }
    }
    n = snprintf(why, why_len, "%s is not one of",
                 config_quote(q, sizeof q, s));
    o = n < 0 ? 0 : (size_t)n;
    for (i = 0; names[i].name != NULL && o < why_len; i++) {
        n = snprintf(why + o, why_len - o, "%s %s", i ? "," : "",
                     names[i].name);
        if (n < 0)
            break;
        o += (size_t)n;
    }
    return -1;
}

/* config_parse_bool - yes/no, true/false, on/off, 1/0 (any case). */
static int config_parse_bool(const char *s, bool *out, char *why,
                             size_t why_len)
{
    static const char *const yes[] = { "yes", "true", "on", "1" };
    static const char *const no[] = { "no", "false", "off", "0" };
    char q[CONFIG_QUOTE_BUF];
    size_t i;

    for (i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    snprintf(why, why_len, "%s is not yes or no",
             config_quote(q, sizeof q, s));
    return -1;
}

/* config_split_port - split "host:port" or "[host]:port" in s (modified
 * in place) into *host (brackets removed) and a port number 1..65535.
 * *bracketed tells which form it was. */
static int config_split_port(char *s, char **host, unsigned *port,
                             bool *bracketed, char *why, size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    char pwhy[CONFIG_QUOTE_BUF + 64];
    char *colon, *p;

    if (s[0] == '[') {
        char *close = strchr(s, ']');

        if (close == NULL || close[1] != ':') {
            snprintf(why, why_len, "%s: expected \"[address]:port\"",
                     config_quote(q, sizeof q, s));
            return -1;
        }
        *close = '\0';
        *host = s + 1;
        p = close + 2;
        *bracketed = true;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            snprintf(why, why_len, "%s: expected \"address:port\"",
                     config_quote(q, sizeof q, s));
            return -1;
        }
        *colon = '\0';
        if (strchr(s, ':') != NULL) {
            *colon = ':';
            snprintf(why, why_len,
                     "%s: an IPv6 address needs brackets, as in [::1]:25",
                     config_quote(q, sizeof q, s));
            return -1;
        }
        *host = s;
        p = colon + 1;
        *bracketed = false;
    }
    if (config_parse_uint(p, 1, 65535, port, pwhy, sizeof pwhy) < 0) {
        snprintf(why, why_len, "port %s", pwhy);
        return -1;
    }
    return 0;
}

/* config_parse_addr - one numeric listen address: "a.b.c.d:port",
 * "*:port" (any IPv4 address) or "[IPv6]:port". */
static int config_parse_addr(char *s, struct listen_addr *out, char *why,
                             size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    char text[INET6_ADDRSTRLEN];
    struct listen_addr a;
    char *host;
    unsigned port;
    bool v6;

    if (config_split_port(s, &host, &port, &v6, why, why_len) < 0)
        return -1;
    memset(&a, 0, sizeof a);
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.addr;

        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            snprintf(why, why_len, "%s is not a numeric IPv6 address",
                     config_quote(q, sizeof q, host));
            return -1;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        a.addr_len = sizeof *sin6;
        inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
        snprintf(a.text, sizeof a.text, "[%s]:%u", text, port);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.addr;

        if (strcmp(host, "*") == 0)
            host = "0.0.0.0";
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            snprintf(why, why_len, "%s is not a numeric IPv4 address",
                     config_quote(q, sizeof q, host));
            return -1;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        a.addr_len = sizeof *sin;
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
        snprintf(a.text, sizeof a.text, "%s:%u", text, port);
    }
    *out = a;
    return 0;
}

/* config_addr_equal - same family, address and port. */
static bool config_addr_equal(const struct listen_addr *a,
                              const struct listen_addr *b)
{
    return netaddr_same_host(&a->addr, &b->addr) &&
           netaddr_port(&a->addr) == netaddr_port(&b->addr);
}

/* config_list_split - a comma-separated list: *copy gets a copy of value
 * cut in place, *items a new array of its *count items, blanks trimmed.
 * An empty item is an error naming what ("address", "path"...).  The
 * caller frees *copy and *items. */
static int config_list_split(const char *value, const char *what,
                             char **copy, char ***items, size_t *count,
                             char *why, size_t why_len)
{
    size_t n = 1, i;
    const char *c;
    char *item, *next, **list;

    for (c = value; *c != '\0'; c++)
        n += *c == ',';
    *copy = strdup(value);
    *items = list = calloc(n, sizeof *list);
    if (*copy == NULL || list == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    for (i = 0, item = *copy; i < n; i++, item = next) {
        char *end;

        next = strchr(item, ',');
        if (next != NULL)
            *next++ = '\0';
        while (*item == ' ' || *item == '\t')
            item++;
        end = item + strlen(item);
        while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (*item == '\0') {
            snprintf(why, why_len, "empty %s in the list", what);
            return -1;
        }
        list[i] = item;
    }
    *count = n;
    return 0;
}

/* config_parse_listen - a comma-separated list of listen addresses, none
 * repeated.  *out is a new array of *count entries. */
static int config_parse_listen(const char *value, struct listen_addr **out,
                               size_t *count, char *why, size_t why_len)
{
    struct listen_addr *list = NULL;
    size_t n, i, j;
    char *copy, **items;

    if (config_list_split(value, "address", &copy, &items, &n, why,
                          why_len) < 0)
        goto fail;
    list = calloc(n, sizeof *list);
    if (list == NULL) {
        snprintf(why, why_len, "out of memory");
        goto fail;
    }
    for (i = 0; i < n; i++) {
        if (config_parse_addr(items[i], &list[i], why, why_len) < 0)
            goto fail;
        for (j = 0; j < i; j++) {
            if (config_addr_equal(&list[i], &list[j])) {
                snprintf(why, why_len, "%s given twice", list[i].text);
                goto fail;
            }
        }
    }
    free(copy);
    free(items);
    *out = list;
    *count = n;
    return 0;
fail:
    free(copy);
    free(items);
    free(list);
    return -1;
}

/* config_parse_hostport - "host:port" or "[IPv6]:port" into a host name
 * without brackets and the port in canonical decimal. */
static int config_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * config_parse_pins - "sha256:HEX" (the certificate's digest, as
 * "openssl x509 -fingerprint -sha256" prints it: colons allowed) or
 * "pubkey-sha256:HEX" (its SubjectPublicKeyInfo's), comma list, at
 * most 32.
 */
static int config_parse_pins(const char *value, struct tls_pin **out,
                             size_t *nout, char *why, size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    struct tls_pin *list = calloc(32, sizeof *list);
    const char *p = value;
    size_t n = 0;

    if (list == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    for (;;) {
        struct tls_pin *pin = &list[n];
        size_t k = 0, len;
        char item[200];

        while (*p == ' ' || *p == '\t')
            p++;
        len = strcspn(p, ", \t");
        snprintf(item, sizeof item, "%.*s", (int)(len < 199 ? len : 199), p);
        if (n == 32) {
            snprintf(why, why_len, "at most 32 fingerprints");
            goto fail;
        }
        if (strncasecmp(item, "sha256:", 7) == 0) {
            pin->pubkey = false;
            k = 7;
        } else if (strncasecmp(item, "pubkey-sha256:", 14) == 0) {
            pin->pubkey = true;
            k = 14;
        } else {
            snprintf(why, why_len, "%s: expected sha256:HEX or "
                     "pubkey-sha256:HEX", config_quote(q, sizeof q, item));
            goto fail;
        }
        for (size_t b = 0; b < 32; b++) {
            int hi, lo;

            if (b > 0 && item[k] == ':')
                k++;
            hi = config_hex((unsigned char)item[k]);
            lo = hi < 0 ? -1 : config_hex((unsigned char)item[k + 1]);
            if (hi < 0 || lo < 0) {
                snprintf(why, why_len, "%s: a SHA-256 digest is 64 hex "
                         "digits", config_quote(q, sizeof q, item));
                goto fail;
            }
            pin->sha256[b] = (unsigned char)(hi << 4 | lo);
            k += 2;
        }
        if (item[k] != '\0') {
            snprintf(why, why_len, "%s: a SHA-256 digest is 64 hex digits",
                     config_quote(q, sizeof q, item));
            goto fail;
        }
        n++;
        p += len;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            break;
        if (*p++ != ',') {
            snprintf(why, why_len, "expected a comma between fingerprints");
            goto fail;
        }
    }
    *out = list;
    *nout = n;
    return 0;
fail:
    free(list);
    return -1;
}

/*
 * config_check_resolvers - "ADDR[@PORT], ...": numeric addresses only
 * (the resolver cannot look up its own servers), at most 16.
 */
static int config_check_resolvers(const char *value, char *why,
                                  size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    char one[80];
    const char *p = value;
    unsigned n = 0;

    for (;;) {
        struct in6_addr a6;
        struct in_addr a4;
        char *at, *end;
        size_t len;

        while (*p == ' ' || *p == '\t')
            p++;
        len = strcspn(p, ", \t");
        if (len == 0 || len >= sizeof one) {
            snprintf(why, why_len, "expected system, or ADDRESS[@PORT], ... "
                     "(numeric addresses)");
            return -1;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        at = strchr(one, '@');
        if (at != NULL) {
            unsigned long port;

            *at = '\0';
            errno = 0;
            port = strtoul(at + 1, &end, 10);
            if (at[1] == '\0' || *end != '\0' || port == 0 || port > 65535 ||
                errno != 0) {
                snprintf(why, why_len, "%s: bad port",
                         config_quote(q, sizeof q, at + 1));
                return -1;
            }
        }
        if (inet_pton(AF_INET, one, &a4) != 1 &&
            inet_pton(AF_INET6, one, &a6) != 1) {
            snprintf(why, why_len, "%s is not a numeric address",
                     config_quote(q, sizeof q, one));
            return -1;
        }
        if (++n > 16) {
            snprintf(why, why_len, "at most 16 resolvers");
            return -1;
        }
        p += len;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return 0;
        if (*p++ != ',') {
            snprintf(why, why_len, "expected a comma between resolvers");
            return -1;
        }
    }
}

static int config_parse_hostport(const char *value, char **host_out,
                                 char **port_out, bool mx, char *why,
                                 size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    char portbuf[8];
    struct in6_addr a6;
    struct in_addr a4;
    char *copy, *host, *h = NULL, *p = NULL;
    unsigned port = 25;
    bool v6 = false;

    copy = strdup(value);
    if (copy == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    if (mx) {
        /* mx:DOMAIN[:PORT]: a mail domain, port 25 unless given */
        host = copy;
        if (strchr(copy, ':') != NULL &&
            config_split_port(copy, &host, &port, &v6, why, why_len) < 0)
            goto fail;
        if (v6 || inet_pton(AF_INET, host, &a4) == 1 ||
            !config_valid_name(host, false) || strchr(host, '.') == NULL) {
            snprintf(why, why_len, "mx:%s: not a mail domain (mx: takes a "
                     "domain name with a dot, such as mx:example.com)",
                     config_quote(q, sizeof q, host));
            goto fail;
        }
    } else if (config_split_port(copy, &host, &port, &v6, why, why_len) < 0)
        goto fail;
    if (v6 && inet_pton(AF_INET6, host, &a6) != 1) {
        snprintf(why, why_len, "%s is not a numeric IPv6 address",
                 config_quote(q, sizeof q, host));
        goto fail;
    }
    if (!v6 && !config_valid_name(host, true)) {
        snprintf(why, why_len, "%s is not a valid host name",
                 config_quote(q, sizeof q, host));
        goto fail;
    }
    snprintf(portbuf, sizeof portbuf, "%u", port);
    h = strdup(host);
    p = strdup(portbuf);
    if (h == NULL || p == NULL) {
        snprintf(why, why_len, "out of memory");
        goto fail;
    }
    free(copy);
    *host_out = h;
    *port_out = p;
    return 0;
fail:
    free(h);
    free(p);
    free(copy);
    return -1;
}

/* config_valid_section_name - a service or profile name: 1..64 letters,
 * digits, '-', '_' or '.'. */
static bool config_valid_section_name(const char *name)
{
    size_t i;

    for (i = 0; name[i] != '\0'; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.') ||
            i == CONFIG_SECTION_MAX)
            return false;
    }
    return i > 0;
}

/* config_parse_cidr - "a.b.c.d[/n]" or "x::y[/n]" (no brackets); no
 * prefix means the whole address; the host bits must be zero, so that
 * the range is what it looks like. */
static int config_parse_cidr(char *s, struct cidr *out, char *why,
                             size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    char pwhy[CONFIG_QUOTE_BUF + 64];
    struct cidr c;
    unsigned char *bytes;
    unsigned prefix, max, i;
    char *slash;
    int ok;

    memset(&c, 0, sizeof c);
    slash = strchr(s, '/');
    if (slash != NULL)
        *slash = '\0';  /* put back below */
    if (strchr(s, ':') != NULL) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&c.addr;

        sin6->sin6_family = AF_INET6;
        bytes = sin6->sin6_addr.s6_addr;
        max = 128;
        ok = inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&c.addr;

        sin->sin_family = AF_INET;
        bytes = (unsigned char *)&sin->sin_addr.s_addr;
        max = 32;
        ok = inet_pton(AF_INET, s, &sin->sin_addr) == 1;
    }
    if (slash != NULL)
        *slash = '/';
    if (!ok) {
        snprintf(why, why_len, "%s is not an IPv4 or IPv6 address (write "
                 "a.b.c.d/n or x::y/n, without brackets)",
                 config_quote(q, sizeof q, s));
        return -1;
    }
    prefix = max;
    if (slash != NULL &&
        config_parse_uint(slash + 1, 0, max, &prefix, pwhy, sizeof pwhy) < 0) {
        snprintf(why, why_len, "%s: prefix %s", config_quote(q, sizeof q, s),
                 pwhy);
        return -1;
    }
    for (i = prefix; i < max; i++) {
        if (bytes[i / 8] & (0x80u >> (i % 8))) {
            /* s is only digits, hex, '.', ':' and '/' here */
            snprintf(why, why_len, "host bits set in %s", s);
            return -1;
        }
    }
    c.prefix = prefix;
    *out = c;
    return 0;
}

/* config_cidr_equal - the same range. */
static bool config_cidr_equal(const struct cidr *a, const struct cidr *b)
{
    return a->prefix == b->prefix && netaddr_same_host(&a->addr, &b->addr);
}

/* config_parse_cidrs - a comma-separated list of address ranges, none
 * repeated.  *out is a new array of *count entries. */
static int config_parse_cidrs(const char *value, struct cidr **out,
                              size_t *count, char *why, size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    struct cidr *list = NULL;
    size_t n, i, j;
    char *copy, **items;

    if (config_list_split(value, "address", &copy, &items, &n, why,
                          why_len) < 0)
        goto fail;
    list = calloc(n, sizeof *list);
    if (list == NULL) {
        snprintf(why, why_len, "out of memory");
        goto fail;
    }
    for (i = 0; i < n; i++) {
        if (config_parse_cidr(items[i], &list[i], why, why_len) < 0)
            goto fail;
        for (j = 0; j < i; j++) {
            if (config_cidr_equal(&list[i], &list[j])) {
                snprintf(why, why_len, "%s given twice",
                         config_quote(q, sizeof q, items[i]));
                goto fail;
            }
        }
    }
    free(copy);
    free(items);
    *out = list;
    *count = n;
    return 0;
fail:
    free(copy);
    free(items);
    free(list);
    return -1;
}

/* config_set_paths - a comma-separated list of files into one member
 * (cert or key) of the struct cert_pair array *pairs of *npairs entries,
 * which grows to the longer of the two lists; the other member of the new
 * entries stays NULL.  config_check_service() compares the counts. */
static int config_set_paths(const char *value, size_t member,
                            struct cert_pair **pairs, size_t *npairs,
                            char *why, size_t why_len)
{
    struct cert_pair *grown;
    size_t n = 0, i, need;
    char *copy, **items, **dup = NULL;

    if (config_list_split(value, "path", &copy, &items, &n, why,
                          why_len) < 0)
        goto fail;
    dup = calloc(n, sizeof *dup);
    if (dup == NULL)
        goto oom;
    for (i = 0; i < n; i++) {
        if ((dup[i] = strdup(items[i])) == NULL)
            goto oom;
    }
    need = n > *npairs ? n : *npairs;
    if (need > *npairs) {
        grown = realloc(*pairs, need * sizeof *grown);
        if (grown == NULL)
            goto oom;
        memset(grown + *npairs, 0, (need - *npairs) * sizeof *grown);
        *pairs = grown;
        *npairs = need;
    }
    for (i = 0; i < *npairs; i++) {
        char **field = (char **)((char *)&(*pairs)[i] + member);

        free(*field);
        *field = i < n ? dup[i] : NULL;
    }
    free(dup);
    free(copy);
    free(items);
    return 0;
oom:
    snprintf(why, why_len, "out of memory");
fail:
    for (i = 0; dup != NULL && i < n; i++)
        free(dup[i]);
    free(dup);
    free(copy);
    free(items);
    return -1;
}

/* keywords ehlo_pass may never name, and why */
static const struct {
    const char *name;
    const char *why;
} config_ehlo_never[] = {
    { "STARTTLS", "STARTTLS is the proxy's own: client_tls decides whether "
                  "clients are offered it" },
    { "XCLIENT", "XCLIENT would let a client tell the backend any address "
                 "and name, which it trusts from the proxy" },
    { "XFORWARD", "XFORWARD would let a client tell the backend any address "
                  "and name, which it trusts from the proxy" },
    { "AUTH", "AUTH follows its own rule (shown once the client uses TLS, "
              "or with client_plaintext_auth = yes)" },
    { "REQUIRETLS", "REQUIRETLS is the proxy's: shown when both legs are "
                    "authenticated TLS and the backend offers it" },
};

/* config_list_repeats - is items[i] one of items[0..i-1] (case
 * insensitive)?  Then the reason is in why. */
static bool config_list_repeats(char **items, size_t i, char *why,
                                size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];

    for (size_t j = 0; j < i; j++) {
        if (strcasecmp(items[i], items[j]) == 0) {
            snprintf(why, why_len, "%s listed twice",
                     config_quote(q, sizeof q, items[i]));
            return true;
        }
    }
    return false;
}

/* config_parse_keywords - "ehlo_pass": EHLO keywords, none repeated and
 * none the proxy must keep to itself; stored upper case in one block. */
static int config_parse_keywords(const char *value, char ***out,
                                 size_t *count, char *why, size_t why_len)
{
    enum { KEYWORDS_MAX = 64 };
    char q[CONFIG_QUOTE_BUF];
    size_t n, i, j, bytes = 0;
    char *copy, **items, **list = NULL, *p;
    int r = -1;

    if (config_list_split(value, "keyword", &copy, &items, &n, why,
                          why_len) < 0)
        goto out;
    if (n > KEYWORDS_MAX) {
        snprintf(why, why_len, "more than %d keywords", KEYWORDS_MAX);
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (!smtp_ehlo_keyword_valid(items[i], strlen(items[i]))) {
            snprintf(why, why_len, "%s is not an EHLO keyword (letters, "
                     "digits and '-', at most 64)",
                     config_quote(q, sizeof q, items[i]));
            goto out;
        }
        for (j = 0; j < sizeof config_ehlo_never / sizeof config_ehlo_never[0];
             j++) {
            if (strcasecmp(items[i], config_ehlo_never[j].name) == 0) {
                snprintf(why, why_len, "%s cannot be passed: %s",
                         config_ehlo_never[j].name, config_ehlo_never[j].why);
                goto out;
            }
        }
        if (config_list_repeats(items, i, why, why_len))
            goto out;
        bytes += strlen(items[i]) + 1;
    }
    list = malloc(n * sizeof *list + bytes);
    if (list == NULL) {
        snprintf(why, why_len, "out of memory");
        goto out;
    }
    p = (char *)(list + n);
    for (i = 0; i < n; i++) {
        list[i] = p;
        for (j = 0; items[i][j] != '\0'; j++)
            *p++ = (char)toupper((unsigned char)items[i][j]);
        *p++ = '\0';
    }
    *out = list;
    *count = n;
    r = 0;
out:
    free(copy);
    free(items);
    return r;
}

/* config_check_profile_names - the value of "profiles": names of profile
 * sections, none repeated.  They are looked up once the whole file is
 * read (config_resolve_profiles), since a profile may come later. */
static int config_check_profile_names(const char *value, char *why,
                                      size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    size_t n, i;
    char *copy, **items;
    int r = -1;

    if (config_list_split(value, "name", &copy, &items, &n, why,
                          why_len) < 0)
        goto out;
    for (i = 0; i < n; i++) {
        if (!config_valid_section_name(items[i])) {
            snprintf(why, why_len, "%s is not a profile name",
                     config_quote(q, sizeof q, items[i]));
            goto out;
        }
        if (config_list_repeats(items, i, why, why_len))
            goto out;
    }
    r = 0;
out:
    free(copy);
    free(items);
    return r;
}

/* config_set - parse value as key k and store it in base (a struct config,
 * service or profile), replacing what was there.  On error returns -1
 * with the reason in why and leaves base unchanged. */
static int config_set(const struct key_def *k, const char *value, void *base,
                      char *why, size_t why_len)
{
    char *field = (char *)base + k->off;
    char *field2 = (char *)base + k->off2;
    char q[CONFIG_QUOTE_BUF];
    struct in6_addr a6;
    size_t i;
    char *s;

    switch (k->type) {
    case KT_DOMAIN:
        if (!config_valid_name(value, false)) {
            snprintf(why, why_len, "%s is not a valid domain name",
                     config_quote(q, sizeof q, value));
            return -1;
        }
        goto string;
    case KT_NAME:
        if (!config_valid_name(value, true) &&
            inet_pton(AF_INET6, value, &a6) != 1) {
            snprintf(why, why_len, "%s is not a host name or address",
                     config_quote(q, sizeof q, value));
            return -1;
        }
        goto string;
    case KT_PATH:
    string:
        s = strdup(value);
        if (s == NULL) {
            snprintf(why, why_len, "out of memory");
            return -1;
        }
        free(*(char **)field);
        *(char **)field = s;
        return 0;
    case KT_BOOL:
        return config_parse_bool(value, (bool *)field, why, why_len);
    case KT_ENUM:
        return config_parse_enum(k->names, value, (int *)field, why, why_len);
    case KT_TOKEN:
        for (i = 0; value[i] > ' ' && value[i] < 0x7f; i++)
            ;
        if (value[i] != '\0') {
            snprintf(why, why_len, "%s is not an OpenSSL list (printable "
                     "ASCII without blanks, as in HIGH:!aNULL)",
                     config_quote(q, sizeof q, value));
            return -1;
        }
        goto string;
    case KT_ACCOUNT:
        /* POSIX portable user names: letters, digits, '.', '_', '-', not
         * starting with '-' */
        for (i = 0; value[i] != '\0' && i < 33; i++)
            if (!isalnum((unsigned char)value[i]) && value[i] != '.' &&
                value[i] != '_' && value[i] != '-')
                break;
        if (i == 0 || i > 32 || value[i] != '\0' || value[0] == '-') {
            snprintf(why, why_len, "%s is not a user or group name "
                     "(letters, digits, '.', '_' and '-', at most 32)",
                     config_quote(q, sizeof q, value));
            return -1;
        }
        goto string;
    case KT_UINT:
        return config_parse_uint(value, k->min, k->max, (unsigned *)field,
                                 why, why_len);
    case KT_INT: {
        unsigned u;

        for (i = 0; k->names != NULL && k->names[i].name != NULL; i++) {
            if (strcasecmp(k->names[i].name, value) == 0) {
                *(int *)field = k->names[i].value;
                return 0;
            }
        }
        if (!(*value >= '0' && *value <= '9')) {
            snprintf(why, why_len, "%s is not a number (%u..%u)%s%s",
                     config_quote(q, sizeof q, value), k->min, k->max,
                     k->names != NULL ? " or " : "",
                     k->names != NULL ? k->names[0].name : "");
            return -1;
        }
        if (config_parse_uint(value, k->min, k->max, &u, why, why_len) < 0)
            return -1;
        *(int *)field = (int)u;
        return 0;
    }
    case KT_PATHS:
        return config_set_paths(value, k->member, (struct cert_pair **)field,
                                (size_t *)field2, why, why_len);
    case KT_CIDRS: {
        struct cidr *list;
        size_t n;

        if (config_parse_cidrs(value, &list, &n, why, why_len) < 0)
            return -1;
        free(*(struct cidr **)field);
        *(struct cidr **)field = list;
        *(size_t *)field2 = n;
        return 0;
    }
    case KT_KEYWORDS: {
        char **list;
        size_t n;

        if (config_parse_keywords(value, &list, &n, why, why_len) < 0)
            return -1;
        free(*(char ***)field);
        *(char ***)field = list;
        *(size_t *)field2 = n;
        return 0;
    }
    case KT_PINS: {
        struct tls_pin *list;
        size_t n;

        if (config_parse_pins(value, &list, &n, why, why_len) < 0)
            return -1;
        free(*(struct tls_pin **)field);
        *(struct tls_pin **)field = list;
        *(size_t *)field2 = n;
        return 0;
    }
    case KT_PROFILES:
        /* only checked: the parser keeps the text to resolve it later */
        return config_check_profile_names(value, why, why_len);
    case KT_LISTEN: {
        struct listen_addr *list;
        size_t n;

        if (config_parse_listen(value, &list, &n, why, why_len) < 0)
            return -1;
        free(*(struct listen_addr **)field);
        *(struct listen_addr **)field = list;
        *(size_t *)field2 = n;
        return 0;
    }
    case KT_HOSTPORT: {
        char *host, *port;
        bool mx = strncmp(value, "mx:", 3) == 0;

        if (config_parse_hostport(mx ? value + 3 : value, &host, &port, mx,
                                  why, why_len) < 0)
            return -1;
        free(*(char **)field);
        free(*(char **)field2);
        *(char **)field = host;
        *(char **)field2 = port;
        *(bool *)((char *)base + k->off3) = mx;
        return 0;
    }
    case KT_RESOLVERS:
        if (strcmp(value, "system") != 0 &&
            config_check_resolvers(value, why, why_len) < 0)
            return -1;
        goto string;
    }
    snprintf(why, why_len, "internal error: key type");
    return -1;
}

/* config_defaults - set every key of scope that has a default. */
static void config_defaults(struct parser *p, void *base,
                            enum key_scope scope)
{
    char why[CONFIG_WHY_BUF];
    size_t i;

    for (i = 0; i < K_COUNT; i++) {
        const struct key_def *k = &key_table[i];

        if (k->scope != scope || k->def == NULL)
            continue;
        if (config_set(k, k->def, base, why, sizeof why) < 0)
            config_error(p, 0, "default of %s: %s", k->name, why);
    }
}

/* config_free_fields - free what the keys of scope own in base, leaving
 * NULL behind (cert and key share one array: the first frees it). */
static void config_free_fields(void *base, enum key_scope scope)
{
    size_t i, j;

    for (i = 0; i < K_COUNT; i++) {
        const struct key_def *k = &key_table[i];
        char *field = (char *)base + k->off;
        char *field2 = (char *)base + k->off2;

        if (k->scope != scope)
            continue;
        switch (k->type) {
        case KT_PATH:
        case KT_DOMAIN:
        case KT_NAME:
        case KT_TOKEN:
        case KT_ACCOUNT:
        case KT_RESOLVERS:
            free(*(char **)field);
            *(char **)field = NULL;
            break;
        case KT_LISTEN:
        case KT_CIDRS:
        case KT_KEYWORDS:
        case KT_PROFILES:
        case KT_PINS:
            free(*(void **)field);
            *(void **)field = NULL;
            *(size_t *)field2 = 0;
            break;
        case KT_HOSTPORT:
            free(*(char **)field);
            free(*(char **)field2);
            *(char **)field = NULL;
            *(char **)field2 = NULL;
            break;
        case KT_PATHS: {
            struct cert_pair *pairs = *(struct cert_pair **)field;

            for (j = 0; j < *(size_t *)field2; j++) {
                free(pairs[j].cert);
                free(pairs[j].key);
            }
            free(pairs);
            *(struct cert_pair **)field = NULL;
            *(size_t *)field2 = 0;
            break;
        }
        case KT_BOOL:
        case KT_ENUM:
        case KT_UINT:
        case KT_INT:
            break;
        }
    }
}

/* config_key_find - the key named name (any case) of scope, else of
 * another scope (the caller says where it belongs), else NULL. */
static const struct key_def *config_key_find(const char *name,
                                             enum key_scope scope)
{
    const struct key_def *other = NULL;
    size_t i;

    for (i = 0; i < K_COUNT; i++) {
        if (strcasecmp(key_table[i].name, name) != 0)
            continue;
        if (key_table[i].scope == scope)
            return &key_table[i];
        if (other == NULL)
            other = &key_table[i];
    }
    return other;
}

/* config_grow - make room for one more entry in *arr (of *n entries of
 * size each) and in its parallel *st, doubling *cap. */
static int config_grow(void **arr, size_t size, size_t n,
                       struct sect_state **st, size_t *cap)
{
    size_t c = *cap ? *cap * 2 : 4;
    void *a2;
    struct sect_state *st2;

    if (n < *cap)
        return 0;
    a2 = realloc(*arr, c * size);
    if (a2 == NULL)
        return -1;
    *arr = a2;
    st2 = realloc(*st, c * sizeof *st2);
    if (st2 == NULL)
        return -1;
    *st = st2;
    *cap = c;
    return 0;
}

/* config_add_service - start the service section name at the current
 * line, with every default set.  Returns its index or -1. */
static int config_add_service(struct parser *p, const char *name)
{
    struct config *cfg = p->cfg;
    struct service *svc;

    if (cfg->nservices == CONFIG_MAX_SERVICES) {
        config_error(p, p->lineno, "too many services (at most %d)",
                     CONFIG_MAX_SERVICES);
        return -1;
    }
    if (config_grow((void **)&cfg->services, sizeof *svc, cfg->nservices,
                    &p->svc_state, &p->svc_cap) < 0)
        goto oom;
    svc = &cfg->services[cfg->nservices];
    memset(svc, 0, sizeof *svc);
    memset(&p->svc_state[cfg->nservices], 0, sizeof p->svc_state[0]);
    svc->name = strdup(name);
    if (svc->name == NULL)
        goto oom;
    svc->line = p->lineno;
    cfg->nservices++;
    config_defaults(p, svc, SCOPE_SERVICE);
    return (int)cfg->nservices - 1;
oom:
    config_error(p, p->lineno, "out of memory");
    return -1;
}

/* config_add_profile - start the section [profile name] at the current
 * line.  Returns its index or -1. */
static int config_add_profile(struct parser *p, const char *name)
{
    struct config *cfg = p->cfg;
    struct profile *prof;

    if (cfg->nprofiles == CONFIG_MAX_PROFILES) {
        config_error(p, p->lineno, "too many profiles (at most %d)",
                     CONFIG_MAX_PROFILES);
        return -1;
    }
    if (config_grow((void **)&cfg->profiles, sizeof *prof, cfg->nprofiles,
                    &p->prof_state, &p->prof_cap) < 0)
        goto oom;
    prof = &cfg->profiles[cfg->nprofiles];
    memset(prof, 0, sizeof *prof);
    memset(&p->prof_state[cfg->nprofiles], 0, sizeof p->prof_state[0]);
    prof->name = strdup(name);
    if (prof->name == NULL)
        goto oom;
    prof->line = p->lineno;
    cfg->nprofiles++;
    config_defaults(p, prof, SCOPE_PROFILE);
    return (int)cfg->nprofiles - 1;
oom:
    config_error(p, p->lineno, "out of memory");
    return -1;
}

/* config_profile_section - the header [profile NAME]; rest is what follows
 * the word "profile": one blank, then a name like a service's. */
static void config_profile_section(struct parser *p, const char *header,
                                   const char *rest)
{
    char q[CONFIG_QUOTE_BUF];
    size_t i;
    int r;

    if (*rest == '\0') {
        config_error(p, p->lineno, "section [%s] needs a name: "
                                   "[profile NAME]", header);
        return;
    }
    if (*rest != ' ' || !config_valid_section_name(rest + 1)) {
        config_error(p, p->lineno,
                     "bad section name %s (expected \"profile NAME\", NAME "
                     "at most %d letters, digits, '-', '_' or '.')",
                     config_quote(q, sizeof q, header), CONFIG_SECTION_MAX);
        return;
    }
    rest++;
    for (i = 0; i < p->cfg->nprofiles; i++) {
        if (strcasecmp(p->cfg->profiles[i].name, rest) == 0) {
            config_error(p, p->lineno,
                         "section [profile %s] given twice (first on line "
                         "%d)", rest, p->cfg->profiles[i].line);
            return;
        }
    }
    r = config_add_profile(p, rest);
    if (r >= 0) {
        p->cur = r;
        p->cur_scope = SCOPE_PROFILE;
    }
}

/* config_section - a "[name]" header line (s, whitespace-trimmed, starts
 * with '[').  Makes it the current section; a bad or repeated header makes
 * the parser skip keys up to the next header. */
static void config_section(struct parser *p, char *s)
{
    char q[CONFIG_QUOTE_BUF];
    char *close, *name, *rest, *end;
    size_t i;
    int r;

    p->cur = CUR_SKIP;
    close = strchr(s, ']');
    if (close == NULL) {
        config_error(p, p->lineno, "missing ']' in section header");
        return;
    }
    for (rest = close + 1; *rest == ' ' || *rest == '\t'; rest++)
        ;
    if (*rest != '\0' && *rest != ';' && *rest != '#') {
        config_error(p, p->lineno, "text after the section header: %s",
                     config_quote(q, sizeof q, rest));
        return;
    }
    *close = '\0';
    for (name = s + 1; *name == ' ' || *name == '\t'; name++)
        ;
    end = name + strlen(name);
    while (end > name && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    if (*name == '\0') {
        config_error(p, p->lineno, "empty section name");
        return;
    }
    if (strncasecmp(name, "profile", 7) == 0 &&
        (name[7] == '\0' || name[7] == ' ' || name[7] == '\t')) {
        config_profile_section(p, name, name + 7);
        return;
    }
    if (!config_valid_section_name(name)) {
        config_error(p, p->lineno,
                     "bad section name %s (at most %d letters, digits, "
                     "'-', '_' or '.')",
                     config_quote(q, sizeof q, name), CONFIG_SECTION_MAX);
        return;
    }
    if (strcasecmp(name, "proxy") == 0) {
        if (p->proxy_line != 0) {
            config_error(p, p->lineno,
                         "section [proxy] given twice (first on line %d)",
                         p->proxy_line);
            return;
        }
        p->proxy_line = p->lineno;
        p->cur = CUR_PROXY;
        return;
    }
    for (i = 0; i < p->cfg->nservices; i++) {
        if (strcasecmp(p->cfg->services[i].name, name) == 0) {
            config_error(p, p->lineno,
                         "section [%s] given twice (first on line %d)", name,
                         p->cfg->services[i].line);
            return;
        }
    }
    r = config_add_service(p, name);
    if (r >= 0) {
        p->cur = r;
        p->cur_scope = SCOPE_SERVICE;
    }
}

/* Where a key of each scope belongs, and what "not ..." says of it. */
static const char *const scope_where[] = {
    [SCOPE_PROXY] = "[proxy]",
    [SCOPE_SERVICE] = "a service section",
    [SCOPE_PROFILE] = "a [profile NAME] section",
};
static const char *const scope_not[] = {
    [SCOPE_PROXY] = "[proxy]",
    [SCOPE_SERVICE] = "in a service",
    [SCOPE_PROFILE] = "in a profile",
};

/* config_handle_key - inih's handler: one "name = value" on line
 * p->lineno of the current section.  Always returns 1: errors are
 * collected in p, not reported through inih. */
static int config_handle_key(void *user, const char *section,
                             const char *name, const char *value)
{
    struct parser *p = user;
    char q[CONFIG_QUOTE_BUF];
    char why[CONFIG_WHY_BUF];
    const struct key_def *k;
    struct sect_state *st;
    enum key_scope scope;
    void *base;
    size_t id;

    (void)section;  /* sections are tracked by config_section() */
    p->got_key = true;
    if (p->cur == CUR_SKIP)
        return 1;
    if (p->cur == CUR_NONE) {
        config_error(p, p->lineno, "key %s before any [section]",
                     config_quote(q, sizeof q, name));
        return 1;
    }
    if (p->cur == CUR_PROXY) {
        scope = SCOPE_PROXY;
        st = &p->proxy;
        base = p->cfg;
    } else if (p->cur_scope == SCOPE_SERVICE) {
        scope = SCOPE_SERVICE;
        st = &p->svc_state[p->cur];
        base = &p->cfg->services[p->cur];
    } else {
        scope = SCOPE_PROFILE;
        st = &p->prof_state[p->cur];
        base = &p->cfg->profiles[p->cur];
    }
    k = config_key_find(name, scope);
    if (k == NULL) {
        config_error(p, p->lineno, "unknown key %s",
                     config_quote(q, sizeof q, name));
        return 1;
    }
    if (k->scope != scope) {
        config_error(p, p->lineno, "key %s belongs in %s, not %s", k->name,
                     scope_where[k->scope], scope_not[scope]);
        return 1;
    }
    id = (size_t)(k - key_table);
    if (st->line[id] != 0) {
        config_error(p, p->lineno, "%s given twice (first on line %d)",
                     k->name, st->line[id]);
        return 1;
    }
    st->line[id] = p->lineno;
    if (*value == '\0')
        return 1;  /* empty: keep the default */
    if (config_set(k, value, base, why, sizeof why) < 0) {
        st->bad[id] = true;
        config_error(p, p->lineno, "%s: %s", k->name, why);
        return 1;
    }
    if (k->has_flag)
        *(bool *)((char *)base + k->flag_off) = true;
    if (k->type == KT_PROFILES) {
        st->profiles = strdup(value);
        if (st->profiles == NULL) {
            st->bad[id] = true;
            config_error(p, p->lineno, "out of memory");
        }
    }
    if (k->type == KT_LISTEN && k->scope == SCOPE_SERVICE) {
        p->nlisten_total += ((struct service *)base)->nlisten;
        if (p->nlisten_total > CONFIG_MAX_LISTEN) {
            st->bad[id] = true;
            config_error(p, p->lineno,
                         "too many listen addresses (at most %d in all)",
                         CONFIG_MAX_LISTEN);
        }
    }
    return 1;
}

/* config_line_done - after inih had a key line: if it did not call the
 * handler, the line was not "key = value". */
static void config_line_done(struct parser *p)
{
    if (p->expect_key && !p->got_key)
        config_error(p, p->lineno, "expected \"key = value\" or "
                                   "\"[section]\"");
    p->expect_key = false;
    p->got_key = false;
}

/* config_getline - read the next line into p->line without its LF; bytes
 * past the buffer are read and dropped (*over set).  Returns the length,
 * or -1 at the end of the file or on a read error (reported). */
static long config_getline(struct parser *p, bool *over)
{
    size_t n = 0;
    bool any = false;
    int c;

    *over = false;
    while ((c = getc(p->f)) != EOF) {
        any = true;
        if (c == '\n')
            break;
        if (n < sizeof p->line - 1)
            p->line[n++] = (char)c;
        else
            *over = true;
    }
    if (c == EOF && ferror(p->f)) {
        config_error(p, 0, "read error: %s", strerror(errno));
        p->read_failed = true;
        return -1;
    }
    if (!any)
        return -1;
    p->line[n] = '\0';
    return (long)n;
}

/* config_read_line - inih's reader: skip blank and comment lines, handle
 * section headers, check the line, and hand inih the next key line with
 * leading whitespace removed.  NULL at the end of the file. */
static char *config_read_line(char *str, int num, void *stream)
{
    struct parser *p = stream;
    size_t max = num > 1 ? (size_t)num - 1 : 0;
    long got;
    bool over;

    if (max > sizeof p->line - 1)
        max = sizeof p->line - 1;
    config_line_done(p);
    while ((got = config_getline(p, &over)) >= 0) {
        char *s = p->line;
        size_t n = (size_t)got, i;

        p->lineno++;
        if (p->lineno == 1 && n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
            s += 3;
            n -= 3;
        }
        while (n > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            n--;
        }
        if (n == 0 || *s == ';' || *s == '#')
            continue;  /* blank or comment: any length, any bytes */
        /* An inline comment starts with ';' or '#' after a blank (inih
         * knows only ';'); cut here, it does not count for the length. */
        for (i = 1; i < n; i++) {
            if ((s[i] == ';' || s[i] == '#') &&
                (s[i - 1] == ' ' || s[i - 1] == '\t')) {
                n = i;
                over = false;
                break;
            }
        }
        if (over || n > max) {
            config_error(p, p->lineno, "line too long (at most %zu bytes "
                                       "before a comment)", max);
            continue;
        }
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' ||
                         s[n - 1] == '\r'))
            n--;
        s[n] = '\0';
        for (i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];

            if ((c < 0x20 && c != '\t') || c == 0x7f)
                break;
        }
        if (i < n) {
            config_error(p, p->lineno, "control character \\x%02x in line",
                         (unsigned char)s[i]);
            continue;
        }
        if (*s == '[') {
            config_section(p, s);
            continue;
        }
        memcpy(str, s, n + 1);
        p->expect_key = true;
        return str;
    }
    return NULL;
}

/* config_resolve_profiles - point the profiles of service svc (the names
 * kept in st) at the [profile NAME] sections, in the order given; a name
 * with no section is an error on the key's line.  Then the rules between
 * the service and its profiles, on its header line. */
static void config_resolve_profiles(struct parser *p, struct service *svc,
                                    struct sect_state *st)
{
    static const char *const ctls[] = { "none", "may", "encrypt" };
    struct config *cfg = p->cfg;
    char why[CONFIG_WHY_BUF];
    const struct profile **list;
    size_t n, i, j;
    char *copy, **items;

    if (st->profiles == NULL || st->bad[K_PROFILES])
        return;
    /* checked when read: cannot fail but for memory */
    if (config_list_split(st->profiles, "name", &copy, &items, &n, why,
                          sizeof why) < 0 ||
        (list = calloc(n, sizeof *list)) == NULL) {
        config_error(p, st->line[K_PROFILES], "out of memory");
        free(copy);
        free(items);
        return;
    }
    svc->profiles = list;
    for (i = 0; i < n; i++) {
        for (j = 0; j < cfg->nprofiles; j++) {
            if (strcasecmp(cfg->profiles[j].name, items[i]) == 0)
                break;
        }
        if (j == cfg->nprofiles) {
            /* the name was checked: letters, digits, '-', '_', '.' */
            config_error(p, st->line[K_PROFILES],
                         "profiles: no section [profile %s]", items[i]);
            continue;
        }
        list[svc->nprofiles++] = &cfg->profiles[j];
    }
    free(copy);
    free(items);
    for (i = 0; i < svc->nprofiles; i++) {
        const struct profile *pr = svc->profiles[i];

        if (!pr->has_client_tls)
            continue;
        if (pr->client_tls != CLIENT_TLS_NONE &&
            (svc->cert == NULL || svc->key == NULL) &&
            !st->bad[K_CERT] && !st->bad[K_KEY] &&
            svc->client_tls == CLIENT_TLS_NONE && !svc->client_implicit_tls)
            config_error(p, svc->line,
                         "service [%s]: profile [%s] sets client_tls = %s, "
                         "which needs cert and key", svc->name, pr->name,
                         ctls[pr->client_tls]);
        if (pr->client_tls == CLIENT_TLS_NONE && svc->client_implicit_tls)
            config_error(p, svc->line,
                         "service [%s]: profile [%s] sets client_tls = none, "
                         "but the service has client_implicit_tls = yes",
                         svc->name, pr->name);
    }
}

/* config_check_certs - cert and key are lists of the same length; the
 * first pair is also the service's cert and key.  client_ok: client_tls
 * and client_implicit_tls were read well, so tls_on can be trusted. */
static void config_check_certs(struct parser *p, struct service *svc,
                               struct sect_state *st, bool client_ok,
                               bool tls_on)
{
    size_t ncert = 0, nkey = 0, i;

    for (i = 0; i < svc->ncerts; i++) {
        ncert += svc->certs[i].cert != NULL;
        nkey += svc->certs[i].key != NULL;
    }
    if (svc->ncerts > 0) {
        svc->cert = svc->certs[0].cert;  /* owned by certs */
        svc->key = svc->certs[0].key;
    }
    if (st->bad[K_CERT] || st->bad[K_KEY])
        return;
    if (ncert > 0 && nkey > 0) {
        if (ncert != nkey)
            config_error(p, svc->line,
                         "service [%s]: cert lists %zu file%s but key lists "
                         "%zu", svc->name, ncert, ncert == 1 ? "" : "s",
                         nkey);
        return;
    }
    if (!client_ok)
        return;  /* the bad client_tls value was reported */
    if (tls_on)
        config_error(p, svc->line,
                     "service [%s]: %s required unless client_tls = "
                     "none", svc->name,
                     ncert == 0 && nkey == 0 ? "cert and key are"
                     : ncert == 0            ? "cert is"
                                             : "key is");
    else if (ncert != nkey)
        config_error(p, svc->line, "service [%s]: %s is given without %s",
                     svc->name, ncert ? "cert" : "key",
                     ncert ? "key" : "cert");
}

#define CONFIG_AUTH_FILE_MAX 4096  /* bytes of a backend_auth_file */
#define CONFIG_AUTH_FIELD_MAX 255  /* bytes of its user or password */

/* config_auth_owner_ok - may uid own a backend_auth_file?  root, the
 * configured user (or the default one, starttls-proxy, when it exists),
 * or whoever runs the proxy (an unprivileged start reads it as itself). */
static bool config_auth_owner_ok(const struct config *cfg, uid_t uid)
{
    const char *name = cfg->user != NULL ? cfg->user : "starttls-proxy";
    const struct passwd *pw;

    if (uid == 0 || uid == geteuid())
        return true;
    pw = getpwnam(name);
    return pw != NULL && pw->pw_uid == uid;
}

/* config_auth_field - the value of a "user NAME" or "password SECRET"
 * line: the rest of the line after the blanks that follow the word, taken
 * as it is (a password may hold blanks), into a new string at *out. */
static int config_auth_field(const char *v, char **out, const char *what,
                             char *why, size_t why_len)
{
    size_t n = strlen(v);

    if (*out != NULL) {
        snprintf(why, why_len, "%s is given twice", what);
        return -1;
    }
    if (n == 0 || n > CONFIG_AUTH_FIELD_MAX) {
        snprintf(why, why_len, "%s must be 1..%d bytes", what,
                 CONFIG_AUTH_FIELD_MAX);
        return -1;
    }
    if ((*out = strdup(v)) == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    return 0;
}

/*
 * config_auth_parse - the text of a backend_auth_file: lines "user NAME"
 * and "password SECRET" (LF or CRLF), blank lines and lines starting
 * with '#' ignored.  Sets *user (NULL when there is no user line) and
 * *password.  The secret never goes into why.
 */
static int config_auth_parse(char *text, char **user, char **password,
                             char *why, size_t why_len)
{
    char *line = text, *next, *v;
    unsigned lineno = 0;

    *user = *password = NULL;
    for (; line != NULL && *line != '\0'; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        if (*line != '\0' && line[strlen(line) - 1] == '\r')
            line[strlen(line) - 1] = '\0';
        if (*line == '\0' || *line == '#')
            continue;
        v = line + strcspn(line, " \t");
        if (*v != '\0')
            *v++ = '\0';
        v += strspn(v, " \t");
        if (strcmp(line, "user") == 0) {
            if (config_auth_field(v, user, "user", why, why_len) < 0)
                goto bad;
        } else if (strcmp(line, "password") == 0) {
            if (config_auth_field(v, password, "password", why, why_len) < 0)
                goto bad;
        } else {
            snprintf(why, why_len, "line %u: \"user NAME\" or \"password "
                     "SECRET\" expected", lineno);
            goto bad;
        }
    }
    if (*password == NULL) {
        snprintf(why, why_len, "no password line");
        goto bad;
    }
    return 0;
bad:
    free(*user);
    if (*password != NULL)
        OPENSSL_cleanse(*password, strlen(*password));
    free(*password);
    *user = *password = NULL;
    return -1;
}

/*
 * config_load_auth - read service svc's backend_auth_file (at start and
 * on every reload, so before the privilege drop at start).  Refused when
 * it is not a regular file, when its group or others may read or write
 * it, or when it belongs to someone who is neither root nor the proxy's
 * user: a secret anyone else can read is no longer a secret.
 */
static void config_load_auth(struct parser *p, struct service *svc,
                             struct sect_state *st)
{
    int line = st->line[K_BACKEND_AUTH_FILE];
    char q[CONFIG_QUOTE_BUF], why[CONFIG_WHY_BUF];
    char buf[CONFIG_AUTH_FILE_MAX + 1];
    struct stat sb;
    ssize_t n;
    size_t len = 0;
    int fd;

    config_quote(q, sizeof q, svc->backend_auth_file);
    fd = open(svc->backend_auth_file, O_RDONLY | O_NOCTTY | O_NONBLOCK |
                                          O_CLOEXEC);
    if (fd < 0) {
        config_error(p, line, "backend_auth_file %s: %s", q, strerror(errno));
        return;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        config_error(p, line, "backend_auth_file %s: not a regular file", q);
        close(fd);
        return;
    }
    if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
        config_error(p, line, "backend_auth_file %s: mode %04o lets group or "
                     "others at the secret; chmod 0600 it", q,
                     (unsigned)(sb.st_mode & 07777));
        close(fd);
        return;
    }
    if (!config_auth_owner_ok(p->cfg, sb.st_uid)) {
        config_error(p, line, "backend_auth_file %s: owned by uid %lu, "
                     "neither root nor the proxy's user", q,
                     (unsigned long)sb.st_uid);
        close(fd);
        return;
    }
    while (len < sizeof buf - 1 &&
           (n = read(fd, buf + len, sizeof buf - 1 - len)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    if (len == sizeof buf - 1 || memchr(buf, '\0', len) != NULL) {
        config_error(p, line, "backend_auth_file %s: not a text file of at "
                     "most %d bytes", q, CONFIG_AUTH_FILE_MAX - 1);
    } else if (config_auth_parse(buf, &svc->auth_user, &svc->auth_password,
                                 why, sizeof why) < 0) {
        config_error(p, line, "backend_auth_file %s: %s", q, why);
    } else if (svc->backend_auth_user != NULL && svc->auth_user != NULL) {
        config_error(p, line, "backend_auth_file %s has a user line, and "
                     "backend_auth_user is set too: keep one", q);
    } else if (svc->backend_auth_user == NULL && svc->auth_user == NULL) {
        config_error(p, line, "backend_auth_file %s has no user line (or "
                     "set backend_auth_user)", q);
    } else if (svc->auth_user == NULL &&
               (svc->auth_user = strdup(svc->backend_auth_user)) == NULL) {
        config_error(p, line, "out of memory");
    }
    OPENSSL_cleanse(buf, sizeof buf);
}

/*
 * config_check_auth - backend_auth: the credentials only ever go over
 * TLS, so the backend policy must be one that never falls back to
 * plaintext, and a relay through the account must not be open to the
 * world (sources).  Then the file is read.
 */
static void config_check_auth(struct parser *p, struct service *svc,
                              struct sect_state *st)
{
    static const char *const btls[] = { "none", "may", "encrypt", "verify",
                                        "dane", "dane-only", "fingerprint",
                                        "sts" };

    if (st->bad[K_BACKEND_AUTH])
        return;
    if (svc->backend_auth == BACKEND_AUTH_NONE) {
        if (svc->backend_auth_file != NULL)
            config_error(p, st->line[K_BACKEND_AUTH_FILE],
                         "service [%s]: backend_auth_file needs "
                         "backend_auth = plain or login", svc->name);
        if (svc->backend_auth_user != NULL)
            config_error(p, st->line[K_BACKEND_AUTH_USER],
                         "service [%s]: backend_auth_user needs "
                         "backend_auth = plain or login", svc->name);
        return;
    }
    if (!st->bad[K_BACKEND_TLS] &&
        (svc->backend_tls == BACKEND_TLS_NONE ||
         svc->backend_tls == BACKEND_TLS_MAY ||
         svc->backend_tls == BACKEND_TLS_DANE ||
         svc->backend_tls == BACKEND_TLS_STS))
        config_error(p, st->line[K_BACKEND_AUTH],
                     "service [%s]: backend_auth needs a backend_tls that "
                     "never falls back to plaintext (encrypt, verify, "
                     "fingerprint, dane-only), not %s", svc->name,
                     btls[svc->backend_tls]);
    if (!st->bad[K_ENFORCE] && !svc->enforce)
        config_error(p, st->line[K_BACKEND_AUTH],
                     "service [%s]: backend_auth needs enforce = yes (under "
                     "enforce = no a TLS failure would go on in plaintext)",
                     svc->name);
    /* the account's secret goes to the backend: under transparent that
     * is wherever a client connects to, any server on the internet */
    if (!st->bad[K_TRANSPARENT] && svc->transparent != TRANSPARENT_OFF)
        config_error(p, st->line[K_BACKEND_AUTH],
                     "service [%s]: backend_auth cannot be used with "
                     "transparent (the login would go to whatever server "
                     "a client connects to)", svc->name);
    /* Postfix forgets a SASL login at XCLIENT (it starts the session
     * over), and a provider takes no XCLIENT from us anyway */
    if (!st->bad[K_BACKEND_CLIENT_ADDRESS] &&
        svc->backend_client_address == CLIENT_ADDRESS_XCLIENT)
        config_error(p, st->line[K_BACKEND_AUTH],
                     "service [%s]: backend_auth and backend_client_address "
                     "= xclient do not go together (XCLIENT would undo the "
                     "login)", svc->name);
    if (svc->nsources == 0 && !st->bad[K_SOURCES])
        config_error(p, st->line[K_BACKEND_AUTH],
                     "service [%s]: backend_auth needs sources (the clients "
                     "that may send through the account; without it the "
                     "proxy is an open relay on the provider's account)",
                     svc->name);
    if (svc->backend_auth_file == NULL) {
        if (!st->bad[K_BACKEND_AUTH_FILE])
            config_error(p, st->line[K_BACKEND_AUTH],
                         "service [%s]: backend_auth needs "
                         "backend_auth_file", svc->name);
        return;
    }
    config_load_auth(p, svc, st);
}

/*
 * config_check_transparent - transparent = redirect | tproxy: the backend
 * is each connection's original destination, an address and a port.
 * Nothing names it before the client connects, so what needs a name or a
 * domain cannot apply: no backend key, no mx:, no DANE or MTA-STS (the
 * backend is connected before the client names a recipient), no pins
 * (one pin list for every destination), and verify only against a
 * configured backend_verify_name.  A PROXY header's destination would
 * come from the load balancer, not from the kernel: refused too.
 */
static void config_check_transparent(struct parser *p, struct service *svc,
                                     struct sect_state *st)
{
    static const char *const btls[] = {
        "none", "may", "encrypt", "verify", "dane", "dane-only",
        "fingerprint", "sts" };

    if (st->bad[K_TRANSPARENT])
        return;
    if (svc->transparent == TRANSPARENT_OFF) {
        if (st->line[K_TRANSPARENT_DESTINATIONS] != 0)
            config_error(p, st->line[K_TRANSPARENT_DESTINATIONS],
                         "service [%s]: transparent_destinations needs "
                         "transparent = redirect | tproxy", svc->name);
        if (st->line[K_TRANSPARENT_SOURCE] != 0 &&
            !st->bad[K_TRANSPARENT_SOURCE] &&
            svc->transparent_source == TRANSPARENT_SOURCE_CLIENT)
            config_error(p, st->line[K_TRANSPARENT_SOURCE],
                         "service [%s]: transparent_source = client needs "
                         "transparent = tproxy", svc->name);
        return;
    }
    if (st->line[K_BACKEND] != 0)
        config_error(p, st->line[K_BACKEND],
                     "service [%s]: backend cannot be given with "
                     "transparent (the backend is the connection's "
                     "original destination)", svc->name);
    if (!st->bad[K_TRANSPARENT_SOURCE] &&
        svc->transparent_source == TRANSPARENT_SOURCE_CLIENT &&
        svc->transparent != TRANSPARENT_TPROXY)
        config_error(p, st->line[K_TRANSPARENT_SOURCE],
                     "service [%s]: transparent_source = client needs "
                     "transparent = tproxy", svc->name);
    if (svc->backend_health != BACKEND_HEALTH_NONE &&
        !st->bad[K_BACKEND_HEALTH])
        config_error(p, st->line[K_BACKEND_HEALTH],
                     "service [%s]: backend_health cannot be used with "
                     "transparent (there is no one backend to probe)",
                     svc->name);
    if (svc->client_proxy_protocol && !st->bad[K_CLIENT_PROXY_PROTOCOL])
        config_error(p, st->line[K_CLIENT_PROXY_PROTOCOL],
                     "service [%s]: client_proxy_protocol cannot be used "
                     "with transparent (the original destination comes "
                     "from the kernel)", svc->name);
    if (st->bad[K_BACKEND_TLS])
        return;
    switch (svc->backend_tls) {
    case BACKEND_TLS_NONE:
    case BACKEND_TLS_MAY:
    case BACKEND_TLS_ENCRYPT:
        break;
    case BACKEND_TLS_VERIFY:
        if (svc->backend_verify_name == NULL &&
            !st->bad[K_BACKEND_VERIFY_NAME])
            config_error(p, st->line[K_BACKEND_TLS],
                         "service [%s]: backend_tls = verify with "
                         "transparent needs backend_verify_name (only the "
                         "destination's address is known)", svc->name);
        break;
    default:
        config_error(p, st->line[K_BACKEND_TLS],
                     "service [%s]: backend_tls = %s cannot be used with "
                     "transparent (use none, may, encrypt, or verify with "
                     "backend_verify_name: only the destination's address "
                     "is known, and the backend is connected before the "
                     "client names a recipient)", svc->name,
                     btls[svc->backend_tls]);
        break;
    }
}

/* config_check_service - the rules between the keys of service i; errors
 * name its header line.  Keys whose value was rejected are not checked
 * again. */
static void config_check_service(struct parser *p, size_t i)
{
    static const char *const ccert[] = { "none", "ask", "require" };
    struct service *svc = &p->cfg->services[i];
    struct sect_state *st = &p->svc_state[i];
    bool client_ok = !st->bad[K_CLIENT_TLS] && !st->bad[K_CLIENT_IMPLICIT_TLS];
    bool tls_on = svc->client_tls != CLIENT_TLS_NONE ||
                  svc->client_implicit_tls;
    size_t j, a, b;

    if (svc->nlisten == 0 && !st->bad[K_LISTEN])
        config_error(p, svc->line, "service [%s]: listen is required",
                     svc->name);
    if (svc->backend_host == NULL && !st->bad[K_BACKEND] &&
        svc->transparent == TRANSPARENT_OFF && !st->bad[K_TRANSPARENT])
        config_error(p, svc->line, "service [%s]: backend is required "
                     "(or transparent = redirect | tproxy)", svc->name);
    config_check_transparent(p, svc, st);
    if (client_ok && svc->client_implicit_tls &&
        svc->client_tls == CLIENT_TLS_NONE)
        config_error(p, svc->line,
                     "service [%s]: client_implicit_tls needs TLS, but "
                     "client_tls = none", svc->name);
    config_check_certs(p, svc, st, client_ok, tls_on);
    if (!st->bad[K_CLIENT_CERT] && svc->client_cert != CLIENT_CERT_NONE) {
        if (svc->client_ca_file == NULL)
            config_error(p, svc->line,
                         "service [%s]: client_cert = %s needs "
                         "client_ca_file", svc->name,
                         ccert[svc->client_cert]);
        if (client_ok && !tls_on)
            config_error(p, svc->line,
                         "service [%s]: client_cert = %s needs TLS, but "
                         "client_tls = none", svc->name,
                         ccert[svc->client_cert]);
    }
    if (svc->client_proxy_protocol && svc->ntrusted_proxies == 0 &&
        !st->bad[K_TRUSTED_PROXIES])
        config_error(p, svc->line,
                     "service [%s]: client_proxy_protocol needs "
                     "trusted_proxies", svc->name);
    if (!st->bad[K_BACKEND_TLS] && !st->bad[K_BACKEND_IMPLICIT_TLS] &&
        svc->backend_implicit_tls && svc->backend_tls == BACKEND_TLS_NONE)
        config_error(p, svc->line,
                     "service [%s]: backend_implicit_tls needs TLS, but "
                     "backend_tls = none", svc->name);
    if (!st->bad[K_BACKEND_HEALTH] && !st->bad[K_BACKEND] &&
        svc->backend_health != BACKEND_HEALTH_NONE && svc->backend_mx)
        config_error(p, st->line[K_BACKEND_HEALTH],
                     "service [%s]: backend_health needs a host:port "
                     "backend, not mx: (its next hops change with DNS and "
                     "each session already tries them in turn)", svc->name);
    if (!st->bad[K_BACKEND_HEALTH] && !st->bad[K_BACKEND_IMPLICIT_TLS] &&
        svc->backend_health == BACKEND_HEALTH_SMTP &&
        svc->backend_implicit_tls)
        config_error(p, st->line[K_BACKEND_HEALTH],
                     "service [%s]: backend_health = smtp reads a plaintext "
                     "greeting, but backend_implicit_tls = yes: use "
                     "backend_health = connect", svc->name);
    /* a client trickling a command is cut off as soon as an idle one */
    if (st->line[K_COMMAND_TIMEOUT] == 0)
        svc->command_timeout = svc->idle_timeout;
    if (!st->bad[K_BACKEND_TLS] && !st->bad[K_BACKEND] &&
        svc->backend_host != NULL && !svc->backend_mx &&
        (svc->backend_tls == BACKEND_TLS_DANE ||
         svc->backend_tls == BACKEND_TLS_DANE_ONLY) &&
        config_numeric_address(svc->backend_host))
        config_error(p, st->line[K_BACKEND_TLS],
                     "service [%s]: backend_tls = %s needs a backend host "
                     "name (TLSA records are found by name), not an address",
                     svc->name, svc->backend_tls == BACKEND_TLS_DANE
                                    ? "dane" : "dane-only");
    /* RFC 8461: a policy belongs to a mail domain, found by MX */
    if (!st->bad[K_BACKEND_TLS] && !st->bad[K_BACKEND] &&
        svc->backend_host != NULL && !svc->backend_mx &&
        svc->backend_tls == BACKEND_TLS_STS)
        config_error(p, st->line[K_BACKEND_TLS],
                     "service [%s]: backend_tls = sts needs backend = "
                     "mx:DOMAIN (MTA-STS policies belong to mail domains)",
                     svc->name);
    if (!st->bad[K_BACKEND_TLS] && !st->bad[K_BACKEND_TLS_FINGERPRINTS]) {
        if (svc->backend_tls == BACKEND_TLS_FINGERPRINT &&
            svc->nbackend_pins == 0)
            config_error(p, st->line[K_BACKEND_TLS],
                         "service [%s]: backend_tls = fingerprint needs "
                         "backend_tls_fingerprints", svc->name);
        if (svc->backend_tls != BACKEND_TLS_FINGERPRINT &&
            svc->nbackend_pins > 0)
            config_error(p, st->line[K_BACKEND_TLS_FINGERPRINTS],
                         "service [%s]: backend_tls_fingerprints needs "
                         "backend_tls = fingerprint", svc->name);
    }
    /* mx: the certificate names the MX host found (see backend.c) */
    if (svc->backend_verify_name == NULL && svc->backend_host != NULL &&
        !svc->backend_mx) {
        svc->backend_verify_name = strdup(svc->backend_host);
        if (svc->backend_verify_name == NULL)
            config_error(p, svc->line, "out of memory");
    }
    /* The same address in two services: the later one is wrong. */
    for (j = 0; j < i; j++) {
        const struct service *o = &p->cfg->services[j];

        for (a = 0; a < svc->nlisten; a++) {
            for (b = 0; b < o->nlisten; b++) {
                if (config_addr_equal(&svc->listen[a], &o->listen[b]))
                    config_error(p, st->line[K_LISTEN],
                                 "listen: %s is already used by service "
                                 "[%s] (line %d)", svc->listen[a].text,
                                 o->name, p->svc_state[j].line[K_LISTEN]);
            }
        }
    }
    for (a = 0; a < svc->nlisten; a++)
        for (b = 0; b < p->cfg->nmetrics_listen; b++)
            if (config_addr_equal(&svc->listen[a], &p->cfg->metrics_listen[b]))
                config_error(p, st->line[K_LISTEN],
                             "listen: %s is already metrics_listen (line %d)",
                             svc->listen[a].text,
                             p->proxy.line[K_METRICS_LISTEN]);
    config_check_auth(p, svc, st);
    config_resolve_profiles(p, svc, st);
}

/* config_check_profile - the rules of profile i; errors name its header
 * line. */
static void config_check_profile(struct parser *p, size_t i)
{
    const struct profile *pr = &p->cfg->profiles[i];

    if (pr->nsources == 0 && !p->prof_state[i].bad[KP_SOURCES])
        config_error(p, pr->line, "profile [%s]: sources is required",
                     pr->name);
}

/* config_check_account - user, group and chroot name what exists (the
 * privilege drop itself is main.c's). */
static void config_check_account(struct parser *p)
{
    struct config *cfg = p->cfg;
    char q[CONFIG_QUOTE_BUF];
    struct stat st;

    if (cfg->user != NULL && getpwnam(cfg->user) == NULL)
        config_error(p, p->proxy.line[K_USER], "user %s does not exist",
                     config_quote(q, sizeof q, cfg->user));
    if (cfg->group != NULL && getgrnam(cfg->group) == NULL)
        config_error(p, p->proxy.line[K_GROUP], "group %s does not exist",
                     config_quote(q, sizeof q, cfg->group));
    if (cfg->group != NULL && cfg->user == NULL && !p->proxy.bad[K_GROUP])
        config_error(p, p->proxy.line[K_GROUP], "group needs user");
    if (cfg->chroot_dir != NULL &&
        (cfg->chroot_dir[0] != '/' || stat(cfg->chroot_dir, &st) != 0 ||
         !S_ISDIR(st.st_mode)))
        config_error(p, p->proxy.line[K_CHROOT],
                     "chroot %s is not an absolute path to a directory",
                     config_quote(q, sizeof q, cfg->chroot_dir));
}

/* config_check_tlsrpt - tlsrpt = yes needs an organization and a contact
 * address (its domain names the reports' submitter). */
static void config_check_tlsrpt(struct parser *p)
{
    struct config *cfg = p->cfg;
    const char *at;

    if (!cfg->tlsrpt)
        return;
    if (cfg->tlsrpt_organization == NULL && !p->proxy.bad[K_TLSRPT_ORGANIZATION])
        config_error(p, p->proxy.line[K_TLSRPT],
                     "tlsrpt = yes needs tlsrpt_organization (the report's "
                     "organization-name)");
    if (cfg->tlsrpt_contact == NULL) {
        if (!p->proxy.bad[K_TLSRPT_CONTACT])
            config_error(p, p->proxy.line[K_TLSRPT],
                         "tlsrpt = yes needs tlsrpt_contact (an address "
                         "for questions about the reports)");
    } else if ((at = strrchr(cfg->tlsrpt_contact, '@')) == NULL ||
               at == cfg->tlsrpt_contact ||
               !config_valid_name(at + 1, false) ||
               strpbrk(cfg->tlsrpt_contact, " \t!/") != NULL) {
        config_error(p, p->proxy.line[K_TLSRPT_CONTACT],
                     "tlsrpt_contact: an address user@domain is expected");
    }
    if (cfg->tlsrpt_dir[0] != '/')
        config_error(p, p->proxy.line[K_TLSRPT_DIR],
                     "tlsrpt_dir: an absolute path is expected");
}

/* config_check - rules that need the whole file. */
static void config_check(struct parser *p)
{
    struct config *cfg = p->cfg;
    char q[CONFIG_QUOTE_BUF];
    size_t i;

    if (cfg->hostname == NULL && !p->proxy.bad[K_HOSTNAME]) {
        char host[256];

        if (gethostname(host, sizeof host) < 0) {
            config_error(p, 0, "cannot get the host name: %s; set "
                               "hostname in [proxy]", strerror(errno));
        } else {
            host[sizeof host - 1] = '\0';
            if (!config_valid_name(host, false)) {
                config_error(p, 0, "the system host name %s is not a valid "
                                   "domain name; set hostname in [proxy]",
                             config_quote(q, sizeof q, host));
            } else {
                cfg->hostname = strdup(host);
                if (cfg->hostname == NULL)
                    config_error(p, 0, "out of memory");
            }
        }
    }
    config_check_account(p);
    config_check_tlsrpt(p);
    if (cfg->nservices == 0)
        config_error(p, 0, "no service defined");
    for (i = 0; i < cfg->nprofiles; i++)
        config_check_profile(p, i);
    for (i = 0; i < cfg->nservices; i++)
        config_check_service(p, i);
}

/* config_copy_lines - a copy of a section's key lines (K_COUNT ints). */
static int *config_copy_lines(struct parser *p, const int *lines)
{
    int *copy = malloc(K_COUNT * sizeof *copy);

    if (copy == NULL)
        config_error(p, 0, "out of memory");
    else
        memcpy(copy, lines, K_COUNT * sizeof *copy);
    return copy;
}

int config_load_stream(FILE *f, const char *path, struct config **out,
                       char *err, size_t err_len)
{
    struct parser p;
    size_t i;
    int r;

    if (path == NULL)
        path = "-";
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    memset(&p, 0, sizeof p);
    p.path = path;
    p.f = f;
    p.cur = CUR_NONE;
    p.err = err;
    p.err_len = err != NULL ? err_len : 0;

    p.cfg = calloc(1, sizeof *p.cfg);
    if (p.cfg == NULL || (p.cfg->path = strdup(path)) == NULL) {
        config_error(&p, 0, "out of memory");
        free(p.cfg);
        return -1;
    }
    config_defaults(&p, p.cfg, SCOPE_PROXY);
    r = ini_parse_stream(config_read_line, &p, config_handle_key, &p);
    config_line_done(&p);
    /* r > 0 is the first line inih disliked: already reported, since
     * config_line_done() sees every key line inih did not accept. */
    if (r < 0)
        config_error(&p, 0, "out of memory");
    if (!p.read_failed)
        config_check(&p);
    /* the line of each key, for errors found later (certificates...) */
    for (i = 0; i < p.cfg->nservices; i++)
        p.cfg->services[i].key_lines =
            config_copy_lines(&p, p.svc_state[i].line);
    for (i = 0; i < p.cfg->nprofiles; i++)
        p.cfg->profiles[i].key_lines =
            config_copy_lines(&p, p.prof_state[i].line);
    for (i = 0; i < p.cfg->nservices; i++)
        free(p.svc_state[i].profiles);
    free(p.svc_state);
    free(p.prof_state);
    if (p.nerr != 0) {
        config_free(p.cfg);
        return -1;
    }
    *out = p.cfg;
    return 0;
}

/* config_key_line_of - the line of key name in a section's key_lines,
 * or section_line when it was not given. */
static int config_key_line_of(const int *key_lines, int section_line,
                              const char *name, enum key_scope scope)
{
    for (size_t i = 0; key_lines != NULL && i < K_COUNT; i++)
        if (key_table[i].scope == scope &&
            strcasecmp(key_table[i].name, name) == 0)
            return key_lines[i] != 0 ? key_lines[i] : section_line;
    return section_line;
}

/* config_service_dns - see config.h. */
bool config_service_dns(const struct service *svc)
{
    return svc->backend_mx || svc->backend_tls == BACKEND_TLS_DANE ||
           svc->backend_tls == BACKEND_TLS_DANE_ONLY ||
           svc->backend_tls == BACKEND_TLS_STS;
}

/* config_service_sts - see config.h. */
bool config_service_sts(const struct service *svc)
{
    return svc->backend_tls == BACKEND_TLS_STS;
}

/* config_sts_needed - see config.h. */
bool config_sts_needed(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nservices; i++)
        if (config_service_sts(&cfg->services[i]))
            return true;
    return false;
}

/* config_service_tlsrpt - see config.h. */
bool config_service_tlsrpt(const struct config *cfg,
                           const struct service *svc)
{
    return cfg->tlsrpt && svc->backend_mx &&
           (svc->backend_tls == BACKEND_TLS_DANE ||
            svc->backend_tls == BACKEND_TLS_DANE_ONLY ||
            svc->backend_tls == BACKEND_TLS_STS);
}

/* config_tlsrpt_needed - see config.h. */
bool config_tlsrpt_needed(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nservices; i++)
        if (config_service_tlsrpt(cfg, &cfg->services[i]))
            return true;
    return false;
}

/* config_service_key_line - see config.h. */
int config_service_key_line(const struct service *svc, const char *key)
{
    return config_key_line_of(svc->key_lines, svc->line, key, SCOPE_SERVICE);
}

/* config_profile_key_line - see config.h. */
int config_profile_key_line(const struct profile *pr, const char *key)
{
    return config_key_line_of(pr->key_lines, pr->line, key, SCOPE_PROFILE);
}

int config_load(const char *path, struct config **out, char *err,
                size_t err_len)
{
    FILE *f;
    int r;

    f = fopen(path, "re");
    if (f == NULL) {
        int e = errno;

        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "%s:0: cannot open: %s\n", path,
                     strerror(e));
        return -1;
    }
    r = config_load_stream(f, path, out, err, err_len);
    fclose(f);
    return r;
}

void config_free(struct config *cfg)
{
    size_t i;

    if (cfg == NULL)
        return;
    for (i = 0; i < cfg->nservices; i++) {
        struct service *svc = &cfg->services[i];

        if (svc->auth_password != NULL)
            OPENSSL_cleanse(svc->auth_password, strlen(svc->auth_password));
        free(svc->auth_password);
        free(svc->auth_user);
        config_free_fields(&cfg->services[i], SCOPE_SERVICE);
        free(cfg->services[i].name);
        free(cfg->services[i].key_lines);
    }
    free(cfg->services);
    for (i = 0; i < cfg->nprofiles; i++) {
        config_free_fields(&cfg->profiles[i], SCOPE_PROFILE);
        free(cfg->profiles[i].name);
        free(cfg->profiles[i].key_lines);
    }
    free(cfg->profiles);
    config_free_fields(cfg, SCOPE_PROXY);
    free(cfg->path);
    free(cfg);
}
