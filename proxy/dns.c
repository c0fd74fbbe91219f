/*
 * dns.c - libunbound on a libuv loop (see dns.h).
 *
 * Every query has the same timeout, so their deadlines come in the order
 * the queries were made: one FIFO list and one timer armed for its head
 * are enough.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <unbound.h>

#include "config.h"
#include "dns.h"

struct dns_query {
    struct dns_resolver *r;
    int id;                       /* libunbound's async id */
    uint64_t deadline;            /* uv_now() */
    dns_cb cb;
    void *ud;
    int rrtype;
    struct dns_query *prev, *next;
};

struct dns_resolver {
    uv_loop_t *loop;
    struct ub_ctx *ub;
    uv_poll_t poll;
    uv_timer_t timer;
    unsigned timeout_ms;
    unsigned open_handles;
    bool closing;
    struct dns_query *head, *tail; /* pending, oldest first */
};

/* ---- the settings --------------------------------------------------------- */

static int dns_push(char ***list, size_t *n, const char *s, size_t len)
{
    char **grown = realloc(*list, (*n + 1) * sizeof **list);
    char *copy;

    if (grown == NULL)
        return -1;
    *list = grown;
    copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    grown[(*n)++] = copy;
    return 0;
}

static const char *dns_skip_blank(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* dns_read_resolv_conf - the "nameserver" lines of path.  None (or no
 * file) leaves the list empty: libunbound then recurses itself. */
static int dns_read_resolv_conf(struct dns_setup *s, const char *path)
{
    char line[512];
    FILE *f = fopen(path, "r");

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL) {
        const char *p = dns_skip_blank(line);
        size_t n;

        if (strncmp(p, "nameserver", 10) != 0 || !isspace((unsigned char)p[10]))
            continue;
        p = dns_skip_blank(p + 10);
        n = strcspn(p, " \t\r\n#;%");   /* no IPv6 zone index */
        if (n > 0 && dns_push(&s->forwarders, &s->nforwarders, p, n) != 0) {
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

/* dns_has_type - is one of the blank-separated fields of p[0..n) "DS"
 * or "DNSKEY" (the record's type)? */
static bool dns_has_type(const char *p, size_t n)
{
    const char *end = p + n;

    while (p < end) {
        size_t len = strcspn(p, " \t");

        if (len > (size_t)(end - p))
            len = (size_t)(end - p);
        if ((len == 2 && strncasecmp(p, "DS", 2) == 0) ||
            (len == 6 && strncasecmp(p, "DNSKEY", 6) == 0))
            return true;
        p += len;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
    }
    return false;
}

/* dns_read_anchors - every record line of a trust anchor file (DS or
 * DNSKEY records in zone file format, as /usr/share/dns/root.key). */
static int dns_read_anchors(struct dns_setup *s, const char *path, char *err,
                            size_t err_len)
{
    char line[4096];
    FILE *f = fopen(path, "r");
    unsigned lineno = 0;

    if (f == NULL) {
        snprintf(err, err_len, "dns_trust_anchor %s: %s", path,
                 strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        const char *p = dns_skip_blank(line);
        size_t n = strcspn(p, ";\r\n");

        lineno++;
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == 0)
            continue;
        if (!dns_has_type(p, n)) {
            snprintf(err, err_len,
                     "dns_trust_anchor %s:%u: not a DS or DNSKEY record",
                     path, lineno);
            fclose(f);
            return -1;
        }
        if (dns_push(&s->anchors, &s->nanchors, p, n) != 0) {
            fclose(f);
            snprintf(err, err_len, "out of memory");
            return -1;
        }
    }
    fclose(f);
    if (s->nanchors == 0) {
        snprintf(err, err_len, "dns_trust_anchor %s: no DS or DNSKEY record",
                 path);
        return -1;
    }
    return 0;
}

/* dns_setup_load - see dns.h. */
int dns_setup_load(struct dns_setup *s, const struct config *cfg, char *err,
                   size_t err_len)
{
    const char *p = cfg->dns_resolver;

    memset(s, 0, sizeof *s);
    s->timeout_ms = cfg->dns_timeout * 1000;
    s->anchor_file = strdup(cfg->dns_trust_anchor);
    if (s->anchor_file == NULL)
        goto oom;
    if (strcmp(p, "system") == 0) {
        if (dns_read_resolv_conf(s, "/etc/resolv.conf") != 0)
            goto oom;
    } else {
        /* checked by config_load: ADDR[@PORT], ... */
        while (*(p = dns_skip_blank(p)) != '\0') {
            size_t n = strcspn(p, ", \t");

            if (n > 0 && dns_push(&s->forwarders, &s->nforwarders, p, n) != 0)
                goto oom;
            p += n;
            if (*p == ',')
                p++;
        }
    }
    if (dns_read_anchors(s, cfg->dns_trust_anchor, err, err_len) != 0) {
        dns_setup_free(s);
        return -1;
    }
    return 0;
oom:
    dns_setup_free(s);
    snprintf(err, err_len, "out of memory");
    return -1;
}

void dns_setup_free(struct dns_setup *s)
{
    size_t i;

    for (i = 0; i < s->nforwarders; i++)
        free(s->forwarders[i]);
    for (i = 0; i < s->nanchors; i++)
        free(s->anchors[i]);
    free(s->forwarders);
    free(s->anchors);
    free(s->anchor_file);
    memset(s, 0, sizeof *s);
}

/* dns_needed - see dns.h. */
bool dns_needed(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nservices; i++)
        if (config_service_dns(&cfg->services[i]))
            return true;
    return false;
}

const char *dns_status_name(enum dns_status st)
{
    static const char *const names[] = {
        "ok", "nodata", "nxdomain", "servfail", "bogus", "timeout", "error"};

    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
}

/* dns_name_from_wire - see dns.h. */
int dns_name_from_wire(const unsigned char *p, size_t len, char *out,
                       size_t cap)
{
    size_t i = 0, o = 0;

    if (cap == 0)
        return -1;
    for (;;) {
        unsigned lab;

        if (i >= len)
            return -1;
        lab = p[i++];
        if (lab == 0)
            break;
        if (lab > 63 || i + lab > len)
            return -1;
        if (o > 0) {
            if (o + 1 >= cap)
                return -1;
            out[o++] = '.';
        }
        for (unsigned k = 0; k < lab; k++) {
            unsigned char c = p[i + k];

            /* host names only: letters, digits, '-', '_' */
            if (!(isalnum(c) || c == '-' || c == '_') || o + 1 >= cap)
                return -1;
            out[o++] = (char)tolower(c);
        }
        i += lab;
    }
    out[o] = '\0';
    return (int)i;
}

/* ---- the resolver --------------------------------------------------------- */

static void dns_unlink(struct dns_resolver *r, struct dns_query *q)
{
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        r->head = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    else
        r->tail = q->prev;
    q->prev = q->next = NULL;
}

static void dns_on_timer(uv_timer_t *t);

static void dns_rearm(struct dns_resolver *r)
{
    uint64_t now = uv_now(r->loop);

    if (r->closing)
        return;
    if (r->head == NULL) {
        uv_timer_stop(&r->timer);
        return;
    }
    uv_timer_start(&r->timer, dns_on_timer,
                   r->head->deadline > now ? r->head->deadline - now : 0, 0);
}

/* dns_finish - q is answered (or timed out): unlink, call back, free. */
static void dns_finish(struct dns_query *q, const struct dns_answer *a)
{
    struct dns_resolver *r = q->r;

    dns_unlink(r, q);
    dns_rearm(r);
    q->cb(q->ud, a);
    free(q);
}

static void dns_on_timer(uv_timer_t *t)
{
    struct dns_resolver *r = t->data;
    uint64_t now = uv_now(r->loop);

    while (r->head != NULL && r->head->deadline <= now) {
        struct dns_query *q = r->head;
        struct dns_answer a;

        memset(&a, 0, sizeof a);
        a.status = DNS_TIMEOUT;
        a.rrtype = q->rrtype;
        a.why = "no answer in time";
        (void)ub_cancel(r->ub, q->id);
        dns_finish(q, &a);
    }
    dns_rearm(r);
}

/* dns_on_result - libunbound's callback, from ub_process (this thread). */
static void dns_on_result(void *ud, int err, struct ub_result *res)
{
    struct dns_query *q = ud;
    struct dns_answer a;

    memset(&a, 0, sizeof a);
    a.rrtype = q->rrtype;
    if (err != 0 || res == NULL) {
        a.status = DNS_ERROR;
        a.why = ub_strerror(err);
    } else if (res->bogus) {
        a.status = DNS_BOGUS;
        a.why = res->why_bogus != NULL ? res->why_bogus : "validation failed";
    } else if (res->rcode == 3 /* NXDOMAIN */) {
        a.status = DNS_NXDOMAIN;
        a.secure = res->secure != 0;
    } else if (res->rcode != 0) {
        a.status = DNS_SERVFAIL;
        a.why = res->rcode == 2 ? "SERVFAIL" : res->rcode == 5 ? "REFUSED"
                                                                : "DNS error";
    } else if (!res->havedata) {
        a.status = DNS_NODATA;
        a.secure = res->secure != 0;
    } else {
        a.status = DNS_OK;
        a.secure = res->secure != 0;
        a.data = res->data;
        a.len = res->len;
        while (res->data[a.count] != NULL)
            a.count++;
        a.ttl = res->ttl > 0 ? (unsigned)res->ttl : 0;
    }
    dns_finish(q, &a);
    if (res != NULL)
        ub_resolve_free(res);
}

static void dns_on_poll(uv_poll_t *h, int status, int events)
{
    struct dns_resolver *r = h->data;

    (void)status;
    (void)events;
    if (!r->closing)
        (void)ub_process(r->ub);
}

/* dns_resolver_new - see dns.h. */
struct dns_resolver *dns_resolver_new(uv_loop_t *loop,
                                      const struct dns_setup *s, char *err,
                                      size_t err_len)
{
    struct dns_resolver *r = calloc(1, sizeof *r);
    const char *what = "ub_ctx_create";
    int rc = 0;
    size_t i;

    if (r == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    r->loop = loop;
    r->timeout_ms = s->timeout_ms;
    r->ub = ub_ctx_create();
    if (r->ub == NULL)
        goto fail;
    /* answers in this thread, from a resolver thread of libunbound's */
    what = "async";
    if ((rc = ub_ctx_async(r->ub, 1)) != 0)
        goto fail;
    /* the operator named these servers: loopback ones too */
    what = "do-not-query-localhost";
    if ((rc = ub_ctx_set_option(r->ub, "do-not-query-localhost:", "no")) != 0)
        goto fail;
    for (i = 0; i < s->nforwarders; i++) {
        what = s->forwarders[i];
        if ((rc = ub_ctx_set_fwd(r->ub, s->forwarders[i])) != 0)
            goto fail;
    }
    for (i = 0; i < s->nanchors; i++) {
        what = s->anchors[i];
        if ((rc = ub_ctx_add_ta(r->ub, s->anchors[i])) != 0)
            goto fail;
    }
    what = "uv_poll";
    if (uv_poll_init(loop, &r->poll, ub_fd(r->ub)) != 0)
        goto fail;
    r->poll.data = r;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->open_handles = 2;
    uv_poll_start(&r->poll, UV_READABLE, dns_on_poll);
    return r;
fail:
    snprintf(err, err_len, "DNS resolver: %s: %s", what,
             rc != 0 ? ub_strerror(rc) : "failed");
    if (r->ub != NULL)
        ub_ctx_delete(r->ub);
    free(r);
    return NULL;
}

static void dns_on_close(uv_handle_t *h)
{
    struct dns_resolver *r = h->data;

    if (--r->open_handles == 0) {
        ub_ctx_delete(r->ub);
        free(r);
    }
}

/* dns_resolver_close - see dns.h. */
void dns_resolver_close(struct dns_resolver *r)
{
    if (r == NULL || r->closing)
        return;
    while (r->head != NULL) {
        struct dns_query *q = r->head;

        (void)ub_cancel(r->ub, q->id);
        dns_unlink(r, q);
        free(q);
    }
    r->closing = true;
    uv_close((uv_handle_t *)&r->poll, dns_on_close);
    uv_close((uv_handle_t *)&r->timer, dns_on_close);
}

/* dns_query - see dns.h. */
struct dns_query *dns_query(struct dns_resolver *r, const char *name,
                            int rrtype, dns_cb cb, void *ud)
{
    struct dns_query *q;

    if (r == NULL || r->closing || (q = calloc(1, sizeof *q)) == NULL)
        return NULL;
    q->r = r;
    q->cb = cb;
    q->ud = ud;
    q->rrtype = rrtype;
    q->deadline = uv_now(r->loop) + r->timeout_ms;
    if (ub_resolve_async(r->ub, name, rrtype, 1 /* IN */, q, dns_on_result,
                         &q->id) != 0) {
        free(q);
        return NULL;
    }
    q->prev = r->tail;
    if (r->tail != NULL)
        r->tail->next = q;
    else
        r->head = q;
    r->tail = q;
    if (r->head == q)
        dns_rearm(r);
    return q;
}

/* dns_cancel - see dns.h. */
void dns_cancel(struct dns_query *q)
{
    struct dns_resolver *r;

    if (q == NULL)
        return;
    r = q->r;
    (void)ub_cancel(r->ub, q->id);
    dns_unlink(r, q);
    dns_rearm(r);
    free(q);
}

/* dns_txt_join - see dns.h. */
size_t dns_txt_join(const struct dns_answer *a,
                    char buf[DNS_TXT_MAX][DNS_TXT_LEN],
                    const char *recs[DNS_TXT_MAX], size_t lens[DNS_TXT_MAX])
{
    size_t n = 0;

    for (int i = 0; a->status == DNS_OK && i < a->count && n < DNS_TXT_MAX;
         i++) {
        const unsigned char *d = (const unsigned char *)a->data[i];
        size_t off = 0, len = 0;

        while (off < (size_t)a->len[i]) {
            size_t sl = d[off++];

            if (off + sl > (size_t)a->len[i] || len + sl >= DNS_TXT_LEN)
                break;
            memcpy(buf[n] + len, d + off, sl);
            len += sl;
            off += sl;
        }
        buf[n][len] = '\0';
        recs[n] = buf[n];
        lens[n++] = len;
    }
    return n;
}

/* dns_txt_pick - see dns.h. */
int dns_txt_pick(const char *const *recs, const size_t *lens, size_t n,
                 const char *tag)
{
    size_t tl = strlen(tag), ours = 0, which = 0;

    for (size_t i = 0; i < n; i++) {
        const char *r = recs[i];
        size_t k = tl;

        if (lens[i] < tl || memcmp(r, tag, tl) != 0)
            continue;
        while (k < lens[i] && (r[k] == ' ' || r[k] == '\t'))
            k++;
        if (k < lens[i] && r[k] != ';')
            continue;
        ours++;
        which = i;
    }
    if (ours == 0)
        return -1;
    return ours == 1 ? (int)which : -2;
}
