/*
 * conn.c - a libuv TCP stream with optional TLS over two small BIOs of its own.
 *
 * The TLS glue is one pump (conn_pump): the handshake or SSL_read_ex runs
 * in a loop over the ciphertext just read, and whatever TLS produced goes
 * out in one write.  Nothing else touches SSL_read/SSL_write.
 *
 * TLS reads and writes through two small BIOs of our own instead of
 * memory BIOs: the read BIO hands OpenSSL the bytes of the socket read in
 * progress where they are (only a partial record at the end is kept, in
 * conn->left), and the write BIO appends to the loop's output buffer,
 * which one conn at a time fills and which is sent from directly.  So a
 * session holds no ciphertext buffer while it idles, and bulk data is
 * copied once less on each side.
 */
#include "conn.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <uv.h>

#include "netaddr.h"
#include "sbuf.h"
#include "tls.h"

enum conn_state {
    CONN_NEW,        /* handle initialised, no peer yet */
    CONN_CONNECTING,
    CONN_OPEN,
    CONN_DRAINING,   /* conn_close_flush: waiting for output to leave */
    CONN_CLOSING     /* uv_close called */
};

enum conn_tls {
    CONN_TLS_NONE,
    CONN_TLS_HANDSHAKE,
    CONN_TLS_UP
};

struct conn {
    uv_tcp_t tcp;
    struct conn_loop *cl;   /* what the conns of its loop share */
    const struct conn_cbs *cbs;
    void *ud;
    enum conn_state state;
    enum conn_tls tls;
    SSL *ssl;
    BIO *rbio;             /* ciphertext from the peer, read by SSL */
    BIO *wbio;             /* ciphertext for the peer, written by SSL */
    const char *in;        /* the socket read being pumped (in_len left) */
    size_t in_len;
    struct sbuf left;      /* unread ciphertext kept from earlier reads */
    size_t pending;        /* bytes handed to uv_write, not yet written */
    bool reading;          /* uv_read_start is in effect */
    bool paused;           /* the owner asked us to stop delivering */
    bool in_pump;
    bool pump_again;
    bool eof_pending;      /* TCP EOF seen while TLS data was still held */
    bool above_high;
    bool failed;           /* on_eof with an error was already reported */
    bool fail_deferred;    /* on the loop's list of failures to report */
    bool ticket_due;       /* TLS 1.3 server: the session ticket goes out
                              with the first record written (tls.c) */
    bool bufs_held;        /* ... and left a record buffer to free */
    struct conn *next_failed;
    uv_connect_t creq;
    uv_shutdown_t sreq;
    struct sockaddr_storage peer_addr;
    char peer[64];
    char *err;             /* the last error's text, allocated when one
                              happens (most conns never have one) */
};

struct conn_wreq {
    uv_write_t req;
    struct conn *c;
    size_t len;
    char data[];
};

