/*
 * sts_fetch.c - MTA-STS policy discovery on a worker loop (see
 * sts_fetch.h).
 *
 * A lookup asks for the TXT record, then either answers from the cache
 * or joins (or starts) the domain's fetch.  A fetch resolves the policy
 * host, then runs one curl easy handle on the loop's multi handle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "dns.h"
#include "log.h"
#include "sts_fetch.h"
#include "tlsrpt.h"

struct sts_fetch;

struct sts_lookup {
    struct sts_fetcher *f;
    char domain[256];
    X509_STORE *store;
    uint64_t sid;
    sts_cb cb;
    void *ud;
    struct dns_query *qtxt;
    struct sts_policy *cached;       /* applies if the fetch fails */
    struct sts_fetch *fetch;         /* waiting for it */
    struct sts_lookup *next_waiter;
    struct sts_lookup *prev, *next;  /* f->lookups */
};

struct sts_fetch {
    struct sts_fetcher *f;
    struct sts_fetch *next;          /* f->fetches */
    char domain[256];
    char id[STS_ID_MAX + 1];
    char host[300];                  /* the HTTPS server, and its port */
    unsigned port;
    char url[TLSRPT_URI_MAX + 100];
    /* a POST (sts_post) instead of a policy fetch: */
    char *post;
    size_t post_len;
    struct curl_slist *headers;
    sts_post_cb post_cb;
    void *post_ud;
    X509_STORE *store;
    struct dns_query *q4, *q6;
    char addrs[512];                 /* "ADDR,[ADDR6],..." for curl */
    CURL *easy;
    struct curl_slist *resolve;
    char *body;
    size_t len;
    bool too_big;
    char errbuf[CURL_ERROR_SIZE];
    struct sts_lookup *waiters;
};

struct sts_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct sts_fetcher *f;
    struct sts_sock *next;           /* f->socks */
};

struct sts_fetcher {
    uv_loop_t *loop;
    struct dns_resolver *r;
    struct sts_cache *cache;
    struct sts_settings set;
    struct logger *log;
    CURLM *multi;
    uv_timer_t timer;
    unsigned handles;                /* open uv handles */
    bool closing;
    struct sts_fetch *fetches;
    struct sts_lookup *lookups;
    struct sts_sock *socks;
};

/* sts_failure_name - see sts_fetch.h. */
const char *sts_failure_name(enum sts_failure fl)
{
    switch (fl) {
    case STS_FETCH_ERROR:
        return "sts-policy-fetch-error";
    case STS_INVALID:
        return "sts-policy-invalid";
    case STS_WEBPKI_INVALID:
        return "sts-webpki-invalid";
    default:
        return "";
    }
}

/* ---- lookups -------------------------------------------------------------- */

static void sts_lookup_free(struct sts_lookup *l)
{
    struct sts_fetcher *f = l->f;

    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        f->lookups = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    dns_cancel(l->qtxt);
    sts_policy_unref(l->cached);
    free(l);
}

/* sts_complete - answer l and forget it. */
static void sts_complete(struct sts_lookup *l, struct sts_policy *p,
                         const char *source, enum sts_failure fl,
                         const char *detail)
{
    struct sts_result r = {p, source, fl, detail};
    sts_cb cb = l->cb;
    void *ud = l->ud;

    l->qtxt = NULL;                  /* answered, or never asked again */
    sts_policy_ref(p);               /* l->cached may be p */
    sts_lookup_free(l);
    cb(ud, &r);
    sts_policy_unref(p);
}

/* ---- curl on libuv -------------------------------------------------------- */

static void sts_handle_closed(uv_handle_t *h)
{
    struct sts_fetcher *f = h->data;

    if (h->type == UV_POLL)
        free(h);                     /* the sts_sock: poll is its first */
    if (--f->handles == 0 && f->closing)
        free(f);
}

