/*
 * nexthop.h - where the backend leg connects to, found in DNS: the MX
 * hosts of a mail domain (RFC 5321 5.1, RFC 7505) or one named host,
 * their addresses, and for DANE (RFC 7672) their TLSA records, with
 * whether DNSSEC vouched for each step.
 *
 * The leg asks for one target at a time (nexthop_next); each answer is
 * the next address to try, in order: MX preference, random among equal
 * preferences, every address of one host (IPv4 first) before the next
 * host.  A host whose lookups fail is skipped, the reason kept, so that
 * when nothing is left the refusal can say why.
 */
#ifndef STARTTLS_PROXY_NEXTHOP_H
#define STARTTLS_PROXY_NEXTHOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dns.h"
#include "tls.h"

struct logger;

#define NEXTHOP_MAX_HOSTS 16     /* MX hosts considered */
#define NEXTHOP_MAX_ADDRS 8      /* addresses tried per host */
#define NEXTHOP_MAX_TLSA 16      /* TLSA records kept per host */

/* What DANE found for a host (RFC 7672 2.2). */
enum nexthop_dane {
    DANE_OFF = 0,         /* not asked: the policy is not dane */
    DANE_INSECURE,        /* no secure TLSA: NODATA, or an unsigned zone */
    DANE_UNUSABLE,        /* secure TLSA, none usable: encrypt only */
    DANE_USABLE           /* at least one usable record */
};

/* How a search ended when no target is left. */
enum nexthop_end {
    NEXTHOP_TARGET = 0,   /* a target: connect to it */
    NEXTHOP_EXHAUSTED,    /* every target was tried or failed */
    NEXTHOP_NULL_MX,      /* the domain accepts no mail (RFC 7505) */
    NEXTHOP_NO_DOMAIN,    /* the mail domain does not exist */
    NEXTHOP_DNS_FAILED,   /* the MX lookup failed (SERVFAIL, bogus, ...) */
    NEXTHOP_HOST_SKIPPED  /* not an end: a host given up, see below */
};

struct nexthop_target {
    const char *host;               /* MX host, or the backend host */
    const char *domain;             /* the mail domain (mx:), or NULL */
    struct sockaddr_storage addr;   /* port set */
    bool secure;                    /* DNSSEC all the way to addr */
    enum nexthop_dane dane;
    const struct tlsa_rr *tlsa;     /* dane != DANE_OFF: the records */
    size_t ntlsa;
    uint64_t tlsa_digest;           /* of the record set, for the log and
                                       to tell two sets apart */
    const char *dns;                /* the DNS outcome, for the log */
};

/* The answer to nexthop_next: t is valid until the next call. */
typedef void (*nexthop_cb)(void *ud, enum nexthop_end end,
                           const struct nexthop_target *t, const char *why);

struct nexthop;

/* nexthop_new - search for the targets of svc with resolver r (DANE
 * records when dane is set); NULL when out of memory. */
struct nexthop *nexthop_new(struct dns_resolver *r, const char *name,
                            const char *port, bool mx, bool dane,
                            struct logger *log, uint64_t sid, nexthop_cb cb,
                            void *ud);

/* nexthop_next - find the next target; cb runs exactly once per call
 * unless nexthop_free comes first: later, from a DNS answer, or from
 * inside this call when the answer is already known (the next address of
 * the same host, a resolver that cannot take the query).  why says why
 * the previous target was given up (the log).
 *
 * Before that answer cb may also be called with NEXTHOP_HOST_SKIPPED,
 * once per host whose TLSA lookup failed (bogus, SERVFAIL, timeout: RFC
 * 7672 2.1.1 never takes that for "no TLSA"): t->host and t->addr (its
 * first address) say which, why says how; the search goes on when cb
 * returns, so cb must not free nh then.  For TLS reports. */
void nexthop_next(struct nexthop *nh, const char *why);

/* nexthop_free - cancel what is pending and free nh.  NULL is fine. */
void nexthop_free(struct nexthop *nh);

/* nexthop_mx_order - sort prefs[0..n) ascending, keeping order[] in step,
 * and shuffle runs of equal preference (RFC 5321 5.1) with rnd (a value
 * per element: tests pass fixed ones). */
void nexthop_mx_order(unsigned *prefs, unsigned *order, const uint32_t *rnd,
                      unsigned n);

#endif