static void conn_pump(struct conn *c);
static void conn_set_err(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_cork(struct conn_loop *cl);
static void conn_uncork(struct conn_loop *cl);

/* conn_loop_init - see conn.h. */
void conn_loop_init(struct conn_loop *cl, uv_loop_t *loop)
{
    cl->loop = loop;
    cl->cork = 0;
    cl->obuf = NULL;
    cl->olen = cl->ocap = 0;
    cl->oowner = NULL;
    cl->failed = NULL;
}

/* conn_loop_release - see conn.h. */
void conn_loop_release(struct conn_loop *cl)
{
    free(cl->obuf);
    cl->obuf = NULL;
    cl->olen = cl->ocap = 0;
    cl->oowner = NULL;
}

/* conn_loop_idle - see conn.h. */
bool conn_loop_idle(const struct conn_loop *cl)
{
    return cl->oowner == NULL || cl->olen == 0;
}

static bool conn_alive(const struct conn *c)
{
    return c->state == CONN_OPEN;
}

struct conn *conn_new(struct conn_loop *cl, const struct conn_cbs *cbs,
                      void *ud)
{
    struct conn *c = calloc(1, sizeof *c);

    if (c == NULL)
        return NULL;
    if (uv_tcp_init(cl->loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    c->tcp.data = c;
    c->cl = cl;
    c->cbs = cbs;
    c->ud = ud;
    c->state = CONN_NEW;
    return c;
}

void conn_set_cbs(struct conn *c, const struct conn_cbs *cbs, void *ud)
{
    c->cbs = cbs;
    c->ud = ud;
}

static void conn_on_close(uv_handle_t *h)
{
    struct conn *c = h->data;

    if (c->cbs->on_close != NULL)
        c->cbs->on_close(c, c->ud);
    /* a session whose handshake completed stays resumable even when the
     * peer just dropped the connection (OpenSSL evicts sessions freed
     * without a shutdown) */
    if (c->ssl != NULL && c->tls == CONN_TLS_UP && !c->failed)
        SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c->ssl);   /* frees both BIOs */
    sbuf_free(&c->left);
    free(c->err);
    free(c);
}

/* conn_close - see conn.h. */
void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    if (c->cl->oowner == c) {        /* its unsent output is dropped */
        c->cl->oowner = NULL;
        c->cl->olen = 0;
    }
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

/* conn_set_err - the text conn_error returns from now on.  Without memory
 * it stays as it was (conn_error says "" when there is none). */
static void conn_set_err(struct conn *c, const char *fmt, ...)
{
    char text[160];
    char *copy;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    copy = strdup(text);
    if (copy != NULL) {
        free(c->err);
        c->err = copy;
    }
}

/* conn_set_tls_err - the last OpenSSL error, as conn_set_err. */
static void conn_set_tls_err(struct conn *c)
{
    char text[160];

    tls_last_error(text, sizeof text);
    conn_set_err(c, "%s", text);
}

/* conn_fail - report an error once through on_eof. */
static void conn_fail(struct conn *c, int status, const char *why)
{
    if (c->failed || !conn_alive(c))
        return;
    c->failed = true;
    if (why != NULL && c->err == NULL)
        conn_set_err(c, "%s", why);
    if (c->cbs->on_eof != NULL)
        c->cbs->on_eof(c, c->ud, status < 0 ? status : -1);
}

/* conn_check_drain - tell an owner that waits for output to drain. */
static void conn_check_drain(struct conn *c)
{
    if (c->above_high && conn_pending(c) < CONN_LOW_WATER && conn_alive(c)) {
        c->above_high = false;
        if (c->cbs->on_drain != NULL)
            c->cbs->on_drain(c, c->ud);
    }
}

static void conn_on_write(uv_write_t *req, int status)
{
    struct conn_wreq *wr = (struct conn_wreq *)req;
    struct conn *c = wr->c;

    c->pending -= wr->len;
    free(wr);
    if (c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        conn_fail(c, status, uv_strerror(status));
        return;
    }
    /* the owner refills from its buffers here: coalesce that too */
    conn_cork(c->cl);
    conn_check_drain(c);
    conn_uncork(c->cl);
}

/*
 * conn_send - put bytes on the wire in order: try a direct write when
 * nothing is queued, queue a copy of the rest.
 */
static int conn_send(struct conn *c, const char *buf, size_t len)
{
    struct conn_wreq *wr;
    uv_buf_t b;
    int r;

    if (len == 0)
        return 0;
    if (c->pending == 0) {
        b = uv_buf_init((char *)buf, (unsigned)len);
        r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r > 0) {
            buf += r;
            len -= (size_t)r;
            if (len == 0)
                return 0;
        }
        /* errors other than EAGAIN surface through uv_write's callback */
    }
    wr = malloc(sizeof *wr + len);
    if (wr == NULL)
        return -1;
    wr->c = c;
    wr->len = len;
    memcpy(wr->data, buf, len);
    b = uv_buf_init(wr->data, (unsigned)len);
    r = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write);
    if (r != 0) {
        free(wr);
        return -1;
    }
    c->pending += len;
    if (c->pending >= CONN_HIGH_WATER)
        c->above_high = true;
    return 0;
}

