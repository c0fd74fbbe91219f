/*
 * backend.c - the backend leg's setup, before the client is greeted.
 *
 * Two halves, as a state machine is easiest to read: backend_enter()
 * performs a state's entry action (send its command, start its
 * handshake), and the reply handlers below only choose the next state.
 * Under a strict policy (encrypt, verify) every way out that does not
 * end in a verified-enough TLS session refuses the client with 421 4.7.0
 * before it has sent anything.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "backend.h"
#include "conn.h"
#include "dns.h"
#include "log.h"
#include "netaddr.h"
#include "proxyproto.h"
#include "smtp.h"
#include "tls.h"
#include "tlsrpt.h"
#include "transparent.h"

#define BACKEND_REPLY_LINE 2048       /* one setup reply line */
#define BACKEND_REPLY_LINES 200

static void backend_on_data(struct conn *c, void *ud, const char *buf,
                            size_t len);
static void backend_on_connect(struct conn *c, void *ud, int status);
static void backend_on_handshake(struct conn *c, void *ud, int status);
static void backend_on_eof(struct conn *c, void *ud, int status);
static void backend_on_drain(struct conn *c, void *ud);
static void backend_on_close(struct conn *c, void *ud);

static const struct conn_cbs backend_cbs = {
    .on_data = backend_on_data,
    .on_connect = backend_on_connect,
    .on_handshake = backend_on_handshake,
    .on_eof = backend_on_eof,
    .on_drain = backend_on_drain,
    .on_close = backend_on_close,
};

/* backend_set_host - the host connected to (an MX host, or the client's
 * original destination); allocated to fit. */
static void backend_set_host(struct backend_leg *b, const char *host)
{
    free(b->host);
    b->host = strdup(host);          /* NULL without memory: "" */
}

/* backend_host - see backend_set_host; "" before one. */
static const char *backend_host(const struct backend_leg *b)
{
    return b->host != NULL ? b->host : "";
}

/* backend_count_failure - one more failed handshake or certificate
 * check on this leg, for the metrics. */
static void backend_count_failure(struct backend_leg *b, enum stats_hs why)
{
    if (b->stats != NULL)
        stats_add(&b->stats->handshake[STATS_LEG_BACKEND][why], 1);
}

/* ---- states --------------------------------------------------------------- */

const char *backend_state_name(enum backend_state st)
{
    static const char *const names[BACKEND_NSTATES] = {
        "idle", "resolving", "connecting", "tls_implicit", "greeting",
        "ehlo", "starttls", "tls_handshake", "xclient_ehlo", "xclient",
        "auth_ehlo", "auth", "auth_user", "auth_password", "ready",
        "failed"};

    return (unsigned)st < BACKEND_NSTATES ? names[st] : "?";
}

#define B(st) (1u << (st))

/* backend_next - the states each state may go to.  FAILED and IDLE are
 * reachable from everywhere (a refusal, the owner's backend_stop). */
static const unsigned backend_next[BACKEND_NSTATES] = {
    [BACKEND_IDLE] = B(BACKEND_RESOLVING) | B(BACKEND_CONNECTING),
    [BACKEND_RESOLVING] = B(BACKEND_CONNECTING),
    [BACKEND_CONNECTING] = B(BACKEND_TLS_IMPLICIT) | B(BACKEND_GREETING),
    [BACKEND_TLS_IMPLICIT] = B(BACKEND_GREETING),
    [BACKEND_GREETING] = B(BACKEND_EHLO) | B(BACKEND_XCLIENT_EHLO) |
                         B(BACKEND_AUTH_EHLO) | B(BACKEND_READY),
    [BACKEND_EHLO] = B(BACKEND_STARTTLS) | B(BACKEND_XCLIENT) |
                     B(BACKEND_READY),
    [BACKEND_STARTTLS] = B(BACKEND_TLS_HANDSHAKE) | B(BACKEND_XCLIENT_EHLO) |
                         B(BACKEND_READY),
    [BACKEND_TLS_HANDSHAKE] = B(BACKEND_XCLIENT_EHLO) |
                              B(BACKEND_AUTH_EHLO) | B(BACKEND_READY),
    [BACKEND_XCLIENT_EHLO] = B(BACKEND_XCLIENT) | B(BACKEND_READY),
    [BACKEND_XCLIENT] = B(BACKEND_READY),
    [BACKEND_AUTH_EHLO] = B(BACKEND_AUTH),
    /* no XCLIENT after the login: config refuses the two together */
    [BACKEND_AUTH] = B(BACKEND_AUTH_USER) | B(BACKEND_READY),
    [BACKEND_AUTH_USER] = B(BACKEND_AUTH_PASSWORD),
    [BACKEND_AUTH_PASSWORD] = B(BACKEND_READY),
    [BACKEND_READY] = 0,
    [BACKEND_FAILED] = 0,
};

/* backend_transition_ok - see backend.h. */
bool backend_transition_ok(enum backend_state from, enum backend_state to)
{
    if ((unsigned)from >= BACKEND_NSTATES || (unsigned)to >= BACKEND_NSTATES)
        return false;
    if (to == BACKEND_FAILED || to == BACKEND_IDLE)
        return true;
    return (backend_next[from] & B(to)) != 0;
}

static void backend_send(struct backend_leg *b, const char *line)
{
    conn_write(b->conn, line, strlen(line));
}

static void backend_give_up(struct backend_leg *b, enum reply_id reply,
                            const char *event, const char *why);
static void backend_connect(struct backend_leg *b);
static void backend_resolve(struct backend_leg *b);
static void backend_tls_begin(struct backend_leg *b);
static void backend_auth_send(struct backend_leg *b, enum backend_state st);
static void backend_auth_begin(struct backend_leg *b);

/*
 * backend_enter - every change of the setup state goes through here: it
 * is checked, logged, and the new state's entry action runs (the command
 * it sends, the handshake it starts).  An illegal transition is a bug:
 * builds with STATE_CHECKS (debug, sanitizers) abort on it, others log it.
 */
static void backend_enter(struct backend_leg *b, enum backend_state st)
{
    char line[300];

    if (!backend_transition_ok(b->state, st)) {
        log_event(b->log, LOG_ERROR, b->sid,
                  "event=state_illegal machine=backend from=%s to=%s",
                  backend_state_name(b->state), backend_state_name(st));
#ifdef STATE_CHECKS
        abort();
#endif
    }
    log_event(b->log, LOG_DEBUG, b->sid, "event=backend_state from=%s to=%s",
              backend_state_name(b->state), backend_state_name(st));
    b->state = st;
    switch (st) {
    case BACKEND_RESOLVING:
        backend_resolve(b);
        break;
    case BACKEND_CONNECTING:
        backend_connect(b);
        break;
    case BACKEND_TLS_IMPLICIT:
    case BACKEND_TLS_HANDSHAKE:
        backend_tls_begin(b);
        break;
    case BACKEND_EHLO:
    case BACKEND_XCLIENT_EHLO:
    case BACKEND_AUTH_EHLO:
        snprintf(line, sizeof line, "EHLO %s\r\n", b->hostname);
        backend_send(b, line);
        break;
    case BACKEND_STARTTLS:
        backend_send(b, "STARTTLS\r\n");
        break;
    case BACKEND_XCLIENT: {
        char addr[64];

        netaddr_xclient(b->client.addr, addr, sizeof addr);
        snprintf(line, sizeof line,
                 "XCLIENT ADDR=%s PORT=%u NAME=[UNAVAILABLE]\r\n", addr,
                 netaddr_port(b->client.addr));
        backend_send(b, line);
        break;
    }
    case BACKEND_AUTH:
    case BACKEND_AUTH_USER:
    case BACKEND_AUTH_PASSWORD:
        backend_auth_send(b, st);
        break;
    case BACKEND_READY:
        b->ev->ready(b->owner);
        break;
    default:
        break;
    }
}

