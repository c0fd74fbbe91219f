/*
 * loop.h - the per-loop context: what every session of one event loop
 * shares, and nothing else.
 *
 * One per worker thread.  The config and the TLS contexts are shared,
 * immutable, with every other loop; the connection limits are shared
 * too (they lock); everything else here belongs to this loop alone, so
 * nothing on the hot path takes a lock.  Each member has one owner: the
 * session list is session.c's, the conns' shared buffers conn.c's.
 */
#ifndef STARTTLS_PROXY_LOOP_H
#define STARTTLS_PROXY_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "stats.h"

struct session;
struct connlimit;
struct dns_resolver;
struct dns_setup;
struct sts_cache;
struct sts_fetcher;
struct tls_service;
struct tlsrpt_sender;
struct tlsrpt_store;
struct ssl_session_st;

#define LOOP_SCRATCH 16384

/*
 * struct generation - one loaded configuration with its TLS contexts.
 * A reload (SIGHUP) makes a new one; each session keeps the one it
 * started with, so it finishes on it.  Counted: the main thread holds
 * the current one, each worker its current one, each session its own;
 * the last release frees it (from whichever thread).
 */
struct generation {
    struct config *cfg;
    struct tls_service *tls;         /* indexed like cfg->services */
    const struct dns_setup *dns;     /* the resolver's settings, read at
                                        start (not by reload: they may be
                                        outside a chroot); NULL: none */
    struct sts_cache *sts;           /* the MTA-STS policy cache of the
                                        process (opened at start, like
                                        dns); NULL: no sts service */
    struct tlsrpt_store *tlsrpt;     /* the TLS reporting counts of the
                                        process (opened at start); NULL:
                                        no service reports */
    /* backend_sess[w * cfg->nservices + i]: the newest resumable TLS
     * session of service i's backend leg on worker w's loop (written by
     * that loop only).  Per generation: a reload starts with none, so a
     * changed CA or policy is never bypassed by resuming, and a service
     * that moved to another position cannot pick up another's.  NULL:
     * no resumption. */
    struct ssl_session_st **backend_sess;
    unsigned nworkers;               /* rows of backend_sess */
    /* slots[i]: service i's slot, kept by name across reloads
     * (main.c): its counters in the shared connlimit and in each loop's
     * stats; NULL: i itself */
    size_t *slots;
    unsigned long id;                /* 1, 2, ... */
    unsigned long refs;              /* atomic */
};

/* generation_new - take cfg and tls (freed with it); one reference. */
struct generation *generation_new(struct config *cfg, struct tls_service *tls,
                                  unsigned long id);
void generation_hold(struct generation *g);

/* generation_keep_sessions - room for the backend TLS sessions of
 * nworkers loops (before g is shared); -1 when out of memory. */
int generation_keep_sessions(struct generation *g, unsigned nworkers);

/* generation_slot - service svc_index's slot in the connlimit and the
 * stats. */
size_t generation_slot(const struct generation *g, size_t svc_index);

void generation_release(struct generation *g);

struct loop_ctx {
    uv_loop_t *loop;
    struct generation *gen;          /* for new sessions (held) */
    const struct config *cfg;        /* gen->cfg */
    const struct tls_service *tls;   /* gen->tls */
    struct connlimit *limits;        /* shared by all loops (locked) */
    struct logger log;
    unsigned id;                     /* the worker's number */
    uint64_t next_sid;
    struct session *sessions;        /* live sessions (session.c's) */
    unsigned long nsessions;         /* how many: written by this loop
                                        only, read by others (atomic) */
    struct conn_loop conns;          /* conn.c's */
    struct dns_resolver *dns;        /* made by loop_dns when first asked */
    bool dns_failed;                 /* ... and it could not be made */
    struct sts_fetcher *sts;         /* made by loop_sts when first asked */
    bool sts_failed;
    struct tlsrpt_sender *tlsrpt;    /* loop_tlsrpt_start's (worker 0) */
    /* this loop's counters, written by it alone (stats.h), by service
     * slot (generation_slot); grown by the main thread before a reload
     * hands over a generation with new slots.  A slot without memory
     * counts nothing. */
    struct stats stats;
    /* scratch: filled and consumed within one callback, never kept
     * (session_cmd.c: filtered message content) */
    char scratch[LOOP_SCRATCH];
};

/* loop_ctx_init - set up ctx on loop (ctx need not be zeroed), with gen
 * (a reference is taken). */
void loop_ctx_init(struct loop_ctx *ctx, uv_loop_t *loop,
                   struct generation *gen, struct connlimit *limits,
                   unsigned id);

/* loop_ctx_switch - new sessions use gen from now on (a reference is
 * taken; the old one is released).  Backend TLS sessions are kept per
 * generation (struct generation), so gen starts with none. */
void loop_ctx_switch(struct loop_ctx *ctx, struct generation *gen);

/* loop_ctx_release - free what ctx holds once its loop has run dry. */
void loop_ctx_release(struct loop_ctx *ctx);

/* loop_dns - this loop's resolver, made on first use; NULL when it
 * cannot be (logged once) or the loop is stopping. */
struct dns_resolver *loop_dns(struct loop_ctx *ctx);

/* loop_sts - this loop's MTA-STS fetcher, made on first use (with the
 * resolver); NULL when it cannot be (logged once) or the loop is
 * stopping. */
struct sts_fetcher *loop_sts(struct loop_ctx *ctx);

/* loop_tlsrpt_start - send the process's TLS reports from this loop
 * (one loop does it: worker 0's); nothing without a store. */
void loop_tlsrpt_start(struct loop_ctx *ctx);

/* loop_ctx_stop - the loop takes no new sessions: close the resolver's
 * and the fetcher's handles so that the loop can run dry. */
void loop_ctx_stop(struct loop_ctx *ctx);

/* loop_next_sid - a new session id, unique within the process. */
uint64_t loop_next_sid(struct loop_ctx *ctx);

/* loop_backend_session - where service svc_index's (of ctx->gen)
 * backend TLS session is kept on this loop, or NULL. */
struct ssl_session_st **loop_backend_session(struct loop_ctx *ctx,
                                             size_t svc_index);

#endif
