/*
 * tls.c - SSL_CTX construction, certificate loading, verification setup.
 *
 * Client leg (we are the server).  The certificate pairs of a service are
 * grouped by the names of their leaf (DNS SANs, or the CN without any):
 * pairs for the same names (RSA + ECDSA) share one SSL_CTX, in which
 * OpenSSL picks the certificate by the client's signature algorithms;
 * every other group gets its own SSL_CTX, and a servername callback moves
 * the handshake to it when the client's SNI matches one of its names.
 * Such a list of contexts is a "set"; the service has one, and every
 * profile that changes a TLS setting gets another, built from the same
 * pairs with the profile's knobs.  All contexts of a set carry the same
 * knobs and verification settings: SSL_set_SSL_CTX() takes the certificate
 * store, the client CA list and the security level from the new context.
 *
 * Backend leg (we are the client): one context, backend_tls_* knobs.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

/*
 * The client leg's TLS 1.2 ciphers when client_tls_ciphers is not set:
 * forward secret AEAD only (TLS 1.3 suites are all of that kind).
 */
#define TLS_DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"

/*
 * ... and when the protocol floor is below TLS 1.2 (a profile for old
 * appliances): those peers know only CBC suites, many only RSA key
 * exchange.  Still no RC4, 3DES, export, anonymous or NULL suites.
 */
#define TLS_LEGACY_CIPHERS                                                  \
    "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES:RSA+AESGCM:RSA+AES"              \
    ":!aNULL:!eNULL:!MD5:!DSS:!PSK:!SRP:!CAMELLIA:!ARIA:!AESCCM"

/* the certificates of one group of equal names, and those names */
struct tls_name_group {
    char **names;                  /* lower case, sorted, no duplicates */
    size_t nnames;
    size_t *pairs;                 /* indexes into the service's pairs */
    size_t npairs;
};

/* one context per name group, all with the same knobs */
struct tls_server_set {
    SSL_CTX **ctx;                 /* ctx[g] serves groups[g] */
    size_t nctx;                   /* 0: no set (profile changes no TLS
                                      setting) */
    const struct tls_name_group *groups;
    size_t ngroups;
};

/* where an error message points: "path:line: [section] ...", the line
 * being that of the key at fault (the section's when it was not given) */
struct tls_where {
    const char *path;
    const struct service *svc;
    const struct profile *prof;    /* the profile whose keys apply, or NULL */
    const char *section;           /* "smtp" or "profile printers" */
    char *err;
    size_t err_len;
};

/* tls_line - the line of key (NULL: the section header) for w. */
static int tls_line(const struct tls_where *w, const char *key)
{
    if (w->prof != NULL)
        return key != NULL ? config_profile_key_line(w->prof, key)
                           : w->prof->line;
    return key != NULL ? config_service_key_line(w->svc, key) : w->svc->line;
}

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

/*
 * tls_fail - write "path:line: [section] what[ file]: <OpenSSL error>",
 * line being key's, and return -1.
 */
static int tls_fail(const struct tls_where *w, const char *key,
                    const char *what, const char *file)
{
    char ossl[256];

    tls_last_error(ossl, sizeof ossl);
    snprintf(w->err, w->err_len, "%s:%d: [%s] %s%s%s: %s\n", w->path,
             tls_line(w, key), w->section, what, file ? " " : "",
             file ? file : "", ossl);
    return -1;
}

/* tls_fail_msg - write "path:line: [section] message" (key's line) and
 * return -1. */
static int tls_fail_msg(const struct tls_where *w, const char *key,
                        const char *msg)
{
    ERR_clear_error();
    snprintf(w->err, w->err_len, "%s:%d: [%s] %s\n", w->path,
             tls_line(w, key), w->section, msg);
    return -1;
}

/* tls_fail_knob - "bad client_tls_ciphers 'FOO': <reason>"; returns -1. */
static int tls_fail_knob(const struct tls_where *w, const char *prefix,
                         const char *key, const char *value,
                         const char *reason)
{
    char ossl[256], name[64];

    if (reason == NULL) {
        tls_last_error(ossl, sizeof ossl);
        reason = ossl;
    } else {
        ERR_clear_error();
    }
    snprintf(name, sizeof name, "%s%s", prefix, key);
    snprintf(w->err, w->err_len, "%s:%d: [%s] bad %s '%s': %s\n", w->path,
             tls_line(w, name), w->section, name, value, reason);
    return -1;
}

