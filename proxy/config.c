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
 * to, its type and bounds, its default (as text, parsed by the same code
 * as a value from the file) and the field it fills.  Errors are collected,
 * not stopped at: the caller gets every "path:line: message" found.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CONFIG_MAX_SERVICES 256   /* sections besides [proxy] */
#define CONFIG_MAX_LISTEN 1024    /* listen addresses, all services */
#define CONFIG_LINE_BUF 1024      /* bytes of one line we keep */
#define CONFIG_SECTION_MAX 64     /* length of a service name */
#define CONFIG_QUOTE_MAX 60       /* bytes of file text shown in a message */
#define CONFIG_QUOTE_BUF (CONFIG_QUOTE_MAX * 4 + 8)
#define CONFIG_WHY_BUF 512

/* Where the parser is: before any header, in a section whose header was
 * bad or repeated (its keys are ignored), in [proxy], or (>= 0) in
 * that service. */
#define CUR_NONE (-1)
#define CUR_SKIP (-2)
#define CUR_PROXY (-3)

enum key_id {
    K_HOSTNAME,
    K_LOG_LEVEL,
    K_WORKERS,
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
    K_COUNT
};

enum key_scope { SCOPE_PROXY, SCOPE_SERVICE };

enum key_type {
    KT_PATH,      /* any text: char * */
    KT_DOMAIN,    /* our own host name, letters digits '.' '-': char * */
    KT_NAME,      /* a host name or a numeric address: char * */
    KT_BOOL,      /* bool */
    KT_ENUM,      /* an enum, stored as int */
    KT_UINT,      /* unsigned within [min, max] */
    KT_LISTEN,    /* struct listen_addr * at off, size_t count at off2 */
    KT_HOSTPORT   /* host char * at off, port char * at off2 */
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
    size_t off2;                   /* second field (KT_LISTEN, KT_HOSTPORT) */
    unsigned min, max;             /* KT_UINT */
    const struct enum_name *names; /* KT_ENUM, NULL-terminated */
    const char *def;               /* default, as text; NULL: unset */
};

_Static_assert(sizeof(enum log_level) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum client_tls) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum backend_tls) == sizeof(int), "enum stored as int");

static const struct enum_name log_level_names[] = {
    { "error", LOG_ERROR }, { "warn", LOG_WARN },
    { "info", LOG_INFO },   { "debug", LOG_DEBUG },
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
    { NULL, 0 }
};

/* One key_table entry; the last arguments set .def, bounds, names... */
#define PROXY_KEY(id, n, t, field, ...)                                    \
    [id] = { .name = n, .scope = SCOPE_PROXY, .type = t,                   \
             .off = offsetof(struct config, field), __VA_ARGS__ }
#define SERVICE_KEY(id, n, t, field, ...)                                  \
    [id] = { .name = n, .scope = SCOPE_SERVICE, .type = t,                 \
             .off = offsetof(struct service, field), __VA_ARGS__ }

/* The one description of every key. */
static const struct key_def key_table[K_COUNT] = {
    PROXY_KEY(K_HOSTNAME, "hostname", KT_DOMAIN, hostname,
              .def = NULL),  /* gethostname(), in config_check() */
    PROXY_KEY(K_LOG_LEVEL, "log_level", KT_ENUM, log_level,
              .names = log_level_names, .def = "info"),
    PROXY_KEY(K_WORKERS, "workers", KT_UINT, workers,
              .min = 0, .max = 256, .def = "0"),
    SERVICE_KEY(K_LISTEN, "listen", KT_LISTEN, listen,
                .off2 = offsetof(struct service, nlisten)),
    SERVICE_KEY(K_BACKEND, "backend", KT_HOSTPORT, backend_host,
                .off2 = offsetof(struct service, backend_port)),
    SERVICE_KEY(K_CLIENT_TLS, "client_tls", KT_ENUM, client_tls,
                .names = client_tls_names, .def = "may"),
    SERVICE_KEY(K_CLIENT_IMPLICIT_TLS, "client_implicit_tls", KT_BOOL,
                client_implicit_tls, .def = "no"),
    SERVICE_KEY(K_CERT, "cert", KT_PATH, cert, .def = NULL),
    SERVICE_KEY(K_KEY, "key", KT_PATH, key, .def = NULL),
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
};

/* What one section has seen: the line of each key (0: not given) and
 * whether its value was rejected. */
