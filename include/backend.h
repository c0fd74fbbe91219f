/*
 * backend.h - the backend leg: one connection to the backend, set up
 * before the client is greeted (README "Architecture", step 2).
 *
 * resolve -> connect -> [implicit TLS] -> greeting -> EHLO -> STARTTLS ->
 * handshake -> [EHLO, AUTH | XCLIENT] -> ready.  The leg is an object of
 * its own: it is embedded in its owner (the session) and talks to it only
 * through struct backend_events, so it knows nothing of the client or of
 * the relay.  Once READY, the bytes the backend sends go to the owner
 * (events.input) and the owner writes through backend_write.
 */
#ifndef STARTTLS_PROXY_BACKEND_H
#define STARTTLS_PROXY_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "config.h"
#include "nexthop.h"
#include "reply.h"
#include "sbuf.h"
#include "stats.h"
#include "sts_fetch.h"

struct conn;
struct conn_loop;
struct logger;
struct tls_service;
struct tlsrpt_store;
struct ssl_session_st;

/* The setup, in order.  Every change goes through one function, which
 * checks it against a table of legal transitions (backend_transition_ok)
 * and logs it (event=backend_state, debug). */
enum backend_state {
    BACKEND_IDLE,         /* not started, or stopped by the owner */
    BACKEND_RESOLVING,
    BACKEND_CONNECTING,
    BACKEND_TLS_IMPLICIT, /* handshake before the greeting */
    BACKEND_GREETING,
    BACKEND_EHLO,
    BACKEND_STARTTLS,
    BACKEND_TLS_HANDSHAKE,
    BACKEND_XCLIENT_EHLO, /* EHLO to learn whether XCLIENT is offered */
    BACKEND_XCLIENT,      /* XCLIENT ADDR=... sent, 220 expected */
    BACKEND_AUTH_EHLO,    /* backend_auth: EHLO over TLS, to learn AUTH */
    BACKEND_AUTH,         /* AUTH PLAIN <response> or AUTH LOGIN sent */
    BACKEND_AUTH_USER,    /* LOGIN: the user name sent, 334 expected */
    BACKEND_AUTH_PASSWORD, /* LOGIN: the password sent, 235 expected */
    BACKEND_READY,        /* relaying: the owner has the conn */
    BACKEND_FAILED,
    BACKEND_NSTATES
};

/*
 * What the leg tells its owner.  Every callback gets the owner pointer
 * given to backend_init.  After refuse the leg does nothing more until
 * the owner closes it.
 */
struct backend_events {
    /* setup is done (b->greeting holds the backend's greeting) */
    void (*ready)(void *owner);
    /* bytes came from the backend: relaying (READY when they came), they
     * wait in b->in for the owner; otherwise the setup has handled them */
    void (*input)(void *owner, bool relaying);
    /* READY: the backend closed (status 0) or failed (< 0) */
    void (*lost)(void *owner, int status);
    /* output fell below the low mark */
    void (*drain)(void *owner);
    /* setup failed: end the session with reply (event, why: the log) */
    void (*refuse)(void *owner, enum reply_id reply, const char *event,
                   const char *why);
    /* a strict rule would refuse: true to refuse, false under
     * "enforce = no" (the owner logs would_refuse) */
    bool (*enforce)(void *owner, const char *rule, const char *detail);
    /* a deadline of the leg moved (see backend_deadline): re-arm */
    void (*arm)(void *owner);
    /* a handle of the leg opened (+1) or closed (-1): the owner lives
     * until every one has closed */
    void (*ref)(void *owner, int delta);
};

/* What the backend leg needs to know about the session it serves. */
struct backend_client {
    const struct sockaddr_storage *addr;  /* the client (PROXY, XCLIENT) */
    const struct sockaddr_storage *dst;   /* where it connected to */
    const char *addr_text;                /* for the log */
};

struct backend_leg {
    /* fixed by backend_init */
    struct conn_loop *conns;          /* where its conns are made */
    uv_loop_t *loop;
    struct logger *log;
    const struct service *svc;
    SSL_CTX *client_ctx;              /* the service's TLS client context */
    const char *hostname;             /* our EHLO name */
    struct ssl_session_st **resume;   /* the service's resumable backend
                                         TLS session on this loop, or NULL */
    uint64_t sid;                     /* session id, for the log */
    struct backend_client client;
    const struct backend_events *ev;
    void *owner;

    /* the next hop in DNS (mx: backends, DANE); NULL: the configured
     * host through getaddrinfo */
    struct dns_resolver *dns;
    struct nexthop *nh;
    bool have_target;                 /* target holds the current one */
    struct nexthop_target target;     /* its pointers live in nh */
    bool policy_failed;               /* the last target failed a policy */
    char *next_why;                   /* why the last target was left,
                                         allocated; NULL: nothing said */
    char *host;                       /* the host connected to, allocated;
                                         NULL before one */

