/*
 * sts_fetch.h - finding a mail domain's MTA-STS policy (RFC 8461 3, 5.1)
 * on a worker loop: the _mta-sts TXT record through the loop's resolver,
 * the process cache (sts.h), and when the record's id is new, the policy
 * file over HTTPS with libcurl's multi interface driven by libuv
 * (uv_poll on curl's sockets, one uv_timer for its timeouts): no thread
 * and no blocking call.
 *
 * The policy host's name is resolved by the loop's resolver too (the
 * same path as the MX hosts) and handed to curl with CURLOPT_RESOLVE.
 * Its certificate is checked against the certificate store of the
 * service's backend TLS context (backend_ca_file, or else the system
 * store), already loaded before the privilege drop.  HTTPS only, no
 * redirect, status 200, Content-Type text/plain, at most
 * STS_POLICY_MAX bytes, sts_timeout seconds.
 *
 * Two sessions for one domain share one fetch.  A cached policy that has
 * lived half its max_age is fetched again in the background.
 */
#ifndef STARTTLS_PROXY_STS_FETCH_H
#define STARTTLS_PROXY_STS_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sts.h"

struct dns_resolver;
struct logger;
struct x509_store_st;

/* The TLSRPT failure types (RFC 8460 4.3) of finding a policy. */
enum sts_failure {
    STS_OK = 0,
    STS_FETCH_ERROR,         /* sts-policy-fetch-error */
    STS_INVALID,             /* sts-policy-invalid */
    STS_WEBPKI_INVALID       /* sts-webpki-invalid */
};

struct sts_result {
    struct sts_policy *policy;   /* borrowed: sts_policy_ref to keep it;
                                    NULL: no policy applies */
    const char *source;          /* "fetched", "cached", "none", ... */
    enum sts_failure failure;    /* of this attempt, even when a cached
                                    policy applies */
    const char *detail;          /* why it failed, for the log */
};

typedef void (*sts_cb)(void *ud, const struct sts_result *r);

struct sts_settings {
    unsigned timeout_ms;
    unsigned port;               /* of the policy host: 443 */
};

struct sts_fetcher;
struct sts_lookup;

/* sts_fetcher_new - a fetcher on loop using resolver r and cache c;
 * NULL with a message in err. */
struct sts_fetcher *sts_fetcher_new(uv_loop_t *loop, struct dns_resolver *r,
                                    struct sts_cache *c,
                                    const struct sts_settings *s,
                                    struct logger *log, char *err,
                                    size_t err_len);

/* sts_fetcher_close - cancel everything (no callback runs) and free f
 * once its handles have closed.  NULL is fine. */
void sts_fetcher_close(struct sts_fetcher *f);

/* sts_lookup - the policy of domain; cb runs exactly once, later,
 * unless sts_lookup_cancel comes first.  store checks the policy host's
 * certificate.  NULL when it cannot even start (then nothing runs). */
struct sts_lookup *sts_lookup(struct sts_fetcher *f, const char *domain,
                              struct x509_store_st *store, uint64_t sid,
                              sts_cb cb, void *ud);

/* sts_lookup_cancel - cb will not run.  NULL is fine. */
void sts_lookup_cancel(struct sts_lookup *l);

/* The end of a POST: the HTTP status (0: no answer) and why it failed
 * ("" when the server took it with a 2xx status). */
typedef void (*sts_post_cb)(void *ud, long status, const char *why);

/* sts_post - POST data[0..len) as content_type to the https: url
 * (RFC 8460 5.2), the server's name resolved by the loop's resolver,
 * its certificate checked against store, as the policy fetches are.
 * cb runs exactly once, later (or before sts_post returns, when the
 * host is an address literal and the transfer cannot even start),
 * unless the fetcher is closed first.  -1 when it cannot start (then cb
 * never runs). */
int sts_post(struct sts_fetcher *f, const char *url, const void *data,
             size_t len, const char *content_type, struct x509_store_st *store,
             sts_post_cb cb, void *ud);

/* sts_failure_name - the RFC 8460 result type, "" for STS_OK. */
const char *sts_failure_name(enum sts_failure f);

#endif
