/*
 * sbuf.h - a byte queue that holds memory only while it holds bytes.
 *
 * data[off .. off+len) is unread.  Appending grows the buffer (doubling)
 * after moving the unread bytes to the front; consuming the last byte
 * frees it, so that idle sessions and connections keep no buffers.  The
 * callers bound what they append.
 */
#ifndef STARTTLS_PROXY_SBUF_H
#define STARTTLS_PROXY_SBUF_H

#include <stddef.h>

struct sbuf {
    char *data;
    size_t off;
    size_t len;
    size_t cap;
};

/* sbuf_append - add p[0..n); 0, or -1 when out of memory (b unchanged). */
int sbuf_append(struct sbuf *b, const char *p, size_t n);

/* sbuf_consume - drop n bytes from the front; empty, the buffer is freed. */
void sbuf_consume(struct sbuf *b, size_t n);

/* sbuf_free - drop everything. */
void sbuf_free(struct sbuf *b);

static inline const char *sbuf_ptr(const struct sbuf *b)
{
    return b->data + b->off;
}

#endif
