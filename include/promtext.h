/*
 * promtext.h - the metrics endpoint's pure parts: one HTTP/1.1 request
 * read from bytes handed in, and the Prometheus text exposition format
 * 0.0.4 written into a growing buffer.  No I/O (metrics.c does that).
 */
#ifndef STARTTLS_PROXY_PROMTEXT_H
#define STARTTLS_PROXY_PROMTEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROMTEXT_REQUEST_MAX 8192      /* request line and headers */
#define PROMTEXT_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum promtext_req {
    PROMTEXT_INCOMPLETE,      /* read more (the head has not ended) */
    PROMTEXT_METRICS,         /* GET /metrics */
    PROMTEXT_HEALTHZ,         /* GET /healthz */
    PROMTEXT_NOT_FOUND,       /* 404: another path */
    PROMTEXT_BAD_METHOD,      /* 405: not GET (HEAD included) */
    PROMTEXT_BAD_REQUEST,     /* 400: not an HTTP/1.x request line */
    PROMTEXT_TOO_LARGE        /* 431: no end of head within the cap */
};

/*
 * promtext_request - what the request in buf[0..len) asks for: the whole
 * head (up to the empty line) must have arrived, except that a broken
 * request line is known as soon as its line ends.  A query string is
 * ignored ("/metrics?x" is /metrics).  Pure: call again with more bytes.
 */
enum promtext_req promtext_request(const char *buf, size_t len);

/* promtext_status - the HTTP status code of a final result. */
int promtext_status(enum promtext_req r);

/* struct promtext_buf - a growing text buffer; failed: out of memory
 * (everything written after it is dropped). */
struct promtext_buf {
    char *p;
    size_t len, cap;
    bool failed;
};

void promtext_init(struct promtext_buf *b);
void promtext_free(struct promtext_buf *b);
void promtext_printf(struct promtext_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* promtext_escape - v as a label value: backslash, double quote and line
 * feed escaped (\\, \", \n); every other byte as it is. */
void promtext_escape(struct promtext_buf *b, const char *v);

/* promtext_family - the # HELP and # TYPE lines of a metric. */
void promtext_family(struct promtext_buf *b, const char *name,
                     const char *type, const char *help);

/*
 * promtext_sample - one sample line: name{k="v",...} value.  labels is
 * NULL or { key, value, key, value, ..., NULL }; values are escaped.
 */
void promtext_sample(struct promtext_buf *b, const char *name,
                     const char *const *labels, double value);

/*
 * promtext_histogram - the _bucket lines (cumulative, le="+Inf" last),
 * _sum and _count of a histogram with nbounds upper bounds; counts has
 * nbounds + 1 entries, each observations in its bucket alone (the last:
 * above every bound).
 */
void promtext_histogram(struct promtext_buf *b, const char *name,
                        const char *const *labels, const double *bounds,
                        size_t nbounds, const uint64_t *counts, double sum);

/* promtext_head - an HTTP/1.1 response head for a body of len bytes
 * ("Connection: close": one request per connection) into out; returns
 * its length (0 if it does not fit). */
size_t promtext_head(char *out, size_t out_len, int status,
                     const char *content_type, size_t len);

#endif