/* tls_count_suites - how many TLS 1.3 suites (0x13xx) ctx has enabled. */
static size_t tls_count_suites(const SSL_CTX *ctx)
{
    STACK_OF(SSL_CIPHER) *list = SSL_CTX_get_ciphers(ctx);
    size_t n = 0;
    int i;

    for (i = 0; list != NULL && i < sk_SSL_CIPHER_num(list); i++)
        if ((SSL_CIPHER_get_protocol_id(sk_SSL_CIPHER_value(list, i)) &
             0xff00) == 0x1300)
            n++;
    return n;
}

/*
 * tls_apply_knobs - apply one leg's settings to ctx: protocol floor, TLS
 * 1.2 ciphers, TLS 1.3 suites, groups, security level, session tickets,
 * and what every context gets (no renegotiation, no compression, buffers
 * released while idle).  server: the client leg, which defaults to
 * server cipher preference and TLS_DEFAULT_CIPHERS.  prefix names the keys
 * in errors ("client_tls_").  Returns 0, or -1 with the message in w.
 */
static int tls_apply_knobs(SSL_CTX *ctx, const struct tls_knobs *k,
                           bool server, const char *prefix,
                           const struct tls_where *w)
{
    int min = k->min_protocol != 0 ? k->min_protocol : TLS1_2_VERSION;
    int level = k->security_level;
    const char *ciphers = k->ciphers;
    char num[16];

    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* idle sessions keep no 34 KiB record buffers around */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (server)
        SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_PRIORITIZE_CHACHA);

    snprintf(num, sizeof num, "0x%x", (unsigned)min);
    if (min < TLS1_VERSION || min > TLS1_3_VERSION ||
        SSL_CTX_set_min_proto_version(ctx, min) != 1)
        return tls_fail_knob(w, prefix, "min_protocol", num,
                             "not a TLS version");

    if (ciphers == NULL && server)
        ciphers = min >= TLS1_2_VERSION ? TLS_DEFAULT_CIPHERS
                                        : TLS_LEGACY_CIPHERS;
    if (ciphers != NULL && SSL_CTX_set_cipher_list(ctx, ciphers) != 1)
        return tls_fail_knob(w, prefix, "ciphers", ciphers, NULL);

    if (k->ciphersuites != NULL) {
        if (SSL_CTX_set_ciphersuites(ctx, k->ciphersuites) != 1)
            return tls_fail_knob(w, prefix, "ciphersuites", k->ciphersuites,
                                 NULL);
        /* OpenSSL 3 skips unknown names: a list of only unknown names is
         * a mistake, while an empty value turns TLS 1.3 off on purpose.
         * Without suites OpenSSL would still negotiate TLS 1.3 and then
         * fail the handshake, so the ceiling has to come down too. */
        if (k->ciphersuites[0] != '\0' && tls_count_suites(ctx) == 0)
            return tls_fail_knob(w, prefix, "ciphersuites", k->ciphersuites,
                                 "no known TLS 1.3 suite");
        if (k->ciphersuites[0] == '\0') {
            if (min >= TLS1_3_VERSION)
                return tls_fail_knob(w, prefix, "ciphersuites", "",
                                     "empty, but the floor is TLS 1.3");
            SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
        }
    }

    if (k->groups != NULL && SSL_CTX_set1_groups_list(ctx, k->groups) != 1)
        return tls_fail_knob(w, prefix, "groups", k->groups, NULL);

    /*
     * OpenSSL 3 signs TLS 1.0 and 1.1 handshakes with SHA-1 (MD5+SHA-1
     * for RSA), which security level 1 and up refuse: a floor below TLS
     * 1.2 with the level left at the default means level 0 for this
     * context, or those protocols could never be negotiated.  A level in
     * the cipher string ("...:@SECLEVEL=1") is the user's choice.
     */
    if (level < 0 && min < TLS1_2_VERSION &&
        (k->ciphers == NULL || strstr(k->ciphers, "@SECLEVEL") == NULL))
        level = 0;
    if (level > 5) {
        snprintf(num, sizeof num, "%d", level);
        return tls_fail_knob(w, prefix, "security_level", num, "not 0..5");
    }
    if (level >= 0)
        SSL_CTX_set_security_level(ctx, level);

    if (!k->session_tickets)
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    else if (server)
        /* TLS 1.3: one ticket per handshake, not OpenSSL's two, and not
         * sent by the handshake itself: conn.c asks for it just before
         * the first record written after the handshake, so that it leaves
         * in the same write (num_tickets 0 with tickets on says so).  A
         * ticket costs a session encoding, its encryption and MAC and
         * random draws; a client resumes with one, and gets a fresh one
         * at every resumption. */
        SSL_CTX_set_num_tickets(ctx, 0);
    return 0;
}

