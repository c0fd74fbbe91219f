/*
 * sbuf.c - a byte queue that holds memory only while it holds bytes
 * (see include/sbuf.h).
 */
#include "sbuf.h"

#include <stdlib.h>
#include <string.h>

/* sbuf_append - see sbuf.h. */
int sbuf_append(struct sbuf *b, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (b->off + b->len + n > b->cap) {
        if (b->off > 0) {
            memmove(b->data, b->data + b->off, b->len);
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap : 4096;
            char *d;

            while (cap < b->len + n)
                cap *= 2;
            d = realloc(b->data, cap);
            if (d == NULL)
                return -1;
            b->data = d;
            b->cap = cap;
        }
    }
    memcpy(b->data + b->off + b->len, p, n);
    b->len += n;
    return 0;
}

/* sbuf_consume - see sbuf.h. */
void sbuf_consume(struct sbuf *b, size_t n)
{
    if (n >= b->len) {
        sbuf_free(b);
        return;
    }
    b->off += n;
    b->len -= n;
}

/* sbuf_free - see sbuf.h. */
void sbuf_free(struct sbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
