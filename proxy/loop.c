/*
 * loop.c - the per-loop context.
 */
#include "loop.h"
#include "dns.h"
#include "sts_fetch.h"
#include "tlsrpt_send.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/ssl.h>

#include "tls.h"

/* generation_new - see loop.h. */
struct generation *generation_new(struct config *cfg, struct tls_service *tls,
                                  unsigned long id)
{
    struct generation *g = calloc(1, sizeof *g);

    if (g == NULL)
        return NULL;
    g->cfg = cfg;
    g->tls = tls;
    g->id = id;
    g->refs = 1;
    return g;
}

void generation_hold(struct generation *g)
{
    __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
}

void generation_release(struct generation *g)
{
    if (g == NULL || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (size_t i = 0; g->backend_sess != NULL &&
                       i < (size_t)g->nworkers * g->cfg->nservices; i++)
        SSL_SESSION_free(g->backend_sess[i]);
    free(g->backend_sess);
    free(g->slots);
    for (size_t i = 0; g->tls != NULL && i < g->cfg->nservices; i++)
        tls_service_free(&g->tls[i]);
    free(g->tls);
    config_free(g->cfg);
    free(g);
}

/* generation_keep_sessions - see loop.h. */
int generation_keep_sessions(struct generation *g, unsigned nworkers)
{
    size_t n = (size_t)nworkers * g->cfg->nservices;

    g->backend_sess = calloc(n ? n : 1, sizeof *g->backend_sess);
    if (g->backend_sess == NULL)
        return -1;
    g->nworkers = nworkers;
    return 0;
}

/* generation_slot - see loop.h. */
size_t generation_slot(const struct generation *g, size_t svc_index)
{
    return g->slots != NULL ? g->slots[svc_index] : svc_index;
}

/* loop_ctx_init - see loop.h. */
void loop_ctx_init(struct loop_ctx *ctx, uv_loop_t *loop,
                   struct generation *gen, struct connlimit *limits,
                   unsigned id)
{
    const struct config *cfg = gen->cfg;

    generation_hold(gen);
    ctx->loop = loop;
    ctx->gen = gen;
    ctx->cfg = cfg;
    ctx->tls = gen->tls;
    ctx->limits = limits;
    ctx->log.level = cfg->log_level;
    ctx->log.out = stderr;
    ctx->log.to_syslog = cfg->log_target == LOG_TO_SYSLOG;
    ctx->id = id;
    ctx->next_sid = 0;
    ctx->sessions = NULL;
    ctx->nsessions = 0;
    conn_loop_init(&ctx->conns, loop);
    ctx->dns = NULL;
    ctx->dns_failed = false;
    ctx->sts = NULL;
    ctx->sts_failed = false;
    ctx->tlsrpt = NULL;
    if (stats_init(&ctx->stats, cfg->nservices) != 0)
        log_event(&ctx->log, LOG_ERROR, 0, "event=error "
                  "error=\"out of memory: no metrics on this worker\"");
}

/* loop_dns - see loop.h. */
struct dns_resolver *loop_dns(struct loop_ctx *ctx)
{
    char err[300];

    if (ctx->dns != NULL || ctx->dns_failed)
        return ctx->dns;
    if (ctx->gen->dns == NULL) {
        snprintf(err, sizeof err, "no resolver settings");
        ctx->dns_failed = true;
    } else {
        ctx->dns = dns_resolver_new(ctx->loop, ctx->gen->dns, err,
                                    sizeof err);
        ctx->dns_failed = ctx->dns == NULL;
    }
    if (ctx->dns_failed)
        log_event(&ctx->log, LOG_ERROR, 0, "event=dns_error error=\"%s\"",
                  err);
    return ctx->dns;
}

/* loop_sts - see loop.h. */
struct sts_fetcher *loop_sts(struct loop_ctx *ctx)
{
    struct sts_settings set;
    struct dns_resolver *r;
    char err[300];

    if (ctx->sts != NULL || ctx->sts_failed)
        return ctx->sts;
    r = loop_dns(ctx);
    set.timeout_ms = ctx->cfg->sts_timeout * 1000;
    set.port = ctx->cfg->sts_policy_port;
    ctx->sts = sts_fetcher_new(ctx->loop, r, ctx->gen->sts, &set, &ctx->log,
                               err, sizeof err);
    ctx->sts_failed = ctx->sts == NULL;
    if (ctx->sts_failed)
        log_event(&ctx->log, LOG_ERROR, 0, "event=sts_error error=\"%s\"",
                  err);
    return ctx->sts;
}

/* loop_tlsrpt_store - the store a report to domain is checked with: the
 * backend leg's of the service that sends mail to it (backend_ca_file,
 * or the system store), as for its MTA-STS policy. */
static X509_STORE *loop_tlsrpt_store(void *ud, const char *domain)
{
    struct loop_ctx *ctx = ud;
    X509_STORE *any = NULL;

    for (size_t i = 0; i < ctx->cfg->nservices; i++) {
        const struct service *svc = &ctx->cfg->services[i];

        if (ctx->tls[i].client == NULL)
            continue;
        if (svc->backend_mx && strcasecmp(svc->backend_host, domain) == 0)
            return SSL_CTX_get_cert_store(ctx->tls[i].client);
        if (any == NULL)
            any = SSL_CTX_get_cert_store(ctx->tls[i].client);
    }
    return any;
}

/* loop_tlsrpt_start - see loop.h.  Counts are saved every tenth of the
 * interval, at most every 60 s and at least every second. */
void loop_tlsrpt_start(struct loop_ctx *ctx)
{
    struct tlsrpt_settings set;
    struct dns_resolver *r;
    struct sts_fetcher *f;
    unsigned tick;

    if (ctx->gen->tlsrpt == NULL || ctx->tlsrpt != NULL)
        return;
    r = loop_dns(ctx);
    f = loop_sts(ctx);
    tick = ctx->cfg->tlsrpt_interval / 10;
    set.organization = ctx->cfg->tlsrpt_organization;
    set.contact = ctx->cfg->tlsrpt_contact;
    set.submitter = strrchr(ctx->cfg->tlsrpt_contact, '@') + 1;
    set.tick_ms = (tick < 1 ? 1 : tick > 60 ? 60 : tick) * 1000;
    ctx->tlsrpt = tlsrpt_sender_new(ctx->loop, ctx->gen->tlsrpt, r, f, &set,
                                    loop_tlsrpt_store, ctx, &ctx->log);
    if (ctx->tlsrpt == NULL)
        log_event(&ctx->log, LOG_ERROR, 0, "event=tlsrpt_error "
                  "error=\"the report sender cannot start\"");
}

/* loop_ctx_stop - see loop.h.  The report sender first, then the
 * fetcher: each cancels what it asked of the next. */
void loop_ctx_stop(struct loop_ctx *ctx)
{
    tlsrpt_sender_close(ctx->tlsrpt);
    ctx->tlsrpt = NULL;
    sts_fetcher_close(ctx->sts);
    ctx->sts = NULL;
    ctx->sts_failed = true;
    dns_resolver_close(ctx->dns);
    ctx->dns = NULL;
    ctx->dns_failed = true;          /* no new one */
}

/* loop_ctx_switch - see loop.h.  Nothing here is indexed by service:
 * a reload may add, remove and move services. */
void loop_ctx_switch(struct loop_ctx *ctx, struct generation *gen)
{
    struct generation *old = ctx->gen;

    generation_hold(gen);
    ctx->gen = gen;
    ctx->cfg = gen->cfg;
    ctx->tls = gen->tls;
    ctx->log.level = gen->cfg->log_level;
    generation_release(old);
}

/* loop_ctx_release - see loop.h. */
void loop_ctx_release(struct loop_ctx *ctx)
{
    conn_loop_release(&ctx->conns);
    /* stats are not freed: the metrics endpoint (main thread) may read
     * them until every worker has been joined (main_free_stats) */
    generation_release(ctx->gen);
    ctx->gen = NULL;
}

/* loop_next_sid - see loop.h. */
uint64_t loop_next_sid(struct loop_ctx *ctx)
{
    return ((uint64_t)(ctx->id + 1) << 48) | ++ctx->next_sid;
}

/* loop_backend_session - see loop.h. */
SSL_SESSION **loop_backend_session(struct loop_ctx *ctx, size_t svc_index)
{
    struct generation *g = ctx->gen;

    if (g->backend_sess == NULL || ctx->id >= g->nworkers ||
        svc_index >= g->cfg->nservices)
        return NULL;
    return &g->backend_sess[(size_t)ctx->id * g->cfg->nservices + svc_index];
}