static void sts_sock_close(struct sts_sock *ss)
{
    struct sts_fetcher *f = ss->f;
    struct sts_sock **pp;

    for (pp = &f->socks; *pp != NULL; pp = &(*pp)->next)
        if (*pp == ss) {
            *pp = ss->next;
            break;
        }
    uv_poll_stop(&ss->poll);
    ss->poll.data = f;
    uv_close((uv_handle_t *)&ss->poll, sts_handle_closed);
}

static void sts_fetch_done(struct sts_fetch *ft, CURLcode rc);

/* sts_check_done - hand every finished transfer to its fetch. */
static void sts_check_done(struct sts_fetcher *f)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(f->multi, &left)) != NULL) {
        struct sts_fetch *ft = NULL;

        if (m->msg != CURLMSG_DONE)
            continue;
        (void)curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &ft);
        sts_fetch_done(ft, m->data.result);
    }
}

static void sts_on_poll(uv_poll_t *h, int status, int events)
{
    struct sts_sock *ss = (struct sts_sock *)h;
    struct sts_fetcher *f = ss->f;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    (void)curl_multi_socket_action(f->multi, ss->fd, flags, &running);
    sts_check_done(f);
}

static void sts_on_timer(uv_timer_t *t)
{
    struct sts_fetcher *f = t->data;
    int running;

    (void)curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0,
                                   &running);
    sts_check_done(f);
}

/* sts_socket_cb - curl wants socket s watched for what (or no more). */
static int sts_socket_cb(CURL *e, curl_socket_t s, int what, void *userp,
                         void *socketp)
{
    struct sts_fetcher *f = userp;
    struct sts_sock *ss = socketp;
    int events = 0;

    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (ss != NULL) {
            sts_sock_close(ss);
            curl_multi_assign(f->multi, s, NULL);
        }
        return 0;
    }
    if (ss == NULL) {
        ss = calloc(1, sizeof *ss);
        if (ss == NULL)
            return -1;
        if (uv_poll_init_socket(f->loop, &ss->poll, s) != 0) {
            free(ss);
            return -1;
        }
        ss->fd = s;
        ss->f = f;
        ss->next = f->socks;
        f->socks = ss;
        f->handles++;
        curl_multi_assign(f->multi, s, ss);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&ss->poll, events, sts_on_poll);
    return 0;
}