/* ---- certificate names and groups ---- */

static int tls_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* tls_add_name - append a lower case copy of name[0..len). */
static int tls_add_name(char ***names, size_t *n, const char *name,
                        size_t len)
{
    char **grown = realloc(*names, (*n + 1) * sizeof *grown);
    char *copy;
    size_t i;

    if (grown == NULL)
        return -1;
    *names = grown;
    copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    for (i = 0; i < len; i++)
        copy[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32
                                                            : name[i]);
    copy[len] = '\0';
    grown[(*n)++] = copy;
    return 0;
}

static void tls_free_names(char **names, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/*
 * tls_leaf_names - the names a leaf certificate is for: its DNS SANs, or
 * its subject CN when it has none.  Lower case, sorted, duplicates
 * removed.  Returns 0 (possibly with no names) or -1 when out of memory.
 */
static int tls_leaf_names(X509 *leaf, char ***out, size_t *nout)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name,
                                           NULL, NULL);
    char **names = NULL;
    size_t n = 0, i, j;
    int k;

    for (k = 0; sans != NULL && k < sk_GENERAL_NAME_num(sans); k++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, k);

        if (g->type != GEN_DNS)
            continue;
        if (tls_add_name(&names, &n,
                         (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                         (size_t)ASN1_STRING_length(g->d.dNSName)) != 0)
            goto fail;
    }
    if (n == 0) {
        X509_NAME *subj = X509_get_subject_name(leaf);
        int pos = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);

        if (pos >= 0) {
            ASN1_STRING *cn =
                X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, pos));

            if (tls_add_name(&names, &n,
                             (const char *)ASN1_STRING_get0_data(cn),
                             (size_t)ASN1_STRING_length(cn)) != 0)
                goto fail;
        }
    }
    GENERAL_NAMES_free(sans);
    if (n > 1)
        qsort(names, n, sizeof *names, tls_cmp_str);
    for (i = j = 0; i < n; i++) {
        if (j > 0 && strcmp(names[j - 1], names[i]) == 0)
            free(names[i]);
        else
            names[j++] = names[i];
    }
    *out = names;
    *nout = j;
    return 0;
fail:
    GENERAL_NAMES_free(sans);
    tls_free_names(names, n);
    return -1;
}

