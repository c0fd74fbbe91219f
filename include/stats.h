/*
 * stats.h - the counters of one worker, per service, and their sum as
 * Prometheus text.
 *
 * Each worker owns one struct stats (loop.h) and is its only writer:
 * an increment is a relaxed load and store of its own word, no lock and
 * no locked instruction.  The metrics endpoint (main thread) reads every
 * worker's words with relaxed loads and adds them up at scrape time.
 *
 * Counters are indexed by service slot (struct generation, main.c): a
 * service that a reload keeps (by name) keeps its slot wherever it
 * moves, so its counters are never reset; an added one gets a fresh
 * slot.  Slots only grow: the main thread adds them (stats_reserve)
 * before it hands the generation that uses them to the worker, and
 * they never move, so a session of an older generation still counts
 * into its own.
 * Every label value is from a fixed table here: nothing a peer sends, no
 * address, becomes a label.
 */
#ifndef STARTTLS_PROXY_STATS_H
#define STARTTLS_PROXY_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "promtext.h"

/* the TLS outcome of one leg, as the session ended */
enum stats_tls {
    STATS_TLS_NONE,           /* backend leg never set up */
    STATS_TLS_PLAINTEXT,
    STATS_TLS_TLS,            /* encrypted, peer not authenticated */
    STATS_TLS_VERIFIED,       /* certificate chain and name checked */
    STATS_TLS_DANE,           /* a TLSA record matched */
    STATS_TLS_FINGERPRINT,    /* a pinned certificate or key matched */
    STATS_TLS_N
};

enum stats_msg {
    STATS_MSG_ACCEPTED,       /* the backend's 2xx to end of data */
    STATS_MSG_REFUSED,        /* 5xx */
    STATS_MSG_TEMPFAIL,       /* 4xx */
    STATS_MSG_VANISHED,       /* the client left before the end reply */
    STATS_MSG_N
};

enum stats_leg { STATS_LEG_CLIENT, STATS_LEG_BACKEND, STATS_LEG_N };

enum stats_hs {
    STATS_HS_HANDSHAKE,       /* the handshake failed (alert, protocol) */
    STATS_HS_TIMEOUT,
    STATS_HS_CLOSED,          /* the peer went away during it */
    STATS_HS_VERIFY,          /* chain or name check failed (verify) */
    STATS_HS_DANE,            /* no TLSA record matched */
    STATS_HS_FINGERPRINT,     /* no pin matched */
    STATS_HS_STS,             /* the MTA-STS policy's check failed */
    STATS_HS_N
};

/* the rules of session_enforce (and the backend leg's policies) */
enum stats_rule {
    STATS_RULE_BACKEND_TLS,
    STATS_RULE_DANE,
    STATS_RULE_STS,
    STATS_RULE_FINGERPRINT,
    STATS_RULE_CLIENT_TLS_ENCRYPT,
    STATS_RULE_PREGREET,
    STATS_RULE_BARE_NEWLINE,
    STATS_RULE_NUL_BYTE,
    STATS_RULE_MAX_ERRORS,
    STATS_RULE_MAX_CONNECTIONS,
    STATS_RULE_MAX_CONNECTIONS_PER_IP,
    STATS_RULE_SOURCES,       /* a client outside the service's sources */
    STATS_RULE_BACKEND_AUTH,  /* the backend refused the proxy's login */
    STATS_RULE_OTHER,
    STATS_RULE_N
};