/* sts_timer_cb - curl's next timeout; -1: none. */
static int sts_timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    struct sts_fetcher *f = userp;

    (void)m;
    if (timeout_ms < 0)
        uv_timer_stop(&f->timer);
    else
        uv_timer_start(&f->timer, sts_on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- fetches -------------------------------------------------------------- */

static void sts_fetch_free(struct sts_fetch *ft)
{
    struct sts_fetcher *f = ft->f;
    struct sts_fetch **pp;

    for (pp = &f->fetches; *pp != NULL; pp = &(*pp)->next)
        if (*pp == ft) {
            *pp = ft->next;
            break;
        }
    dns_cancel(ft->q4);
    dns_cancel(ft->q6);
    if (ft->easy != NULL) {
        curl_multi_remove_handle(f->multi, ft->easy);
        curl_easy_cleanup(ft->easy);
    }
    curl_slist_free_all(ft->resolve);
    curl_slist_free_all(ft->headers);
    X509_STORE_free(ft->store);
    free(ft->body);
    free(ft->post);
    free(ft);
}

/* sts_fetch_end - answer every waiter: p is the new policy, or NULL when
 * the fetch failed (fl, why): then a waiter's cached policy applies. */
static void sts_fetch_end(struct sts_fetch *ft, struct sts_policy *p,
                          enum sts_failure fl, const char *why)
{
    struct sts_fetcher *f = ft->f;
    struct sts_fetch **pp;

    for (pp = &f->fetches; *pp != NULL; pp = &(*pp)->next)
        if (*pp == ft) {
            *pp = ft->next;          /* a new lookup starts a new fetch */
            break;
        }
    ft->next = NULL;
    while (ft->waiters != NULL) {
        struct sts_lookup *w = ft->waiters;

        ft->waiters = w->next_waiter;
        w->fetch = NULL;
        if (p != NULL)
            sts_complete(w, p, "fetched", STS_OK, NULL);
        else if (w->cached != NULL)
            sts_complete(w, w->cached, "cached", fl, why);
        else
            sts_complete(w, NULL, "fetch_failed", fl, why);
    }
    sts_fetch_free(ft);
}

/* sts_post_end - the POST is over: status (0: no answer) and why
 * ("" when it was taken). */
static void sts_post_end(struct sts_fetch *ft, long status, const char *why)
{
    struct sts_fetcher *f = ft->f;
    struct sts_fetch **pp;
    sts_post_cb cb = ft->post_cb;
    void *ud = ft->post_ud;
    char text[400];

    snprintf(text, sizeof text, "%s", why);
    for (pp = &f->fetches; *pp != NULL; pp = &(*pp)->next)
        if (*pp == ft) {
            *pp = ft->next;
            break;
        }
    ft->next = NULL;
    sts_fetch_free(ft);
    cb(ud, status, text);
}

static size_t sts_on_body(char *data, size_t size, size_t n, void *ud)
{
    struct sts_fetch *ft = ud;
    size_t len = size * n;
    char *nb;

    if (ft->len + len > STS_POLICY_MAX) {
        ft->too_big = true;
        return 0;                    /* curl ends the transfer */
    }
    nb = realloc(ft->body, ft->len + len + 1);
    if (nb == NULL)
        return 0;
    memcpy(nb + ft->len, data, len);
    ft->body = nb;
    ft->len += len;
    return len;
}

static CURLcode sts_on_ssl_ctx(CURL *c, void *ssl_ctx, void *ud)
{
    (void)c;
    SSL_CTX_set1_cert_store(ssl_ctx, ud);
    return CURLE_OK;
}

/* sts_content_type_ok - RFC 8461 3.3: the media type is text/plain
 * (parameters allowed). */
static bool sts_content_type_ok(const char *ct)
{
    if (ct == NULL || strncasecmp(ct, "text/plain", 10) != 0)
        return false;
    return ct[10] == '\0' || ct[10] == ';' || ct[10] == ' ' ||
           ct[10] == '\t';
}

/* sts_fetch_done - the transfer ended with rc. */
static void sts_fetch_done(struct sts_fetch *ft, CURLcode rc)
{
    struct sts_fetcher *f = ft->f;
    char why[300], esc[400];
    long status = 0;
    char *ct = NULL;
    enum sts_failure fl = STS_FETCH_ERROR;
    struct sts_policy *p = NULL;

    (void)curl_easy_getinfo(ft->easy, CURLINFO_RESPONSE_CODE, &status);
    (void)curl_easy_getinfo(ft->easy, CURLINFO_CONTENT_TYPE, &ct);
    why[0] = '\0';
    if (ft->post_cb != NULL) {
        if (rc != CURLE_OK)
            snprintf(why, sizeof why, "%s", ft->errbuf[0]
                                                ? ft->errbuf
                                                : curl_easy_strerror(rc));
        else if (status < 200 || status > 299)
            snprintf(why, sizeof why, "HTTP status %ld", status);
        sts_post_end(ft, rc == CURLE_OK ? status : 0, why);
        return;
    }
    if (ft->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(why, sizeof why, "policy larger than %d bytes",
                 STS_POLICY_MAX);
    } else if (rc == CURLE_PEER_FAILED_VERIFICATION) {
        fl = STS_WEBPKI_INVALID;
        snprintf(why, sizeof why, "policy host certificate: %s",
                 ft->errbuf[0] ? ft->errbuf : curl_easy_strerror(rc));
    } else if (rc != CURLE_OK) {
        snprintf(why, sizeof why, "%s", ft->errbuf[0] ? ft->errbuf
                                                      : curl_easy_strerror(rc));
    } else if (status != 200) {
        /* RFC 8461 3.3: redirects are not followed */
        snprintf(why, sizeof why, "HTTP status %ld", status);
    } else if (!sts_content_type_ok(ct)) {
        snprintf(why, sizeof why, "Content-Type %s is not text/plain",
                 ct != NULL ? ct : "missing");
    } else {
        p = sts_policy_parse(ft->body != NULL ? ft->body : "", ft->len, why,
                             sizeof why);
        if (p == NULL)
            fl = STS_INVALID;
    }
    if (p != NULL) {
        char werr[200];

        snprintf(p->domain, sizeof p->domain, "%s", ft->domain);
        snprintf(p->id, sizeof p->id, "%s", ft->id);
        p->fetched = time(NULL);
        log_event(f->log, LOG_INFO, 0, "event=sts_policy_fetched domain=%s "
                  "id=%s mode=%s max_age=%u mx_patterns=%zu", p->domain,
                  p->id, sts_mode_name(p->mode), p->max_age, p->nmx);
        if (sts_cache_put(f->cache, p, werr, sizeof werr) != 0)
            log_event(f->log, LOG_ERROR, 0, "event=sts_cache_error "
                      "error=\"%s\"", log_escape(esc, sizeof esc, werr,
                                                 strlen(werr)));
        sts_fetch_end(ft, p, STS_OK, NULL);
        sts_policy_unref(p);
        return;
    }
    log_event(f->log, LOG_WARN, 0, "event=sts_policy_failed domain=%s id=%s "
              "result=%s error=\"%s\"", ft->domain, ft->id,
              sts_failure_name(fl), log_escape(esc, sizeof esc, why,
                                               strlen(why)));
    sts_fetch_end(ft, NULL, fl, why);
}

/* sts_fetch_http - the policy host's addresses are known: start the
 * transfer. */
static void sts_fetch_http(struct sts_fetch *ft)
{
    struct sts_fetcher *f = ft->f;
    char entry[sizeof ft->addrs + sizeof ft->host + 16];
    CURL *e;

    if (ft->addrs[0] == '\0') {
        char why[400];

        snprintf(why, sizeof why, "no address for %s", ft->host);
        if (ft->post_cb != NULL) {
            sts_post_end(ft, 0, why);
            return;
        }
        log_event(f->log, LOG_WARN, 0, "event=sts_policy_failed domain=%s "
                  "id=%s result=%s error=\"no address for the policy host\"",
                  ft->domain, ft->id, sts_failure_name(STS_FETCH_ERROR));
        sts_fetch_end(ft, NULL, STS_FETCH_ERROR, why);
        return;
    }
    snprintf(entry, sizeof entry, "%s:%u:%s", ft->host, ft->port, ft->addrs);
    ft->resolve = curl_slist_append(NULL, entry);
    e = ft->easy = curl_easy_init();
    if (e == NULL || ft->resolve == NULL) {
        if (ft->post_cb != NULL)
            sts_post_end(ft, 0, "out of memory");
        else
            sts_fetch_end(ft, NULL, STS_FETCH_ERROR, "out of memory");
        return;
    }
    curl_easy_setopt(e, CURLOPT_URL, ft->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, ft);
    curl_easy_setopt(e, CURLOPT_RESOLVE, ft->resolve);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");     /* no *_proxy from env */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)f->set.timeout_ms);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                     (curl_off_t)STS_POLICY_MAX);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sts_on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, ft);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, ft->errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, ft->post_cb != NULL
                                               ? "starttls-proxy (TLSRPT)"
                                               : "starttls-proxy (MTA-STS)");
    if (ft->post_cb != NULL) {
        /* RFC 8460 5.2: the report is the body, no multipart */
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, ft->post);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)ft->post_len);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, ft->headers);
    }
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    /* the store of the service, loaded before the privilege drop; curl
     * reads no CA file of its own */
    curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
    curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, sts_on_ssl_ctx);
    curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, ft->store);
    curl_easy_setopt(e, CURLOPT_SSL_SESSIONID_CACHE, 0L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    if (curl_multi_add_handle(f->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        ft->easy = NULL;
        if (ft->post_cb != NULL)
            sts_post_end(ft, 0, "cannot start the transfer");
        else
            sts_fetch_end(ft, NULL, STS_FETCH_ERROR, "cannot start the fetch");
    }
}

/* sts_on_host - an A or AAAA answer for the policy host. */
static void sts_on_host(struct sts_fetch *ft, const struct dns_answer *a,
                        bool v6)
{
    for (int i = 0; a->status == DNS_OK && i < a->count; i++) {
        char text[64], *out = ft->addrs + strlen(ft->addrs);
        size_t room = sizeof ft->addrs - strlen(ft->addrs);
        char ip[48];

        if (a->len[i] != (v6 ? 16 : 4) ||
            uv_inet_ntop(v6 ? AF_INET6 : AF_INET, a->data[i], ip,
                         sizeof ip) != 0)
            continue;
        snprintf(text, sizeof text, v6 ? "[%s]" : "%s", ip);
        if (strlen(text) + 2 > room)
            break;
        snprintf(out, room, "%s%s", ft->addrs[0] ? "," : "", text);
    }
    if (ft->q4 == NULL && ft->q6 == NULL)
        sts_fetch_http(ft);
}

static void sts_on_a(void *ud, const struct dns_answer *a)
{
    struct sts_fetch *ft = ud;

    ft->q4 = NULL;
    sts_on_host(ft, a, false);
}

static void sts_on_aaaa(void *ud, const struct dns_answer *a)
{
    struct sts_fetch *ft = ud;

    ft->q6 = NULL;
    sts_on_host(ft, a, true);
}

/* sts_resolve - look up ft->host's addresses (a literal address is its
 * own); the transfer starts when both answers are in.  -1 when the
 * queries cannot start. */
static int sts_resolve(struct sts_fetch *ft)
{
    unsigned char bin[16];
    char lit[300];
    size_t n = strlen(ft->host);

    if (n > 2 && ft->host[0] == '[' && ft->host[n - 1] == ']') {
        snprintf(lit, sizeof lit, "%.*s", (int)(n - 2), ft->host + 1);
        if (uv_inet_pton(AF_INET6, lit, bin) == 0) {
            snprintf(ft->addrs, sizeof ft->addrs, "%s", ft->host);
            sts_fetch_http(ft);
            return 0;
        }
    }
    if (uv_inet_pton(AF_INET, ft->host, bin) == 0) {
        snprintf(ft->addrs, sizeof ft->addrs, "%s", ft->host);
        sts_fetch_http(ft);
        return 0;
    }
    ft->q4 = dns_query(ft->f->r, ft->host, DNS_TYPE_A, sts_on_a, ft);
    ft->q6 = dns_query(ft->f->r, ft->host, DNS_TYPE_AAAA, sts_on_aaaa, ft);
    return ft->q4 == NULL || ft->q6 == NULL ? -1 : 0;
}

/* sts_fetch_start - the domain's fetch for id (joining one under way);
 * NULL when it cannot start. */
static struct sts_fetch *sts_fetch_start(struct sts_fetcher *f,
                                         const char *domain, const char *id,
                                         X509_STORE *store)
{
    struct sts_fetch *ft;

    for (ft = f->fetches; ft != NULL; ft = ft->next)
        if (ft->post_cb == NULL && strcasecmp(ft->domain, domain) == 0 &&
            strcmp(ft->id, id) == 0)
            return ft;
    ft = calloc(1, sizeof *ft);
    if (ft == NULL)
        return NULL;
    ft->f = f;
    snprintf(ft->domain, sizeof ft->domain, "%s", domain);
    snprintf(ft->id, sizeof ft->id, "%s", id);
    X509_STORE_up_ref(store);
    ft->store = store;
    snprintf(ft->host, sizeof ft->host, "mta-sts.%s", domain);
    ft->port = f->set.port;
    if (ft->port == 443)
        snprintf(ft->url, sizeof ft->url,
                 "https://%s/.well-known/mta-sts.txt", ft->host);
    else
        snprintf(ft->url, sizeof ft->url,
                 "https://%s:%u/.well-known/mta-sts.txt", ft->host,
                 ft->port);
    ft->next = f->fetches;
    f->fetches = ft;
    if (sts_resolve(ft) != 0) {
        sts_fetch_free(ft);          /* takes it off the list */
        return NULL;
    }
    return ft;
}

/* ---- the TXT record ------------------------------------------------------- */

static void sts_on_txt(void *ud, const struct dns_answer *a)
{
    struct sts_lookup *l = ud;
    struct sts_fetcher *f = l->f;
    char recs[DNS_TXT_MAX][DNS_TXT_LEN];
    const char *rp[DNS_TXT_MAX];
    size_t lens[DNS_TXT_MAX], n;
    char id[STS_ID_MAX + 1], why[160];
    time_t now = time(NULL);
    struct sts_policy *c;

    l->qtxt = NULL;
    n = dns_txt_join(a, recs, rp, lens);
    c = sts_cache_get(f->cache, l->domain, now);
    if (a->status != DNS_OK ||
        sts_txt_parse(rp, lens, n, id, why, sizeof why) != 0) {
        if (a->status != DNS_OK)
            snprintf(why, sizeof why, "TXT %s", dns_status_name(a->status));
        /* RFC 8461 5.1: no record, the cached policy still applies */
        l->cached = c;
        sts_complete(l, c, c != NULL ? "cached" : "none", STS_OK, why);
        return;
    }
    if (c != NULL && strcmp(c->id, id) == 0) {
        /* refreshed in the background once half its life is gone */
        if (now >= c->fetched + (time_t)c->max_age / 2)
            (void)sts_fetch_start(f, l->domain, id, l->store);
        l->cached = c;
        sts_complete(l, c, "cached", STS_OK, NULL);
        return;
    }
    l->cached = c;                   /* an old id: used if the fetch fails */
    l->fetch = sts_fetch_start(f, l->domain, id, l->store);
    if (l->fetch == NULL) {
        sts_complete(l, c, c != NULL ? "cached" : "fetch_failed",
                     STS_FETCH_ERROR, "cannot start the fetch");
        return;
    }
    l->next_waiter = l->fetch->waiters;
    l->fetch->waiters = l;
}

/* sts_lookup - see sts_fetch.h. */
struct sts_lookup *sts_lookup(struct sts_fetcher *f, const char *domain,
                              X509_STORE *store, uint64_t sid, sts_cb cb,
                              void *ud)
{
    struct sts_lookup *l;
    char name[300];

    if (f == NULL || f->closing || (l = calloc(1, sizeof *l)) == NULL)
        return NULL;
    l->f = f;
    snprintf(l->domain, sizeof l->domain, "%s", domain);
    l->store = store;
    l->sid = sid;
    l->cb = cb;
    l->ud = ud;
    l->next = f->lookups;
    if (f->lookups != NULL)
        f->lookups->prev = l;
    f->lookups = l;
    snprintf(name, sizeof name, "_mta-sts.%s", domain);
    l->qtxt = dns_query(f->r, name, DNS_TYPE_TXT, sts_on_txt, l);
    if (l->qtxt == NULL) {
        sts_lookup_free(l);
        return NULL;
    }
    return l;
}

/* sts_lookup_cancel - see sts_fetch.h.  The fetch goes on without it:
 * its policy fills the cache for the next session. */
void sts_lookup_cancel(struct sts_lookup *l)
{
    if (l == NULL)
        return;
    if (l->fetch != NULL) {
        struct sts_lookup **pp;

        for (pp = &l->fetch->waiters; *pp != NULL; pp = &(*pp)->next_waiter)
            if (*pp == l) {
                *pp = l->next_waiter;
                break;
            }
    }
    sts_lookup_free(l);
}

/* ---- reports (RFC 8460 5.2) ---------------------------------------------- */

/* sts_post - see sts_fetch.h. */
int sts_post(struct sts_fetcher *f, const char *url, const void *data,
             size_t len, const char *content_type, struct x509_store_st *store,
             sts_post_cb cb, void *ud)
{
    struct sts_fetch *ft;
    CURLU *u;
    char *host = NULL, *port = NULL, header[200];

    if (f == NULL || f->closing || strncasecmp(url, "https://", 8) != 0 ||
        strlen(url) >= sizeof ft->url || (u = curl_url()) == NULL)
        return -1;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
            CURLUE_OK ||
        strlen(host) >= sizeof ft->host || (ft = calloc(1, sizeof *ft)) == NULL) {
        curl_free(host);
        curl_free(port);
        curl_url_cleanup(u);
        return -1;
    }
    ft->f = f;
    snprintf(ft->host, sizeof ft->host, "%s", host);
    ft->port = (unsigned)strtoul(port, NULL, 10);
    snprintf(ft->url, sizeof ft->url, "%s", url);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    snprintf(header, sizeof header, "Content-Type: %s", content_type);
    ft->headers = curl_slist_append(NULL, header);
    ft->post = malloc(len > 0 ? len : 1);
    if (ft->headers == NULL || ft->post == NULL) {
        sts_fetch_free(ft);
        return -1;
    }
    memcpy(ft->post, data, len);
    ft->post_len = len;
    ft->post_cb = cb;
    ft->post_ud = ud;
    X509_STORE_up_ref(store);
    ft->store = store;
    ft->next = f->fetches;
    f->fetches = ft;
    if (sts_resolve(ft) != 0) {
        sts_fetch_free(ft);          /* takes it off the list */
        return -1;
    }
    return 0;
}