/* conn_flush_out - put what is held for c in the loop's output buffer
 * (TLS records, or plaintext written under the cork) on the wire. */
static int conn_flush_out(struct conn *c)
{
    struct conn_loop *cl = c->cl;
    size_t n = cl->olen;

    if (cl->oowner != c || n == 0)
        return 0;
    cl->oowner = NULL;
    cl->olen = 0;
    return conn_send(c, cl->obuf, n);
}

/* ---- the BIOs ------------------------------------------------------------ */

static BIO_METHOD *conn_rbio_meth, *conn_wbio_meth;
static uv_once_t conn_bio_once = UV_ONCE_INIT;

static int conn_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

/* conn_bio_read - the unread part of earlier reads first, then the socket
 * read in progress; nothing there means "wait for more". */
static int conn_bio_read(BIO *b, char *out, size_t len, size_t *got)
{
    struct conn *c = BIO_get_data(b);
    size_t n = 0, k;

    BIO_clear_retry_flags(b);
    if (c->left.len > 0) {
        n = c->left.len < len ? c->left.len : len;
        memcpy(out, sbuf_ptr(&c->left), n);
        sbuf_consume(&c->left, n);
    }
    if (n < len && c->in_len > 0) {
        k = c->in_len < len - n ? c->in_len : len - n;
        memcpy(out + n, c->in, k);
        c->in += k;
        c->in_len -= k;
        n += k;
    }
    if (n == 0) {
        BIO_set_retry_read(b);
        return 0;
    }
    *got = n;
    return 1;
}

/*
 * conn_hold - append to the loop's output buffer, after sending what
 * another conn left there.  If that cannot be sent (out of memory), the
 * other conn's failure is reported when the callback in progress ends:
 * a write on one conn never closes another under its owner's feet.
 * 0, or -1 when out of memory.
 */
static int conn_hold(struct conn *c, const char *data, size_t len)
{
    struct conn_loop *cl = c->cl;
    struct conn *o = cl->oowner;

    if (o != c && o != NULL && conn_flush_out(o) != 0 && !o->fail_deferred) {
        /* o's stream lost bytes: o fails, but at the end of the callback
         * in progress (conn_uncork), not inside c's write */
        o->fail_deferred = true;
        o->next_failed = cl->failed;
        cl->failed = o;
    }
    if (cl->olen + len > cl->ocap) {
        size_t cap = cl->ocap ? cl->ocap : 16384;
        char *p;

        while (cap < cl->olen + len)
            cap *= 2;
        p = realloc(cl->obuf, cap);
        if (p == NULL)
            return -1;
        cl->obuf = p;
        cl->ocap = cap;
    }
    memcpy(cl->obuf + cl->olen, data, len);
    cl->olen += len;
    cl->oowner = c;
    return 0;
}

/* conn_bio_write - what TLS writes waits in the loop's output buffer. */
static int conn_bio_write(BIO *b, const char *data, size_t len,
                          size_t *written)
{
    struct conn *c = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    if (conn_hold(c, data, len) != 0)
        return 0;
    *written = len;
    return 1;
}

/* conn_bio_ctrl - what OpenSSL asks of either BIO; pending counts the
 * bytes to read (read BIO) or to send (write BIO). */
static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr, bool rd)
{
    struct conn *c = BIO_get_data(b);

    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_PENDING:
        if (rd)
            return (long)(c->left.len + c->in_len);
        return 0;
    case BIO_CTRL_WPENDING:
        if (!rd && c->cl->oowner == c)
            return (long)c->cl->olen;
        return 0;
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static long conn_rbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return conn_bio_ctrl(b, cmd, num, ptr, true);
}

static long conn_wbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return conn_bio_ctrl(b, cmd, num, ptr, false);
}