/* backend_dane_policy - backend_tls = dane, dane-only, or sts (where
 * DANE wins: RFC 8461 2). */
static bool backend_dane_policy(const struct service *svc)
{
    return svc->backend_tls == BACKEND_TLS_DANE ||
           svc->backend_tls == BACKEND_TLS_DANE_ONLY ||
           svc->backend_tls == BACKEND_TLS_STS;
}

/* backend_sts_mode - the MTA-STS mode for the current host: none when
 * there is no policy, or when DANE applies to the host (any secure TLSA
 * record: RFC 8461 2). */
static enum sts_mode backend_sts_mode(const struct backend_leg *b)
{
    if (b->sts == NULL || !b->have_target || b->target.dane > DANE_INSECURE)
        return STS_MODE_NONE;
    return b->sts->mode;
}

/* backend_strict - must this attempt end in TLS?  Under "dane" it
 * depends on what DNS said about the host (README "DANE"): any secure
 * TLSA record, usable or not, means TLS is required. */
static bool backend_strict(const struct backend_leg *b)
{
    switch (b->svc->backend_tls) {
    case BACKEND_TLS_ENCRYPT:
    case BACKEND_TLS_VERIFY:
    case BACKEND_TLS_DANE_ONLY:
    case BACKEND_TLS_FINGERPRINT:
        return true;
    case BACKEND_TLS_DANE:
        return b->have_target && b->target.dane >= DANE_UNUSABLE;
    case BACKEND_TLS_STS:
        return (b->have_target && b->target.dane >= DANE_UNUSABLE) ||
               backend_sts_mode(b) == STS_MODE_ENFORCE;
    default:
        return false;
    }
}

/* backend_dane_usable - this attempt authenticates by TLSA records. */
static bool backend_dane_usable(const struct backend_leg *b)
{
    return backend_dane_policy(b->svc) && b->have_target &&
           b->target.dane == DANE_USABLE;
}

static bool backend_next_target(struct backend_leg *b, bool policy,
                                const char *why);

/* backend_tlsa_lines - the target's TLSA records as TLSRPT policy-string
 * lines ("3 1 1 HEX"), cut at cap. */
static void backend_tlsa_lines(const struct nexthop_target *t, char *out,
                               size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    out[0] = '\0';
    for (size_t i = 0; i < t->ntlsa; i++) {
        const struct tlsa_rr *rr = &t->tlsa[i];
        int n = snprintf(out + o, cap - o, "%s%u %u %u ", o ? "\n" : "",
                         rr->usage, rr->selector, rr->mtype);

        if (n < 0 || (size_t)n + 2 * rr->len >= cap - o)
            break;
        o += (size_t)n;
        for (size_t k = 0; k < rr->len; k++) {
            out[o++] = hex[rr->data[k] >> 4];
            out[o++] = hex[rr->data[k] & 15];
        }
        out[o] = '\0';
    }
}

/*
 * backend_report - this attempt's TLS result for the domain's TLS report
 * (RFC 8460 4): result NULL for a success, else the result-type; once
 * per attempt.  The policy is the one that applied to the host: its
 * TLSA records, else the MTA-STS policy, else none found.  A policy that
 * could not be fetched makes a success a failure of that kind.
 */
static void backend_report(struct backend_leg *b, const char *result,
                           const char *reason)
{
    struct tlsrpt_result r;
    char policy[4096], mx[STS_MAX_MX * 64], local[NETADDR_TEXT];
    char remote[NETADDR_TEXT];
    struct sockaddr_storage ss;

    if (b->rpt == NULL || !b->have_target || b->reported)
        return;
    b->reported = true;
    memset(&r, 0, sizeof r);
    policy[0] = mx[0] = local[0] = '\0';
    r.domain = b->svc->backend_host;
    if (b->target.dane >= DANE_UNUSABLE) {
        r.type = TLSRPT_TLSA;
        backend_tlsa_lines(&b->target, policy, sizeof policy);
        snprintf(mx, sizeof mx, "%s", backend_host(b));
    } else if (b->sts != NULL && b->sts->mode != STS_MODE_NONE) {
        size_t o = 0;

        r.type = TLSRPT_STS;
        snprintf(policy, sizeof policy, "%s", b->sts->text);
        for (size_t i = 0; i < b->sts->nmx && o + 2 < sizeof mx; i++)
            o += (size_t)snprintf(mx + o, sizeof mx - o, "%s%s",
                                  o ? "\n" : "", b->sts->mx[i]);
    } else {
        r.type = TLSRPT_NO_POLICY;
    }
    /* RFC 8460 4.3.2: secure TLSA records, none of them usable (TLS
     * went ahead unauthenticated, RFC 7672 2.2) */
    if (result == NULL && r.type == TLSRPT_TLSA &&
        b->target.dane == DANE_UNUSABLE) {
        result = "tlsa-invalid";
        reason = "no usable TLSA record";
    }
    if (result == NULL && b->sts_failure != STS_OK && r.type != TLSRPT_TLSA) {
        result = sts_failure_name(b->sts_failure);
        reason = "";
    }
    r.policy = policy;
    r.mx_hosts = mx;
    r.result = result;
    if (result != NULL) {
        if (b->conn != NULL && conn_local_addr(b->conn, &ss) == 0)
            netaddr_host(&ss, local, sizeof local, "");
        netaddr_host(&b->target.addr, remote, sizeof remote, "");
        r.sending_ip = local;
        r.mx_host = backend_host(b);
        r.receiving_ip = remote;
        r.reason = reason;
    }
    tlsrpt_record(b->rpt, time(NULL), &r);
}

/* backend_report_skipped - a host given up because its TLSA lookup
 * failed: dnssec-invalid (RFC 8460 4.3.2: no valid records came back
 * from the resolver), under the tlsa policy the host was to have. */
static void backend_report_skipped(struct backend_leg *b,
                                   const struct nexthop_target *t,
                                   const char *why)
{
    struct tlsrpt_result r;
    char remote[NETADDR_TEXT];

    if (b->rpt == NULL)
        return;
    netaddr_host(&t->addr, remote, sizeof remote, "");
    memset(&r, 0, sizeof r);
    r.domain = b->svc->backend_host;
    r.type = TLSRPT_TLSA;
    r.policy = "";
    r.mx_hosts = t->host;
    r.result = "dnssec-invalid";
    r.sending_ip = "";
    r.mx_host = t->host;
    r.receiving_ip = remote;
    r.reason = why;
    tlsrpt_record(b->rpt, time(NULL), &r);
}

/*
 * backend_refuse - the policy cannot be met: refuse the client.  Returns
 * false instead under "enforce = no" (logged as would_refuse): the caller
 * then carries on as "may" would.
 */
static bool backend_refuse_rule(struct backend_leg *b, const char *rule,
                                const char *why)
{
    if (!b->ev->enforce(b->owner, rule, why))
        return false;
    if (backend_next_target(b, true, why))
        return true;
    backend_enter(b, BACKEND_FAILED);
    b->ev->refuse(b->owner, REPLY_BACKEND_TLS_REQUIRED, "backend_tls_required",
                  why);
    return true;
}

static bool backend_refuse(struct backend_leg *b, const char *why)
{
    return backend_refuse_rule(b, "backend_tls", why);
}

/* backend_strict_refuse - backend_refuse, but only under a strict
 * policy. */
static bool backend_strict_refuse(struct backend_leg *b, const char *why)
{
    return backend_strict(b) && backend_refuse(b, why);
}

