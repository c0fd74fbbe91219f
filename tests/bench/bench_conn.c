/*
 * bench_conn.c - TCP connection with optional TLS over memory BIOs, shared
 * by smtp-load and smtp-sink-bench.  See bench_conn.h for the contract.
 */
#include "bench_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <openssl/err.h>

struct conn_wreq {
    uv_write_t req;
    size_t len;
    char data[]; /* empty for static buffers */
};

/* bench_tls_error - see bench_conn.h. */
const char *bench_tls_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    unsigned long next;

    while ((next = ERR_get_error()) != 0)
        (void)next;
    if (e == 0)
        snprintf(buf, len, "no OpenSSL error queued");
    else
        ERR_error_string_n(e, buf, len);
    return buf;
}

/* bench_raise_nofile - see bench_conn.h. */
unsigned long bench_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (unsigned long)rl.rlim_cur;
}

/* conn_fail - report a failure to the owner once, then close. */
static void conn_fail(struct bench_conn *c, const char *what)
{
    if (c->closing)
        return;
    if (c->ops->on_error != NULL)
        c->ops->on_error(c, what);
    bench_conn_close(c);
}

/* conn_close_cb - last callback of the handle: free TLS, hand back. */
static void conn_close_cb(uv_handle_t *h)
{
    struct bench_conn *c = h->data;

    SSL_free(c->ssl); /* frees both BIOs */
    c->ssl = NULL;
    c->rbio = c->wbio = NULL;
    if (c->ops->on_close != NULL)
        c->ops->on_close(c);
}

/* bench_conn_close - see bench_conn.h. */
void bench_conn_close(struct bench_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

/* conn_write_cb - a queued write finished (or was cancelled by close). */
static void conn_write_cb(uv_write_t *req, int status)
{
    struct conn_wreq *w = (struct conn_wreq *)req;
    struct bench_conn *c = req->handle->data;

    c->wq_bytes -= w->len;
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        char msg[96];

        snprintf(msg, sizeof msg, "write: %s", uv_strerror(status));
        conn_fail(c, msg);
        return;
    }
    if (c->close_when_flushed) {
        if (c->wq_bytes == 0)
            bench_conn_close(c);
        return;
    }
    if (c->wq_bytes <= BENCH_CONN_LOW_WATER && c->ops->on_drain != NULL)
        c->ops->on_drain(c);
}

/* conn_send - put bytes on the wire: try a direct write when nothing is
 * queued (keeps the order), queue the rest.  0 or -1 (error text in msg). */
static int conn_send(struct bench_conn *c, const char *p, size_t n,
                     int is_static, char *msg, size_t msg_len)
{
    struct conn_wreq *w;
    uv_buf_t b;
    size_t off = 0;
    int r;

    if (c->closing) {
        snprintf(msg, msg_len, "write after close");
        return -1;
    }
    if (n == 0)
        return 0;
    if (c->wq_bytes == 0) {
        b = uv_buf_init((char *)p, (unsigned)n);
        r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r >= 0)
            off = (size_t)r;
        else if (r != UV_EAGAIN) {
            snprintf(msg, msg_len, "write: %s", uv_strerror(r));
            return -1;
        }
    }
    if (off == n)
        return 0;
    w = malloc(sizeof *w + (is_static ? 0 : n - off));
    if (w == NULL) {
        snprintf(msg, msg_len, "write: out of memory");
        return -1;
    }
    w->len = n - off;
    if (is_static) {
        b = uv_buf_init((char *)p + off, (unsigned)(n - off));
    } else {
        memcpy(w->data, p + off, n - off);
        b = uv_buf_init(w->data, (unsigned)(n - off));
    }
    r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
    if (r != 0) {
        free(w);
        snprintf(msg, msg_len, "write: %s", uv_strerror(r));
        return -1;
    }
    c->wq_bytes += n - off;
    return 0;
}

/* conn_flush_tls - move everything the SSL object produced to the wire. */
static int conn_flush_tls(struct bench_conn *c, char *msg, size_t msg_len)
{
    char *p = NULL;
    long n = BIO_get_mem_data(c->wbio, &p);
    int r;

    if (n <= 0)
        return 0;
    r = conn_send(c, p, (size_t)n, 0, msg, msg_len);
    (void)BIO_reset(c->wbio);
    return r;
}

/* conn_pump - drive the handshake, then decrypt everything buffered and
 * hand it to the owner, then flush whatever TLS wants to send. */
