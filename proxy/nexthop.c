/*
 * nexthop.c - MX hosts, addresses and TLSA records of the next hop (see
 * nexthop.h).
 *
 * One host at a time: its A and AAAA lookups go out together, then (for
 * DANE, and only when every step so far was secure: RFC 7672 2.2) its
 * TLSA lookup.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <openssl/rand.h>

#include "log.h"
#include "netaddr.h"
#include "nexthop.h"

enum nh_phase { NH_START, NH_MX, NH_HOSTS };

struct nexthop {
    struct dns_resolver *r;
    char name[256];              /* mail domain or backend host */
    unsigned port;
    bool mx, dane;
    struct logger *log;
    uint64_t sid;
    nexthop_cb cb;
    void *ud;

    enum nh_phase phase;
    bool mx_secure;              /* the MX answer (or its absence) was */
    char hosts[NEXTHOP_MAX_HOSTS][256];
    unsigned nhosts;
    unsigned cur_host;           /* NEXTHOP_MAX_HOSTS: none yet */

    /* the current host */
    struct dns_query *q4, *q6, *qt, *qmx;
    struct sockaddr_storage v4[NEXTHOP_MAX_ADDRS], v6[NEXTHOP_MAX_ADDRS];
    unsigned n4, n6;
    bool secure4, secure6;
    enum dns_status st4, st6;
    struct sockaddr_storage addrs[2 * NEXTHOP_MAX_ADDRS];
    unsigned naddrs, cur_addr;
    bool addr_secure;
    enum nexthop_dane dane_state;
    struct tlsa_rr tlsa[NEXTHOP_MAX_TLSA];
    unsigned char *tlsa_data;
    size_t ntlsa;
    uint64_t digest;
    char tlsa_text[96];

    struct nexthop_target t;
    char dns_text[200];
    char last_why[300];
};

static void nh_host_begin(struct nexthop *nh, unsigned i);

/* nexthop_new - see nexthop.h. */
struct nexthop *nexthop_new(struct dns_resolver *r, const char *name,
                            const char *port, bool mx, bool dane,
                            struct logger *log, uint64_t sid, nexthop_cb cb,
                            void *ud)
{
    struct nexthop *nh = calloc(1, sizeof *nh);

    if (nh == NULL)
        return NULL;
    nh->r = r;
    snprintf(nh->name, sizeof nh->name, "%s", name);
    nh->port = (unsigned)strtoul(port, NULL, 10);   /* validated */
    nh->mx = mx;
    nh->dane = dane;
    nh->log = log;
    nh->sid = sid;
    nh->cb = cb;
    nh->ud = ud;
    nh->cur_host = NEXTHOP_MAX_HOSTS;
    return nh;
}

static void nh_cancel_host(struct nexthop *nh)
{
    dns_cancel(nh->q4);
    dns_cancel(nh->q6);
    dns_cancel(nh->qt);
    nh->q4 = nh->q6 = nh->qt = NULL;
    free(nh->tlsa_data);
    nh->tlsa_data = NULL;
    nh->ntlsa = 0;
}

/* nexthop_free - see nexthop.h. */
void nexthop_free(struct nexthop *nh)
{
    if (nh == NULL)
        return;
    nh_cancel_host(nh);
    dns_cancel(nh->qmx);
    free(nh);
}

/* nh_end - nothing (more) to connect to. */
static void nh_end(struct nexthop *nh, enum nexthop_end end, const char *why)
{
    nh->cb(nh->ud, end, NULL, why);
}

/* nh_why - remember why a host was given up (the refusal names the last
 * reason when none is left) and log it. */
static void nh_why(struct nexthop *nh, const char *what, const char *host,
                   const char *detail)
{
    snprintf(nh->last_why, sizeof nh->last_why, "%s %s: %s", what, host,
             detail);
    log_event(nh->log, LOG_WARN, nh->sid, "event=nexthop_skipped host=%s "
              "reason=\"%s\"", nh->hosts[nh->cur_host], nh->last_why);
}

/* nh_deliver - the current address of the current host is the target. */
static void nh_deliver(struct nexthop *nh)
{
    static const char *const dane_names[] = {"off", "insecure", "unusable",
                                             "usable"};
    struct nexthop_target *t = &nh->t;

    memset(t, 0, sizeof *t);
    t->host = nh->hosts[nh->cur_host];
    t->domain = nh->mx ? nh->name : NULL;
    t->addr = nh->addrs[nh->cur_addr];
    t->secure = nh->addr_secure;
    t->dane = nh->dane_state;
    t->tlsa = nh->tlsa;
    t->ntlsa = nh->ntlsa;
    t->tlsa_digest = nh->digest;
    snprintf(nh->dns_text, sizeof nh->dns_text,
             "%s%s address=%s dane=%s%s%s", nh->mx ? "mx=" : "",
             nh->mx ? (nh->mx_secure ? "secure" : "insecure") : "",
             nh->addr_secure ? "secure" : "insecure",
             dane_names[nh->dane_state], nh->tlsa_text[0] ? " " : "",
             nh->tlsa_text);
    t->dns = nh->dns_text + (nh->mx ? 0 : 1);
    nh->cb(nh->ud, NEXTHOP_TARGET, t, NULL);
}

