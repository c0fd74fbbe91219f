/*
 * fuzz_config.c - libFuzzer target for config_load_stream().
 *
 * The input is the INI file.  Whatever it holds, the loader must return
 * 0 with a config that keeps the promises of config.h, or -1 with at
 * least one "fuzz.ini:LINE: " error line; nothing may leak.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

/* check_cidrs - ranges with a family, no port, a prefix in bounds and
 * no host bits. */
static void check_cidrs(const struct cidr *list, size_t n)
{
    size_t i, b;

    for (i = 0; i < n; i++) {
        const unsigned char *bytes;
        unsigned max;

        if (list[i].addr.ss_family == AF_INET) {
            const struct sockaddr_in *sin =
                (const struct sockaddr_in *)&list[i].addr;

            FUZZ_CHECK(sin->sin_port == 0);
            bytes = (const unsigned char *)&sin->sin_addr;
            max = 32;
        } else {
            const struct sockaddr_in6 *sin6 =
                (const struct sockaddr_in6 *)&list[i].addr;

            FUZZ_CHECK(list[i].addr.ss_family == AF_INET6);
            FUZZ_CHECK(sin6->sin6_port == 0);
            bytes = sin6->sin6_addr.s6_addr;
            max = 128;
        }
        FUZZ_CHECK(list[i].prefix <= max);
        for (b = list[i].prefix; b < max; b++)
            FUZZ_CHECK(!(bytes[b / 8] & (0x80u >> (b % 8))));
    }
}

/* check_knobs - the TLS settings of one leg. */
static void check_knobs(const struct tls_knobs *k)
{
    FUZZ_CHECK(k->min_protocol >= 0x301 && k->min_protocol <= 0x304);
    FUZZ_CHECK(k->security_level >= -1 && k->security_level <= 5);
    FUZZ_CHECK(k->ciphers == NULL || k->ciphers[0] != '\0');
    FUZZ_CHECK(k->ciphersuites == NULL || k->ciphersuites[0] != '\0');
    FUZZ_CHECK(k->groups == NULL || k->groups[0] != '\0');
}