/* backend_give_up - setup failed for a reason that is not policy. */
static void backend_give_up(struct backend_leg *b, enum reply_id reply,
                            const char *event, const char *why)
{
    if (backend_next_target(b, false, why))
        return;
    backend_enter(b, BACKEND_FAILED);
    b->ev->refuse(b->owner, reply, event, why);
}

/* ---- next hops in DNS ----------------------------------------------------- */

/*
 * backend_next_target - this attempt failed before the client was
 * greeted (policy: by a strict rule): with next hops from DNS the next
 * target is tried, and true returned.  False without a search, or with
 * none under way: the caller then refuses the client.
 */
static bool backend_next_target(struct backend_leg *b, bool policy,
                                const char *why)
{
    char esc[200], addr[NETADDR_TEXT];

    if (b->nh == NULL || !b->have_target || b->closed ||
        b->state == BACKEND_READY)
        return false;
    log_escape(esc, sizeof esc, why, strlen(why));
    netaddr_text(&b->target.addr, addr, sizeof addr);
    log_event(b->log, LOG_WARN, b->sid,
              "event=backend_next host=%s addr=%s reason=\"%s\"",
              backend_host(b), addr, esc);
    free(b->next_why);
    b->next_why = strdup(why);       /* NULL without memory: no reason */
    b->policy_failed = policy;
    b->have_target = false;
    b->reported = false;
    backend_stop(b);
    b->plain_retry = b->helo_only = b->xclient_ok = b->auth_done = false;
    b->tls_desc[0] = b->verify[0] = b->dane[0] = '\0';
    free(b->sts_desc);
    b->sts_desc = NULL;
    backend_enter(b, BACKEND_RESOLVING);
    return true;
}

/* backend_sts_check - for "sts": what the policy says of the target
 * before connecting.  RFC 8461 4.1: under enforce only a host that
 * matches an mx pattern may be used; under testing a mismatch is only
 * logged.  True when the target was refused (the caller stops). */
static bool backend_sts_check(struct backend_leg *b)
{
    enum sts_mode mode = backend_sts_mode(b);
    const char *m;
    char why[600], desc[320];

    free(b->sts_desc);
    b->sts_desc = NULL;
    if (mode == STS_MODE_NONE)
        return false;
    m = sts_mx_match(b->sts, backend_host(b));
    snprintf(desc, sizeof desc, "%s id=%s matched=%s",
             sts_mode_name(mode), b->sts->id, m != NULL ? m : "none");
    b->sts_desc = strdup(desc);      /* NULL without memory: not named */
    log_event(b->log, m != NULL ? LOG_INFO : LOG_WARN, b->sid,
              "event=backend_sts host=%s sts=%s id=%s matched=%s source=%s",
              backend_host(b), sts_mode_name(mode), b->sts->id,
              m != NULL ? m : "none", b->sts_source);
    if (m != NULL)
        return false;
    snprintf(why, sizeof why, "MX host %s is not in the MTA-STS policy of %s",
             backend_host(b), b->sts->domain);
    backend_report(b, "validation-failure", "mx-not-in-policy");
    if (mode == STS_MODE_TESTING) {
        log_event(b->log, LOG_WARN, b->sid, "event=sts_testing_failure "
                  "host=%s result=validation-failure", backend_host(b));
        return false;
    }
    return backend_refuse_rule(b, "sts", why);
}

/* backend_on_target - the next hop search found a target, or ended. */
static void backend_on_target(void *ud, enum nexthop_end end,
                              const struct nexthop_target *t,
                              const char *why)
{
    struct backend_leg *b = ud;
    char addr[NETADDR_TEXT];

    if (b->closed)
        return;
    switch (end) {
    case NEXTHOP_TARGET:
        b->target = *t;
        b->have_target = true;
        b->addr = t->addr;
        backend_set_host(b, t->host);
        netaddr_text(&t->addr, addr, sizeof addr);
        log_event(b->log, LOG_INFO, b->sid,
                  "event=backend_nexthop host=%s addr=%s %s", t->host, addr,
                  t->dns);
        /* RFC 7672 2.2: without secure TLSA, dane-only has nothing */
        if (b->svc->backend_tls == BACKEND_TLS_DANE_ONLY &&
            t->dane <= DANE_INSECURE) {
            backend_report(b, "dane-required", "no secure TLSA records");
            if (backend_refuse_rule(b, "dane", "no secure TLSA records"))
                return;
        }
        if (backend_sts_check(b))
            return;
        backend_enter(b, BACKEND_CONNECTING);
        return;
    case NEXTHOP_HOST_SKIPPED:
        backend_report_skipped(b, t, why);
        return;
    case NEXTHOP_NULL_MX:
        backend_give_up(b, REPLY_BACKEND_NULL_MX, "backend_null_mx", why);
        return;
    case NEXTHOP_NO_DOMAIN:
    case NEXTHOP_DNS_FAILED:
        backend_give_up(b, REPLY_BACKEND_DNS, "backend_dns_failed", why);
        return;
    case NEXTHOP_EXHAUSTED:
        if (b->policy_failed) {
            backend_enter(b, BACKEND_FAILED);
            b->ev->refuse(b->owner, REPLY_BACKEND_TLS_REQUIRED,
                          "backend_tls_required", why);
        } else {
            backend_give_up(b, REPLY_BACKEND_UNAVAILABLE,
                            "backend_unreachable", why);
        }
        return;
    }
}

/* backend_use_dns - see backend.h. */
void backend_use_dns(struct backend_leg *b, struct dns_resolver *r)
{
    b->dns = r;
}

/* backend_use_tlsrpt - see backend.h. */
void backend_use_tlsrpt(struct backend_leg *b, struct tlsrpt_store *st)
{
    b->rpt = st;
}

/* backend_use_sts - see backend.h. */
void backend_use_sts(struct backend_leg *b, struct sts_fetcher *f)
{
    b->stsf = f;
}

/* backend_on_policy - the domain's MTA-STS policy (or none) is known:
 * the MX search starts. */
static void backend_on_policy(void *ud, const struct sts_result *r)
{
    struct backend_leg *b = ud;
    char esc[300];

    b->stsq = NULL;
    b->sts_known = true;
    b->sts = sts_policy_ref(r->policy);
    b->sts_failure = r->failure;
    snprintf(b->sts_source, sizeof b->sts_source, "%s", r->source);
    log_escape(esc, sizeof esc, r->detail ? r->detail : "",
               r->detail ? strlen(r->detail) : 0);
    log_event(b->log, r->failure != STS_OK ? LOG_WARN : LOG_INFO, b->sid,
              "event=backend_sts_policy domain=%s sts=%s id=%s source=%s%s%s"
              "%s%s%s", b->svc->backend_host,
              b->sts ? sts_mode_name(b->sts->mode) : "none",
              b->sts ? b->sts->id : "none", b->sts_source,
              r->failure != STS_OK ? " result=" : "",
              sts_failure_name(r->failure), esc[0] ? " detail=\"" : "", esc,
              esc[0] ? "\"" : "");
    if (b->state == BACKEND_RESOLVING)
        nexthop_next(b->nh, NULL);
}

/* ---- lifetime ------------------------------------------------------------- */

/* backend_init - see backend.h. */
void backend_init(struct backend_leg *b, struct conn_loop *conns,
                  uv_loop_t *loop, struct logger *log,
                  const struct service *svc,
                  SSL_CTX *client_ctx, const char *hostname,
                  struct ssl_session_st **resume, uint64_t sid,
                  const struct backend_client *client,
                  const struct backend_events *ev, void *owner)
{
    memset(b, 0, sizeof *b);
    b->conns = conns;
    b->loop = loop;
    b->log = log;
    b->svc = svc;
    b->client_ctx = client_ctx;
    b->hostname = hostname;
    b->resume = resume;
    b->sid = sid;
    b->client = *client;
    b->ev = ev;
    b->owner = owner;
    b->last = uv_now(loop);
    b->gai.data = b;
}

