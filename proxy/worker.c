/*
 * worker.c - one loop per thread: its listeners and its sessions.
 */
#include "worker.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listener.h"
#include "netaddr.h"
#include "session.h"

/* One reload asked of a worker (worker_request_reload). */
struct worker_reload {
    struct worker_reload *next;
    struct generation *gen;          /* held */
    size_t nfds;
    int fds[];                       /* per address of gen: new socket or -1 */
};

/* worker_reload_free - a request not taken (or taken): its reference and
 * any socket still in it. */
static void worker_reload_free(struct worker_reload *r)
{
    for (size_t k = 0; k < r->nfds; k++)
        if (r->fds[k] >= 0)
            close(r->fds[k]);
    generation_release(r->gen);
    free(r);
}

/* worker_on_accept - a listener's new connection becomes a session. */
static void worker_on_accept(void *ud, size_t svc_index, int fd,
                             const struct sockaddr_storage *peer)
{
    struct worker *w = ud;

    session_accept(&w->ctx, svc_index, fd, peer);
}

void worker_init(struct worker *w, uv_loop_t *loop, struct generation *gen,
                 struct connlimit *limits, unsigned id)
{
    w->loop = loop;
    w->listeners = NULL;
    w->nlisteners = 0;
    w->stopping = false;
    w->exit_status = 0;
    w->stop_open = false;
    w->stop_request = WORKER_RUN;
    w->done = NULL;
    w->finished = false;
    w->reloads = NULL;
    w->draining = w->drain_forced = false;
    uv_mutex_init(&w->stop_lock);
    loop_ctx_init(&w->ctx, loop, gen, limits, id);
    loop->data = w;
}

/* worker_listen - see worker.h. */
int worker_listen(struct worker *w, const int *fds, char *err, size_t err_len)
{
    size_t total = 0, i, j, k = 0;

    for (i = 0; i < w->ctx.cfg->nservices; i++)
        total += w->ctx.cfg->services[i].nlisten;
    w->listeners = calloc(total, sizeof *w->listeners);
    if (w->listeners == NULL) {
        snprintf(err, err_len, "out of memory");
        for (k = 0; k < total; k++)
            close(fds[k]);
        return -1;
    }
    for (i = 0; i < w->ctx.cfg->nservices; i++) {
        const struct service *svc = &w->ctx.cfg->services[i];

        for (j = 0; j < svc->nlisten; j++, k++) {
            struct listener *l = listener_open(w->loop, &w->ctx.log, i,
                                               &svc->listen[j], fds[k],
                                               worker_on_accept, w, err,
                                               err_len);
            if (l == NULL) {
                for (k++; k < total; k++)
                    close(fds[k]);
                worker_stop(w);
                return -1;
            }
            w->listeners[w->nlisteners++] = l;
        }
    }
    return 0;
}

/* worker_close_listeners - accept no more. */
static void worker_close_listeners(struct worker *w)
{
    for (size_t i = 0; i < w->nlisteners; i++)
        listener_close(w->listeners[i]);
    free(w->listeners);
    w->listeners = NULL;
    w->nlisteners = 0;
}

/* worker_stop - see worker.h. */
void worker_stop(struct worker *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    worker_close_listeners(w);
    session_shutdown_all(&w->ctx, REPLY_SHUTDOWN);
}

/* worker_stop_done - nothing more to ask of this loop: close the stop
 * handles, so that it runs dry when its last session has gone. */
static void worker_stop_done(struct worker *w)
{
    struct worker_reload *pending, *next;

    uv_mutex_lock(&w->stop_lock);
    w->stop_open = false;
    pending = w->reloads;
    w->reloads = NULL;
    uv_mutex_unlock(&w->stop_lock);
    for (; pending != NULL; pending = next) {
        next = pending->next;
        worker_reload_free(pending);
    }
    loop_ctx_stop(&w->ctx);
    uv_close((uv_handle_t *)&w->stop_async, NULL);
    if (w->draining)
        uv_close((uv_handle_t *)&w->drain_timer, NULL);
}

/*
 * worker_on_drain_tick - during a graceful stop, ten times a second:
 * done when the last session has gone; at drain_timeout, the sessions
 * still waiting for their message are ended too.
 */
static void worker_on_drain_tick(uv_timer_t *t)
{
    struct worker *w = t->data;

    if (w->ctx.sessions == NULL) {
        log_event(&w->ctx.log, LOG_INFO, 0, "event=drained");
        worker_stop_done(w);
        return;
    }
    if (!w->drain_forced && uv_now(w->loop) >= w->drain_deadline) {
        w->drain_forced = true;
        log_event(&w->ctx.log, LOG_WARN, 0,
                  "event=drain_timeout action=shutdown");
        w->stopping = true;
        session_shutdown_all(&w->ctx, REPLY_SHUTDOWN);
    }
}