static void conn_bio_init(void)
{
    int rt = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
    int wt = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;

    conn_rbio_meth = BIO_meth_new(rt, "starttls-proxy read");
    conn_wbio_meth = BIO_meth_new(wt, "starttls-proxy write");
    if (conn_rbio_meth == NULL || conn_wbio_meth == NULL)
        return;
    BIO_meth_set_create(conn_rbio_meth, conn_bio_create);
    BIO_meth_set_read_ex(conn_rbio_meth, conn_bio_read);
    BIO_meth_set_ctrl(conn_rbio_meth, conn_rbio_ctrl);
    BIO_meth_set_create(conn_wbio_meth, conn_bio_create);
    BIO_meth_set_write_ex(conn_wbio_meth, conn_bio_write);
    BIO_meth_set_ctrl(conn_wbio_meth, conn_wbio_ctrl);
}

/* conn_keep_left - the socket read is over: keep what TLS did not read. */
static int conn_keep_left(struct conn *c)
{
    int r = sbuf_append(&c->left, c->in, c->in_len);

    c->in = NULL;
    c->in_len = 0;
    return r;
}

/*
 * Write coalescing.  While one read is handled (conn_on_read), or an
 * owner refills after its output drained (conn_on_write), what a session
 * relays in several pieces (a 64 KiB read holds four TLS records, each
 * relayed on its own) is encrypted into the write BIO at once but put on
 * the wire when the callback is done: one write system call per callback
 * instead of one per record.  Plaintext conns hold their writes in the
 * same buffer meanwhile (conn_write), so a message body and its
 * terminator also leave together.
 */
static void conn_cork(struct conn_loop *cl)
{
    cl->cork++;
}

static void conn_uncork(struct conn_loop *cl)
{
    struct conn *c;

    if (--cl->cork > 0)
        return;
    /* a conn closed meanwhile dropped its output (conn_close) */
    if ((c = cl->oowner) != NULL) {
        if (conn_flush_out(c) != 0)
            conn_fail(c, -1, "out of memory");
        else
            conn_check_drain(c);   /* all of it may have left at once */
    }
    /* failures met inside another conn's write (conn_bio_write); a conn
     * closed since is not alive, and not yet freed (its close callback
     * runs after this one) */
    while ((c = cl->failed) != NULL) {
        cl->failed = c->next_failed;
        c->fail_deferred = false;
        conn_fail(c, -1, "out of memory");
    }
}

/* conn_output - TLS wrote into the output buffer: send it, or hold it
 * until the callback in progress ends. */
static int conn_output(struct conn *c)
{
    if (c->cl->cork > 0)
        return 0;
    return conn_flush_out(c);
}

/* conn_ticket_due - a TLS 1.3 server context with tickets on that sends
 * none by itself (tls.c: num_tickets 0) wants one, after the handshake:
 * asked for just before the first record written, it leaves in the same
 * write as that record instead of one of its own. */
static void conn_ticket_due(struct conn *c)
{
    c->ticket_due = SSL_is_server(c->ssl) &&
                    SSL_version(c->ssl) == TLS1_3_VERSION &&
                    SSL_get_num_tickets(c->ssl) == 0 &&
                    (SSL_get_options(c->ssl) & SSL_OP_NO_TICKET) == 0;
}

/* conn_release_bufs - OpenSSL 3.0 keeps the 16 KiB record buffer that
 * the session ticket's handshake message was written through, although
 * SSL_MODE_RELEASE_BUFFERS is on: an idle session would hold it for its
 * whole life.  SSL_free_buffers refuses while a record read is still
 * unprocessed; the pump then tries again once it has read everything. */
static void conn_release_bufs(struct conn *c)
{
    if (c->bufs_held && SSL_free_buffers(c->ssl) == 1)
        c->bufs_held = false;
}