static void backend_connect(struct backend_leg *b)
{
    struct conn *c = conn_new(b->conns, &backend_cbs, b);

    if (c == NULL) {
        backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_error",
                        "out of memory");
        return;
    }
    b->ev->ref(b->owner, 1);
    b->conn = c;
    b->nconnections++;
    if (b->svc->backend_mark != 0 ||
        b->svc->transparent_source == TRANSPARENT_SOURCE_CLIENT) {
        /* backend_mark: nftables leaves our own connections alone;
         * transparent_source = client: the destination sees the client */
        char why[160];
        int fd = transparent_backend_socket(
            b->addr.ss_family, b->svc->backend_mark,
            b->svc->transparent_source == TRANSPARENT_SOURCE_CLIENT
                ? b->client.addr : NULL,
            why, sizeof why);

        if (fd < 0) {
            backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_error",
                            why);
            return;
        }
        if (conn_connect_socket(c, fd, (const struct sockaddr *)&b->addr) != 0)
            backend_give_up(b, REPLY_BACKEND_UNAVAILABLE,
                            "backend_unreachable", conn_error(c));
        return;
    }
    if (conn_connect(c, (const struct sockaddr *)&b->addr) != 0)
        backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_unreachable",
                        conn_error(c));
}

static void backend_on_resolved(uv_getaddrinfo_t *req, int status,
                                struct addrinfo *res)
{
    struct backend_leg *b = req->data;
    void *owner = b->owner;
    const struct backend_events *ev = b->ev;

    b->gai_busy = false;
    if (b->closed || status != 0 || res == NULL) {
        if (!b->closed)
            backend_give_up(b, REPLY_BACKEND_UNAVAILABLE,
                            "backend_unreachable", uv_strerror(status));
    } else {
        memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
        backend_enter(b, BACKEND_CONNECTING);
    }
    uv_freeaddrinfo(res);
    ev->ref(owner, -1);      /* may free b's owner, and b with it */
}

static void backend_resolve(struct backend_leg *b)
{
    struct addrinfo hints;

    if (b->stsq != NULL)
        return;                      /* backend_on_policy goes on */
    if (b->nh != NULL) {
        char *why = b->next_why;     /* nexthop_next copies it */

        b->next_why = NULL;
        nexthop_next(b->nh, why);
        free(why);
        return;
    }

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (uv_getaddrinfo(b->loop, &b->gai, backend_on_resolved,
                       b->svc->backend_host, b->svc->backend_port,
                       &hints) != 0) {
        backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_unreachable",
                        "cannot resolve");
        return;
    }
    b->gai_busy = true;
    b->ev->ref(b->owner, 1);
}

/* backend_start - see backend.h. */
void backend_start(struct backend_leg *b, bool plain_retry)
{
    int port;

    sbuf_free(&b->in);
    b->state = BACKEND_IDLE;
    b->hs_start = 0;
    b->plain_retry = plain_retry;
    b->authenticated = false;
    b->auth_done = false;          /* a new backend session logs in again */
    free(b->auth_ehlo);
    b->auth_ehlo = NULL;
    b->auth_ehlo_len = 0;
    if (b->svc->transparent != TRANSPARENT_OFF) {
        /* the client's original destination, checked by the owner */
        b->addr = *b->client.dst;
        {
            char host[NETADDR_TEXT];

            netaddr_host(&b->addr, host, sizeof host, "");
            backend_set_host(b, host);
        }
        backend_enter(b, BACKEND_CONNECTING);
        return;
    }
    port = (int)strtol(b->svc->backend_port, NULL, 10); /* validated */
    if (config_service_dns(b->svc)) {
        /* a plaintext retry, or a fresh backend session: the same host */
        if (b->have_target) {
            b->addr = b->target.addr;
            backend_enter(b, BACKEND_CONNECTING);
            return;
        }
        if (b->nh == NULL)
            b->nh = nexthop_new(b->dns, b->svc->backend_host,
                                b->svc->backend_port, b->svc->backend_mx,
                                backend_dane_policy(b->svc), b->log, b->sid,
                                backend_on_target, b);
        if (b->nh == NULL) {
            backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_error",
                            "out of memory");
            return;
        }
        if (config_service_sts(b->svc) && !b->sts_known) {
            b->stsq = sts_lookup(b->stsf, b->svc->backend_host,
                                 SSL_CTX_get_cert_store(b->client_ctx),
                                 b->sid, backend_on_policy, b);
            if (b->stsq == NULL) {
                backend_give_up(b, REPLY_BACKEND_DNS, "backend_dns_failed",
                                "the MTA-STS policy cannot be looked up");
                return;
            }
        }
        backend_enter(b, BACKEND_RESOLVING);
        return;
    }
    if (uv_ip4_addr(b->svc->backend_host, port,
                    (struct sockaddr_in *)&b->addr) == 0 ||
        uv_ip6_addr(b->svc->backend_host, port,
                    (struct sockaddr_in6 *)&b->addr) == 0)
        backend_enter(b, BACKEND_CONNECTING);
    else
        backend_enter(b, BACKEND_RESOLVING);
}

/* backend_stop - see backend.h. */
void backend_stop(struct backend_leg *b)
{
    if (b->conn != NULL)
        conn_close(b->conn);
    b->conn = NULL;
    b->state = BACKEND_IDLE;
    b->hs_start = 0;
    sbuf_free(&b->in);
}

/* backend_restart - see backend.h. */
void backend_restart(struct backend_leg *b, bool plain_retry)
{
    backend_stop(b);
    backend_start(b, plain_retry);
}

/* backend_close - see backend.h. */
void backend_close(struct backend_leg *b)
{
    b->closed = true;
    b->have_target = false;          /* its pointers live in nh */
    nexthop_free(b->nh);
    b->nh = NULL;
    sts_lookup_cancel(b->stsq);
    b->stsq = NULL;
    if (b->gai_busy)
        uv_cancel((uv_req_t *)&b->gai);
    if (b->conn != NULL)
        conn_close(b->conn);
}

/* backend_free - see backend.h. */
void backend_free(struct backend_leg *b)
{
    char **texts[] = {&b->greeting, &b->auth_ehlo, &b->next_why,
                      &b->sts_desc, &b->host};

    nexthop_free(b->nh);
    b->nh = NULL;
    sts_lookup_cancel(b->stsq);
    b->stsq = NULL;
    sts_policy_unref(b->sts);
    b->sts = NULL;
    sbuf_free(&b->in);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        free(*texts[i]);
        *texts[i] = NULL;
    }
}

bool backend_is_ready(const struct backend_leg *b)
{
    return b->state == BACKEND_READY && b->conn != NULL;
}

void backend_write(struct backend_leg *b, const char *buf, size_t len)
{
    conn_write(b->conn, buf, len);
}

void backend_touch(struct backend_leg *b)
{
    b->last = uv_now(b->loop);
}

/* backend_deadline - see backend.h. */
uint64_t backend_deadline(const struct backend_leg *b)
{
    if (b->hs_start == 0 || (b->state != BACKEND_TLS_HANDSHAKE &&
                             b->state != BACKEND_TLS_IMPLICIT))
        return 0;
    return b->hs_start + (uint64_t)b->svc->tls_handshake_timeout * 1000;
}

/* ---- TLS ------------------------------------------------------------------ */

