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
struct worker_reload;

struct worker {
    struct loop_ctx ctx;             /* what its sessions share */
    uv_loop_t *loop;                 /* == ctx.loop */
    uv_loop_t own_loop;              /* the loop, when worker_run owns it */
    uv_thread_t thread;
    uv_async_t stop_async;           /* another thread asks us to stop */
    uv_mutex_t stop_lock;            /* guards the next three */
    bool stop_open;                  /* stop_async may be sent to */
    int stop_request;                /* enum worker_stop_mode asked for */
    uv_async_t *done;                /* sent when the thread ends, or NULL */
    bool finished;                   /* ... and it has (under stop_lock) */
    struct worker_reload *reloads;   /* to take, oldest first (under
                                        stop_lock) */
    uv_timer_t drain_timer;          /* a graceful stop's clock */
    uint64_t drain_deadline;
    bool draining, drain_forced;
    struct listener **listeners;
    size_t nlisteners;
    bool stopping;
    int exit_status;                 /* 0: the loop closed cleanly */
};

enum worker_stop_mode {
    WORKER_RUN,
    WORKER_DRAIN,     /* stop accepting, let messages in flight end */
    WORKER_NOW        /* stop accepting, end every session */
};

/* worker_init - set up w on loop; accepts on nothing yet. */
void worker_init(struct worker *w, uv_loop_t *loop, struct generation *gen,
                 struct connlimit *limits, unsigned id);

/*
 * worker_listen - accept on fds: one listening socket per configured
 * address, in service order (see listener_socket).  The worker owns them
 * from now on.  On failure returns -1 with a message in err.
 */
int worker_listen(struct worker *w, const int *fds, char *err,
                  size_t err_len);

/*
 * worker_start - run w in a thread of its own, with its own loop, accepting
 * on fds; done (if not NULL) is sent when the thread ends.  Returns -1
 * with a message in err when the thread cannot start.
 */
int worker_start(struct worker *w, struct generation *gen,
                 struct connlimit *limits, unsigned id, const int *fds,
                 uv_async_t *done, char *err, size_t err_len);

/*
 * worker_request_reload - from any thread: new sessions of w use gen (w
 * takes its own reference) once w's loop has seen it, and w's listeners
 * become gen's addresses.  fds has one entry per address of gen, in
 * service order: a listening socket for an address the previous
 * generation did not have (w owns it from now on), -1 for the others.
 * An address w listens on already keeps its socket; one gen no longer
 * has is drained (its queued connections are served on the old
 * generation) and closed.  Requests are taken in order, none skipped.
 */
void worker_request_reload(struct worker *w, struct generation *gen,
                           const int *fds, size_t nfds);

/*
 * worker_request_stop - from any thread: make w stop, at once
 * (WORKER_NOW: worker_stop) or gracefully (WORKER_DRAIN: no new sessions;
 * sessions without a message in flight end now with 421 4.3.2, the
 * others after the backend's answer to it, and every one within
 * drain_timeout).  A drain can be turned into a stop at once; a request
 * after the thread ended is ignored.
 */
void worker_request_stop(struct worker *w, enum worker_stop_mode mode);

/* worker_finished - has w's thread ended (safe from any thread)? */
bool worker_finished(struct worker *w);

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
