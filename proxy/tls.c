/*
 * tls.c - SSL_CTX construction, certificate loading, verification setup.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* tls_last_error - see tls.h. */
void tls_last_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    unsigned long next;

    /* keep the first (root cause) error, drop the rest */
    while ((next = ERR_get_error()) != 0)
        (void)next;
    if (e == 0)
        snprintf(buf, len, "unknown error");
    else
        ERR_error_string_n(e, buf, len);
}

/* tls_common - options shared by both legs. */
static void tls_common(SSL_CTX *ctx)
{
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* idle sessions keep no 34 KiB record buffers around */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}

static int tls_fail(const struct config *cfg, const struct service *svc,
                    char *err, size_t err_len, const char *what,
                    const char *file)
{
    char ossl[256];

    tls_last_error(ossl, sizeof ossl);
    snprintf(err, err_len, "%s:%d: [%s] %s%s%s: %s\n", cfg->path, svc->line,
             svc->name, what, file ? " " : "", file ? file : "", ossl);
    return -1;
}

/* tls_server_ctx - the client leg's context: our certificate chain. */
static SSL_CTX *tls_server_ctx(const struct config *cfg,
                               const struct service *svc, char *err,
                               size_t err_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL) {
        tls_fail(cfg, svc, err, err_len, "cannot create TLS context", NULL);
        return NULL;
    }
    tls_common(ctx);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* resumption: tickets are on by default; also keep a small cache */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)svc->name,
                                   (unsigned)strnlen(svc->name, 32));
    if (SSL_CTX_use_certificate_chain_file(ctx, svc->cert) != 1) {
        tls_fail(cfg, svc, err, err_len, "cannot load certificate",
                 svc->cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, svc->key, SSL_FILETYPE_PEM) != 1) {
        tls_fail(cfg, svc, err, err_len, "cannot load key", svc->key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_fail(cfg, svc, err, err_len, "key does not match certificate",
                 svc->key);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/*
 * tls_client_ctx - the backend leg's context.  Under "verify" the peer must
 * chain to the CA bundle; under "may"/"encrypt" the chain is still checked
 * against the same store, but only so that the result can be logged.
 */
static SSL_CTX *tls_client_ctx(const struct config *cfg,
                               const struct service *svc, char *err,
                               size_t err_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int ok;

    if (ctx == NULL) {
        tls_fail(cfg, svc, err, err_len, "cannot create TLS context", NULL);
        return NULL;
    }
    tls_common(ctx);
    if (svc->backend_ca_file != NULL)
        ok = SSL_CTX_load_verify_locations(ctx, svc->backend_ca_file, NULL);
    else
        ok = SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        tls_fail(cfg, svc, err, err_len, "cannot load CA file",
                 svc->backend_ca_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, svc->backend_tls == BACKEND_TLS_VERIFY
                                ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    return ctx;
}

/* tls_service_init - see tls.h. */
int tls_service_init(const struct config *cfg, const struct service *svc,
                     struct tls_service *out, char *err, size_t err_len)
{
    struct tls_service ts = {0};

    if (svc->client_tls != CLIENT_TLS_NONE || svc->client_implicit_tls) {
        ts.server = tls_server_ctx(cfg, svc, err, err_len);
        if (ts.server == NULL)
            return -1;
    }
    if (svc->backend_tls != BACKEND_TLS_NONE || svc->backend_implicit_tls) {
        ts.client = tls_client_ctx(cfg, svc, err, err_len);
        if (ts.client == NULL) {
            tls_service_free(&ts);
            return -1;
        }
    }
    *out = ts;
    return 0;
}

void tls_service_free(struct tls_service *ts)
{
    SSL_CTX_free(ts->server);
    SSL_CTX_free(ts->client);
    ts->server = ts->client = NULL;
}

static int tls_is_ip(const char *name)
{
    unsigned char b[16];

    return inet_pton(AF_INET, name, b) == 1 || inet_pton(AF_INET6, name, b) == 1;
}

/* tls_client_ssl - see tls.h. */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *name)
{
    SSL *ssl = SSL_new(ctx);

    if (ssl == NULL)
        return NULL;
    if (name != NULL && *name != '\0') {
        if (tls_is_ip(name)) {
            if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1)
                goto fail;
        } else {
            if (SSL_set_tlsext_host_name(ssl, name) != 1)
                goto fail;
            /* checked under every policy so the log can tell; enforced
             * only when the context verifies */
            if (SSL_set1_host(ssl, name) != 1)
                goto fail;
        }
    }
    return ssl;
fail:
    SSL_free(ssl);
    return NULL;
}

void tls_describe(const SSL *ssl, char *buf, size_t len)
{
    if (ssl == NULL) {
        snprintf(buf, len, "plaintext");
        return;
    }
    snprintf(buf, len, "%s/%s", SSL_get_version(ssl),
             SSL_get_cipher_name(ssl));
}