int conn_write(struct conn *c, const char *buf, size_t len)
{
    size_t done;

    if (!conn_alive(c) || c->failed)
        return -1;
    if (c->tls == CONN_TLS_NONE) {
        /* under the cork plaintext waits too: a message body and its
         * terminator, or a reply and what follows it, leave in one write */
        if (c->cl->cork > 0 && len > 0)
            return conn_hold(c, buf, len);
        return conn_send(c, buf, len);
    }
    if (c->tls != CONN_TLS_UP)
        return -1;
    if (c->ticket_due && len > 0) {
        /* written by the SSL_write_ex below, ahead of the data; without
         * it the client only resumes no more */
        ERR_clear_error();
        (void)SSL_new_session_ticket(c->ssl);
    }
    while (len > 0) {
        ERR_clear_error();
        if (SSL_write_ex(c->ssl, buf, len, &done) != 1) {
            conn_set_tls_err(c);
            conn_flush_out(c);
            return -1;
        }
        buf += done;
        len -= done;
    }
    if (c->ticket_due) {
        c->ticket_due = false;
        c->bufs_held = true;
        conn_release_bufs(c);
    }
    return conn_output(c);
}

/* conn_tls_error - text for a failed SSL call into c->err. */
static void conn_tls_error(struct conn *c, int ret)
{
    int e = SSL_get_error(c->ssl, ret);
    long vr;

    if (c->err != NULL)
        return;
    vr = SSL_get_verify_result(c->ssl);
    if (e == SSL_ERROR_SSL && vr != X509_V_OK &&
        SSL_get_verify_mode(c->ssl) != SSL_VERIFY_NONE) {
        conn_set_err(c, "certificate verify failed: %s",
                     X509_verify_cert_error_string(vr));
        ERR_clear_error();
    } else if (e == SSL_ERROR_SSL) {
        conn_set_tls_err(c);
    } else if (e == SSL_ERROR_ZERO_RETURN) {
        conn_set_err(c, "peer sent close_notify");
    } else {
        conn_set_err(c, "TLS error %d", e);
    }
}

/*
 * conn_pump - run TLS over whatever ciphertext is buffered: finish the
 * handshake, then decrypt and deliver while the owner wants data.  Guarded
 * against re-entry: a callback that starts reading again only sets a flag.
 */
static void conn_pump(struct conn *c)
{
    size_t n;
    int r;

    if (c->in_pump) {
        c->pump_again = true;
        return;
    }
    c->in_pump = true;
    do {
        c->pump_again = false;
        if (c->tls == CONN_TLS_HANDSHAKE && conn_alive(c)) {
            ERR_clear_error();
            r = SSL_do_handshake(c->ssl);
            conn_flush_out(c);   /* at once: a failure's alert too */
            if (r == 1) {
                c->tls = CONN_TLS_UP;
                conn_ticket_due(c);
                if (c->cbs->on_handshake != NULL)
                    c->cbs->on_handshake(c, c->ud, 0);
            } else if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ) {
                if (c->eof_pending) {
                    conn_set_err(c, "connection closed during handshake");
                    c->failed = true;
                    if (c->cbs->on_handshake != NULL)
                        c->cbs->on_handshake(c, c->ud, -1);
                }
                break;
            } else {
                conn_tls_error(c, r);
                c->failed = true;
                if (c->cbs->on_handshake != NULL)
                    c->cbs->on_handshake(c, c->ud, -1);
                break;
            }
        }
        while (c->tls == CONN_TLS_UP && conn_alive(c) && !c->paused) {
            /* With nothing buffered, SSL_read_ex would only set up its
             * 16 KiB record buffer again (SSL_MODE_RELEASE_BUFFERS frees it
             * after each record) and keep it while the session idles. */
            bool empty = BIO_ctrl_pending(c->rbio) == 0 &&
                         !SSL_has_pending(c->ssl);

            if (!empty) {
                ERR_clear_error();
                r = SSL_read_ex(c->ssl, c->cl->pbuf, sizeof c->cl->pbuf, &n);
                if (r == 1) {
                    c->cbs->on_data(c, c->ud, c->cl->pbuf, n);
                    continue;
                }
            }
            conn_output(c);   /* e.g. a reply to a key update */
            r = empty ? SSL_ERROR_WANT_READ : SSL_get_error(c->ssl, 0);
            if (r == SSL_ERROR_WANT_READ) {
                if (c->eof_pending && c->cbs->on_eof != NULL) {
                    c->eof_pending = false;
                    c->cbs->on_eof(c, c->ud, 0);
                }
                break;
            }
            if (r == SSL_ERROR_ZERO_RETURN) {
                if (c->cbs->on_eof != NULL)
                    c->cbs->on_eof(c, c->ud, 0);
                break;
            }
            conn_tls_error(c, 0);
            conn_fail(c, -1, NULL);
            break;
        }
    } while (c->pump_again && conn_alive(c));
    conn_release_bufs(c);
    c->in_pump = false;
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct conn *c = h->data;

    (void)suggested;
    b->base = c->cl->rbuf;
    b->len = sizeof c->cl->rbuf;
}