/* nh_skipped - tell the caller the current host is given up before any
 * connection (see NEXTHOP_HOST_SKIPPED). */
static void nh_skipped(struct nexthop *nh, const char *why)
{
    struct nexthop_target *t = &nh->t;

    memset(t, 0, sizeof *t);
    t->host = nh->hosts[nh->cur_host];
    t->domain = nh->mx ? nh->name : NULL;
    t->addr = nh->addrs[0];
    t->dns = "";
    nh->cb(nh->ud, NEXTHOP_HOST_SKIPPED, t, why);
}

/* ---- TLSA ----------------------------------------------------------------- */

static uint64_t nh_fnv(const unsigned char *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* nh_keep_tlsa - copy the records of a secure answer; the digest is the
 * sum of a hash of each, so the order DNS gave them does not count. */
static void nh_keep_tlsa(struct nexthop *nh, const struct dns_answer *a)
{
    size_t total = 0, off = 0;
    unsigned usable = 0;
    int i;

    for (i = 0; i < a->count && i < NEXTHOP_MAX_TLSA; i++)
        total += (size_t)a->len[i];
    nh->tlsa_data = malloc(total ? total : 1);
    nh->ntlsa = 0;
    nh->digest = 0;
    if (nh->tlsa_data == NULL)
        return;
    for (i = 0; i < a->count && i < NEXTHOP_MAX_TLSA; i++) {
        const unsigned char *d = (const unsigned char *)a->data[i];
        size_t len = (size_t)a->len[i];
        struct tlsa_rr *rr = &nh->tlsa[nh->ntlsa];

        if (len < 3)
            continue;                 /* malformed: not a record */
        memcpy(nh->tlsa_data + off, d, len);
        rr->usage = d[0];
        rr->selector = d[1];
        rr->mtype = d[2];
        rr->data = nh->tlsa_data + off + 3;
        rr->len = len - 3;
        off += len;
        nh->digest += nh_fnv(d, len, 14695981039346656037ULL);
        if (tls_tlsa_usable(rr))
            usable++;
        nh->ntlsa++;
    }
    nh->dane_state = usable > 0 ? DANE_USABLE : DANE_UNUSABLE;
    snprintf(nh->tlsa_text, sizeof nh->tlsa_text,
             "tlsa_records=%zu usable=%u tlsa_set=%016llx", nh->ntlsa, usable,
             (unsigned long long)nh->digest);
}

static void nh_on_tlsa(void *ud, const struct dns_answer *a)
{
    struct nexthop *nh = ud;
    const char *host = nh->hosts[nh->cur_host];

    nh->qt = NULL;
    switch (a->status) {
    case DNS_OK:
        if (a->secure) {
            nh_keep_tlsa(nh, a);
            break;
        }
        /* records without DNSSEC do not count */
        __attribute__((fallthrough));
    case DNS_NODATA:
    case DNS_NXDOMAIN:
        nh->dane_state = DANE_INSECURE;
        snprintf(nh->tlsa_text, sizeof nh->tlsa_text, "tlsa=%s%s",
                 dns_status_name(a->status),
                 a->secure ? "" : "_insecure");
        break;
    default:
        /* RFC 7672 2.1.1: a failed TLSA lookup is never "no TLSA" */
        nh_why(nh, "TLSA lookup failed for", host,
               a->why ? a->why : dns_status_name(a->status));
        nh_skipped(nh, dns_status_name(a->status));
        nh_host_begin(nh, nh->cur_host + 1);
        return;
    }
    nh_deliver(nh);
}

/* ---- addresses ------------------------------------------------------------ */

static void nh_addresses_done(struct nexthop *nh)
{
    char qname[300];
    const char *host = nh->hosts[nh->cur_host];
    unsigned i;

    nh->naddrs = 0;
    for (i = 0; i < nh->n4; i++)
        nh->addrs[nh->naddrs++] = nh->v4[i];
    for (i = 0; i < nh->n6; i++)
        nh->addrs[nh->naddrs++] = nh->v6[i];
    nh->cur_addr = 0;
    if (nh->naddrs == 0) {
        char detail[120];

        snprintf(detail, sizeof detail, "A %s, AAAA %s",
                 dns_status_name(nh->st4), dns_status_name(nh->st6));
        nh_why(nh, "no address for", host, detail);
        nh_host_begin(nh, nh->cur_host + 1);
        return;
    }
    /* both answers count: an insecure AAAA could point elsewhere */
    nh->addr_secure = nh->mx_secure && nh->secure4 && nh->secure6;
    nh->dane_state = DANE_OFF;
    nh->tlsa_text[0] = '\0';
    if (nh->dane && !nh->addr_secure) {
        nh->dane_state = DANE_INSECURE;
        snprintf(nh->tlsa_text, sizeof nh->tlsa_text, "tlsa=not_looked_up");
    } else if (nh->dane) {
        snprintf(qname, sizeof qname, "_%u._tcp.%s", nh->port, host);
        nh->qt = dns_query(nh->r, qname, DNS_TYPE_TLSA, nh_on_tlsa, nh);
        if (nh->qt == NULL) {
            nh_why(nh, "TLSA lookup failed for", host,
                   "resolver unavailable");
            nh_host_begin(nh, nh->cur_host + 1);
        }
        return;
    }
    nh_deliver(nh);
}

/* nh_on_addr - one of the A and AAAA answers of the current host. */
static void nh_on_addr(struct nexthop *nh, const struct dns_answer *a,
                       bool v6)
{
    struct sockaddr_storage *out = v6 ? nh->v6 : nh->v4;
    unsigned *n = v6 ? &nh->n6 : &nh->n4;
    int i;

    *(v6 ? &nh->st6 : &nh->st4) = a->status;
    /* a secure "no such records" is as good as secure records; a
     * failure leaves the host's addresses unproven */
    *(v6 ? &nh->secure6 : &nh->secure4) =
        (a->status == DNS_OK || a->status == DNS_NODATA ||
         a->status == DNS_NXDOMAIN) && a->secure;
    if (a->status == DNS_OK) {
        for (i = 0; i < a->count && *n < NEXTHOP_MAX_ADDRS; i++) {
            struct sockaddr_storage *ss = &out[*n];

            memset(ss, 0, sizeof *ss);
            if (!v6 && a->len[i] == 4) {
                struct sockaddr_in *sin = (struct sockaddr_in *)ss;

                sin->sin_family = AF_INET;
                sin->sin_port = htons((uint16_t)nh->port);
                memcpy(&sin->sin_addr, a->data[i], 4);
                (*n)++;
            } else if (v6 && a->len[i] == 16) {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons((uint16_t)nh->port);
                memcpy(&sin6->sin6_addr, a->data[i], 16);
                (*n)++;
            }
        }
    }
    if (nh->q4 == NULL && nh->q6 == NULL)
        nh_addresses_done(nh);
}

static void nh_on_a(void *ud, const struct dns_answer *a)
{
    struct nexthop *nh = ud;

    nh->q4 = NULL;
    nh_on_addr(nh, a, false);
}

static void nh_on_aaaa(void *ud, const struct dns_answer *a)
{
    struct nexthop *nh = ud;

    nh->q6 = NULL;
    nh_on_addr(nh, a, true);
}

/* nh_host_begin - look up host i's addresses, or end the search. */
static void nh_host_begin(struct nexthop *nh, unsigned i)
{
    nh_cancel_host(nh);
    if (i >= nh->nhosts) {
        nh_end(nh, NEXTHOP_EXHAUSTED,
               nh->last_why[0] ? nh->last_why : "no host left to try");
        return;
    }
    nh->cur_host = i;
    nh->n4 = nh->n6 = 0;
    nh->naddrs = 0;
    nh->q4 = dns_query(nh->r, nh->hosts[i], DNS_TYPE_A, nh_on_a, nh);
    nh->q6 = dns_query(nh->r, nh->hosts[i], DNS_TYPE_AAAA, nh_on_aaaa, nh);
    if (nh->q4 == NULL || nh->q6 == NULL) {
        nh_cancel_host(nh);
        nh_end(nh, NEXTHOP_DNS_FAILED, "DNS resolver unavailable");
    }
}

/* ---- MX ------------------------------------------------------------------- */

/* nexthop_mx_order - see nexthop.h.  Insertion sort on (pref, rnd):
 * at most NEXTHOP_MAX_HOSTS records. */
void nexthop_mx_order(unsigned *prefs, unsigned *order, const uint32_t *rnd,
                      unsigned n)
{
    uint32_t key[NEXTHOP_MAX_HOSTS];
    unsigned i, j;

    for (i = 0; i < n && i < NEXTHOP_MAX_HOSTS; i++)
        key[i] = rnd[i];
    for (i = 1; i < n && i < NEXTHOP_MAX_HOSTS; i++) {
        unsigned p = prefs[i], o = order[i];
        uint32_t k = key[i];

        for (j = i; j > 0 && (prefs[j - 1] > p ||
                              (prefs[j - 1] == p && key[j - 1] > k)); j--) {
            prefs[j] = prefs[j - 1];
            order[j] = order[j - 1];
            key[j] = key[j - 1];
        }
        prefs[j] = p;
        order[j] = o;
        key[j] = k;
    }
}

static void nh_on_mx(void *ud, const struct dns_answer *a)
{
    struct nexthop *nh = ud;
    char names[NEXTHOP_MAX_HOSTS][256];
    unsigned prefs[NEXTHOP_MAX_HOSTS], order[NEXTHOP_MAX_HOSTS];
    uint32_t rnd[NEXTHOP_MAX_HOSTS];
    unsigned n = 0, nnull = 0, i;
    char why[300];

    nh->qmx = NULL;
    nh->phase = NH_HOSTS;
    switch (a->status) {
    case DNS_OK:
        break;
    case DNS_NODATA:
        /* RFC 5321 5.1: no MX, the domain itself is the host */
        nh->mx_secure = a->secure;
        snprintf(nh->hosts[0], sizeof nh->hosts[0], "%s", nh->name);
        nh->nhosts = 1;
        log_event(nh->log, LOG_INFO, nh->sid,
                  "event=nexthop_no_mx domain=%s dnssec=%s", nh->name,
                  a->secure ? "secure" : "insecure");
        nh_host_begin(nh, 0);
        return;
    case DNS_NXDOMAIN:
        nh_end(nh, NEXTHOP_NO_DOMAIN, "the mail domain does not exist");
        return;
    default:
        snprintf(why, sizeof why, "MX lookup for %s: %s%s%s", nh->name,
                 dns_status_name(a->status), a->why ? ": " : "",
                 a->why ? a->why : "");
        nh_end(nh, NEXTHOP_DNS_FAILED, why);
        return;
    }
    for (i = 0; i < (unsigned)a->count && n < NEXTHOP_MAX_HOSTS; i++) {
        const unsigned char *d = (const unsigned char *)a->data[i];

        if (a->len[i] < 3 ||
            dns_name_from_wire(d + 2, (size_t)a->len[i] - 2, names[n],
                               sizeof names[n]) < 0)
            continue;                 /* not a host name: skipped */
        if (names[n][0] == '\0') {
            nnull++;                  /* "0 ." */
            continue;
        }
        prefs[n] = (unsigned)d[0] << 8 | d[1];
        order[n] = n;
        n++;
    }
    if (n == 0 && nnull > 0) {
        nh_end(nh, NEXTHOP_NULL_MX, "the domain accepts no mail (null MX)");
        return;
    }
    if (n == 0) {
        nh_end(nh, NEXTHOP_DNS_FAILED, "no usable MX host name");
        return;
    }
    if (RAND_bytes((unsigned char *)rnd, sizeof rnd) != 1)
        memset(rnd, 0, sizeof rnd);
    nexthop_mx_order(prefs, order, rnd, n);
    for (i = 0; i < n; i++)
        memcpy(nh->hosts[i], names[order[i]], sizeof nh->hosts[i]);
    nh->nhosts = n;
    nh->mx_secure = a->secure;
    nh_host_begin(nh, 0);
}

/* nexthop_next - see nexthop.h. */
void nexthop_next(struct nexthop *nh, const char *why)
{
    if (why != NULL && nh->cur_host < NEXTHOP_MAX_HOSTS)
        snprintf(nh->last_why, sizeof nh->last_why, "%s: %s",
                 nh->hosts[nh->cur_host], why);
    switch (nh->phase) {
    case NH_START:
        if (nh->mx) {
            nh->phase = NH_MX;
            nh->qmx = dns_query(nh->r, nh->name, DNS_TYPE_MX, nh_on_mx, nh);
            if (nh->qmx == NULL)
                nh_end(nh, NEXTHOP_DNS_FAILED, "DNS resolver unavailable");
            return;
        }
        nh->phase = NH_HOSTS;
        nh->mx_secure = true;        /* no MX step to weaken it */
        snprintf(nh->hosts[0], sizeof nh->hosts[0], "%s", nh->name);
        nh->nhosts = 1;
        nh_host_begin(nh, 0);
        return;
    case NH_MX:
        return;                      /* the MX answer is on its way */
    case NH_HOSTS:
        if (nh->q4 != NULL || nh->q6 != NULL || nh->qt != NULL)
            return;                  /* the host's lookups are under way */
        if (nh->cur_addr + 1 < nh->naddrs) {
            nh->cur_addr++;
            nh_deliver(nh);
        } else {
            nh_host_begin(nh, nh->cur_host + 1);
        }
        return;
    }
}