/* worker_drain - the graceful stop (WORKER_DRAIN). */
static void worker_drain(struct worker *w)
{
    if (w->stopping || w->draining)
        return;
    w->draining = true;
    worker_close_listeners(w);
    session_drain_all(&w->ctx);
    w->drain_deadline = uv_now(w->loop) +
                        (uint64_t)w->ctx.cfg->drain_timeout * 1000;
    uv_timer_init(w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_timer_start(&w->drain_timer, worker_on_drain_tick, 0, 100);
}

/*
 * worker_apply_reload - one reload: the listeners of r->gen's addresses
 * (kept by address, or opened on r's new sockets), the removed ones
 * drained and closed while the loop still runs the old generation, so
 * that what they had queued is served by the service it came for; then
 * new sessions use r->gen.
 */
static void worker_apply_reload(struct worker *w, struct worker_reload *r)
{
    const struct config *cfg = r->gen->cfg;
    struct listener **next = NULL;
    size_t total = 0, k = 0, n = 0;
    char err[300];

    for (size_t i = 0; i < cfg->nservices; i++)
        total += cfg->services[i].nlisten;
    if (!w->stopping && !w->draining && total == r->nfds)
        next = calloc(total ? total : 1, sizeof *next);
    if (next == NULL && (w->stopping || w->draining)) {
        loop_ctx_switch(&w->ctx, r->gen);     /* no listeners left */
        return;
    }
    if (next == NULL) {
        /* the listeners name their addresses in the old configuration:
         * this loop stays on it */
        log_event(&w->ctx.log, LOG_ERROR, 0, "event=reload_error worker=%u "
                  "error=\"out of memory: this worker keeps its "
                  "configuration\"", w->ctx.id);
        return;
    }
    for (size_t i = 0; i < cfg->nservices; i++)
        for (size_t j = 0; j < cfg->services[i].nlisten; j++, k++) {
            const struct listen_addr *a = &cfg->services[i].listen[j];

            for (size_t m = 0; m < w->nlisteners && next[k] == NULL; m++)
                if (w->listeners[m] != NULL &&
                    netaddr_same(&listener_addr(w->listeners[m])->addr,
                                 &a->addr)) {
                    next[k] = w->listeners[m];     /* kept: same socket */
                    w->listeners[m] = NULL;
                }
            if (next[k] == NULL && r->fds[k] >= 0) {
                next[k] = listener_open(w->loop, &w->ctx.log, i, a,
                                        r->fds[k], worker_on_accept, w,
                                        err, sizeof err);
                if (next[k] == NULL)
                    log_event(&w->ctx.log, LOG_ERROR, 0, "event=reload_error "
                              "worker=%u error=\"%s\"", w->ctx.id, err);
            } else if (r->fds[k] >= 0) {
                close(r->fds[k]);
            }
            r->fds[k] = -1;
        }
    for (size_t m = 0; m < w->nlisteners; m++) {
        struct listener *l = w->listeners[m];
        const struct listen_addr *a;
        size_t svc, queued;

        if (l == NULL)
            continue;
        svc = listener_service(l);
        a = listener_addr(l);
        queued = listener_drain_close(l);
        log_event(&w->ctx.log, LOG_INFO, 0, "event=listener_closed "
                  "service=%s listen=%s worker=%u queued=%zu",
                  w->ctx.cfg->services[svc].name, a->text, w->ctx.id, queued);
    }
    loop_ctx_switch(&w->ctx, r->gen);
    k = 0;
    for (size_t i = 0; i < cfg->nservices; i++)
        for (size_t j = 0; j < cfg->services[i].nlisten; j++, k++)
            if (next[k] != NULL) {
                listener_set_service(next[k], i, &cfg->services[i].listen[j]);
                next[n++] = next[k];
            }
    free(w->listeners);
    w->listeners = next;
    w->nlisteners = n;
}

/* worker_take_reload - every reload main asked for, oldest first. */
static void worker_take_reload(struct worker *w)
{
    struct worker_reload *r, *next;

    uv_mutex_lock(&w->stop_lock);
    r = w->reloads;
    w->reloads = NULL;
    uv_mutex_unlock(&w->stop_lock);
    for (; r != NULL; r = next) {
        next = r->next;
        worker_apply_reload(w, r);
        worker_reload_free(r);
    }
}

/* worker_request_reload - see worker.h. */
void worker_request_reload(struct worker *w, struct generation *gen,
                           const int *fds, size_t nfds)
{
    struct worker_reload *r = malloc(sizeof *r + nfds * sizeof *r->fds);
    struct worker_reload **tail;

    if (r == NULL) {
        for (size_t k = 0; k < nfds; k++)
            if (fds[k] >= 0)
                close(fds[k]);
        log_event(&w->ctx.log, LOG_ERROR, 0, "event=reload_error worker=%u "
                  "error=\"out of memory: this worker keeps its "
                  "configuration\"", w->ctx.id);
        return;
    }
    r->next = NULL;
    r->gen = gen;
    r->nfds = nfds;
    memcpy(r->fds, fds, nfds * sizeof *fds);
    generation_hold(gen);
    uv_mutex_lock(&w->stop_lock);
    if (w->stop_open) {
        for (tail = &w->reloads; *tail != NULL; tail = &(*tail)->next)
            ;
        *tail = r;
        r = NULL;
        uv_async_send(&w->stop_async);
    }
    uv_mutex_unlock(&w->stop_lock);
    if (r != NULL)
        worker_reload_free(r);
}

static void worker_on_stop(uv_async_t *a)
{
    struct worker *w = a->data;
    int mode;

    worker_take_reload(w);
    uv_mutex_lock(&w->stop_lock);
    mode = w->stop_request;
    uv_mutex_unlock(&w->stop_lock);
    if (mode == WORKER_RUN)
        return;                           /* only a reload */
    if (mode == WORKER_DRAIN) {
        worker_drain(w);
        return;
    }
    worker_stop(w);
    worker_stop_done(w);
}

/* worker_thread - the body of a worker thread: run the loop dry. */
static void worker_thread(void *arg)
{
    struct worker *w = arg;

    if (w->ctx.id == 0)
        loop_tlsrpt_start(&w->ctx);
    uv_run(w->loop, UV_RUN_DEFAULT);
    w->exit_status = uv_loop_close(w->loop) == 0 ? 0 : 1;
    worker_release(w);
    uv_mutex_lock(&w->stop_lock);
    w->finished = true;
    if (w->done != NULL)
        uv_async_send(w->done);   /* under the lock: see worker_finished */
    uv_mutex_unlock(&w->stop_lock);
}

/* worker_finished - see worker.h. */
bool worker_finished(struct worker *w)
{
    bool f;

    uv_mutex_lock(&w->stop_lock);
    f = w->finished;
    uv_mutex_unlock(&w->stop_lock);
    return f;
}

/* worker_release - see worker.h. */
void worker_release(struct worker *w)
{
    loop_ctx_release(&w->ctx);
}

/* worker_start - see worker.h. */
int worker_start(struct worker *w, struct generation *gen,
                 struct connlimit *limits, unsigned id, const int *fds,
                 uv_async_t *done, char *err, size_t err_len)
{
    int r;

    worker_init(w, &w->own_loop, gen, limits, id);
    w->done = done;
    r = uv_loop_init(&w->own_loop);                /* keeps loop->data */
    if (r == 0)
        r = uv_async_init(w->loop, &w->stop_async, worker_on_stop);
    if (r != 0) {
        snprintf(err, err_len, "cannot create event loop: %s", uv_strerror(r));
        return -1;
    }
    w->stop_async.data = w;
    w->stop_open = true;
    if (worker_listen(w, fds, err, err_len) != 0) {
        w->stop_open = false;
        uv_close((uv_handle_t *)&w->stop_async, NULL);
        uv_run(w->loop, UV_RUN_DEFAULT);
        uv_loop_close(w->loop);
        return -1;
    }
    r = uv_thread_create(&w->thread, worker_thread, w);
    if (r != 0) {
        snprintf(err, err_len, "cannot start worker thread: %s",
                 uv_strerror(r));
        worker_stop(w);
        w->stop_open = false;
        uv_close((uv_handle_t *)&w->stop_async, NULL);
        uv_run(w->loop, UV_RUN_DEFAULT);
        uv_loop_close(w->loop);
        return -1;
    }
    return 0;
}

/* worker_request_stop - see worker.h. */
void worker_request_stop(struct worker *w, enum worker_stop_mode mode)
{
    uv_mutex_lock(&w->stop_lock);
    if (w->stop_open && (int)mode > w->stop_request) {
        w->stop_request = mode;
        uv_async_send(&w->stop_async);
    }
    uv_mutex_unlock(&w->stop_lock);
}

int worker_join(struct worker *w)
{
    uv_thread_join(&w->thread);
    uv_mutex_destroy(&w->stop_lock);
    return w->exit_status;
}
