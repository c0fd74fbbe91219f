/*
 * tls.h - building SSL_CTXs for a service and describing a TLS session.
 *
 * The contexts are built once from the configuration and then only read;
 * OpenSSL allows one SSL_CTX to be shared by several threads.
 *
 * Client leg (we are the TLS server): one context per group of
 * certificates for the same names (an RSA and an ECDSA pair for the same
 * names share a context, and OpenSSL picks by the client's signature
 * algorithms); the client's SNI selects the group.  That whole set is built
 * once with the service's knobs, and once more for every profile of the
 * service that changes a TLS setting.  Backend leg (we are the TLS
 * client): one context.
 */
#ifndef STARTTLS_PROXY_TLS_H
#define STARTTLS_PROXY_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "config.h"

struct tls_server_set;   /* private to tls.c */
struct tls_name_group;   /* private to tls.c */

struct tls_service {
    SSL_CTX *server;   /* client leg with the service's own settings: the
                          context of the first certificate (SNI moves a
                          handshake to another one); NULL when the service
                          offers no TLS */
    SSL_CTX *client;   /* backend leg; NULL when backend_tls = none and
                          not implicit */

    /* private to tls.c */
    struct tls_server_set *sets;   /* [0]: the service's settings;
                                      [1 + i]: svc->profiles[i]'s, empty
                                      when it changes no TLS setting */
    size_t nsets;
    struct tls_name_group *groups; /* certificates grouped by names */
    size_t ngroups;
};

/*
 * tls_service_init - build every context of svc: the client leg's (all
 * certificate pairs, SNI selection, client certificate verification, the
 * client_tls_* knobs, one set per profile that overrides a TLS setting)
 * and the backend leg's (backend_tls_* knobs).  On failure returns -1 and
 * writes "path:line: [service] message\n" (the service's header line; a
 * profile's line for a bad profile override) into err.
 */
int tls_service_init(const struct config *cfg, const struct service *svc,
                     struct tls_service *out, char *err, size_t err_len);

/*
 * tls_service_keep_tickets - a reload: to's client-leg contexts take the
 * session ticket keys of from's contexts in the same place, so that
 * clients keep resuming the sessions issued before it.
 */
void tls_service_keep_tickets(struct tls_service *to,
                              const struct tls_service *from);

/*
 * tls_service_cert - the n-th certificate the client leg serves (every
 * context of the service's own settings, each slot: RSA, ECDSA, ...):
 * its subject and its end of validity ("2027-03-01T12:00:00Z") into
 * subject and not_after, and (if sha256 is not NULL) the SHA-256 of its
 * DER form.  Returns false after the last one.
 */
bool tls_service_cert(const struct tls_service *ts, size_t n, char *subject,
                      size_t subject_len, char *not_after,
                      size_t not_after_len, unsigned char sha256[32]);

/* tls_service_cert_expiry - the same n-th certificate's subject and end
 * of validity in seconds since the epoch (-1 if unreadable). */
bool tls_service_cert_expiry(const struct tls_service *ts, size_t n,
                             char *subject, size_t subject_len,
                             long long *not_after);

/* tls_service_free - free every context (fine on a zeroed struct). */
void tls_service_free(struct tls_service *ts);

/*
 * tls_server_ctx - the client leg's context for a client to which
 * svc->profiles[profile] applies (SIZE_MAX: no profile applies).  The
 * service's own context (ts->server) when the profile changes no TLS
 * setting.  NULL when the service offers no TLS.
 */
SSL_CTX *tls_server_ctx(const struct tls_service *ts, size_t profile);

/*
 * tls_client_ssl - a new SSL for the backend leg: SNI (when name is not an
 * IP address) and the name or address the certificate must match (enforced
 * only when the context verifies; otherwise the result is just logged).
 * Returns NULL on failure.
 */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *name);

/* One TLSA record (RFC 6698), its data pointing into the caller's. */
struct tlsa_rr {
    unsigned char usage, selector, mtype;
    const unsigned char *data;
    size_t len;
};

/* tls_tlsa_usable - can the record take part in DANE for SMTP (RFC 7672
 * 3.1.3: usages 2 and 3 only; selector 0 or 1; matching type 0, 1 or 2
 * with a digest of the right length)? */
bool tls_tlsa_usable(const struct tlsa_rr *rr);

/*
 * tls_client_ssl_dane - a new SSL for the backend leg that authenticates
 * the peer by the usable records of rr (RFC 7672): SNI and the TLSA base
 * name are host (the MX host); a DANE-TA chain may name host or domain
 * (NULL: host only); DANE-EE needs no name.  The verdict is in
 * SSL_get_verify_result() and SSL_get0_dane_authority() after the
 * handshake.  NULL on failure (the context must be dane-enabled:
 * tls_service_init does that for backend_tls = dane | dane-only).
 */
SSL *tls_client_ssl_dane(SSL_CTX *ctx, const char *host, const char *domain,
                         const struct tlsa_rr *rr, size_t n);

/* tls_failure_type - the RFC 8460 4.3 result type of a certificate
 * check that ended in X509 error vr: "certificate-host-mismatch",
 * "certificate-expired", "certificate-not-trusted" or
 * "validation-failure". */
const char *tls_failure_type(long vr);

/* tls_dane_describe - after the handshake: "verified usage=3 selector=1
 * mtype=1", or "failed" with the X509 error, into buf. */
void tls_dane_describe(SSL *ssl, char *buf, size_t len);

/* tls_pin_match - does the peer's certificate match one of pins (its
 * whole DER, or its SubjectPublicKeyInfo, by SHA-256)?  which gets
 * "sha256" or "pubkey-sha256" and the digest's first bytes on a match. */
bool tls_pin_match(SSL *ssl, const struct tls_pin *pins, size_t n,
                   char *which, size_t which_len);

/* tls_describe - "TLSv1.3/TLS_AES_256_GCM_SHA384" into buf. */
void tls_describe(const SSL *ssl, char *buf, size_t len);

/*
 * tls_peer_info - after the handshake on the client leg: the client
 * certificate's subject (RFC 2253 one-line form, "" without a certificate)
 * and its verification result: "ok", the X509 error text ("self-signed
 * certificate", ...; only possible under client_cert = ask), or "none"
 * when the client sent no certificate.  Both buffers always NUL-terminated.
 * The subject is the peer's text: escape it before logging.
 */
void tls_peer_info(SSL *ssl, char *subject, size_t subject_len, char *verify,
                   size_t verify_len);

/* tls_last_error - the last OpenSSL error as text (clears the queue). */
void tls_last_error(char *buf, size_t len);

#endif
