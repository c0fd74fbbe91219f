/*
 * tls.h - building SSL_CTXs for a service and describing a TLS session.
 *
 * The contexts are built once from the configuration and then only read;
 * OpenSSL allows one SSL_CTX to be shared by several threads.
 */
#ifndef STARTTLS_PROXY_TLS_H
#define STARTTLS_PROXY_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "config.h"

struct tls_service {
    SSL_CTX *server;   /* client leg; NULL when the service offers no TLS */
    SSL_CTX *client;   /* backend leg; NULL when backend_tls = none and
                          not implicit */
};

/*
 * tls_service_init - build both contexts of svc, loading its certificate
 * chain and key.  On failure returns -1 and writes "path:line: message"
 * (the service's header line) into err.
 */
int tls_service_init(const struct config *cfg, const struct service *svc,
                     struct tls_service *out, char *err, size_t err_len);

/* tls_service_free - free both contexts (fine on a zeroed struct). */
void tls_service_free(struct tls_service *ts);

/*
 * tls_client_ssl - a new SSL for the backend leg: SNI (when name is not an
 * IP address) and the name or address the certificate must match (enforced
 * only when the context verifies; otherwise the result is just logged).
 * Returns NULL on failure.
 */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *name);

/* tls_describe - "TLSv1.3/TLS_AES_256_GCM_SHA384" into buf. */
void tls_describe(const SSL *ssl, char *buf, size_t len);

/* tls_last_error - the last OpenSSL error as text (clears the queue). */
void tls_last_error(char *buf, size_t len);

#endif