/* backend_tls_begin - start the TLS client on the backend conn (the entry
 * action of TLS_IMPLICIT and TLS_HANDSHAKE). */
static void backend_tls_begin(struct backend_leg *b)
{
    /* mx: the certificate names the MX host unless told otherwise */
    const char *name = b->svc->backend_verify_name != NULL
                           ? b->svc->backend_verify_name : backend_host(b);
    SSL *ssl;

    if (backend_dane_usable(b))
        ssl = tls_client_ssl_dane(b->client_ctx, backend_host(b),
                                  b->target.domain, b->target.tlsa,
                                  b->target.ntlsa);
    else
        ssl = tls_client_ssl(b->client_ctx, name);
    b->hs_start = uv_now(b->loop);   /* tls_handshake_timeout */
    b->ev->arm(b->owner);
    /* next hops from DNS are not resumed: a kept session would skip the
     * checks of a host, or of a TLSA set, it was not made with */
    if (ssl != NULL && b->resume != NULL && b->nh == NULL) {
        /* resume the service's last backend session: no certificate or
         * key exchange work on either side when the backend agrees */
        SSL_set_app_data(ssl, b->resume);
        if (*b->resume != NULL)
            (void)SSL_set_session(ssl, *b->resume);
    }
    if (ssl == NULL || conn_start_tls_client(b->conn, ssl) != 0)
        backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_error",
                        "cannot start TLS");
}

/* backend_record_tls - what the summary line says about this leg. */
static void backend_record_tls(struct backend_leg *b)
{
    SSL *ssl = conn_ssl(b->conn);
    long vr = SSL_get_verify_result(ssl);

    tls_describe(ssl, b->tls_desc, sizeof b->tls_desc);
    if (SSL_get0_peer_certificate(ssl) == NULL)
        snprintf(b->verify, sizeof b->verify, "no_cert");
    else if (vr == X509_V_OK)
        snprintf(b->verify, sizeof b->verify, "verified");
    else
        log_escape(b->verify, sizeof b->verify,
                   X509_verify_cert_error_string(vr),
                   strlen(X509_verify_cert_error_string(vr)));
}

/*
 * backend_tls_failed - the backend's TLS handshake failed, whatever the
 * way: an alert, a close, a reset, or no progress within
 * tls_handshake_timeout.  Strict policies refuse (unless enforce = no);
 * otherwise, as Postfix's "may" does, the backend gets one more
 * connection without TLS (not with implicit TLS, which has no plaintext).
 */
static void backend_tls_failed(struct backend_leg *b, const char *why)
{
    char esc[200];

    if (b->resume != NULL) {    /* start afresh next time */
        SSL_SESSION_free(*b->resume);
        *b->resume = NULL;
    }
    backend_report(b, "validation-failure", why);
    if (backend_strict_refuse(b, why))
        return;
    if (b->svc->backend_implicit_tls || b->plain_retry) {
        backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_tls_failed",
                        why);
        return;
    }
    log_escape(esc, sizeof esc, why, strlen(why));
    log_event(b->log, LOG_WARN, b->sid,
              "event=backend_tls_failed error=\"%s\" action=retry_plaintext",
              esc);
    backend_restart(b, true);
}

/* backend_handshake_timeout - see backend.h. */
void backend_handshake_timeout(struct backend_leg *b)
{
    backend_count_failure(b, STATS_HS_TIMEOUT);
    backend_tls_failed(b, "TLS handshake timed out");
}

/*
 * backend_finish - TLS is settled.  With backend_auth the proxy logs in
 * first (backend_auth_begin), and comes back here once it has.  With
 * "backend_client_address = xclient" (never together with backend_auth)
 * the backend is told who the client is before the client is
 * greeted, but only if it offers XCLIENT (after TLS: the capabilities
 * learnt before do not count).  caps_known says whether caps is the
 * current EHLO answer.
 */
static void backend_finish(struct backend_leg *b, bool caps_known,
                           unsigned caps)
{
    if (b->svc->backend_auth != BACKEND_AUTH_NONE && !b->auth_done) {
        backend_auth_begin(b);
        return;
    }
    if (b->svc->backend_client_address != CLIENT_ADDRESS_XCLIENT ||
        b->helo_only) {
        backend_enter(b, BACKEND_READY);
    } else if (!caps_known) {
        backend_enter(b, BACKEND_XCLIENT_EHLO);
    } else if (!(caps & SMTP_CAP_XCLIENT)) {
        log_event(b->log, LOG_WARN, b->sid,
                  "event=xclient_unavailable reason=not_offered");
        backend_enter(b, BACKEND_READY);
    } else {
        backend_enter(b, BACKEND_XCLIENT);
    }
}

/* ---- upstream AUTH (backend_auth) ----------------------------------------- */

/* backend_tls_up - the conn is TLS, its handshake done, and not the
 * plaintext retry of "may": the only place credentials may go. */
static bool backend_tls_up(const struct backend_leg *b)
{
    SSL *ssl = b->conn != NULL ? conn_ssl(b->conn) : NULL;

    return ssl != NULL && SSL_is_init_finished(ssl) && !b->plain_retry &&
           b->tls_desc[0] != '\0';
}

static const char *backend_auth_mech(const struct backend_leg *b)
{
    return b->svc->backend_auth == BACKEND_AUTH_LOGIN ? "LOGIN" : "PLAIN";
}

/*
 * backend_auth_refuse - the login cannot be done: the client gets 421
 * 4.7.0 before it is greeted, as under a strict TLS policy, and nothing
 * of its mail goes anywhere.  code and text (the backend's reply, or
 * why) are logged, escaped; never anything that was sent.
 */
static void backend_auth_refuse(struct backend_leg *b, int code,
                                const char *text)
{
    char user[200], esc[300];

    log_escape(user, sizeof user, b->svc->auth_user,
               strlen(b->svc->auth_user));
    log_escape(esc, sizeof esc, text, strlen(text));
    log_event(b->log, LOG_WARN, b->sid,
              "event=backend_auth_failed user=%s mechanism=%s code=%d "
              "reply=\"%s\"", user, backend_auth_mech(b), code, esc);
    /* counted as a rule (the metrics); config requires enforce = yes,
     * and a refused login could not be let through anyway */
    (void)b->ev->enforce(b->owner, "backend_auth", text);
    backend_enter(b, BACKEND_FAILED);
    b->ev->refuse(b->owner, REPLY_BACKEND_AUTH_FAILED, "backend_auth_required",
                  "the backend did not accept the proxy's login");
}

/*
 * backend_auth_begin - TLS is settled and backend_auth is set: EHLO
 * again (RFC 3207 4.2: what was learnt before TLS is forgotten, and a
 * server offers AUTH only now).  The credentials never go over a conn
 * that is not TLS: config -t refuses policies that may fall back, and
 * this check holds whatever the policy did.
 */
static void backend_auth_begin(struct backend_leg *b)
{
    if (!backend_tls_up(b)) {
        backend_auth_refuse(b, 0, "no TLS to the backend: credentials not "
                                  "sent");
        return;
    }
    backend_enter(b, BACKEND_AUTH_EHLO);
}

/* backend_b64_line - prefix, base64 of in[0..n), CRLF, into out; its
 * length, or 0 when it does not fit. */
static size_t backend_b64_line(const char *prefix, const unsigned char *in,
                               size_t n, char *out, size_t cap)
{
    size_t p = strlen(prefix);

    if (p + 4 * ((n + 2) / 3) + 3 > cap)
        return 0;
    memcpy(out, prefix, p);
    p += (size_t)EVP_EncodeBlock((unsigned char *)out + p, in, (int)n);
    memcpy(out + p, "\r\n", 3);
    return p + 2;
}

