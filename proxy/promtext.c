/*
 * promtext.c - HTTP request head and Prometheus text exposition (0.0.4).
 */
#include "promtext.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* promtext_line_end - the end of the line starting at p (the '\n'), or
 * NULL when it has not arrived. */
static const char *promtext_line_end(const char *p, size_t len)
{
    return memchr(p, '\n', len);
}

/* promtext_head_end - has the empty line that ends the head arrived? */
static bool promtext_head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n' ||
            (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n'))
            return true;
    }
    return false;
}

/* promtext_request - see promtext.h.  RFC 9112 3: request-line =
 * method SP request-target SP HTTP-version CRLF. */
enum promtext_req promtext_request(const char *buf, size_t len)
{
    const char *nl = promtext_line_end(buf, len), *sp1, *sp2, *end, *q;
    size_t n, plen;

    if (nl == NULL)
        return len >= PROMTEXT_REQUEST_MAX ? PROMTEXT_TOO_LARGE
                                           : PROMTEXT_INCOMPLETE;
    end = nl > buf && nl[-1] == '\r' ? nl - 1 : nl;
    n = (size_t)(end - buf);
    sp1 = memchr(buf, ' ', n);
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == buf || sp2 == sp1 + 1 ||
        (size_t)(end - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
        (sp2[8] != '0' && sp2[8] != '1') || sp1[1] != '/')
        return PROMTEXT_BAD_REQUEST;
    for (const char *p = buf; p < end; p++)
        if ((unsigned char)*p < 0x21 && *p != ' ')
            return PROMTEXT_BAD_REQUEST;
    if (!promtext_head_end(buf, len))
        return len >= PROMTEXT_REQUEST_MAX ? PROMTEXT_TOO_LARGE
                                           : PROMTEXT_INCOMPLETE;
    if (len > PROMTEXT_REQUEST_MAX &&
        !promtext_head_end(buf, PROMTEXT_REQUEST_MAX))
        return PROMTEXT_TOO_LARGE;
    if ((size_t)(sp1 - buf) != 3 || memcmp(buf, "GET", 3) != 0)
        return PROMTEXT_BAD_METHOD;
    q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
    plen = (size_t)((q ? q : sp2) - (sp1 + 1));
    if (plen == 8 && memcmp(sp1 + 1, "/metrics", 8) == 0)
        return PROMTEXT_METRICS;
    if (plen == 8 && memcmp(sp1 + 1, "/healthz", 8) == 0)
        return PROMTEXT_HEALTHZ;
    return PROMTEXT_NOT_FOUND;
}

/* promtext_status - see promtext.h. */
int promtext_status(enum promtext_req r)
{
    switch (r) {
    case PROMTEXT_METRICS:
    case PROMTEXT_HEALTHZ: return 200;
    case PROMTEXT_NOT_FOUND: return 404;
    case PROMTEXT_BAD_METHOD: return 405;
    case PROMTEXT_TOO_LARGE: return 431;
    case PROMTEXT_INCOMPLETE:
    case PROMTEXT_BAD_REQUEST: break;
    }
    return 400;
}

void promtext_init(struct promtext_buf *b)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}

void promtext_free(struct promtext_buf *b)
{
    free(b->p);
    promtext_init(b);
}