static void conn_on_read_data(struct conn *c, ssize_t n, const uv_buf_t *b);

static void conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    struct conn_loop *cl = c->cl;

    conn_cork(cl);
    conn_on_read_data(c, n, b);
    conn_uncork(cl);   /* c may be closed, never freed, by now */
}

static void conn_on_read_data(struct conn *c, ssize_t n, const uv_buf_t *b)
{
    if (n == 0 || !conn_alive(c))
        return;
    if (n < 0) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
        if (n != UV_EOF) {
            conn_fail(c, (int)n, uv_strerror((int)n));
            return;
        }
        if (c->tls != CONN_TLS_NONE) {
            c->eof_pending = true;
            conn_pump(c);   /* delivers what is left, then the EOF */
            return;
        }
        if (c->cbs->on_eof != NULL)
            c->cbs->on_eof(c, c->ud, 0);
        return;
    }
    if (c->tls == CONN_TLS_NONE) {
        c->cbs->on_data(c, c->ud, b->base, (size_t)n);
        return;
    }
    c->in = b->base;
    c->in_len = (size_t)n;
    conn_pump(c);
    if (conn_keep_left(c) != 0)
        conn_fail(c, -1, "out of memory");
}

int conn_read_start(struct conn *c)
{
    bool held = c->paused || !c->reading;

    if (!conn_alive(c))
        return -1;
    c->paused = false;
    if (!c->reading && !c->eof_pending) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc,
                          conn_on_read) != 0)
            return -1;
        c->reading = true;
    }
    if (c->tls != CONN_TLS_NONE && held)
        conn_pump(c);   /* plaintext may still be held inside TLS */
    return 0;
}

void conn_read_stop(struct conn *c)
{
    c->paused = true;
    if (c->reading && conn_alive(c)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

int conn_open(struct conn *c, int fd, const struct sockaddr_storage *peer)
{
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd);
        return -1;
    }
    c->state = CONN_OPEN;
    uv_tcp_nodelay(&c->tcp, 1);
    c->peer_addr = *peer;
    netaddr_text(peer, c->peer, sizeof c->peer);
    return 0;
}

static void conn_on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;

    if (c->state == CONN_CLOSING)
        return;
    if (status == 0) {
        c->state = CONN_OPEN;
        uv_tcp_nodelay(&c->tcp, 1);
        /* the peer is where conn_connect went: no getpeername */
        netaddr_text(&c->peer_addr, c->peer, sizeof c->peer);
    } else {
        conn_set_err(c, "%s", uv_strerror(status));
    }
    c->cbs->on_connect(c, c->ud, status);
}

int conn_connect(struct conn *c, const struct sockaddr *addr)
{
    int r;

    memset(&c->peer_addr, 0, sizeof c->peer_addr);
    memcpy(&c->peer_addr, addr, addr->sa_family == AF_INET6
                                    ? sizeof(struct sockaddr_in6)
                                    : sizeof(struct sockaddr_in));
    c->creq.data = c;
    r = uv_tcp_connect(&c->creq, &c->tcp, addr, conn_on_connect);
    if (r != 0) {
        conn_set_err(c, "%s", uv_strerror(r));
        return -1;
    }
    c->state = CONN_CONNECTING;
    return 0;
}

