/*
 * loop.c - the per-loop context.
 */
#include "loop.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/ssl.h>

/* loop_ctx_init - see loop.h. */
void loop_ctx_init(struct loop_ctx *ctx, uv_loop_t *loop,
                   const struct config *cfg, const struct tls_service *tls,
                   struct connlimit *limits, unsigned id)
{
    ctx->loop = loop;
    ctx->cfg = cfg;
    ctx->tls = tls;
    ctx->limits = limits;
    ctx->log.level = cfg->log_level;
    ctx->log.out = stderr;
    ctx->log.to_syslog = cfg->log_target == LOG_TO_SYSLOG;
    ctx->id = id;
    ctx->next_sid = 0;
    ctx->sessions = NULL;
    ctx->nsessions = 0;
    /* without it the backend leg just does full handshakes */
    ctx->backend_sess = calloc(cfg->nservices ? cfg->nservices : 1,
                               sizeof *ctx->backend_sess);
    conn_loop_init(&ctx->conns, loop);
}

/* loop_ctx_release - see loop.h. */
void loop_ctx_release(struct loop_ctx *ctx)
{
    if (ctx->backend_sess != NULL)
        for (size_t i = 0; i < ctx->cfg->nservices; i++)
            SSL_SESSION_free(ctx->backend_sess[i]);
    free(ctx->backend_sess);
    ctx->backend_sess = NULL;
    conn_loop_release(&ctx->conns);
}

/* loop_next_sid - see loop.h. */
uint64_t loop_next_sid(struct loop_ctx *ctx)
{
    return ((uint64_t)(ctx->id + 1) << 48) | ++ctx->next_sid;
}

/* loop_backend_session - see loop.h. */
SSL_SESSION **loop_backend_session(struct loop_ctx *ctx, size_t svc_index)
{
    if (ctx->backend_sess == NULL || svc_index >= ctx->cfg->nservices)
        return NULL;
    return &ctx->backend_sess[svc_index];
}