/* ---- the fetcher ---------------------------------------------------------- */

/* sts_fetcher_new - see sts_fetch.h. */
struct sts_fetcher *sts_fetcher_new(uv_loop_t *loop, struct dns_resolver *r,
                                    struct sts_cache *c,
                                    const struct sts_settings *s,
                                    struct logger *log, char *err,
                                    size_t err_len)
{
    struct sts_fetcher *f = calloc(1, sizeof *f);

    if (f == NULL || r == NULL || c == NULL) {
        snprintf(err, err_len, f == NULL ? "out of memory"
                               : "no resolver or policy cache");
        free(f);
        return NULL;
    }
    f->loop = loop;
    f->r = r;
    f->cache = c;
    f->set = *s;
    f->log = log;
    f->multi = curl_multi_init();
    if (f->multi == NULL) {
        snprintf(err, err_len, "curl_multi_init failed");
        free(f);
        return NULL;
    }
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, sts_socket_cb);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, sts_timer_cb);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    f->handles = 1;
    return f;
}

/* sts_fetcher_close - see sts_fetch.h.  Order: lookups (no callback
 * runs), fetches (their easy handles leave the multi handle, which makes
 * curl give its sockets back), then the multi handle, then any poll
 * handle curl did not give back, then the timer. */
void sts_fetcher_close(struct sts_fetcher *f)
{
    if (f == NULL || f->closing)
        return;
    f->closing = true;
    while (f->lookups != NULL)
        sts_lookup_cancel(f->lookups);
    while (f->fetches != NULL) {
        struct sts_fetch *ft = f->fetches;

        ft->waiters = NULL;
        sts_fetch_free(ft);
    }
    curl_multi_cleanup(f->multi);
    f->multi = NULL;
    while (f->socks != NULL)
        sts_sock_close(f->socks);
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, sts_handle_closed);
}