    /* MTA-STS (backend_tls = sts): the domain's policy, found once per
     * session before the first MX lookup */
    struct sts_fetcher *stsf;
    struct sts_lookup *stsq;          /* under way */
    bool sts_known;                   /* stsq answered */
    struct sts_policy *sts;           /* held; NULL: none applies */
    char sts_source[16];              /* "fetched", "cached", "none", ... */
    enum sts_failure sts_failure;     /* of finding it (TLSRPT) */
    /* TLS reporting (RFC 8460): this attempt's result goes here once */
    struct tlsrpt_store *rpt;
    bool reported;
    /* the service's counters on this loop (the owner sets it), or NULL:
     * handshake failures, response injection, bytes */
    struct stats_service *stats;

    /* the connection */
    struct conn *conn;
    enum backend_state state;
    struct sbuf in;                   /* backend bytes not yet handled */
    struct sockaddr_storage addr;
    uv_getaddrinfo_t gai;
    bool gai_busy;
    bool closed;                      /* backend_close: nothing more */
    uint64_t last;                    /* uv_now() of the last read, or of
                                         the request it owes a reply to */
    uint64_t hs_start;                /* TLS handshake began; 0: none */

    /* facts learnt, read by the owner */
    bool plain_retry;                 /* "may": TLS failed, now plaintext */
    bool helo_only;                   /* the backend refused EHLO (the
                                         owner sets it too, when a relayed
                                         EHLO is refused) */
    bool xclient_ok;                  /* it took our XCLIENT ADDR= */
    bool auth_done;                   /* backend_auth: it took our login */
    char *auth_ehlo;                  /* ... and its EHLO reply over TLS,
                                         for the owner to take (the answer
                                         to a refused repeated EHLO) */
    size_t auth_ehlo_len;
    unsigned auth_caps;               /* ... that reply's keywords */
    bool authenticated;               /* the backend's certificate was
                                         checked and passed: verify, a DANE
                                         match, a pin (REQUIRETLS needs it) */
    char *greeting;                   /* its own, for the client */
    size_t greeting_len;
    unsigned nconnections;            /* connections opened */
    char tls_desc[80];                /* "" while plaintext */
    char verify[96];                  /* "" while plaintext */
    char dane[96];                    /* DANE's verdict; "" when none */
    char *sts_desc;                   /* "enforce id=... matched=..." for
                                         the current host, allocated; NULL
                                         when no policy applies to it */
};

/* backend_init - b serves a session of service svc; nothing starts yet. */
void backend_init(struct backend_leg *b, struct conn_loop *conns,
                  uv_loop_t *loop, struct logger *log,
                  const struct service *svc,
                  SSL_CTX *client_ctx, const char *hostname,
                  struct ssl_session_st **resume, uint64_t sid,
                  const struct backend_client *client,
                  const struct backend_events *ev, void *owner);

/* backend_use_dns - look the next hop up with r (the service has an mx:
 * backend or a DANE policy); r may be NULL when the loop has no
 * resolver: every session is then refused.  Before backend_start. */
void backend_use_dns(struct backend_leg *b, struct dns_resolver *r);

/* backend_use_sts - find the domain's MTA-STS policy with f
 * (backend_tls = sts); f may be NULL: every session is then refused.
 * Before backend_start. */
void backend_use_sts(struct backend_leg *b, struct sts_fetcher *f);

/* backend_use_tlsrpt - count each attempt's TLS result in st for the
 * domain's TLS report.  Before backend_start. */
void backend_use_tlsrpt(struct backend_leg *b, struct tlsrpt_store *st);

/* backend_start - open a connection and run the setup; plain_retry says
 * whether it is the plaintext retry of "may". */
void backend_start(struct backend_leg *b, bool plain_retry);

/* backend_stop - drop the connection (the setup starts again only with
 * backend_start). */
void backend_stop(struct backend_leg *b);

/* backend_restart - backend_stop, then backend_start: a fresh backend
 * session. */
void backend_restart(struct backend_leg *b, bool plain_retry);

/* backend_close - the owner is closing: cancel everything.  Idempotent. */
void backend_close(struct backend_leg *b);

/* backend_free - free what b holds, once every handle has closed. */
void backend_free(struct backend_leg *b);

/* backend_is_ready - relaying: the owner may write. */
bool backend_is_ready(const struct backend_leg *b);

/* backend_write - READY: bytes for the backend. */
void backend_write(struct backend_leg *b, const char *buf, size_t len);

/* backend_touch - the owner sent a request: the backend's clock starts
 * now (idle_timeout). */
void backend_touch(struct backend_leg *b);

/* backend_deadline - when the TLS handshake under way is overdue
 * (tls_handshake_timeout), or 0 when none is. */
uint64_t backend_deadline(const struct backend_leg *b);

/* backend_handshake_timeout - that deadline passed: a failed handshake. */
void backend_handshake_timeout(struct backend_leg *b);

/* backend_xclient_helo - "XCLIENT HELO=<name> PROTO=ESMTP|SMTP" CRLF into
 * out; returns its length (as snprintf). */
int backend_xclient_helo(const char *name, bool esmtp, char *out, size_t cap);

const char *backend_state_name(enum backend_state st);

/* backend_transition_ok - may the setup go from state from to state to? */
bool backend_transition_ok(enum backend_state from, enum backend_state to);

#endif