static void conn_pump(struct bench_conn *c)
{
    char msg[256];
    char ossl[160];
    int r, err;

    if (c->handshaking) {
        ERR_clear_error();
        r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                if (conn_flush_tls(c, msg, sizeof msg) != 0)
                    conn_fail(c, msg);
                return;
            }
            snprintf(msg, sizeof msg, "TLS handshake: %s",
                     bench_tls_error(ossl, sizeof ossl));
            (void)conn_flush_tls(c, ossl, sizeof ossl); /* alert, if any */
            conn_fail(c, msg);
            return;
        }
        c->handshaking = 0;
        if (conn_flush_tls(c, msg, sizeof msg) != 0) {
            conn_fail(c, msg);
            return;
        }
        if (c->ops->on_handshake != NULL)
            c->ops->on_handshake(c);
        if (c->closing)
            return;
    }
    for (;;) {
        size_t got = 0;

        ERR_clear_error();
        r = SSL_read_ex(c->ssl, c->io->pbuf, sizeof c->io->pbuf, &got);
        if (r == 1) {
            c->ops->on_data(c, c->io->pbuf, got);
            if (c->closing)
                return;
            continue;
        }
        err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_READ)
            break;
        if (err == SSL_ERROR_ZERO_RETURN) {
            (void)conn_flush_tls(c, msg, sizeof msg);
            if (c->ops->on_eof != NULL)
                c->ops->on_eof(c);
            return;
        }
        snprintf(msg, sizeof msg, "TLS read: %s",
                 bench_tls_error(ossl, sizeof ossl));
        conn_fail(c, msg);
        return;
    }
    if (conn_flush_tls(c, msg, sizeof msg) != 0)
        conn_fail(c, msg);
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct bench_conn *c = h->data;

    (void)suggested;
    *buf = uv_buf_init(c->io->rbuf, sizeof c->io->rbuf);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct bench_conn *c = s->data;
    char msg[96];

    if (c->closing || nread == 0)
        return;
    if (nread == UV_EOF) {
        if (c->ops->on_eof != NULL)
            c->ops->on_eof(c);
        else
            bench_conn_close(c);
        return;
    }
    if (nread < 0) {
        snprintf(msg, sizeof msg, "read: %s", uv_strerror((int)nread));
        conn_fail(c, msg);
        return;
    }
    if (c->ssl == NULL) {
        c->ops->on_data(c, buf->base, (size_t)nread);
        return;
    }
    if (BIO_write(c->rbio, buf->base, (int)nread) != (int)nread) {
        conn_fail(c, "TLS: cannot buffer input");
        return;
    }
    conn_pump(c);
}

/* bench_conn_init - see bench_conn.h. */
int bench_conn_init(uv_loop_t *loop, struct bench_conn *c,
                    const struct bench_conn_ops *ops, struct bench_io *io,
                    void *user)
{
    int r;

    memset(c, 0, sizeof *c);
    c->ops = ops;
    c->io = io;
    c->user = user;
    r = uv_tcp_init(loop, &c->tcp);
    if (r != 0)
        return r;
    c->tcp.data = c;
    return 0;
}

/* bench_conn_start_read - see bench_conn.h. */
int bench_conn_start_read(struct bench_conn *c)
{
    (void)uv_tcp_nodelay(&c->tcp, 1);
    return uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
}

/* bench_conn_start_tls - see bench_conn.h. */
int bench_conn_start_tls(struct bench_conn *c, SSL_CTX *ctx, int server,
                         SSL_SESSION *resume)
{
    char msg[160];
    SSL *ssl;
    BIO *rb, *wb;
    int r, err;

    if (c->ssl != NULL || c->closing)
        return -1;
    ssl = SSL_new(ctx);
    if (ssl == NULL)
        return -1;
    rb = BIO_new(BIO_s_mem());
    wb = BIO_new(BIO_s_mem());
    if (rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        SSL_free(ssl);
        return -1;
    }
    BIO_set_mem_eof_return(rb, -1); /* empty means "want more", not EOF */
    SSL_set_bio(ssl, rb, wb);
    if (server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (resume != NULL)
            (void)SSL_set_session(ssl, resume);
    }
    c->ssl = ssl;
    c->rbio = rb;
    c->wbio = wb;
    c->handshaking = 1;
    if (server)
        return 0;
    ERR_clear_error();
    r = SSL_do_handshake(ssl); /* produces the ClientHello */
    err = SSL_get_error(ssl, r);
    if (r == 1 || (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE))
        return -1;
    return conn_flush_tls(c, msg, sizeof msg);
}

/* bench_conn_write - see bench_conn.h. */
int bench_conn_write(struct bench_conn *c, const void *p, size_t n,
                     int is_static)
{
    char msg[160];
    size_t done = 0;

    if (c->closing)
        return -1;
    if (c->ssl == NULL)
        return conn_send(c, p, n, is_static, msg, sizeof msg);
    if (c->handshaking)
        return -1;
    while (done < n) {
        size_t w = 0;
        size_t chunk = n - done > (1u << 30) ? (1u << 30) : n - done;

        ERR_clear_error();
        if (SSL_write_ex(c->ssl, (const char *)p + done, chunk, &w) != 1)
            return -1;
        done += w;
    }
    return conn_flush_tls(c, msg, sizeof msg);
}

/* bench_conn_end - see bench_conn.h. */
void bench_conn_end(struct bench_conn *c)
{
    char msg[160];

    if (c->closing)
        return;
    if (c->ssl != NULL && !c->handshaking) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl);
        (void)conn_flush_tls(c, msg, sizeof msg);
    }
    if (c->closing)
        return;
    if (c->wq_bytes == 0)
        bench_conn_close(c);
    else
        c->close_when_flushed = 1;
}
