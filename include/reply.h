/*
 * reply.h - the replies the proxy writes itself, in one table.
 *
 * Every reply carries an enhanced status code (RFC 3463).  Replies that
 * close the connection (421) name the proxy's host, as RFC 5321 4.2
 * asks of 421.
 */
#ifndef STARTTLS_PROXY_REPLY_H
#define STARTTLS_PROXY_REPLY_H

#include <stddef.h>

enum reply_id {
    REPLY_NONE = 0,
    REPLY_STARTTLS_GO,          /* 220 2.0.0 */
    REPLY_BACKEND_UNAVAILABLE,  /* 421 4.4.1 */
    REPLY_BACKEND_LOST,         /* 421 4.4.2 */
    REPLY_TIMEOUT,              /* 421 4.4.2 */
    REPLY_BACKEND_TLS_REQUIRED, /* 421 4.7.0 */
    REPLY_BACKEND_PROTOCOL,     /* 421 4.3.0 */
    REPLY_SHUTDOWN,             /* 421 4.3.2 */
    REPLY_LINE_TOO_LONG,        /* 500 5.5.2 */
    REPLY_STARTTLS_SYNTAX,      /* 501 5.5.4 */
    REPLY_BDAT_SYNTAX,          /* 501 5.5.4 */
    REPLY_NOT_IMPLEMENTED,      /* 502 5.5.1 */
    REPLY_STARTTLS_UNAVAILABLE, /* 502 5.5.1 */
    REPLY_NEED_HELO,            /* 503 5.5.1 */
    REPLY_MUST_STARTTLS,        /* 530 5.7.0 */
    REPLY_AUTH_NEEDS_TLS,       /* 538 5.7.11 */
    REPLY_TLS_ACTIVE,           /* 554 5.5.1 */
    REPLY_PREGREET,             /* 554 5.5.0 */
    REPLY_TOO_MANY_ERRORS,      /* 421 4.7.0 */
    REPLY_TOO_MANY_CONNECTIONS, /* 421 4.7.0 */
    REPLY_TOO_MANY_FROM_ADDRESS,/* 421 4.7.0 */
    REPLY_BARE_NEWLINE_COMMAND, /* 500 5.5.2 */
    REPLY_BARE_NEWLINE_MESSAGE, /* 550 5.5.2 */
    REPLY_PROXY_HEADER,         /* 421 4.7.0 */
    REPLY_NUL_COMMAND,          /* 500 5.5.2 */
    REPLY_NUL_MESSAGE,          /* 550 5.6.0 */
    REPLY_UNKNOWN_COMMAND,      /* 502 5.5.2 */
    REPLY_BACKEND_NULL_MX,      /* 554 5.1.10 */
    REPLY_BACKEND_DNS,          /* 421 4.4.3 */
    REPLY_REQUIRETLS_UNAVAILABLE, /* 555 5.5.4 */
    REPLY_REQUIRETLS_WEAKER,    /* 550 5.7.30 */
    REPLY_BACKEND_AUTH_FAILED,  /* 421 4.7.0 */
    REPLY_SOURCE_REFUSED,       /* 554 5.7.1 */
    REPLY_AUTH_BY_PROXY,        /* 503 5.5.1 */
    REPLY_TRANSPARENT_LOOP,     /* 554 5.4.6 */
    REPLY_TRANSPARENT_DENIED,   /* 554 5.7.1 */
    REPLY_TRANSPARENT_UNKNOWN,  /* 421 4.3.5 */
    REPLY_COUNT
};

/* reply_code - the three-digit code of a reply (0 for REPLY_NONE). */
int reply_code(enum reply_id id);


/*
 * reply_format - write the reply line with CRLF into out.  hostname is
 * used by the replies that name the host.  Returns the length, or 0 when
 * out is too small (out is then untouched).
 */
size_t reply_format(enum reply_id id, const char *hostname, char *out,
                    size_t cap);

#endif