/*
 * backend_auth_send - the entry action of the AUTH states: RFC 4616
 * PLAIN as an initial response (RFC 4954 4: "AUTH PLAIN" SP base64 of
 * NUL user NUL password, no authorization identity), or LOGIN's
 * command, user name and password, each base64 after a 334.  Only over
 * TLS; what was built is wiped once it is in the conn's buffer.
 */
static void backend_auth_send(struct backend_leg *b, enum backend_state st)
{
    const char *user = b->svc->auth_user, *pass = b->svc->auth_password;
    size_t ul = strlen(user), pl = strlen(pass), n = 0;
    unsigned char raw[2 * 256 + 2];
    char line[800];

    if (!backend_tls_up(b)) {     /* cannot happen: backend_auth_begin */
        backend_auth_refuse(b, 0, "no TLS");
        return;
    }
    if (st == BACKEND_AUTH && b->svc->backend_auth == BACKEND_AUTH_LOGIN) {
        backend_send(b, "AUTH LOGIN\r\n");
        return;
    }
    if (st == BACKEND_AUTH && ul + pl + 2 <= sizeof raw) {
        raw[0] = '\0';
        memcpy(raw + 1, user, ul);
        raw[1 + ul] = '\0';
        memcpy(raw + 2 + ul, pass, pl);
        n = backend_b64_line("AUTH PLAIN ", raw, ul + pl + 2, line,
                             sizeof line);
    } else if (st == BACKEND_AUTH_USER) {
        n = backend_b64_line("", (const unsigned char *)user, ul, line,
                             sizeof line);
    } else if (st == BACKEND_AUTH_PASSWORD) {
        n = backend_b64_line("", (const unsigned char *)pass, pl, line,
                             sizeof line);
    }
    if (n > 0)
        conn_write(b->conn, line, n);
    OPENSSL_cleanse(raw, sizeof raw);
    OPENSSL_cleanse(line, sizeof line);
    if (n == 0)
        backend_auth_refuse(b, 0, "credentials too long");
}

/* backend_xtext - RFC 3461 4 xtext: '+', '=' and bytes outside 33..126
 * become +HH. */
static void backend_xtext(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *in != '\0' && o + 4 < cap; in++) {
        unsigned char c = (unsigned char)*in;

        if (c < 33 || c > 126 || c == '+' || c == '=') {
            out[o++] = '+';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

/* backend_xclient_helo - see backend.h. */
int backend_xclient_helo(const char *name, bool esmtp, char *out, size_t cap)
{
    char xname[200];

    backend_xtext(name, xname, sizeof xname);
    return snprintf(out, cap, "XCLIENT HELO=%s PROTO=%s\r\n",
                    xname[0] ? xname : "[UNAVAILABLE]",
                    esmtp ? "ESMTP" : "SMTP");
}

/* ---- connection events ---------------------------------------------------- */

/*
 * backend_send_proxy_header - "backend_client_address = proxy-v1|v2": the
 * first bytes on every backend connection say who the client is.
 */
static void backend_send_proxy_header(struct backend_leg *b)
{
    unsigned char hdr[PROXYPROTO_MAX_LEN];
    size_t n = 0;

    if (b->svc->backend_client_address == CLIENT_ADDRESS_PROXY_V1)
        n = proxyproto_write_v1((const struct sockaddr *)b->client.addr,
                                (const struct sockaddr *)b->client.dst,
                                (char *)hdr, sizeof hdr);
    else if (b->svc->backend_client_address == CLIENT_ADDRESS_PROXY_V2)
        n = proxyproto_write_v2((const struct sockaddr *)b->client.addr,
                                (const struct sockaddr *)b->client.dst,
                                hdr, sizeof hdr);
    if (n > 0)
        conn_write(b->conn, (const char *)hdr, n);
}

static void backend_on_connect(struct conn *c, void *ud, int status)
{
    struct backend_leg *b = ud;

    if (b->closed || c != b->conn)
        return;
    if (status != 0) {
        backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_unreachable",
                        uv_strerror(status));
        return;
    }
    log_event(b->log, LOG_DEBUG, b->sid, "event=backend_connected peer=%s",
              conn_peer(c));
    backend_touch(b);
    conn_read_start(c);
    backend_send_proxy_header(b);
    backend_enter(b, b->svc->backend_implicit_tls ? BACKEND_TLS_IMPLICIT
                                                  : BACKEND_GREETING);
}

/* backend_sts_tls - RFC 8461 4.2: the MX host's certificate must be
 * PKIX-valid for its name (backend_ca_file, or the system store).  Under
 * enforce a failure refuses the host; under testing it is logged.  True
 * when the target was refused (the caller stops). */
static bool backend_sts_tls(struct backend_leg *b, struct conn *c)
{
    long vr = SSL_get_verify_result(conn_ssl(c));
    char why[400];

    if (vr == X509_V_OK) {
        if (backend_sts_mode(b) == STS_MODE_ENFORCE)
            b->authenticated = true;
        return false;
    }
    snprintf(why, sizeof why, "MTA-STS: certificate of %s: %s",
             backend_host(b), X509_verify_cert_error_string(vr));
    backend_report(b, tls_failure_type(vr), X509_verify_cert_error_string(vr));
    backend_count_failure(b, STATS_HS_STS);
    log_event(b->log, LOG_WARN, b->sid, "event=%s host=%s result=%s",
              backend_sts_mode(b) == STS_MODE_TESTING ? "sts_testing_failure"
                                                      : "backend_sts_failure",
              backend_host(b), tls_failure_type(vr));
    if (backend_sts_mode(b) == STS_MODE_TESTING)
        return false;
    return backend_refuse_rule(b, "sts", why);
}

static void backend_on_handshake(struct conn *c, void *ud, int status)
{
    struct backend_leg *b = ud;

    if (b->closed || c != b->conn)
        return;
    if (status != 0) {
        /* a chain that failed verification ends the handshake itself */
        backend_count_failure(b, conn_ssl(c) != NULL &&
                                     SSL_get_verify_result(conn_ssl(c)) !=
                                         X509_V_OK
                                     ? STATS_HS_VERIFY : STATS_HS_HANDSHAKE);
        backend_tls_failed(b, conn_error(c));
        return;
    }
    b->hs_start = 0;
    backend_record_tls(b);
    if (b->svc->backend_tls == BACKEND_TLS_VERIFY &&
        SSL_get_verify_result(conn_ssl(c)) != X509_V_OK) {
        backend_count_failure(b, STATS_HS_VERIFY);
        if (backend_refuse(b, b->verify))
            return;
    }
    b->authenticated = b->svc->backend_tls == BACKEND_TLS_VERIFY &&
                       SSL_get_verify_result(conn_ssl(c)) == X509_V_OK;
    if (b->svc->backend_tls == BACKEND_TLS_FINGERPRINT) {
        char which[64];

        if (tls_pin_match(conn_ssl(c), b->svc->backend_pins,
                          b->svc->nbackend_pins, which, sizeof which)) {
            snprintf(b->verify, sizeof b->verify, "fingerprint:%s", which);
            b->authenticated = true;
        } else {
            backend_count_failure(b, STATS_HS_FINGERPRINT);
            if (backend_refuse_rule(b, "fingerprint",
                                    "certificate matches no fingerprint"))
                return;
        }
    }
    if (backend_dane_usable(b)) {
        tls_dane_describe(conn_ssl(c), b->dane, sizeof b->dane);
        if (strncmp(b->dane, "verified", 8) == 0) {
            snprintf(b->verify, sizeof b->verify, "dane");
            b->authenticated = true;
        } else {
            log_event(b->log, LOG_WARN, b->sid,
                      "event=backend_dane host=%s tlsa_set=%016llx dane=%s",
                      backend_host(b),
                      (unsigned long long)b->target.tlsa_digest, b->dane);
            backend_report(b, "validation-failure", b->dane);
            backend_count_failure(b, STATS_HS_DANE);
            if (backend_refuse_rule(b, "dane", b->dane))
                return;
        }
    } else if (backend_dane_policy(b->svc) && b->have_target) {
        snprintf(b->dane, sizeof b->dane, "%s",
                 b->target.dane == DANE_UNUSABLE ? "unusable_tlsa"
                                                 : "no_secure_tlsa");
    }
    if (backend_sts_mode(b) != STS_MODE_NONE && backend_sts_tls(b, c))
        return;
    backend_report(b, NULL, NULL);
    log_event(b->log, LOG_INFO, b->sid,
              "event=backend_tls tls=%s verify=%s resumed=%s%s%s%s%s",
              b->tls_desc, b->verify,
              SSL_session_reused(conn_ssl(c)) ? "yes" : "no",
              b->dane[0] ? " dane=" : "", b->dane,
              b->sts_desc != NULL ? " sts=" : "",
              b->sts_desc != NULL ? sts_mode_name(backend_sts_mode(b)) : "");
    if (b->state == BACKEND_TLS_IMPLICIT)
        backend_enter(b, BACKEND_GREETING);
    else
        backend_finish(b, false, 0);
}

static void backend_on_eof(struct conn *c, void *ud, int status)
{
    struct backend_leg *b = ud;
    char why[160];

    if (b->closed || c != b->conn)
        return;
    if (b->state == BACKEND_READY) {
        b->ev->lost(b->owner, status);
        return;
    }
    if (b->state == BACKEND_TLS_HANDSHAKE || b->state == BACKEND_TLS_IMPLICIT) {
        /* a reset during the handshake is a failed handshake like any */
        snprintf(why, sizeof why, "connection %s during TLS handshake%s%s",
                 status == 0 ? "closed" : "lost",
                 conn_error(c)[0] ? ": " : "", conn_error(c));
        backend_count_failure(b, STATS_HS_CLOSED);
        backend_tls_failed(b, why);
        return;
    }
    snprintf(why, sizeof why, "closed during %s%s%s",
             backend_state_name(b->state), conn_error(c)[0] ? ": " : "",
             conn_error(c));
    if (!(b->state >= BACKEND_EHLO && backend_strict_refuse(b, why)))
        backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_unreachable",
                        why);
}