/* check_config - the promises of a loaded config. */
static void check_config(const struct config *cfg)
{
    size_t i, j;

    for (i = 0; i < cfg->nprofiles; i++) {
        const struct profile *p = &cfg->profiles[i];

        FUZZ_CHECK(p->name != NULL && p->line > 0);
        FUZZ_CHECK(p->nsources > 0 && p->sources != NULL);
        check_cidrs(p->sources, p->nsources);
        FUZZ_CHECK(!p->has_min_protocol ||
                   (p->min_protocol >= 0x301 && p->min_protocol <= 0x304));
        FUZZ_CHECK(!p->has_security_level ||
                   (p->security_level >= -1 && p->security_level <= 5));
    }

    FUZZ_CHECK(cfg->hostname != NULL && cfg->nservices > 0);
    FUZZ_CHECK(cfg->dns_resolver != NULL && cfg->dns_trust_anchor != NULL);
    FUZZ_CHECK(cfg->dns_timeout >= 1 && cfg->dns_timeout <= 300);
    FUZZ_CHECK(cfg->state_dir != NULL);
    FUZZ_CHECK(cfg->sts_timeout >= 1 && cfg->sts_timeout <= 300);
    FUZZ_CHECK(cfg->sts_policy_port >= 1 && cfg->sts_policy_port <= 65535);
    FUZZ_CHECK(strcmp(cfg->path, "fuzz.ini") == 0);
    for (i = 0; i < cfg->nservices; i++) {
        const struct service *s = &cfg->services[i];

        FUZZ_CHECK(s->name != NULL && s->line > 0);
        FUZZ_CHECK(s->nlisten > 0 && s->listen != NULL);
        for (j = 0; j < s->nlisten; j++)
            FUZZ_CHECK(s->listen[j].addr_len > 0 &&
                       s->listen[j].text[0] != '\0');
        if (s->transparent != TRANSPARENT_OFF) {
            /* the backend is each connection's original destination:
             * only an address is known */
            FUZZ_CHECK(s->backend_host == NULL && !s->backend_mx);
            FUZZ_CHECK(s->backend_tls <= BACKEND_TLS_VERIFY);
            FUZZ_CHECK(s->backend_tls != BACKEND_TLS_VERIFY ||
                       s->backend_verify_name != NULL);
            FUZZ_CHECK(!s->client_proxy_protocol);
            FUZZ_CHECK(s->transparent_source == TRANSPARENT_SOURCE_PROXY ||
                       s->transparent == TRANSPARENT_TPROXY);
        } else {
            FUZZ_CHECK(s->backend_host != NULL && s->backend_port != NULL);
            /* mx: backends check the MX host's name unless one is given */
            FUZZ_CHECK(s->backend_verify_name != NULL || s->backend_mx);
            FUZZ_CHECK(s->ntransparent_destinations == 0 &&
                       s->transparent_source == TRANSPARENT_SOURCE_PROXY);
        }
        check_cidrs(s->transparent_destinations,
                    s->ntransparent_destinations);
        FUZZ_CHECK((s->backend_tls == BACKEND_TLS_FINGERPRINT) ==
                   (s->nbackend_pins > 0));
        FUZZ_CHECK(s->nbackend_pins <= 32);
        /* MTA-STS policies belong to mail domains */
        FUZZ_CHECK(s->backend_tls != BACKEND_TLS_STS || s->backend_mx);
        FUZZ_CHECK(s->idle_timeout >= 1 && s->idle_timeout <= 86400);
        FUZZ_CHECK(s->max_line_length >= 512 &&
                   s->max_line_length <= 65536);
        FUZZ_CHECK((s->client_tls == CLIENT_TLS_NONE &&
                    !s->client_implicit_tls) ||
                   (s->cert != NULL && s->key != NULL));
        /* cert/key: equal lists, the first pair is cert/key */
        FUZZ_CHECK(s->ncerts == 0 ? s->cert == NULL && s->key == NULL
                                  : s->cert == s->certs[0].cert &&
                                        s->key == s->certs[0].key);
        for (j = 0; j < s->ncerts; j++)
            FUZZ_CHECK(s->certs[j].cert != NULL && s->certs[j].key != NULL);
        check_knobs(&s->client_tls_knobs);
        check_knobs(&s->backend_tls_knobs);
        FUZZ_CHECK(s->client_cert == CLIENT_CERT_NONE ||
                   (s->client_ca_file != NULL &&
                    (s->client_tls != CLIENT_TLS_NONE ||
                     s->client_implicit_tls)));
        FUZZ_CHECK(!s->client_proxy_protocol || s->ntrusted_proxies > 0);
        check_cidrs(s->trusted_proxies, s->ntrusted_proxies);
        check_cidrs(s->sources, s->nsources);
        /* backend_auth: loaded credentials, sources, a TLS-only policy */
        FUZZ_CHECK(s->backend_auth == BACKEND_AUTH_NONE ||
                   (s->auth_user != NULL && s->auth_password != NULL &&
                    s->nsources > 0 && s->enforce &&
                    s->backend_tls != BACKEND_TLS_NONE &&
                    s->backend_tls != BACKEND_TLS_MAY &&
                    s->backend_tls != BACKEND_TLS_DANE &&
                    s->backend_tls != BACKEND_TLS_STS));
        FUZZ_CHECK(s->backend_auth != BACKEND_AUTH_NONE ||
                   (s->auth_user == NULL && s->auth_password == NULL &&
                    s->backend_auth_file == NULL));
        FUZZ_CHECK(s->max_connections >= 1 &&
                   s->max_connections <= 1000000);
        FUZZ_CHECK(s->max_connections_per_ip <= 1000000);
        FUZZ_CHECK(s->max_errors >= 1 && s->max_errors <= 1000);
        FUZZ_CHECK(s->command_timeout >= 1 && s->command_timeout <= 86400);
        FUZZ_CHECK(s->tls_handshake_timeout >= 1 &&
                   s->tls_handshake_timeout <= 3600);
        FUZZ_CHECK(s->min_data_rate <= 1000000000);
        /* profiles point into cfg->profiles, none twice */
        for (j = 0; j < s->nprofiles; j++) {
            size_t k;

            FUZZ_CHECK(s->profiles[j] >= cfg->profiles &&
                       s->profiles[j] < cfg->profiles + cfg->nprofiles);
            for (k = 0; k < j; k++)
                FUZZ_CHECK(s->profiles[j] != s->profiles[k]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[2048];
    struct config *cfg = NULL;
    FILE *f;
    int r;

    if (size == 0 || size > 64 * 1024)
        return 0;  /* fmemopen() needs a size; empty files: unit tests */
    f = fmemopen((void *)data, size, "r");
    if (f == NULL)
        return 0;
    r = config_load_stream(f, "fuzz.ini", &cfg, err, sizeof err);
    fclose(f);
    if (r == 0) {
        check_config(cfg);
        config_free(cfg);
    } else {
        FUZZ_CHECK(r == -1 && cfg == NULL);
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
        FUZZ_CHECK(strncmp(err, "fuzz.ini:", 9) == 0);
    }
    return 0;
}
