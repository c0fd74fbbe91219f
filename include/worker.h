/*
 * worker.h - one event loop and everything reachable from it.
 *
 * A worker owns its listeners, its sessions and its scratch buffers.  It
 * shares only immutable things (the config, the TLS contexts) with other
 * workers, so nothing on the hot path takes a lock.
 */
#ifndef STARTTLS_PROXY_WORKER_H
#define STARTTLS_PROXY_WORKER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "tls.h"

struct session;
struct listener;
struct connlimit;
struct ssl_session_st;

#define WORKER_READ_BUF 65536
#define WORKER_PLAIN_BUF 16384

struct worker {
    uv_loop_t *loop;
    uv_loop_t own_loop;              /* the loop, when worker_run owns it */
    uv_thread_t thread;
    uv_async_t stop_async;           /* another thread asks us to stop */
    const int *fds;                  /* listening sockets, one per address,
                                        in service order (worker_listen) */
    const struct config *cfg;
    const struct tls_service *tls;   /* indexed like cfg->services */
    struct connlimit *limits;        /* shared by all workers (locked) */
    struct logger log;
    unsigned id;
    uint64_t next_sid;
    struct session *sessions;        /* live sessions, for shutdown */
    struct listener **listeners;
    size_t nlisteners;
    bool stopping;
    int exit_status;                 /* 0: the loop closed cleanly */
    /* TLS output (conn.c): one conn at a time fills obuf; while a read
     * or drain callback runs (cork > 0) it stays there and goes out in
     * one write at the end */
    unsigned cork;
    char *obuf;
    size_t olen, ocap;
    struct conn *oowner;             /* whose bytes obuf holds, or NULL */
    /* the newest resumable TLS session of each service's backend leg
     * (indexed like cfg->services; NULL array: no resumption) */
    struct ssl_session_st **backend_sess;
    /* scratch: filled and consumed within one callback, never kept */
    char rbuf[WORKER_READ_BUF];
    char pbuf[WORKER_PLAIN_BUF];
    char fbuf[WORKER_PLAIN_BUF];     /* filtered message content */
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

/* worker_backend_session - where service svc_index's backend TLS
 * session is kept on this worker, or NULL. */
struct ssl_session_st **worker_backend_session(struct worker *w,
                                               size_t svc_index);

/* worker_release - free w's buffers once its loop has run dry. */
void worker_release(struct worker *w);

/* worker_next_sid - a new session id, unique within the process. */
uint64_t worker_next_sid(struct worker *w);

#endif