/* tls_same_names - whether two sorted name lists are equal. */
static bool tls_same_names(char **a, size_t na, char **b, size_t nb)
{
    size_t i;

    if (na != nb)
        return false;
    for (i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

/*
 * tls_name_match - whether the certificate name pattern (lower case) covers
 * host: equal ignoring case, or "*.example.com" matching exactly one
 * label in front of example.com.
 */
static bool tls_name_match(const char *pattern, const char *host)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(host, '.');

        return dot != NULL && dot != host && strcasecmp(dot + 1,
                                                        pattern + 2) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

/*
 * tls_pick_group - the group whose names cover host: an exact name wins
 * over a wildcard, earlier groups over later ones.  SIZE_MAX: none.
 */
static size_t tls_pick_group(const struct tls_name_group *groups,
                             size_t ngroups, const char *host)
{
    int pass;
    size_t g, i;

    for (pass = 0; pass < 2; pass++)
        for (g = 0; g < ngroups; g++)
            for (i = 0; i < groups[g].nnames; i++) {
                const char *p = groups[g].names[i];
                bool wild = p[0] == '*' && p[1] == '.';

                if (wild == (pass == 1) && tls_name_match(p, host))
                    return g;
            }
    return SIZE_MAX;
}

/*
 * tls_servername_cb - RFC 6066 section 3: move the handshake to the
 * context of the certificates for the name the client asked for.  No SNI
 * or no match: the first context stays, and the name is not acknowledged.
 */
static int tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
    const struct tls_server_set *set = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char host[256];
    size_t len, g;

    if (name == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    len = strlen(name);
    if (len == 0 || len >= sizeof host)
        return SSL_TLSEXT_ERR_NOACK;
    memcpy(host, name, len + 1);
    if (host[len - 1] == '.')          /* "mx.example.com." */
        host[len - 1] = '\0';
    g = tls_pick_group(set->groups, set->ngroups, host);
    if (g == SIZE_MAX)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_get_SSL_CTX(ssl) != set->ctx[g] &&
        SSL_set_SSL_CTX(ssl, set->ctx[g]) != set->ctx[g]) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* tls_read_leaf - the first certificate in a PEM file, or NULL. */
static X509 *tls_read_leaf(const char *file)
{
    BIO *b = BIO_new_file(file, "r");
    X509 *x;

    if (b == NULL)
        return NULL;
    x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    return x;
}

static void tls_free_groups(struct tls_name_group *groups, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        tls_free_names(groups[i].names, groups[i].nnames);
        free(groups[i].pairs);
    }
    free(groups);
}

/*
 * tls_group_pairs - read the leaf of every pair and group the pairs by
 * names, in the order of first appearance (group 0 holds pair 0).  Two
 * pairs of one key type for the same names are an error: OpenSSL would
 * keep only the second.  Returns 0 or -1 with the message in w.
 */
static int tls_group_pairs(const struct cert_pair *pairs, size_t npairs,
                           const struct tls_where *w,
                           struct tls_name_group **out, size_t *nout)
{
    struct tls_name_group *groups = NULL;
    int *types = calloc(npairs, sizeof *types);
    size_t ngroups = 0, i, g, j;
    char msg[1024];

    if (types == NULL)
        return tls_fail_msg(w, NULL, "out of memory");
    for (i = 0; i < npairs; i++) {
        X509 *leaf = tls_read_leaf(pairs[i].cert);
        char **names;
        size_t nnames;
        size_t *grown;

        if (leaf == NULL) {
            tls_fail(w, "cert", "cannot load certificate", pairs[i].cert);
            goto fail;
        }
        types[i] = EVP_PKEY_base_id(X509_get0_pubkey(leaf));
        if (tls_leaf_names(leaf, &names, &nnames) != 0) {
            X509_free(leaf);
            tls_fail_msg(w, NULL, "out of memory");
            goto fail;
        }
        X509_free(leaf);
        for (g = 0; g < ngroups; g++)
            if (tls_same_names(groups[g].names, groups[g].nnames, names,
                               nnames))
                break;
        if (g == ngroups) {
            struct tls_name_group *more =
                realloc(groups, (ngroups + 1) * sizeof *more);

            if (more == NULL) {
                tls_free_names(names, nnames);
                tls_fail_msg(w, NULL, "out of memory");
                goto fail;
            }
            groups = more;
            memset(&groups[g], 0, sizeof groups[g]);
            groups[g].names = names;
            groups[g].nnames = nnames;
            ngroups++;
        } else {
            tls_free_names(names, nnames);
        }
        for (j = 0; j < groups[g].npairs; j++) {
            if (types[groups[g].pairs[j]] == types[i]) {
                snprintf(msg, sizeof msg,
                         "certificates %s and %s have the same names and "
                         "the same key type: give one of them",
                         pairs[groups[g].pairs[j]].cert, pairs[i].cert);
                tls_fail_msg(w, "cert", msg);
                goto fail;
            }
        }
        grown = realloc(groups[g].pairs,
                        (groups[g].npairs + 1) * sizeof *grown);
        if (grown == NULL) {
            tls_fail_msg(w, NULL, "out of memory");
            goto fail;
        }
        groups[g].pairs = grown;
        groups[g].pairs[groups[g].npairs++] = i;
    }
    free(types);
    *out = groups;
    *nout = ngroups;
    return 0;
fail:
    free(types);
    tls_free_groups(groups, ngroups);
    return -1;
}

/* ---- client leg contexts ---- */

/* tls_verify_ask - client_cert = ask: go on whatever the verdict; the
 * result stays in SSL_get_verify_result() for the log. */
static int tls_verify_ask(int preverify_ok, X509_STORE_CTX *x)
{
    (void)preverify_ok;
    (void)x;
    return 1;
}

/*
 * tls_client_verify - client certificates on a client leg context:
 * none: never asked for; ask: asked for, any chain accepted, result
 * recorded; require: a certificate chaining to client_ca_file or the
 * handshake fails.  The CA names are sent in the CertificateRequest.
 */
static int tls_client_verify(SSL_CTX *ctx, const struct service *svc,
                             const struct tls_where *w)
{
    STACK_OF(X509_NAME) *cas;

    if (svc->client_cert == CLIENT_CERT_NONE)
        return 0;
    if (svc->client_ca_file == NULL)
        return tls_fail_msg(w, "client_cert",
                            "client_cert = ask or require needs "
                               "client_ca_file");
    if (SSL_CTX_load_verify_locations(ctx, svc->client_ca_file, NULL) != 1)
        return tls_fail(w, "client_ca_file", "cannot load client_ca_file",
                        svc->client_ca_file);
    cas = SSL_load_client_CA_file(svc->client_ca_file);
    if (cas == NULL)
        return tls_fail(w, "client_ca_file",
                        "no CA certificate in client_ca_file",
                        svc->client_ca_file);
    SSL_CTX_set_client_CA_list(ctx, cas);   /* takes cas */
    if (svc->client_cert == CLIENT_CERT_REQUIRE)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
                                SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    else
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_ask);
    return 0;
}