enum stats_event {
    STATS_EV_SMUGGLING_NORMALIZED,   /* bare CR/LF in content rewritten */
    STATS_EV_SMUGGLING_REFUSED,      /* ... the message refused */
    STATS_EV_BARE_NEWLINE_COMMAND,
    STATS_EV_NUL_REMOVED,            /* a message or command had NULs */
    STATS_EV_STARTTLS_INJECTION,     /* client bytes behind STARTTLS */
    STATS_EV_RESPONSE_INJECTION,     /* backend bytes behind its 220 */
    STATS_EV_PREGREET,
    STATS_EV_BACKEND_GARBAGE,
    STATS_EV_LIMIT,                  /* a connection limit was hit */
    STATS_EV_LINE_TOO_LONG,
    STATS_EV_TIMEOUT,
    STATS_EV_TRANSPARENT_LOOP,       /* transparent: refused, our own */
    STATS_EV_TRANSPARENT_DENIED,     /* ... outside transparent_destinations */
    STATS_EV_TRANSPARENT_UNKNOWN,    /* ... no original destination */
    STATS_EV_N
};

enum stats_dir {
    STATS_DIR_FROM_CLIENT,    /* plaintext bytes the client sent */
    STATS_DIR_FROM_BACKEND,   /* ... the backend sent */
    STATS_DIR_N
};

enum stats_hist {
    STATS_H_BACKEND_SETUP,    /* accept to backend leg ready */
    STATS_H_CLIENT_HANDSHAKE, /* client leg's TLS handshake */
    STATS_H_SESSION,          /* accept to end */
    STATS_H_N
};

#define STATS_BUCKETS 12      /* upper bounds; one more bucket above */

struct stats_histogram {
    uint64_t counts[STATS_BUCKETS + 1];
    uint64_t sum_us;
};

struct stats_service {
    uint64_t sessions[STATS_TLS_N][STATS_TLS_N];  /* [client][backend] */
    uint64_t started, ended;        /* active = started - ended */
    uint64_t messages[STATS_MSG_N];
    uint64_t handshake[STATS_LEG_N][STATS_HS_N];
    uint64_t policy[STATS_RULE_N][2];             /* [rule][enforced] */
    uint64_t events[STATS_EV_N];
    uint64_t bytes[STATS_DIR_N];
    struct stats_histogram hist[STATS_H_N];
};

#define STATS_CHUNK 16            /* slots per allocation */
#define STATS_MAX_CHUNKS 1024     /* so at most 16384 slots */

struct stats {
    size_t nslots;            /* atomic: written by the main thread */
    struct stats_service *chunk[STATS_MAX_CHUNKS];   /* never moved */
};

/* stats_init - zeroed counters for nslots slots; -1: no memory. */
int stats_init(struct stats *st, size_t nslots);

/* stats_reserve - zeroed counters for slots up to nslots (those there
 * stay where they are); -1: no memory, or past the last chunk. */
int stats_reserve(struct stats *st, size_t nslots);
void stats_free(struct stats *st);

/* stats_add - the owner's increment (see above); NULL-safe callers pass
 * through stats_of. */
static inline void stats_add(uint64_t *w, uint64_t n)
{
    __atomic_store_n(w, __atomic_load_n(w, __ATOMIC_RELAXED) + n,
                     __ATOMIC_RELAXED);
}

/* stats_of - the counters of service slot slot, or NULL. */
struct stats_service *stats_of(struct stats *st, size_t slot);

/* stats_observe - one observation of us microseconds in histogram h. */
void stats_observe(struct stats_service *s, enum stats_hist h, uint64_t us);

/* stats_rule - the rule named name (session_enforce's), or OTHER. */
enum stats_rule stats_rule(const char *name);

/* stats_tls_of - a leg's outcome from its verify text ("verified",
 * "dane", "fingerprint:...", anything else: not authenticated). */
enum stats_tls stats_tls_of(bool encrypted, const char *verify);

/*
 * stats_render - the sum over the n workers' counters, for the services
 * of cfg (service i's in slot slots[i]; slots NULL: slot i), as
 * exposition text: every counter and histogram family of this file,
 * each with its HELP and TYPE, every label combination of a service
 * present (zeros included, so rates start at once).  A service that a
 * reload removed is no longer shown.
 */
void stats_render(struct promtext_buf *b, const struct stats *const *w,
                  size_t n, const struct config *cfg, const size_t *slots);

#endif
