/*
 * worker.h - one event loop and everything reachable from it.
 *
 * A worker owns its thread, its listeners and its loop's context
 * (loop.h: what its sessions share).
 */
#ifndef STARTTLS_PROXY_WORKER_H
#define STARTTLS_PROXY_WORKER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "loop.h"
#include "tls.h"

struct listener;
struct connlimit;

struct worker {
    struct loop_ctx ctx;             /* what its sessions share */
    uv_loop_t *loop;                 /* == ctx.loop */
    uv_loop_t own_loop;              /* the loop, when worker_run owns it */
    uv_thread_t thread;
    uv_async_t stop_async;           /* another thread asks us to stop */
    struct listener **listeners;
    size_t nlisteners;
    bool stopping;
    int exit_status;                 /* 0: the loop closed cleanly */
};

/* worker_init - set up w on loop; accepts on nothing yet. */
void worker_init(struct worker *w, uv_loop_t *loop, const struct config *cfg,
                 const struct tls_service *tls, struct connlimit *limits,
                 unsigned id);

/*
 * worker_listen - accept on fds: one listening socket per configured
 * address, in service order (see listener_socket).  The worker owns them
 * from now on.  On failure returns -1 with a message in err.
 */
int worker_listen(struct worker *w, const int *fds, char *err,
                  size_t err_len);

/*
 * worker_start - run w in a thread of its own, with its own loop, accepting
 * on fds.  Returns -1 with a message in err when the thread cannot start.
 */
int worker_start(struct worker *w, const struct config *cfg,
                 const struct tls_service *tls, struct connlimit *limits,
                 unsigned id, const int *fds, char *err, size_t err_len);

/* worker_request_stop - from any thread: make w stop (worker_stop). */
void worker_request_stop(struct worker *w);

/* worker_join - wait for w's thread to end; returns 0 if its loop closed
 * cleanly. */
int worker_join(struct worker *w);

/*
 * worker_stop - stop accepting and end every session with 421 4.3.2; the
 * loop then runs dry by itself.  Idempotent.
 */
void worker_stop(struct worker *w);

/* worker_release - free w's buffers once its loop has run dry. */
void worker_release(struct worker *w);

#endif