/*
 * tls_group_ctx - one client leg context: knobs k, client certificate
 * settings, and every pair of group g.  NULL on failure (message in w).
 */
static SSL_CTX *tls_group_ctx(const struct service *svc,
                              const struct cert_pair *pairs,
                              const struct tls_name_group *g,
                              const struct tls_knobs *k,
                              const struct tls_where *w)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    size_t i;

    if (ctx == NULL) {
        tls_fail(w, NULL, "cannot create TLS context", NULL);
        return NULL;
    }
    if (tls_apply_knobs(ctx, k, true, "client_tls_", w) != 0)
        goto fail;
    /* resumption: by tickets (unless turned off) and a session cache */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)svc->name,
                                   (unsigned)strnlen(svc->name,
                                                     SSL_MAX_SID_CTX_LENGTH));
    if (tls_client_verify(ctx, svc, w) != 0)
        goto fail;
    for (i = 0; i < g->npairs; i++) {
        const struct cert_pair *p = &pairs[g->pairs[i]];

        if (SSL_CTX_use_certificate_chain_file(ctx, p->cert) != 1) {
            tls_fail(w, "cert", "cannot load certificate", p->cert);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, p->key, SSL_FILETYPE_PEM) != 1) {
            tls_fail(w, "key", "cannot load key", p->key);
            goto fail;
        }
        /* checks the pair just loaded (the key selected its slot) */
        if (SSL_CTX_check_private_key(ctx) != 1) {
            tls_fail(w, "key", "key does not match certificate", p->key);
            goto fail;
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void tls_free_set(struct tls_server_set *set)
{
    size_t i;

    for (i = 0; i < set->nctx; i++)
        SSL_CTX_free(set->ctx[i]);
    free(set->ctx);
    set->ctx = NULL;
    set->nctx = 0;
}

/*
 * tls_build_set - one context per name group, all with knobs k; with more
 * than one group, each gets the servername callback (arg: set, which must
 * not move afterwards).  Returns 0 or -1 (message in w, set empty).
 */
static int tls_build_set(struct tls_server_set *set, const struct service *svc,
                         const struct cert_pair *pairs,
                         const struct tls_name_group *groups, size_t ngroups,
                         const struct tls_knobs *k, const struct tls_where *w)
{
    size_t g;

    set->ctx = calloc(ngroups, sizeof *set->ctx);
    if (set->ctx == NULL)
        return tls_fail_msg(w, NULL, "out of memory");
    set->groups = groups;
    set->ngroups = ngroups;
    for (g = 0; g < ngroups; g++) {
        set->ctx[g] = tls_group_ctx(svc, pairs, &groups[g], k, w);
        if (set->ctx[g] == NULL) {
            set->nctx = g;
            tls_free_set(set);
            return -1;
        }
        set->nctx = g + 1;
        if (ngroups > 1) {
            SSL_CTX_set_tlsext_servername_callback(set->ctx[g],
                                                   tls_servername_cb);
            SSL_CTX_set_tlsext_servername_arg(set->ctx[g], set);
        }
    }
    return 0;
}

/* tls_profile_changes_tls - whether profile p overrides a TLS knob. */
static bool tls_profile_changes_tls(const struct profile *p)
{
    return p->has_min_protocol || p->ciphers != NULL ||
           p->ciphersuites != NULL || p->has_security_level;
}

/* tls_server_needed - whether svc or one of its profiles offers TLS. */
static bool tls_server_needed(const struct service *svc)
{
    size_t i;

    if (svc->client_tls != CLIENT_TLS_NONE || svc->client_implicit_tls)
        return true;
    for (i = 0; i < svc->nprofiles; i++)
        if (svc->profiles[i]->has_client_tls &&
            svc->profiles[i]->client_tls != CLIENT_TLS_NONE)
            return true;
    return false;
}

/*
 * tls_server_sets - the client leg: group the pairs, build the service's
 * set and one per TLS-changing profile into ts.  Returns 0 or -1 (message
 * in err; what was built stays in ts for tls_service_free).
 */
static int tls_server_sets(const struct config *cfg, const struct service *svc,
                           struct tls_service *ts, char *err, size_t err_len)
{
    struct tls_where w = {cfg->path, svc, NULL, svc->name, err, err_len};
    struct cert_pair single;
    const struct cert_pair *pairs = svc->certs;
    size_t npairs = svc->ncerts, i;
    char section[300];

    if (npairs == 0 && svc->cert != NULL && svc->key != NULL) {
        single.cert = svc->cert;
        single.key = svc->key;
        pairs = &single;
        npairs = 1;
    }
    if (npairs == 0)
        return tls_fail_msg(&w, NULL, "TLS toward clients needs cert and key");
    if (tls_group_pairs(pairs, npairs, &w, &ts->groups, &ts->ngroups) != 0)
        return -1;

    ts->sets = calloc(1 + svc->nprofiles, sizeof *ts->sets);
    if (ts->sets == NULL)
        return tls_fail_msg(&w, NULL, "out of memory");
    ts->nsets = 1 + svc->nprofiles;
    if (tls_build_set(&ts->sets[0], svc, pairs, ts->groups, ts->ngroups,
                      &svc->client_tls_knobs, &w) != 0)
        return -1;
    ts->server = ts->sets[0].ctx[0];

    for (i = 0; i < svc->nprofiles; i++) {
        const struct profile *p = svc->profiles[i];
        struct tls_knobs k = svc->client_tls_knobs;
        struct tls_where pw = w;

        if (!tls_profile_changes_tls(p))
            continue;
        if (p->has_min_protocol)
            k.min_protocol = p->min_protocol;
        if (p->ciphers != NULL)
            k.ciphers = p->ciphers;
        if (p->ciphersuites != NULL)
            k.ciphersuites = p->ciphersuites;
        if (p->has_security_level)
            k.security_level = p->security_level;
        snprintf(section, sizeof section, "profile %s", p->name);
        pw.prof = p;
        pw.section = section;
        if (tls_build_set(&ts->sets[1 + i], svc, pairs, ts->groups,
                          ts->ngroups, &k, &pw) != 0)
            return -1;
    }
    return 0;
}

/*
 * tls_backend_ctx - the backend leg's context.  Under "verify" the peer
 * must chain to the CA bundle; under "may"/"encrypt" the chain is still
 * checked against the same store, but only so that the result can be
 * logged.
 */
/* tls_service_nth_cert - the n-th certificate the client leg serves, or
 * NULL after the last one (see tls_service_cert). */
static X509 *tls_service_nth_cert(const struct tls_service *ts, size_t n)
{
    const struct tls_server_set *set = ts->nsets > 0 ? &ts->sets[0] : NULL;

    for (size_t g = 0; set != NULL && g < set->nctx; g++) {
        int r = SSL_CTX_set_current_cert(set->ctx[g], SSL_CERT_SET_FIRST);

        for (; r == 1; r = SSL_CTX_set_current_cert(set->ctx[g],
                                                     SSL_CERT_SET_NEXT)) {
            X509 *x = SSL_CTX_get0_certificate(set->ctx[g]);

            if (x != NULL && n-- == 0)
                return x;
        }
    }
    return NULL;
}

/* tls_service_cert - see tls.h. */
bool tls_service_cert(const struct tls_service *ts, size_t n, char *subject,
                      size_t subject_len, char *not_after,
                      size_t not_after_len, unsigned char sha256[32])
{
    X509 *x = tls_service_nth_cert(ts, n);
    struct tm tm;

    if (x == NULL)
        return false;
    X509_NAME_oneline(X509_get_subject_name(x), subject, (int)subject_len);
    memset(&tm, 0, sizeof tm);
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1 ||
        strftime(not_after, not_after_len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(not_after, not_after_len, "?");
    if (sha256 != NULL) {
        unsigned len = 32;

        if (X509_digest(x, EVP_sha256(), sha256, &len) != 1)
            memset(sha256, 0, 32);
    }
    return true;
}

/* tls_service_cert_expiry - see tls.h. */
bool tls_service_cert_expiry(const struct tls_service *ts, size_t n,
                             char *subject, size_t subject_len,
                             long long *not_after)
{
    X509 *x = tls_service_nth_cert(ts, n);
    struct tm tm;

    if (x == NULL)
        return false;
    X509_NAME_oneline(X509_get_subject_name(x), subject, (int)subject_len);
    memset(&tm, 0, sizeof tm);
    *not_after = ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1
                     ? (long long)timegm(&tm) : -1;
    return true;
}

/* tls_service_keep_tickets - see tls.h.  The keys are OpenSSL's 80
 * bytes: name, HMAC secret, AES key. */
void tls_service_keep_tickets(struct tls_service *to,
                              const struct tls_service *from)
{
    unsigned char keys[80];

    for (size_t k = 0; k < to->nsets && k < from->nsets; k++) {
        const struct tls_server_set *a = &from->sets[k];
        struct tls_server_set *b = &to->sets[k];

        for (size_t g = 0; g < b->nctx && g < a->nctx; g++)
            if (SSL_CTX_get_tlsext_ticket_keys(a->ctx[g], keys,
                                               sizeof keys) == 1)
                (void)SSL_CTX_set_tlsext_ticket_keys(b->ctx[g], keys,
                                                     sizeof keys);
    }
    OPENSSL_cleanse(keys, sizeof keys);
}

/*
 * tls_backend_new_session - OpenSSL has a session (a TLS 1.3 ticket, or a
 * TLS 1.2 session) for a backend connection: it replaces the one kept in
 * the slot tls_client_ssl's caller put in the SSL's app data.  Runs on
 * the worker that owns the connection; 1 = we keep the reference.
 */
static int tls_backend_new_session(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_app_data(ssl);

    if (slot == NULL || !SSL_SESSION_is_resumable(sess))
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1;
}

static SSL_CTX *tls_backend_ctx(const struct config *cfg,
                                const struct service *svc, char *err,
                                size_t err_len)
{
    struct tls_where w = {cfg->path, svc, NULL, svc->name, err, err_len};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int ok;

    if (ctx == NULL) {
        tls_fail(&w, NULL, "cannot create TLS context", NULL);
        return NULL;
    }
    if (tls_apply_knobs(ctx, &svc->backend_tls_knobs, false, "backend_tls_",
                        &w) != 0)
        goto fail;
    if (svc->backend_ca_file != NULL)
        ok = SSL_CTX_load_verify_locations(ctx, svc->backend_ca_file, NULL);
    else
        ok = SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        tls_fail(&w, "backend_ca_file", "cannot load CA file",
                 svc->backend_ca_file);
        goto fail;
    }
    /* resumption: each worker keeps the newest session per service
     * (tls_backend_new_session); OpenSSL's own cache is not used */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, tls_backend_new_session);
    if ((svc->backend_tls == BACKEND_TLS_DANE ||
         svc->backend_tls == BACKEND_TLS_DANE_ONLY ||
         svc->backend_tls == BACKEND_TLS_STS) &&
        SSL_CTX_dane_enable(ctx) <= 0) {
        tls_fail(&w, "backend_tls", "cannot enable DANE", NULL);
        goto fail;
    }
    /* under "enforce = no" the chain is still checked, but only so that
     * backend.c can log would_refuse and go on with the session */
    SSL_CTX_set_verify(ctx, svc->backend_tls == BACKEND_TLS_VERIFY &&
                                    svc->enforce
                                ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* tls_service_init - see tls.h. */
int tls_service_init(const struct config *cfg, const struct service *svc,
                     struct tls_service *out, char *err, size_t err_len)
{
    struct tls_service ts = {0};

    ERR_clear_error();
    if (tls_server_needed(svc) &&
        tls_server_sets(cfg, svc, &ts, err, err_len) != 0)
        goto fail;
    if (svc->backend_tls != BACKEND_TLS_NONE || svc->backend_implicit_tls) {
        ts.client = tls_backend_ctx(cfg, svc, err, err_len);
        if (ts.client == NULL)
            goto fail;
    }
    /* the sets live in heap memory: the servername callbacks' pointers
     * stay valid when ts is copied */
    *out = ts;
    return 0;
fail:
    tls_service_free(&ts);
    return -1;
}

/* tls_service_free - see tls.h. */
void tls_service_free(struct tls_service *ts)
{
    size_t i;

    for (i = 0; i < ts->nsets; i++)
        tls_free_set(&ts->sets[i]);
    free(ts->sets);
    tls_free_groups(ts->groups, ts->ngroups);
    SSL_CTX_free(ts->client);
    memset(ts, 0, sizeof *ts);
}

/* tls_server_ctx - see tls.h. */
SSL_CTX *tls_server_ctx(const struct tls_service *ts, size_t profile)
{
    if (profile != SIZE_MAX && profile < ts->nsets - 1 &&
        ts->sets[1 + profile].nctx > 0)
        return ts->sets[1 + profile].ctx[0];
    return ts->server;
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

/* tls_failure_type - see tls.h. */
const char *tls_failure_type(long vr)
{
    switch (vr) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
        return "certificate-host-mismatch";
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return "certificate-expired";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
        return "certificate-not-trusted";
    default:
        return "validation-failure";
    }
}

/* tls_tlsa_usable - see tls.h. */
bool tls_tlsa_usable(const struct tlsa_rr *rr)
{
    if (rr->usage != 2 && rr->usage != 3)
        return false;
    if (rr->selector > 1)
        return false;
    switch (rr->mtype) {
    case 0:
        return rr->len > 0;
    case 1:
        return rr->len == 32;
    case 2:
        return rr->len == 64;
    default:
        return false;
    }
}

/* tls_client_ssl_dane - see tls.h. */
SSL *tls_client_ssl_dane(SSL_CTX *ctx, const char *host, const char *domain,
                         const struct tlsa_rr *rr, size_t n)
{
    SSL *ssl = SSL_new(ctx);
    int added = 0;

    if (ssl == NULL)
        return NULL;
    /* the base name is also the SNI and the first reference name */
    if (SSL_dane_enable(ssl, host) <= 0)
        goto fail;
    /* DANE-EE: the key is the identity, whatever names it carries */
    (void)SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    if (domain != NULL && strcasecmp(domain, host) != 0 &&
        SSL_add1_host(ssl, domain) != 1)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (!tls_tlsa_usable(&rr[i]))
            continue;
        if (SSL_dane_tlsa_add(ssl, rr[i].usage, rr[i].selector, rr[i].mtype,
                              rr[i].data, rr[i].len) > 0)
            added++;
    }
    if (added == 0)
        goto fail;
    return ssl;
fail:
    SSL_free(ssl);
    return NULL;
}

/* tls_dane_describe - see tls.h. */
void tls_dane_describe(SSL *ssl, char *buf, size_t len)
{
    uint8_t usage, selector, mtype;
    long vr = SSL_get_verify_result(ssl);

    if (vr == X509_V_OK && SSL_get0_dane_authority(ssl, NULL, NULL) >= 0 &&
        SSL_get0_dane_tlsa(ssl, &usage, &selector, &mtype, NULL, NULL) >= 0)
        snprintf(buf, len, "verified usage=%u selector=%u mtype=%u", usage,
                 selector, mtype);
    else
        snprintf(buf, len, "failed error=\"%s\"",
                 vr == X509_V_OK ? "no TLSA record matched"
                                 : X509_verify_cert_error_string(vr));
}

/* tls_pin_match - see tls.h. */
bool tls_pin_match(SSL *ssl, const struct tls_pin *pins, size_t n,
                   char *which, size_t which_len)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    unsigned char dcert[EVP_MAX_MD_SIZE], dkey[32], *der = NULL;
    unsigned int lcert = 0;
    int lder;

    if (cert == NULL || X509_digest(cert, EVP_sha256(), dcert, &lcert) != 1 ||
        lcert != 32)
        return false;
    lder = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (lder <= 0)
        return false;
    SHA256(der, (size_t)lder, dkey);
    OPENSSL_free(der);
    for (size_t i = 0; i < n; i++) {
        const unsigned char *d = pins[i].pubkey ? dkey : dcert;

        if (CRYPTO_memcmp(d, pins[i].sha256, 32) == 0) {
            snprintf(which, which_len, "%s:%02x%02x%02x%02x...",
                     pins[i].pubkey ? "pubkey-sha256" : "sha256", d[0], d[1],
                     d[2], d[3]);
            return true;
        }
    }
    return false;
}

