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

#define CONFIG_DEFAULT_PATH "/etc/starttls-proxy/starttls-proxy.ini"

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

enum client_tls { CLIENT_TLS_NONE = 0, CLIENT_TLS_MAY, CLIENT_TLS_ENCRYPT };

enum backend_tls {
    BACKEND_TLS_NONE = 0,
    BACKEND_TLS_MAY,
    BACKEND_TLS_ENCRYPT,
    BACKEND_TLS_VERIFY
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

    char *backend_host;            /* name or numeric address, no brackets */
    char *backend_port;            /* decimal port, 1..65535 */

    enum client_tls client_tls;    /* default: may */
    bool client_implicit_tls;      /* default: no */
    char *cert;                    /* NULL when not set */
    char *key;                     /* NULL when not set */
    bool client_plaintext_auth;    /* default: no */

    enum backend_tls backend_tls;  /* default: may */
    bool backend_implicit_tls;     /* default: no */
    char *backend_ca_file;         /* NULL: the system store */
    char *backend_verify_name;     /* never NULL after loading: defaults to
                                      backend_host */

    unsigned idle_timeout;         /* seconds, default 300, 1..86400 */
    unsigned max_line_length;      /* bytes incl. CRLF, default 2048,
                                      512..65536 */
};

struct config {
    char *path;
    char *hostname;                /* default: gethostname() */
    enum log_level log_level;      /* default: info */
    struct service *services;      /* at least one */
    size_t nservices;
    unsigned workers;              /* event loops (threads); 0: one per CPU */
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

/* config_free - release a config from config_load (NULL is fine). */
void config_free(struct config *cfg);

#endif