struct sect_state {
    int line[K_COUNT];
    bool bad[K_COUNT];
};

struct parser {
    const char *path;
    FILE *f;
    struct config *cfg;
    struct sect_state proxy;       /* [proxy] */
    struct sect_state *svc_state;  /* parallel to cfg->services */
    size_t svc_cap;
    size_t nlisten_total;
    int proxy_line;                /* header line of [proxy], 0: none */
    int cur;                       /* CUR_* or a service index */
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
    if (a->addr.ss_family != b->addr.ss_family)
        return false;
    if (a->addr.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)&a->addr;
        const struct sockaddr_in *y = (const struct sockaddr_in *)&b->addr;

        return x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    } else {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->addr;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)&b->addr;

        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
}

/* config_parse_listen - a comma-separated list of listen addresses, none
 * repeated.  *out is a new array of *count entries. */
static int config_parse_listen(const char *value, struct listen_addr **out,
                               size_t *count, char *why, size_t why_len)
{
    struct listen_addr *list;
    size_t n = 1, i, j;
    const char *c;
    char *copy, *item, *next;

    for (c = value; *c != '\0'; c++)
        n += *c == ',';
    copy = strdup(value);
    list = calloc(n, sizeof *list);
    if (copy == NULL || list == NULL) {
        snprintf(why, why_len, "out of memory");
        goto fail;
    }
    for (i = 0, item = copy; i < n; i++, item = next) {
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
            snprintf(why, why_len, "empty address in the list");
            goto fail;
        }
        if (config_parse_addr(item, &list[i], why, why_len) < 0)
            goto fail;
        for (j = 0; j < i; j++) {
            if (config_addr_equal(&list[i], &list[j])) {
                snprintf(why, why_len, "%s given twice", list[i].text);
                goto fail;
            }
        }
    }
    free(copy);
    *out = list;
    *count = n;
    return 0;
fail:
    free(copy);
    free(list);
    return -1;
}

/* config_parse_hostport - "host:port" or "[IPv6]:port" into a host name
 * without brackets and the port in canonical decimal. */
