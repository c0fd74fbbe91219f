/*
 * metrics.c - the metrics endpoint's sockets (see metrics.h).
 */
#include "metrics.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

struct metrics_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wr;
    uv_shutdown_t sd;
    struct metrics_server *m;
    struct metrics_conn *prev, *next;
    unsigned refs;                   /* handles still open */
    bool closing, answered;
    size_t len;
    char in[PROMTEXT_REQUEST_MAX];
    char head[256];
    struct promtext_buf body;
};

struct metrics_server {
    uv_loop_t *loop;
    struct logger *log;
    metrics_render_cb render;
    void *ud;
    uv_tcp_t *listeners;
    size_t nlisteners;
    size_t nopen;                    /* listener handles not yet closed */
    struct metrics_conn *conns;
    size_t nconns;
    bool closing;
};

/* metrics_maybe_free - the server goes when its last handle has. */
static void metrics_maybe_free(struct metrics_server *m)
{
    if (m->closing && m->nopen == 0 && m->conns == NULL) {
        free(m->listeners);
        free(m);
    }
}

static void metrics_conn_closed(uv_handle_t *h)
{
    struct metrics_conn *c = h->data;
    struct metrics_server *m = c->m;

    if (--c->refs > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    m->nconns--;
    promtext_free(&c->body);
    free(c);
    metrics_maybe_free(m);
}

/* metrics_conn_close - idempotent; memory goes in the close callbacks. */
static void metrics_conn_close(struct metrics_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, metrics_conn_closed);
    uv_close((uv_handle_t *)&c->timer, metrics_conn_closed);
}

static void metrics_on_timeout(uv_timer_t *t)
{
    metrics_conn_close(t->data);     /* slow: no answer, just closed */
}

static void metrics_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct metrics_conn *c = h->data;

    (void)hint;
    buf->base = c->in + c->len;
    buf->len = sizeof c->in - c->len;
}

static void metrics_on_shutdown(uv_shutdown_t *sd, int status)
{
    struct metrics_conn *c = sd->data;

    if (status != 0)
        metrics_conn_close(c);
}

static void metrics_on_read(uv_stream_t *s, ssize_t nread,
                            const uv_buf_t *buf);

/* metrics_on_written - the answer is out: send FIN, then read (and
 * drop) what the client still sends until it closes or the timer fires.
 * Closing at once with unread bytes would reset the connection, and the
 * client might lose the answer (a 431 to a long head). */
static void metrics_on_written(uv_write_t *wr, int status)
{
    struct metrics_conn *c = wr->data;

    if (status != 0 || c->closing) {
        metrics_conn_close(c);
        return;
    }
    c->sd.data = c;
    c->len = 0;
    if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, metrics_on_shutdown) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, metrics_alloc,
                      metrics_on_read) != 0)
        metrics_conn_close(c);
}

/* metrics_answer - write the response to request r and close after it. */
static void metrics_answer(struct metrics_conn *c, enum promtext_req r)
{
    const char *ctype = "text/plain; charset=utf-8";
    int status = promtext_status(r);
    uv_buf_t bufs[2];
    size_t hl;

    c->answered = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (r == PROMTEXT_METRICS || r == PROMTEXT_HEALTHZ)
        status = c->m->render(c->m->ud, r, &c->body, &ctype);
    else
        promtext_printf(&c->body, "%d\n", status);
    if (c->body.failed) {
        promtext_free(&c->body);
        status = 500;
    }
    hl = promtext_head(c->head, sizeof c->head, status, ctype, c->body.len);
    bufs[0] = uv_buf_init(c->head, (unsigned)hl);
    bufs[1] = uv_buf_init(c->body.p ? c->body.p : c->head,
                          c->body.p ? (unsigned)c->body.len : 0);
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, bufs, 2,
                 metrics_on_written) != 0)
        metrics_conn_close(c);
}

static void metrics_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct metrics_conn *c = s->data;
    enum promtext_req r;

    (void)buf;
    if (c->closing)
        return;
    if (nread < 0) {
        metrics_conn_close(c);
        return;
    }
    if (c->answered) {
        c->len = 0;                  /* after the answer: dropped */
        return;
    }
    c->len += (size_t)nread;
    r = promtext_request(c->in, c->len);
    if (r == PROMTEXT_INCOMPLETE && c->len >= sizeof c->in)
        r = PROMTEXT_TOO_LARGE;
    if (r != PROMTEXT_INCOMPLETE)
        metrics_answer(c, r);
}

static void metrics_on_connection(uv_stream_t *srv, int status)
{
    struct metrics_server *m = srv->data;
    struct metrics_conn *c;

    if (status != 0 || m->closing)
        return;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->m = m;
    promtext_init(&c->body);
    uv_tcp_init(m->loop, &c->tcp);
    uv_timer_init(m->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->refs = 2;
    c->next = m->conns;
    if (m->conns != NULL)
        m->conns->prev = c;
    m->conns = c;
    m->nconns++;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0 ||
        m->nconns > METRICS_MAX_CONNS) {
        metrics_conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, metrics_on_timeout, METRICS_REQUEST_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, metrics_alloc,
                      metrics_on_read) != 0)
        metrics_conn_close(c);
}

static void metrics_listener_closed(uv_handle_t *h)
{
    struct metrics_server *m = h->data;

    m->nopen--;
    metrics_maybe_free(m);
}

/* metrics_open - see metrics.h. */
struct metrics_server *metrics_open(uv_loop_t *loop, struct logger *log,
                                    const int *fds,
                                    const struct listen_addr *addrs,
                                    size_t n, metrics_render_cb render,
                                    void *ud, char *err, size_t err_len)
{
    struct metrics_server *m = calloc(1, sizeof *m);
    size_t i;
    int r = 0;

    if (m == NULL || (m->listeners = calloc(n, sizeof *m->listeners)) ==
                         NULL) {
        free(m);
        for (i = 0; i < n; i++)
            close(fds[i]);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    m->loop = loop;
    m->log = log;
    m->render = render;
    m->ud = ud;
    for (i = 0; i < n; i++) {
        uv_tcp_init(loop, &m->listeners[i]);
        m->listeners[i].data = m;
        m->nlisteners++;
        m->nopen++;
        if ((r = uv_tcp_open(&m->listeners[i], fds[i])) != 0 ||
            (r = uv_listen((uv_stream_t *)&m->listeners[i], 64,
                           metrics_on_connection)) != 0) {
            if (r != 0 && uv_fileno((uv_handle_t *)&m->listeners[i],
                                    &(uv_os_fd_t){0}) != 0)
                close(fds[i]);
            snprintf(err, err_len, "cannot listen on %s: %s", addrs[i].text,
                     uv_strerror(r));
            for (i++; i < n; i++)
                close(fds[i]);
            metrics_close(m);
            return NULL;
        }
    }
    return m;
}

/* metrics_close - see metrics.h. */
void metrics_close(struct metrics_server *m)
{
    if (m == NULL || m->closing)
        return;
    m->closing = true;
    for (size_t i = 0; i < m->nlisteners; i++)
        uv_close((uv_handle_t *)&m->listeners[i], metrics_listener_closed);
    for (struct metrics_conn *c = m->conns; c != NULL; c = c->next)
        metrics_conn_close(c);
    metrics_maybe_free(m);
}