/* promtext_reserve - room for n more bytes and a NUL. */
static bool promtext_reserve(struct promtext_buf *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 4096;
    char *p;

    if (b->failed)
        return false;
    while (cap - b->len < n + 1)
        cap *= 2;
    if (cap == b->cap)
        return true;
    if ((p = realloc(b->p, cap)) == NULL) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void promtext_printf(struct promtext_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !promtext_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* promtext_escape - see promtext.h (the format's label_value rules). */
void promtext_escape(struct promtext_buf *b, const char *v)
{
    for (; *v != '\0'; v++) {
        if (!promtext_reserve(b, 2))
            return;
        if (*v == '\\' || *v == '"') {
            b->p[b->len++] = '\\';
            b->p[b->len++] = *v;
        } else if (*v == '\n') {
            b->p[b->len++] = '\\';
            b->p[b->len++] = 'n';
        } else {
            b->p[b->len++] = *v;
        }
        b->p[b->len] = '\0';
    }
}

/* promtext_family - see promtext.h (HELP text escapes \ and LF too). */
void promtext_family(struct promtext_buf *b, const char *name,
                     const char *type, const char *help)
{
    promtext_printf(b, "# HELP %s ", name);
    for (; *help != '\0'; help++) {
        if (*help == '\\')
            promtext_printf(b, "\\\\");
        else if (*help == '\n')
            promtext_printf(b, "\\n");
        else
            promtext_printf(b, "%c", *help);
    }
    promtext_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* promtext_labels - {k="v",...} with one more pair (extra_k, extra_v) at
 * the end when extra_k is not NULL; nothing when there are none. */
static void promtext_labels(struct promtext_buf *b, const char *const *labels,
                            const char *extra_k, const char *extra_v)
{
    bool any = false;

    for (size_t i = 0; labels != NULL && labels[i] != NULL; i += 2) {
        promtext_printf(b, "%s%s=\"", any ? "," : "{", labels[i]);
        promtext_escape(b, labels[i + 1]);
        promtext_printf(b, "\"");
        any = true;
    }
    if (extra_k != NULL) {
        promtext_printf(b, "%s%s=\"", any ? "," : "{", extra_k);
        promtext_escape(b, extra_v);
        promtext_printf(b, "\"");
        any = true;
    }
    if (any)
        promtext_printf(b, "}");
}

/* promtext_value - a sample value: integers without a fraction. */
static void promtext_value(struct promtext_buf *b, double v)
{
    if (isinf(v))
        promtext_printf(b, " %s\n", v > 0 ? "+Inf" : "-Inf");
    else if (isnan(v))
        promtext_printf(b, " NaN\n");
    else if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
        promtext_printf(b, " %.0f\n", v);
    else
        promtext_printf(b, " %.15g\n", v);
}

/* promtext_sample - see promtext.h. */
void promtext_sample(struct promtext_buf *b, const char *name,
                     const char *const *labels, double value)
{
    promtext_printf(b, "%s", name);
    promtext_labels(b, labels, NULL, NULL);
    promtext_value(b, value);
}

/* promtext_histogram - see promtext.h. */
void promtext_histogram(struct promtext_buf *b, const char *name,
                        const char *const *labels, const double *bounds,
                        size_t nbounds, const uint64_t *counts, double sum)
{
    uint64_t cum = 0;
    char le[32];

    for (size_t i = 0; i <= nbounds; i++) {
        cum += counts[i];
        if (i < nbounds)
            snprintf(le, sizeof le, "%g", bounds[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        promtext_printf(b, "%s_bucket", name);
        promtext_labels(b, labels, "le", le);
        promtext_value(b, (double)cum);
    }
    promtext_printf(b, "%s_sum", name);
    promtext_labels(b, labels, NULL, NULL);
    promtext_value(b, sum);
    promtext_printf(b, "%s_count", name);
    promtext_labels(b, labels, NULL, NULL);
    promtext_value(b, (double)cum);
}

/* promtext_head - see promtext.h. */
size_t promtext_head(char *out, size_t out_len, int status,
                     const char *content_type, size_t len)
{
    const char *reason = status == 200 ? "OK"
                         : status == 400 ? "Bad Request"
                         : status == 404 ? "Not Found"
                         : status == 405 ? "Method Not Allowed"
                         : status == 431 ? "Request Header Fields Too Large"
                         : status == 503 ? "Service Unavailable"
                                         : "Error";
    int n = snprintf(out, out_len,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                     status, reason, content_type, len,
                     status == 405 ? "Allow: GET\r\n" : "");

    return n < 0 || (size_t)n >= out_len ? 0 : (size_t)n;
}