static void backend_on_drain(struct conn *c, void *ud)
{
    struct backend_leg *b = ud;

    if (!b->closed && c == b->conn)
        b->ev->drain(b->owner);
}

static void backend_on_close(struct conn *c, void *ud)
{
    struct backend_leg *b = ud;

    if (b->conn == c)
        b->conn = NULL;
    b->ev->ref(b->owner, -1);   /* may free b's owner, and b with it */
}

/* ---- setup replies -------------------------------------------------------- */

/* One setup reply, already taken out of b->in. */
struct backend_reply {
    int code;
    bool mech;              /* an EHLO reply offers backend_auth's */
    char text[200];         /* its first line (for the log) */
    unsigned caps;          /* EHLO keywords, for an EHLO reply */
    size_t extra;           /* bytes the backend sent behind it */
};

/* The reply handlers below choose the next state.  They return false to
 * stop reading: the leg failed or waits for something else. */

static bool backend_reply_greeting(struct backend_leg *b,
                                   const struct backend_reply *rep)
{
    char esc[200];

    if (rep->code != 220) {
        log_escape(esc, sizeof esc, b->greeting, b->greeting_len);
        if (backend_strict_refuse(b, esc))
            return false;
    }
    if (rep->extra > 0) {
        backend_give_up(b, REPLY_BACKEND_PROTOCOL, "backend_error",
                        "unsolicited data after greeting");
        return false;
    }
    if (rep->code != 220)
        backend_enter(b, BACKEND_READY);
    else if (b->svc->backend_tls == BACKEND_TLS_NONE ||
             b->svc->backend_implicit_tls || b->plain_retry)
        backend_finish(b, false, 0);
    else
        backend_enter(b, BACKEND_EHLO);
    return true;
}

static bool backend_reply_ehlo(struct backend_leg *b,
                               const struct backend_reply *rep)
{
    if (rep->extra > 0) {
        backend_give_up(b, REPLY_BACKEND_PROTOCOL, "backend_error",
                        "unsolicited data after EHLO reply");
        return false;
    }
    if (rep->code == 250 && (rep->caps & SMTP_CAP_STARTTLS)) {
        backend_enter(b, BACKEND_STARTTLS);
        return true;
    }
    if (rep->code == 500 || rep->code == 502)
        b->helo_only = true;
    if (!b->plain_retry)
        backend_report(b, "starttls-not-supported",
                       rep->code == 250 ? "STARTTLS not offered"
                                        : "EHLO refused");
    if (backend_strict_refuse(b, rep->code == 250 ? "STARTTLS not offered"
                                                  : "EHLO refused"))
        return false;
    log_event(b->log, LOG_INFO, b->sid, "event=backend_plaintext reason=%s",
              rep->code == 250 ? "no_starttls" : "ehlo_refused");
    backend_finish(b, rep->code == 250, rep->caps);
    return true;
}

static bool backend_reply_starttls(struct backend_leg *b,
                                   const struct backend_reply *rep)
{
    if (rep->code != 220) {
        backend_report(b, "starttls-not-supported", "STARTTLS refused");
        if (backend_strict_refuse(b, "STARTTLS refused"))
            return false;
        log_event(b->log, LOG_INFO, b->sid,
                  "event=backend_plaintext reason=starttls_refused code=%d",
                  rep->code);
        backend_finish(b, false, 0);
        return true;
    }
    if (rep->extra > 0) {
        /* RFC 3207 5: no plaintext state survives (CVE-2011-0411 class):
         * what came behind the 220 is dropped unread */
        log_event(b->log, LOG_WARN, b->sid,
                  "event=backend_response_injection dropped=%zu", rep->extra);
        if (b->stats != NULL)
            stats_add(&b->stats->events[STATS_EV_RESPONSE_INJECTION], 1);
        sbuf_free(&b->in);
    }
    backend_enter(b, BACKEND_TLS_HANDSHAKE);
    return false;
}

static bool backend_reply_xclient_ehlo(struct backend_leg *b,
                                       const struct backend_reply *rep)
{
    if (rep->code != 250) {
        if (rep->code == 500 || rep->code == 502)
            b->helo_only = true;
        log_event(b->log, LOG_WARN, b->sid,
                  "event=xclient_unavailable reason=ehlo_refused");
        backend_enter(b, BACKEND_READY);
    } else {
        backend_finish(b, true, rep->caps);
    }
    return true;
}

static bool backend_reply_xclient(struct backend_leg *b,
                                  const struct backend_reply *rep)
{
    if (rep->code != 220) {
        log_event(b->log, LOG_WARN, b->sid, "event=xclient_refused code=%d",
                  rep->code);
    } else {
        b->xclient_ok = true;
        log_event(b->log, LOG_INFO, b->sid, "event=xclient client=%s",
                  b->client.addr_text);
    }
    backend_enter(b, BACKEND_READY);
    return true;
}

/* backend_reply_auth_ehlo - the EHLO over TLS: AUTH and the mechanism
 * must be offered (the reply was kept for the owner). */
