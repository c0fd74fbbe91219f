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
#include "session.h"

/* worker_on_accept - a listener's new connection becomes a session. */
static void worker_on_accept(void *ud, size_t svc_index, int fd)
{
    struct worker *w = ud;

    session_accept(&w->ctx, svc_index, fd);
}

void worker_init(struct worker *w, uv_loop_t *loop, const struct config *cfg,
                 const struct tls_service *tls, struct connlimit *limits,
                 unsigned id)
{
    w->loop = loop;
    w->listeners = NULL;
    w->nlisteners = 0;
    w->stopping = false;
    w->exit_status = 0;
    loop_ctx_init(&w->ctx, loop, cfg, tls, limits, id);
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

/* worker_stop - see worker.h. */
void worker_stop(struct worker *w)
{
    if (w->stopping)
        return;
    w->stopping = true;
    for (size_t i = 0; i < w->nlisteners; i++)
        listener_close(w->listeners[i]);
    free(w->listeners);
    w->listeners = NULL;
    w->nlisteners = 0;
    session_shutdown_all(&w->ctx, REPLY_SHUTDOWN);
}

static void worker_on_stop(uv_async_t *a)
{
    struct worker *w = a->data;

    worker_stop(w);
    uv_close((uv_handle_t *)a, NULL);
}

/* worker_thread - the body of a worker thread: run the loop dry. */
static void worker_thread(void *arg)
{
    struct worker *w = arg;

    uv_run(w->loop, UV_RUN_DEFAULT);
    w->exit_status = uv_loop_close(w->loop) == 0 ? 0 : 1;
    worker_release(w);
}

/* worker_release - see worker.h. */
void worker_release(struct worker *w)
{
    loop_ctx_release(&w->ctx);
}

/* worker_start - see worker.h. */
int worker_start(struct worker *w, const struct config *cfg,
                 const struct tls_service *tls, struct connlimit *limits,
                 unsigned id, const int *fds, char *err, size_t err_len)
{
    int r;

    worker_init(w, &w->own_loop, cfg, tls, limits, id);   /* zeroes w first */
    r = uv_loop_init(&w->own_loop);                /* keeps loop->data */
    if (r == 0)
        r = uv_async_init(w->loop, &w->stop_async, worker_on_stop);
    if (r != 0) {
        snprintf(err, err_len, "cannot create event loop: %s", uv_strerror(r));
        return -1;
    }
    w->stop_async.data = w;
    if (worker_listen(w, fds, err, err_len) != 0) {
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
        uv_close((uv_handle_t *)&w->stop_async, NULL);
        uv_run(w->loop, UV_RUN_DEFAULT);
        uv_loop_close(w->loop);
        return -1;
    }
    return 0;
}

void worker_request_stop(struct worker *w)
{
    uv_async_send(&w->stop_async);
}

int worker_join(struct worker *w)
{
    uv_thread_join(&w->thread);
    return w->exit_status;
}