/* conn_connect_socket - see conn.h. */
int conn_connect_socket(struct conn *c, int fd, const struct sockaddr *addr)
{
    int r = uv_tcp_open(&c->tcp, fd);

    if (r != 0) {
        close(fd);
        conn_set_err(c, "%s", uv_strerror(r));
        return -1;
    }
    return conn_connect(c, addr);
}

/* conn_tls_setup - put ssl on c's BIOs; ssl is owned by c. */
static int conn_tls_setup(struct conn *c, SSL *ssl)
{
    BIO *r = NULL, *cl = NULL;

    c->ssl = ssl;
    uv_once(&conn_bio_once, conn_bio_init);
    if (conn_rbio_meth != NULL && conn_wbio_meth != NULL) {
        r = BIO_new(conn_rbio_meth);
        cl = BIO_new(conn_wbio_meth);
    }
    if (r == NULL || cl == NULL) {
        BIO_free(r);
        BIO_free(cl);
        return -1;
    }
    BIO_set_data(r, c);
    BIO_set_data(cl, c);
    SSL_set_bio(ssl, r, cl);
    c->rbio = r;
    c->wbio = cl;
    c->tls = CONN_TLS_HANDSHAKE;
    return 0;
}

int conn_start_tls_server(struct conn *c, SSL_CTX *ctx)
{
    SSL *ssl;

    if (!conn_alive(c) || c->ssl != NULL)
        return -1;
    ssl = SSL_new(ctx);
    if (ssl == NULL)
        return -1;
    if (conn_tls_setup(c, ssl) != 0)
        return -1;
    SSL_set_accept_state(ssl);
    if (!c->reading && !c->paused)
        conn_read_start(c);
    return 0;
}

int conn_start_tls_client(struct conn *c, SSL *ssl)
{
    if (!conn_alive(c) || c->ssl != NULL) {
        SSL_free(ssl);
        return -1;
    }
    if (conn_tls_setup(c, ssl) != 0)
        return -1;
    SSL_set_connect_state(ssl);
    conn_pump(c);   /* sends the ClientHello */
    return 0;
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;

    (void)status;
    if (c->state != CONN_CLOSING)
        conn_close(c);
}

/* conn_close_flush - see conn.h. */
void conn_close_flush(struct conn *c)
{
    if (c->state == CONN_CLOSING || c->state == CONN_DRAINING)
        return;
    if (c->state != CONN_OPEN || c->failed) {
        conn_close(c);
        return;
    }
    if (c->tls == CONN_TLS_UP) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl);   /* queues our close_notify */
    }
    conn_flush_out(c);   /* before the FIN: what the cork holds */
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    c->state = CONN_DRAINING;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, conn_on_shutdown) != 0)
        conn_close(c);
}

size_t conn_pending(const struct conn *c)
{
    return c->pending + (c->cl->oowner == c ? c->cl->olen : 0);
}

void conn_arm_drain(struct conn *c)
{
    if (conn_pending(c) >= CONN_LOW_WATER)
        c->above_high = true;
}

SSL *conn_ssl(const struct conn *c)
{
    return c->ssl;
}

const char *conn_error(const struct conn *c)
{
    return c->err != NULL ? c->err : "";
}

const char *conn_peer(const struct conn *c)
{
    return c->peer;
}

const struct sockaddr_storage *conn_peer_addr(const struct conn *c)
{
    return &c->peer_addr;
}

int conn_local_addr(const struct conn *c, struct sockaddr_storage *out)
{
    int len = sizeof *out;

    memset(out, 0, sizeof *out);
    return uv_tcp_getsockname(&c->tcp, (struct sockaddr *)out, &len) == 0
               ? 0 : -1;
}