static int config_parse_hostport(const char *value, char **host_out,
                                 char **port_out, char *why, size_t why_len)
{
    char q[CONFIG_QUOTE_BUF];
    char portbuf[8];
    struct in6_addr a6;
    char *copy, *host, *h = NULL, *p = NULL;
    unsigned port;
    bool v6;

    copy = strdup(value);
    if (copy == NULL) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    if (config_split_port(copy, &host, &port, &v6, why, why_len) < 0)
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

/* config_set - parse value as key k and store it in base (a struct config
 * or struct service), replacing what was there.  On error returns -1 with
 * the reason in why and leaves base unchanged. */
static int config_set(const struct key_def *k, const char *value, void *base,
                      char *why, size_t why_len)
{
    char *field = (char *)base + k->off;
    char *field2 = (char *)base + k->off2;
    char q[CONFIG_QUOTE_BUF];
    struct in6_addr a6;
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
    case KT_UINT:
        return config_parse_uint(value, k->min, k->max, (unsigned *)field,
                                 why, why_len);
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

        if (config_parse_hostport(value, &host, &port, why, why_len) < 0)
            return -1;
        free(*(char **)field);
        free(*(char **)field2);
        *(char **)field = host;
        *(char **)field2 = port;
        return 0;
    }
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

/* config_free_fields - free what the keys of scope own in base. */
static void config_free_fields(void *base, enum key_scope scope)
{
    size_t i;

    for (i = 0; i < K_COUNT; i++) {
        const struct key_def *k = &key_table[i];
        char *field = (char *)base + k->off;

        if (k->scope != scope)
            continue;
        switch (k->type) {
        case KT_PATH:
        case KT_DOMAIN:
        case KT_NAME:
            free(*(char **)field);
            break;
        case KT_LISTEN:
            free(*(struct listen_addr **)field);
            break;
        case KT_HOSTPORT:
            free(*(char **)field);
            free(*(char **)((char *)base + k->off2));
            break;
        case KT_BOOL:
        case KT_ENUM:
        case KT_UINT:
            break;
        }
    }
}

/* config_key_find - the key named name (any case), or NULL. */
static const struct key_def *config_key_find(const char *name)
{
    size_t i;

    for (i = 0; i < K_COUNT; i++) {
        if (strcasecmp(key_table[i].name, name) == 0)
            return &key_table[i];
    }
    return NULL;
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
    if (cfg->nservices == p->svc_cap) {
        size_t cap = p->svc_cap ? p->svc_cap * 2 : 4;
        struct service *s2;
        struct sect_state *st2;

        s2 = realloc(cfg->services, cap * sizeof *s2);
        if (s2 == NULL)
            goto oom;
        cfg->services = s2;
        st2 = realloc(p->svc_state, cap * sizeof *st2);
        if (st2 == NULL)
            goto oom;
        p->svc_state = st2;
        p->svc_cap = cap;
    }
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
    for (i = 0; name[i] != '\0'; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.') ||
            i == CONFIG_SECTION_MAX) {
            config_error(p, p->lineno,
                         "bad section name %s (at most %d letters, digits, "
                         "'-', '_' or '.')",
                         config_quote(q, sizeof q, name), CONFIG_SECTION_MAX);
            return;
        }
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
    p->cur = r < 0 ? CUR_SKIP : r;
}

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
    } else {
        scope = SCOPE_SERVICE;
        st = &p->svc_state[p->cur];
        base = &p->cfg->services[p->cur];
    }
    k = config_key_find(name);
    if (k == NULL) {
        config_error(p, p->lineno, "unknown key %s",
                     config_quote(q, sizeof q, name));
        return 1;
    }
    if (k->scope != scope) {
        config_error(p, p->lineno,
                     scope == SCOPE_PROXY
                         ? "key %s belongs in a service section, not [proxy]"
                         : "key %s belongs in [proxy], not in a service",
                     k->name);
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
    if (k->type == KT_LISTEN) {
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

/* config_check_service - the rules between the keys of service i; errors
 * name its header line.  Keys whose value was rejected are not checked
 * again. */
static void config_check_service(struct parser *p, size_t i)
{
    struct service *svc = &p->cfg->services[i];
    struct sect_state *st = &p->svc_state[i];
    bool client_ok = !st->bad[K_CLIENT_TLS] && !st->bad[K_CLIENT_IMPLICIT_TLS];
    size_t j, a, b;

    if (svc->nlisten == 0 && !st->bad[K_LISTEN])
        config_error(p, svc->line, "service [%s]: listen is required",
                     svc->name);
    if (svc->backend_host == NULL && !st->bad[K_BACKEND])
        config_error(p, svc->line, "service [%s]: backend is required",
                     svc->name);
    if (client_ok && svc->client_implicit_tls &&
        svc->client_tls == CLIENT_TLS_NONE)
        config_error(p, svc->line,
                     "service [%s]: client_implicit_tls needs TLS, but "
                     "client_tls = none", svc->name);
    if (client_ok && (svc->client_tls != CLIENT_TLS_NONE ||
                      svc->client_implicit_tls)) {
        if (svc->cert == NULL || svc->key == NULL)
            config_error(p, svc->line,
                         "service [%s]: %s required unless client_tls = "
                         "none", svc->name,
                         svc->cert == NULL && svc->key == NULL
                             ? "cert and key are"
                             : svc->cert == NULL ? "cert is" : "key is");
    }
    if (!st->bad[K_BACKEND_TLS] && !st->bad[K_BACKEND_IMPLICIT_TLS] &&
        svc->backend_implicit_tls && svc->backend_tls == BACKEND_TLS_NONE)
        config_error(p, svc->line,
                     "service [%s]: backend_implicit_tls needs TLS, but "
                     "backend_tls = none", svc->name);
    if (svc->backend_verify_name == NULL && svc->backend_host != NULL) {
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
    if (cfg->nservices == 0)
        config_error(p, 0, "no service defined");
    for (i = 0; i < cfg->nservices; i++)
        config_check_service(p, i);
}

int config_load_stream(FILE *f, const char *path, struct config **out,
                       char *err, size_t err_len)
{
    struct parser p;
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
    free(p.svc_state);
    if (p.nerr != 0) {
        config_free(p.cfg);
        return -1;
    }
    *out = p.cfg;
    return 0;
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
        config_free_fields(&cfg->services[i], SCOPE_SERVICE);
        free(cfg->services[i].name);
    }
    free(cfg->services);
    config_free_fields(cfg, SCOPE_PROXY);
    free(cfg->path);
    free(cfg);
}