static bool backend_reply_auth_ehlo(struct backend_leg *b,
                                    const struct backend_reply *rep)
{
    if (rep->extra > 0) {
        backend_give_up(b, REPLY_BACKEND_PROTOCOL, "backend_error",
                        "unsolicited data after EHLO reply");
        return false;
    }
    if (rep->code != 250 || !(rep->caps & SMTP_CAP_AUTH) || !rep->mech) {
        backend_auth_refuse(b, rep->code,
                            rep->code != 250 ? rep->text
                            : !(rep->caps & SMTP_CAP_AUTH)
                                ? "AUTH not offered"
                                : "mechanism not offered");
        return false;
    }
    b->auth_caps = rep->caps;
    backend_enter(b, BACKEND_AUTH);
    return true;
}

/* backend_reply_auth - the answers to the AUTH exchange: 334 asks for
 * LOGIN's next part, 235 (RFC 4954 6) is the login; anything else
 * refuses the client, with the backend's text logged. */
static bool backend_reply_auth(struct backend_leg *b,
                               const struct backend_reply *rep,
                               enum backend_state st)
{
    char user[200];

    if (rep->extra > 0) {
        backend_give_up(b, REPLY_BACKEND_PROTOCOL, "backend_error",
                        "unsolicited data after AUTH reply");
        return false;
    }
    if (rep->code == 334 && b->svc->backend_auth == BACKEND_AUTH_LOGIN &&
        st != BACKEND_AUTH_PASSWORD) {
        backend_enter(b, st == BACKEND_AUTH ? BACKEND_AUTH_USER
                                            : BACKEND_AUTH_PASSWORD);
        return true;
    }
    if (rep->code != 235) {
        backend_auth_refuse(b, rep->code, rep->text);
        return false;
    }
    b->auth_done = true;
    log_escape(user, sizeof user, b->svc->auth_user,
               strlen(b->svc->auth_user));
    log_event(b->log, LOG_INFO, b->sid,
              "event=backend_auth user=%s mechanism=%s", user,
              backend_auth_mech(b));
    backend_finish(b, true, b->auth_caps);
    return true;
}

/* backend_reply_text - a reply's first line (cut at cap - 1 bytes), for
 * the log; NUL bytes end it early. */
static void backend_reply_text(const char *p, size_t len, char *out,
                               size_t cap)
{
    size_t n = 0;

    while (n < len && n + 1 < cap && p[n] != '\r' && p[n] != '\n')
        n++;
    memcpy(out, p, n);
    out[n] = '\0';
}

/* backend_keep_auth_ehlo - the EHLO reply over TLS, for the owner: a
 * client's EHLO is the backend's second one, which some refuse. */
static bool backend_keep_auth_ehlo(struct backend_leg *b, const char *p,
                                   size_t len)
{
    free(b->auth_ehlo);
    b->auth_ehlo = malloc(len);
    b->auth_ehlo_len = b->auth_ehlo != NULL ? len : 0;
    if (b->auth_ehlo == NULL) {
        backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_error",
                        "out of memory");
        return false;
    }
    memcpy(b->auth_ehlo, p, len);
    return true;
}

/* backend_waits_reply - does state wait for a reply from the backend? */
static bool backend_waits_reply(enum backend_state st)
{
    return st == BACKEND_GREETING || st == BACKEND_EHLO ||
           st == BACKEND_STARTTLS || st == BACKEND_XCLIENT_EHLO ||
           st == BACKEND_XCLIENT || st == BACKEND_AUTH_EHLO ||
           st == BACKEND_AUTH || st == BACKEND_AUTH_USER ||
           st == BACKEND_AUTH_PASSWORD;
}

/* backend_keep_greeting - the greeting is relayed to the client later. */
static bool backend_keep_greeting(struct backend_leg *b, const char *p,
                                  size_t len)
{
    free(b->greeting);
    b->greeting = malloc(len);
    b->greeting_len = b->greeting != NULL ? len : 0;
    if (b->greeting == NULL) {
        backend_give_up(b, REPLY_BACKEND_UNAVAILABLE, "backend_error",
                        "out of memory");
        return false;
    }
    memcpy(b->greeting, p, len);
    return true;
}

/*
 * backend_setup_input - one reply per setup step.  Anything the backend
 * sends that was not asked for (bytes after the reply) is a protocol
 * error, except after its 220 to STARTTLS (see backend_reply_starttls).
 */
static void backend_setup_input(struct backend_leg *b)
{
    struct smtp_reply sr;
    struct backend_reply rep;
    enum smtp_reply_result r;
    enum backend_state st;
    char esc[200];
    bool go_on;

    while (!b->closed && b->in.len > 0 && b->state != BACKEND_READY) {
        const char *p = sbuf_ptr(&b->in);

        r = smtp_reply_scan(p, b->in.len, BACKEND_REPLY_LINE,
                            BACKEND_REPLY_LINES, &sr);
        if (r == SMTP_REPLY_MORE)
            return;
        st = b->state;
        if (r == SMTP_REPLY_BAD || !backend_waits_reply(st)) {
            log_escape(esc, sizeof esc, p, b->in.len < 60 ? b->in.len : 60);
            if (b->stats != NULL)
                stats_add(&b->stats->events[STATS_EV_BACKEND_GARBAGE], 1);
            log_event(b->log, LOG_WARN, b->sid,
                      "event=backend_garbage state=%s data=\"%s\"",
                      backend_state_name(st), esc);
            if (!backend_strict_refuse(b, "protocol error"))
                backend_give_up(b, REPLY_BACKEND_PROTOCOL, "backend_error",
                                "protocol error during setup");
            return;
        }
        if (st == BACKEND_GREETING && !backend_keep_greeting(b, p, sr.len))
            return;
        rep.code = sr.code;
        rep.caps = st == BACKEND_EHLO || st == BACKEND_XCLIENT_EHLO ||
                           st == BACKEND_AUTH_EHLO
                       ? smtp_ehlo_caps(p, sr.len) : 0;
        rep.extra = b->in.len - sr.len;
        if (st == BACKEND_AUTH_EHLO && !backend_keep_auth_ehlo(b, p, sr.len))
            return;
        rep.mech = st == BACKEND_AUTH_EHLO &&
                   smtp_ehlo_auth_mech(p, sr.len, backend_auth_mech(b));
        backend_reply_text(p, sr.len, rep.text, sizeof rep.text);
        sbuf_consume(&b->in, sr.len);
        if (st == BACKEND_GREETING)
            go_on = backend_reply_greeting(b, &rep);
        else if (st == BACKEND_EHLO)
            go_on = backend_reply_ehlo(b, &rep);
        else if (st == BACKEND_STARTTLS)
            go_on = backend_reply_starttls(b, &rep);
        else if (st == BACKEND_XCLIENT_EHLO)
            go_on = backend_reply_xclient_ehlo(b, &rep);
        else if (st == BACKEND_AUTH_EHLO)
            go_on = backend_reply_auth_ehlo(b, &rep);
        else if (st == BACKEND_XCLIENT)
            go_on = backend_reply_xclient(b, &rep);
        else
            go_on = backend_reply_auth(b, &rep, st);
        if (!go_on)
            return;
    }
}

static void backend_on_data(struct conn *c, void *ud, const char *buf,
                            size_t len)
{
    struct backend_leg *b = ud;

    if (b->closed || c != b->conn)
        return;
    backend_touch(b);
    if (b->stats != NULL)
        stats_add(&b->stats->bytes[STATS_DIR_FROM_BACKEND], len);
    if (sbuf_append(&b->in, buf, len) != 0) {
        backend_give_up(b, REPLY_BACKEND_LOST, "error", "out of memory");
        return;
    }
    bool relaying = b->state == BACKEND_READY;

    if (!relaying)
        backend_setup_input(b);
    b->ev->input(b->owner, relaying);
}