/* tls_describe - see tls.h. */
void tls_describe(const SSL *ssl, char *buf, size_t len)
{
    if (ssl == NULL) {
        snprintf(buf, len, "plaintext");
        return;
    }
    snprintf(buf, len, "%s/%s", SSL_get_version(ssl),
             SSL_get_cipher_name(ssl));
}

/* tls_peer_info - see tls.h. */
void tls_peer_info(SSL *ssl, char *subject, size_t subject_len, char *verify,
                   size_t verify_len)
{
    X509 *peer = NULL;
    BIO *b;
    long vr;
    int n;

    if (subject_len > 0)
        subject[0] = '\0';
    if (ssl != NULL)
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        peer = SSL_get1_peer_certificate(ssl);
#else
        peer = SSL_get_peer_certificate(ssl);
#endif
    if (peer == NULL) {
        snprintf(verify, verify_len, "none");
        return;
    }
    b = BIO_new(BIO_s_mem());
    if (b != NULL && subject_len > 1 &&
        X509_NAME_print_ex(b, X509_get_subject_name(peer), 0,
                           XN_FLAG_RFC2253) >= 0) {
        n = BIO_read(b, subject, (int)(subject_len - 1));
        subject[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    vr = SSL_get_verify_result(ssl);
    snprintf(verify, verify_len, "%s",
             vr == X509_V_OK ? "ok" : X509_verify_cert_error_string(vr));
    X509_free(peer);
}
