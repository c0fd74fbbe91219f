/*
 * dns.h - DNS for the backend leg: a validating resolver on each loop.
 *
 * libunbound does the work (recursion or forwarding, the cache with its
 * TTLs, negative answers included, and DNSSEC validation against the
 * configured trust anchor: an AD bit from elsewhere is never trusted).
 * This room only runs it on libuv: the context's descriptor is watched
 * with uv_poll, and each query gets a deadline (dns_timeout) that
 * libunbound does not have.  A loop makes its resolver the first time a
 * session needs one, so services without DNS next hops or DANE pay
 * nothing.
 *
 * What the files say is read once, before privileges are dropped
 * (struct dns_setup): the proxy may run chrooted afterwards.
 */
#ifndef STARTTLS_PROXY_DNS_H
#define STARTTLS_PROXY_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct config;

#define DNS_TYPE_A 1
#define DNS_TYPE_MX 15
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_TLSA 52

/* What came back, as the DANE rules need it (RFC 7672 2.1). */
enum dns_status {
    DNS_OK = 0,       /* records of the type asked for */
    DNS_NODATA,       /* the name exists, no such records */
    DNS_NXDOMAIN,     /* no such name */
    DNS_SERVFAIL,     /* no answer (server failure, refused, ...) */
    DNS_BOGUS,        /* DNSSEC validation failed */
    DNS_TIMEOUT,      /* no answer within dns_timeout */
    DNS_ERROR         /* the resolver itself failed */
};

/* The resolver's settings, read from the files before the privilege
 * drop; immutable afterwards, shared by every loop. */
struct dns_setup {
    char **forwarders;     /* "ADDR[@PORT]"; none: full recursion */
    size_t nforwarders;
    char **anchors;        /* trust anchor records, one per entry */
    size_t nanchors;
    unsigned timeout_ms;
    char *anchor_file;     /* for the log */
};

/* dns_setup_load - read cfg's resolver and trust anchor files into s.
 * Returns 0, or -1 with a message in err. */
int dns_setup_load(struct dns_setup *s, const struct config *cfg, char *err,
                   size_t err_len);
void dns_setup_free(struct dns_setup *s);

/* dns_needed - does any service of cfg look names up with the resolver
 * (mx: backends, backend_tls = dane | dane-only)? */
bool dns_needed(const struct config *cfg);

struct dns_answer {
    enum dns_status status;
    bool secure;             /* DNSSEC-validated (OK, NODATA, NXDOMAIN) */
    int rrtype;
    int count;               /* records in data[] */
    char **data;             /* wire-format rdata of each */
    int *len;
    unsigned ttl;
    const char *why;         /* BOGUS, SERVFAIL...: a short reason */
};

/* Called once per query, unless it was cancelled; a is valid only
 * during the call. */
typedef void (*dns_cb)(void *ud, const struct dns_answer *a);

struct dns_resolver;
struct dns_query;

/* dns_resolver_new - a resolver on loop; NULL with a message in err. */
struct dns_resolver *dns_resolver_new(uv_loop_t *loop,
                                      const struct dns_setup *s, char *err,
                                      size_t err_len);

/* dns_resolver_close - cancel what is pending (no callback runs) and
 * free r once its handles have closed.  NULL is fine. */
void dns_resolver_close(struct dns_resolver *r);

/* dns_query - look up name's records of rrtype; NULL if it cannot even
 * be asked (the resolver is closing, out of memory). */
struct dns_query *dns_query(struct dns_resolver *r, const char *name,
                            int rrtype, dns_cb cb, void *ud);

/* dns_cancel - the callback of q will not run.  NULL is fine. */
void dns_cancel(struct dns_query *q);

/* dns_status_name - "ok", "nodata", "nxdomain", ... for the log. */
const char *dns_status_name(enum dns_status st);

/* dns_name_from_wire - a domain name in uncompressed wire format (as in
 * MX rdata from libunbound) to text without the final dot ("" for the
 * root, which a null MX names).  Returns the bytes it used, or -1. */
int dns_name_from_wire(const unsigned char *p, size_t len, char *out,
                       size_t cap);

#define DNS_TXT_MAX 8            /* TXT records looked at */
#define DNS_TXT_LEN 512          /* bytes kept of each */

/* dns_txt_join - the TXT records of a (DNS_OK) as text, each record's
 * strings joined (RFC 8461 3.1, RFC 8460 3): at most DNS_TXT_MAX records
 * of at most DNS_TXT_LEN - 1 bytes (longer ones are cut).  recs[i] points
 * into buf; returns how many. */
size_t dns_txt_join(const struct dns_answer *a,
                    char buf[DNS_TXT_MAX][DNS_TXT_LEN],
                    const char *recs[DNS_TXT_MAX], size_t lens[DNS_TXT_MAX]);

/* dns_txt_pick - the one record of recs[0..n) that begins with tag and
 * then ends or goes on with blanks and ';' (so "v=STSv10" is not
 * "v=STSv1"): its index, -1 when there is none, -2 when there are more
 * than one. */
int dns_txt_pick(const char *const *recs, const size_t *lens, size_t n,
                 const char *tag);

#endif
