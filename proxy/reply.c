/*
 * reply.c - the table of replies written by the proxy itself.
 */
#include "reply.h"

#include <stdio.h>
#include <string.h>

struct reply_def {
    const char *code;     /* "421 4.4.1" */
    int with_host;        /* text starts with our host name */
    const char *text;
};

static const struct reply_def reply_table[REPLY_COUNT] = {
    [REPLY_STARTTLS_GO] = {"220 2.0.0", 0, "Ready to start TLS"},
    [REPLY_BACKEND_UNAVAILABLE] = {"421 4.4.1", 1,
        "Service not available, backend unreachable; try again later"},
    [REPLY_BACKEND_LOST] = {"421 4.4.2", 1,
        "Connection to backend lost; try again later"},
    [REPLY_TIMEOUT] = {"421 4.4.2", 1, "Error: timeout exceeded"},
    [REPLY_BACKEND_TLS_REQUIRED] = {"421 4.7.0", 1,
        "TLS to the backend is required but could not be established; try again later"},
    [REPLY_BACKEND_PROTOCOL] = {"421 4.3.0", 1,
        "Backend protocol error; try again later"},
    [REPLY_SHUTDOWN] = {"421 4.3.2", 1, "Service shutting down"},
    /* RFC 7505 4.3: the next hop's domain publishes a null MX */
    [REPLY_BACKEND_NULL_MX] = {"554 5.1.10", 1,
        "The backend domain accepts no mail (null MX)"},
    /* RFC 8689 4: REQUIRETLS was not offered; or the path to the backend
     * is no longer authenticated TLS since it was */
    [REPLY_REQUIRETLS_UNAVAILABLE] = {"555 5.5.4", 0,
        "REQUIRETLS not available on this path"},
    [REPLY_REQUIRETLS_WEAKER] = {"550 5.7.30", 0,
        "REQUIRETLS support lost: the backend is no longer authenticated"},
    /* backend_auth: the proxy's own login to the backend was refused */
    [REPLY_BACKEND_AUTH_FAILED] = {"421 4.7.0", 1,
        "Authentication to the backend failed; try again later"},
    /* the service's sources do not hold the client */
    [REPLY_SOURCE_REFUSED] = {"554 5.7.1", 1,
        "Access denied: your address may not use this service"},
    /* backend_auth: the proxy is logged in for every client */
    [REPLY_AUTH_BY_PROXY] = {"503 5.5.1", 0,
        "Error: already authenticated (the proxy logs in to the backend)"},
    /* transparent interception, before any backend connection: the
     * original destination is the proxy itself (RFC 3463 X.4.6: routing
     * loop detected), is not one the proxy may relay to (X.7.1: delivery
     * not authorized), or cannot be learnt (X.3.5: system incorrectly
     * configured, e.g. no conntrack entry) */
    [REPLY_TRANSPARENT_LOOP] = {"554 5.4.6", 1,
        "Routing loop detected: the destination is this proxy"},
    [REPLY_TRANSPARENT_DENIED] = {"554 5.7.1", 1,
        "Relaying to this destination is not allowed"},
    [REPLY_TRANSPARENT_UNKNOWN] = {"421 4.3.5", 1,
        "Original destination unknown; try again later"},
    [REPLY_BACKEND_DNS] = {"421 4.4.3", 1,
        "Backend not found in DNS; try again later"},
    [REPLY_LINE_TOO_LONG] = {"500 5.5.2", 0, "Error: line too long"},
    [REPLY_STARTTLS_SYNTAX] = {"501 5.5.4", 0, "Syntax: STARTTLS"},
    [REPLY_BDAT_SYNTAX] = {"501 5.5.4", 0, "Syntax: BDAT size [LAST]"},
    [REPLY_NOT_IMPLEMENTED] = {"502 5.5.1", 0,
        "Error: command not implemented"},
    [REPLY_STARTTLS_UNAVAILABLE] = {"502 5.5.1", 0,
        "Error: STARTTLS not available"},
    [REPLY_NEED_HELO] = {"503 5.5.1", 0, "Error: send EHLO/HELO first"},
    [REPLY_MUST_STARTTLS] = {"530 5.7.0", 0,
        "Must issue a STARTTLS command first"},
    [REPLY_AUTH_NEEDS_TLS] = {"538 5.7.11", 0,
        "Encryption required for requested authentication mechanism"},
    [REPLY_TLS_ACTIVE] = {"554 5.5.1", 0, "Error: TLS already active"},
    [REPLY_PREGREET] = {"554 5.5.0", 1, "SMTP protocol synchronization error"},
    [REPLY_TOO_MANY_ERRORS] = {"421 4.7.0", 1, "Error: too many errors"},
    [REPLY_TOO_MANY_CONNECTIONS] = {"421 4.7.0", 1,
        "Error: too many connections; try again later"},
    [REPLY_TOO_MANY_FROM_ADDRESS] = {"421 4.7.0", 1,
        "Error: too many connections from your address; try again later"},
    [REPLY_BARE_NEWLINE_COMMAND] = {"500 5.5.2", 0,
        "Error: bare CR or LF in command line"},
    [REPLY_BARE_NEWLINE_MESSAGE] = {"550 5.5.2", 0,
        "Message contains bare CR or LF"},
    [REPLY_PROXY_HEADER] = {"421 4.7.0", 1,
        "Error: bad or missing PROXY protocol header"},
    [REPLY_NUL_COMMAND] = {"500 5.5.2", 0,
        "Error: NUL byte in command line"},
    [REPLY_NUL_MESSAGE] = {"550 5.6.0", 0, "Message contains NUL bytes"},
    [REPLY_UNKNOWN_COMMAND] = {"502 5.5.2", 0,
        "Error: command not recognized"},
};

int reply_code(enum reply_id id)
{
    const char *c;

    if (id <= REPLY_NONE || id >= REPLY_COUNT)
        return 0;
    c = reply_table[id].code;
    return (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
}

/* reply_format - see reply.h. */
size_t reply_format(enum reply_id id, const char *hostname, char *out,
                    size_t cap)
{
    const struct reply_def *d;
    char tmp[512];
    int n;

    if (id <= REPLY_NONE || id >= REPLY_COUNT)
        return 0;
    d = &reply_table[id];
    if (d->with_host)
        n = snprintf(tmp, sizeof tmp, "%s %s %s\r\n", d->code, hostname,
                     d->text);
    else
        n = snprintf(tmp, sizeof tmp, "%s %s\r\n", d->code, d->text);
    if (n < 0 || (size_t)n >= sizeof tmp || (size_t)n > cap)
        return 0;
    memcpy(out, tmp, (size_t)n);
    return (size_t)n;
}
