/*
 * test_tls.c - tls_service_init(): knobs, several certificates, SNI,
 * client certificates, per-profile contexts, errors.
 *
 * Certificates are made at test time with the openssl CLI in a temp dir
 * (group setup); every check is a real handshake between two SSL objects
 * over a BIO pair, in memory, no sockets.  Services are built in C, not
 * parsed, so these tests depend only on the struct service contract.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "tls.h"

static char dir[256];      /* the temp dir with every certificate */

/*
 * The certificates (all but the client's signed by ca):
 *   a_rsa, a_ec    RSA 2048 and ECDSA P-256 for mail.test + smtp.test
 *                  (SANs in different order: still the same names)
 *   b_ec           ECDSA for other.test and *.wild.test
 *   a_ec2          a second ECDSA pair for a's names (an error)
 *   client         client certificate, CN=client one, O=Test Org
 *   self           a self-signed client certificate
 */
static const char gen_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "EC='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
    "openssl req -x509 $EC -keyout ca.key -out ca.pem -days 2 "
    "  -subj '/CN=tls test CA' "
    "  -addext basicConstraints=critical,CA:TRUE "
    "  -addext keyUsage=critical,keyCertSign,cRLSign\n"
    "leaf() { # name keyopts san eku\n"
    "  printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,"
    "digitalSignature,keyEncipherment\\nextendedKeyUsage=%s\\n%s' "
    "    \"$4\" \"$3\" > $1.ext\n"
    "  openssl req -new $2 -keyout $1.key -out $1.csr -subj \"/O=Test Org/CN=$5\"\n"
    "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key "
    "    -CAcreateserial -days 2 -extfile $1.ext -out $1.pem\n"
    "}\n"
    "leaf a_rsa '-newkey rsa:2048 -nodes' "
    "  'subjectAltName=DNS:mail.test,DNS:smtp.test' serverAuth mail.test\n"
    "leaf a_ec \"$EC\" 'subjectAltName=DNS:SMTP.test,DNS:mail.test' "
    "  serverAuth mail.test\n"
    "leaf a_ec2 \"$EC\" 'subjectAltName=DNS:mail.test,DNS:smtp.test' "
    "  serverAuth mail.test\n"
    "leaf b_ec \"$EC\" 'subjectAltName=DNS:other.test,DNS:*.wild.test' "
    "  serverAuth other.test\n"
    "leaf client \"$EC\" '' clientAuth 'client one'\n"
    "openssl req -x509 $EC -keyout self.key -out self.pem -days 2 "
    "  -subj '/CN=self signed client'\n"
    ">bad.ini\n";

static int gen_certs(void **state)
{
    char cmd[1024];
    char script[300];
    FILE *f;

    (void)state;
    snprintf(dir, sizeof dir, "%s/stp-tls-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(script, sizeof script, "%s/gen.sh", dir);
    f = fopen(script, "w");
    if (f == NULL)
        return -1;
    fputs(gen_script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "sh %s %s >%s/gen.log 2>&1", script, dir, dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "certificate generation failed, see %s/gen.log\n",
                dir);
        return -1;
    }
    return 0;
}

static int rm_certs(void **state)
{
    char cmd[512];

    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* path - dir/name in one of a few rotating static buffers. */
static char *path(const char *name)
{
    static char buf[32][300];
    static unsigned next;
    char *p = buf[next++ % 32];

    if (snprintf(p, 300, "%s/%s", dir, name) >= 300)
        fail_msg("path too long");
    return p;
}

/* ---- building services ---- */

struct fixture {
    struct config cfg;
    struct service svc;
    struct cert_pair pairs[4];
    struct profile prof[3];
    const struct profile *profs[3];
    struct tls_service ts;
};

/* default_knobs - what the config loader gives for unset keys. */
static struct tls_knobs default_knobs(void)
{
    struct tls_knobs k = {0};

    k.min_protocol = TLS1_2_VERSION;
    k.security_level = -1;
    k.session_tickets = true;
    return k;
}

/*
 * fixture_init - a service "smtp" (header on line 7) with client_tls =
 * may, no backend TLS, and the given certificate pairs (names like
 * "a_rsa": a_rsa.pem + a_rsa.key), NULL-terminated.
 */
static void fixture_init(struct fixture *fx, ...)
{
    va_list ap;
    const char *name;

    memset(fx, 0, sizeof *fx);
    fx->cfg.path = "test.ini";
    fx->cfg.services = &fx->svc;
    fx->cfg.nservices = 1;
    fx->svc.name = "smtp";
    fx->svc.line = 7;
    fx->svc.client_tls = CLIENT_TLS_MAY;
    fx->svc.backend_tls = BACKEND_TLS_NONE;
    fx->svc.client_tls_knobs = default_knobs();
    fx->svc.backend_tls_knobs = default_knobs();
    fx->svc.certs = fx->pairs;
    va_start(ap, fx);
    while ((name = va_arg(ap, const char *)) != NULL) {
        char c[300], k[300];

        snprintf(c, sizeof c, "%s.pem", name);
        snprintf(k, sizeof k, "%s.key", name);
        fx->pairs[fx->svc.ncerts].cert = strdup(path(c));
        fx->pairs[fx->svc.ncerts].key = strdup(path(k));
        fx->svc.ncerts++;
    }
    va_end(ap);
    fx->svc.cert = fx->pairs[0].cert;
    fx->svc.key = fx->pairs[0].key;
    fx->svc.profiles = fx->profs;
    for (size_t i = 0; i < 3; i++) {
        fx->profs[i] = &fx->prof[i];
        fx->prof[i].line = 20 + (int)i;
    }
    fx->prof[0].name = "printers";
    fx->prof[1].name = "ancient";
    fx->prof[2].name = "auth-only";
}

/* fixture_build - tls_service_init(), which must succeed. */
static void fixture_build(struct fixture *fx)
{
    char err[1024] = "";
    int rc = tls_service_init(&fx->cfg, &fx->svc, &fx->ts, err, sizeof err);

    if (rc != 0)
        fprintf(stderr, "tls_service_init: %s", err);
    assert_int_equal(rc, 0);
    assert_non_null(fx->ts.server);
}

/* fixture_fail - tls_service_init() must fail; returns the message. */
static const char *fixture_fail(struct fixture *fx)
{
    static char err[1024];
    struct tls_service ts;

    memset(&ts, 0x5a, sizeof ts);   /* untouched on failure */
    err[0] = '\0';
    assert_int_equal(tls_service_init(&fx->cfg, &fx->svc, &ts, err,
                                      sizeof err), -1);
    assert_non_null(strchr(err, '\n'));
    return err;
}

static void fixture_free(struct fixture *fx)
{
    tls_service_free(&fx->ts);
    tls_service_free(&fx->ts);   /* idempotent on the zeroed struct */
    for (size_t i = 0; i < fx->svc.ncerts; i++) {
        free(fx->pairs[i].cert);
        free(fx->pairs[i].key);
    }
}

/* ---- in-memory handshakes ---- */

/*
 * client_ctx - a client context: protocol range [min, max] (0: open),
 * sigalgs list or NULL, and a client certificate pair name or NULL.
 */
static SSL_CTX *client_ctx(int min, int max, const char *sigalgs,
                           const char *cert)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());

    assert_non_null(c);
    if (min)
        assert_int_equal(SSL_CTX_set_min_proto_version(c, min), 1);
    if (max)
        assert_int_equal(SSL_CTX_set_max_proto_version(c, max), 1);
    if (min && min < TLS1_2_VERSION) {
        /* an old client: SHA-1 handshakes and CBC suites */
        SSL_CTX_set_security_level(c, 0);
        assert_int_equal(SSL_CTX_set_cipher_list(c, "DEFAULT:@SECLEVEL=0"),
                         1);
    }
    if (sigalgs)
        assert_int_equal(SSL_CTX_set1_sigalgs_list(c, sigalgs), 1);
    if (cert) {
        char p[64];

        snprintf(p, sizeof p, "%s.pem", cert);
        assert_int_equal(SSL_CTX_use_certificate_chain_file(c, path(p)), 1);
        snprintf(p, sizeof p, "%s.key", cert);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(c, path(p),
                                                     SSL_FILETYPE_PEM), 1);
    }
    return c;
}

struct hs {
    SSL *server;
    SSL *client;
    bool ok;          /* both sides completed the handshake */
};

/* step - one SSL_do_handshake; 1 done, 0 wants I/O, -1 failed. */
static int step(SSL *ssl)
{
    int r = SSL_do_handshake(ssl);
    int e;

    if (r == 1)
        return 1;
    e = SSL_get_error(ssl, r);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/*
 * handshake - run a server SSL from sctx against a client SSL from cctx
 * (SNI sni unless NULL) over a BIO pair until both finish or one fails.
 */
static struct hs handshake(SSL_CTX *sctx, SSL_CTX *cctx, const char *sni)
{
    struct hs h = {SSL_new(sctx), SSL_new(cctx), false};
    BIO *sb, *cb;
    int s = 0, c = 0;

    assert_non_null(h.server);
    assert_non_null(h.client);
    assert_int_equal(BIO_new_bio_pair(&sb, 0, &cb, 0), 1);
    SSL_set_bio(h.server, sb, sb);
    SSL_set_bio(h.client, cb, cb);
    SSL_set_accept_state(h.server);
    SSL_set_connect_state(h.client);
    if (sni)
        assert_int_equal(SSL_set_tlsext_host_name(h.client, sni), 1);
    for (int i = 0; i < 50 && (s == 0 || c == 0) && s >= 0 && c >= 0; i++) {
        if (c == 0)
            c = step(h.client);
        if (s == 0)
            s = step(h.server);
    }
    /* TLS 1.3: the client may finish before the server rejects it */
    h.ok = s == 1 && c == 1;
    ERR_clear_error();
    return h;
}

static void hs_free(struct hs *h)
{
    SSL_free(h->server);
    SSL_free(h->client);
}

/* peer_key_type - the key type of the certificate the client received. */
static int peer_key_type(const struct hs *h)
{
    X509 *x = SSL_get1_peer_certificate(h->client);
    int t;

    assert_non_null(x);
    t = EVP_PKEY_base_id(X509_get0_pubkey(x));
    X509_free(x);
    return t;
}

/* peer_has_name - whether the server certificate covers name. */
static bool peer_has_name(const struct hs *h, const char *name)
{
    X509 *x = SSL_get1_peer_certificate(h->client);
    bool yes;

    assert_non_null(x);
    yes = X509_check_host(x, name, 0, 0, NULL) == 1;
    X509_free(x);
    return yes;
}

/* expect_key - handshake with sigalgs (and protocol max) and check the
 * key type of the certificate the server chose. */
static void expect_key(SSL_CTX *sctx, int max, const char *sigalgs, int type)
{
    SSL_CTX *c = client_ctx(0, max, sigalgs, NULL);
    struct hs h = handshake(sctx, c, "mail.test");

    assert_true(h.ok);
    assert_int_equal(peer_key_type(&h), type);
    hs_free(&h);
    SSL_CTX_free(c);
}

/* assert_prefix - the error message starts with want. */
#define assert_prefix(got, want) do {                                       \
        if (strncmp((got), (want), strlen(want)) != 0)                      \
            fail_msg("want prefix \"%s\", got \"%s\"", (want), (got));  \
    } while (0)

/* ---- tests ---- */

#define ECDSA_ONLY "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512"
#define RSA_ONLY "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:RSA+SHA256:RSA+SHA384"

/* RSA + ECDSA for the same names: one context, the client's sigalgs pick */
static void test_key_type(void **state)
{
    struct fixture fx;

    (void)state;
    fixture_init(&fx, "a_rsa", "a_ec", NULL);
    fixture_build(&fx);
    /* one group: no second context, no SNI needed */
    assert_int_equal(fx.ts.ngroups, 1);
    expect_key(fx.ts.server, 0, ECDSA_ONLY, EVP_PKEY_EC);
    expect_key(fx.ts.server, 0, RSA_ONLY, EVP_PKEY_RSA);
    expect_key(fx.ts.server, TLS1_2_VERSION, ECDSA_ONLY, EVP_PKEY_EC);
    expect_key(fx.ts.server, TLS1_2_VERSION, RSA_ONLY, EVP_PKEY_RSA);
    fixture_free(&fx);
}

/* SNI picks the context of the names; unknown or none: the first */
static void test_sni(void **state)
{
    static const struct {
        const char *sni;
        const char *want;      /* a name the chosen certificate covers */
    } cases[] = {
        {"other.test", "other.test"},
        {"OTHER.Test", "other.test"},
        {"other.test.", "other.test"},
        {"mx.wild.test", "other.test"},       /* *.wild.test */
        {"a.b.wild.test", "mail.test"},       /* one label only */
        {"wild.test", "mail.test"},
        {"mail.test", "mail.test"},
        {"smtp.test", "mail.test"},
        {"unknown.example", "mail.test"},
        {NULL, "mail.test"},
    };
    struct fixture fx;
    SSL_CTX *c = client_ctx(0, 0, NULL, NULL);

    (void)state;
    fixture_init(&fx, "a_rsa", "b_ec", "a_ec", NULL);
    fixture_build(&fx);
    assert_int_equal(fx.ts.ngroups, 2);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct hs h = handshake(fx.ts.server, c, cases[i].sni);

        assert_true(h.ok);
        if (!peer_has_name(&h, cases[i].want))
            fail_msg("SNI %s: certificate not for %s", cases[i].sni,
                     cases[i].want);
        hs_free(&h);
    }
    /* key type still chosen inside the group SNI selected */
    expect_key(fx.ts.server, 0, RSA_ONLY, EVP_PKEY_RSA);
    SSL_CTX_free(c);
    fixture_free(&fx);
}

/* min protocol TLS 1.3 refuses a client that stops at TLS 1.2 */
static void test_min_protocol(void **state)
{
    struct fixture fx;
    SSL_CTX *c12 = client_ctx(0, TLS1_2_VERSION, NULL, NULL);
    SSL_CTX *c13 = client_ctx(0, 0, NULL, NULL);
    struct hs h;

    (void)state;
    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_tls_knobs.min_protocol = TLS1_3_VERSION;
    fixture_build(&fx);
    h = handshake(fx.ts.server, c12, NULL);
    assert_false(h.ok);
    hs_free(&h);
    h = handshake(fx.ts.server, c13, NULL);
    assert_true(h.ok);
    assert_int_equal(SSL_version(h.server), TLS1_3_VERSION);
    hs_free(&h);
    SSL_CTX_free(c12);
    SSL_CTX_free(c13);
    fixture_free(&fx);
}

/* the shipped defaults: TLS 1.2 floor, forward-secret AEAD only */
static void test_defaults(void **state)
{
    struct fixture fx;
    SSL_CTX *c11 = client_ctx(TLS1_1_VERSION, TLS1_1_VERSION, NULL, NULL);
    SSL_CTX *cbc = client_ctx(0, TLS1_2_VERSION, NULL, NULL);
    SSL_CTX *rsakx = client_ctx(0, TLS1_2_VERSION, NULL, NULL);
    struct hs h;

    (void)state;
    assert_int_equal(SSL_CTX_set_cipher_list(cbc, "ECDHE-ECDSA-AES128-SHA"),
                     1);
    assert_int_equal(SSL_CTX_set_cipher_list(rsakx, "AES128-GCM-SHA256"), 1);
    fixture_init(&fx, "a_rsa", "a_ec", NULL);
    fixture_build(&fx);
    assert_true(SSL_CTX_get_options(fx.ts.server) &
                SSL_OP_CIPHER_SERVER_PREFERENCE);
    assert_false(SSL_CTX_get_options(fx.ts.server) & SSL_OP_NO_TICKET);
    assert_true(SSL_CTX_get_options(fx.ts.server) & SSL_OP_NO_RENEGOTIATION);
    assert_true(SSL_CTX_get_mode(fx.ts.server) & SSL_MODE_RELEASE_BUFFERS);
    assert_int_equal(SSL_CTX_get_min_proto_version(fx.ts.server),
                     TLS1_2_VERSION);
    h = handshake(fx.ts.server, c11, NULL);
    assert_false(h.ok);
    hs_free(&h);
    h = handshake(fx.ts.server, cbc, NULL);
    assert_false(h.ok);
    hs_free(&h);
    h = handshake(fx.ts.server, rsakx, NULL);
    assert_false(h.ok);
    hs_free(&h);
    fixture_free(&fx);

    /* client_tls_ciphers replaces the default list; tickets off */
    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_tls_knobs.ciphers = "ECDHE-ECDSA-AES128-SHA";
    fx.svc.client_tls_knobs.session_tickets = false;
    fixture_build(&fx);
    assert_true(SSL_CTX_get_options(fx.ts.server) & SSL_OP_NO_TICKET);
    h = handshake(fx.ts.server, cbc, NULL);
    assert_true(h.ok);
    assert_string_equal(SSL_get_cipher_name(h.server),
                        "ECDHE-ECDSA-AES128-SHA");
    hs_free(&h);
    fixture_free(&fx);
    SSL_CTX_free(c11);
    SSL_CTX_free(cbc);
    SSL_CTX_free(rsakx);
}

/* groups and TLS 1.3 suites are applied */
static void test_groups_suites(void **state)
{
    struct fixture fx;
    SSL_CTX *c = client_ctx(0, 0, NULL, NULL);
    struct hs h;

    (void)state;
    assert_int_equal(SSL_CTX_set1_groups_list(c, "X25519:P-256"), 1);
    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_tls_knobs.groups = "P-256";
    fx.svc.client_tls_knobs.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256";
    fixture_build(&fx);
    h = handshake(fx.ts.server, c, NULL);
    assert_true(h.ok);
    assert_string_equal(SSL_get_cipher_name(h.server),
                        "TLS_CHACHA20_POLY1305_SHA256");
    assert_int_equal(SSL_get_negotiated_group(h.server), NID_X9_62_prime256v1);
    hs_free(&h);
    SSL_CTX_free(c);
    fixture_free(&fx);
}

/*
 * profiles: a profile that lowers the floor gets its own contexts (with
 * the same SNI set); one that changes no TLS setting uses the service's.
 */
static void test_profiles(void **state)
{
    struct fixture fx;
    SSL_CTX *c12 = client_ctx(0, TLS1_2_VERSION, NULL, NULL);
    SSL_CTX *c11 = client_ctx(TLS1_1_VERSION, TLS1_1_VERSION, NULL, NULL);
    SSL_CTX *c10 = client_ctx(TLS1_VERSION, TLS1_VERSION, NULL, NULL);
    SSL_CTX *fresh = SSL_CTX_new(TLS_server_method());
    SSL_CTX *p0, *p1;
    struct hs h;

    (void)state;
    fixture_init(&fx, "a_rsa", "b_ec", NULL);
    fx.svc.client_tls_knobs.min_protocol = TLS1_3_VERSION;
    fx.svc.nprofiles = 3;
    fx.prof[0].has_min_protocol = true;        /* printers: TLS 1.2 */
    fx.prof[0].min_protocol = TLS1_2_VERSION;
    fx.prof[1].has_min_protocol = true;        /* ancient: TLS 1.0 */
    fx.prof[1].min_protocol = TLS1_VERSION;
    fx.prof[2].has_client_plaintext_auth = true;   /* no TLS change */
    fx.prof[2].client_plaintext_auth = true;
    fixture_build(&fx);

    p0 = tls_server_ctx(&fx.ts, 0);
    p1 = tls_server_ctx(&fx.ts, 1);
    assert_ptr_equal(tls_server_ctx(&fx.ts, SIZE_MAX), fx.ts.server);
    assert_ptr_equal(tls_server_ctx(&fx.ts, 2), fx.ts.server);
    assert_ptr_equal(tls_server_ctx(&fx.ts, 3), fx.ts.server);
    assert_ptr_not_equal(p0, fx.ts.server);
    assert_ptr_not_equal(p1, fx.ts.server);
    assert_ptr_not_equal(p0, p1);

    /* TLS 1.2: refused by the service, accepted by the profiles */
    h = handshake(fx.ts.server, c12, NULL);
    assert_false(h.ok);
    hs_free(&h);
    h = handshake(p0, c12, "other.test");
    assert_true(h.ok);
    assert_int_equal(SSL_version(h.server), TLS1_2_VERSION);
    assert_true(peer_has_name(&h, "other.test"));    /* same SNI set */
    hs_free(&h);

    /* the TLS 1.0 floor implies security level 0 for that set only */
    assert_int_equal(SSL_CTX_get_security_level(p1), 0);
    assert_int_equal(SSL_CTX_get_security_level(p0),
                     SSL_CTX_get_security_level(fresh));
    assert_int_equal(SSL_CTX_get_security_level(fx.ts.server),
                     SSL_CTX_get_security_level(fresh));
    h = handshake(p0, c11, NULL);
    assert_false(h.ok);
    hs_free(&h);
    h = handshake(p1, c11, NULL);
    assert_true(h.ok);
    assert_int_equal(SSL_version(h.server), TLS1_1_VERSION);
    hs_free(&h);
    /* TLS 1.0 works too with this OpenSSL (3.0, level 0 on both ends) */
    h = handshake(p1, c10, "mx.wild.test");
    assert_true(h.ok);
    assert_int_equal(SSL_version(h.server), TLS1_VERSION);
    assert_true(peer_has_name(&h, "other.test"));
    hs_free(&h);

    SSL_CTX_free(fresh);
    SSL_CTX_free(c10);
    SSL_CTX_free(c11);
    SSL_CTX_free(c12);
    fixture_free(&fx);
}

/* a profile's own ciphers and security level override the service's */
static void test_profile_ciphers(void **state)
{
    struct fixture fx;
    SSL_CTX *cbc = client_ctx(0, TLS1_2_VERSION, NULL, NULL);
    struct hs h;

    (void)state;
    assert_int_equal(SSL_CTX_set_cipher_list(cbc, "ECDHE-ECDSA-AES256-SHA"),
                     1);
    fixture_init(&fx, "a_ec", NULL);
    fx.svc.nprofiles = 1;
    fx.prof[0].ciphers = "ECDHE+AESGCM:ECDHE-ECDSA-AES256-SHA";
    fx.prof[0].has_security_level = true;
    fx.prof[0].security_level = 2;
    fixture_build(&fx);
    assert_int_equal(SSL_CTX_get_security_level(tls_server_ctx(&fx.ts, 0)),
                     2);
    h = handshake(fx.ts.server, cbc, NULL);
    assert_false(h.ok);
    hs_free(&h);
    h = handshake(tls_server_ctx(&fx.ts, 0), cbc, NULL);
    assert_true(h.ok);
    hs_free(&h);
    SSL_CTX_free(cbc);
    fixture_free(&fx);
}

/* client_cert = require: no certificate or an unverified one fails */
static void test_client_cert_require(void **state)
{
    struct fixture fx;
    SSL_CTX *none = client_ctx(0, 0, NULL, NULL);
    SSL_CTX *good = client_ctx(0, 0, NULL, "client");
    SSL_CTX *good12 = client_ctx(0, TLS1_2_VERSION, NULL, "client");
    SSL_CTX *self = client_ctx(0, 0, NULL, "self");
    char subject[256], verify[128];
    STACK_OF(X509_NAME) *cas;
    struct hs h;

    (void)state;
    fixture_init(&fx, "a_ec", "b_ec", NULL);
    fx.svc.client_ca_file = path("ca.pem");
    fx.svc.client_cert = CLIENT_CERT_REQUIRE;
    fixture_build(&fx);
    cas = SSL_CTX_get_client_CA_list(fx.ts.server);
    assert_int_equal(sk_X509_NAME_num(cas), 1);

    h = handshake(fx.ts.server, none, NULL);
    assert_false(h.ok);
    hs_free(&h);
    h = handshake(fx.ts.server, self, NULL);
    assert_false(h.ok);
    hs_free(&h);

    h = handshake(fx.ts.server, good, NULL);
    assert_true(h.ok);
    tls_peer_info(h.server, subject, sizeof subject, verify, sizeof verify);
    assert_string_equal(subject, "CN=client one,O=Test Org");
    assert_string_equal(verify, "ok");
    hs_free(&h);

    /* the SNI-selected context verifies the same way (TLS 1.2 too) */
    h = handshake(fx.ts.server, good12, "other.test");
    assert_true(h.ok);
    assert_true(peer_has_name(&h, "other.test"));
    tls_peer_info(h.server, subject, sizeof subject, verify, sizeof verify);
    assert_string_equal(verify, "ok");
    hs_free(&h);
    h = handshake(fx.ts.server, none, "other.test");
    assert_false(h.ok);
    hs_free(&h);

    /* truncation keeps the buffers terminated */
    h = handshake(fx.ts.server, good, NULL);
    assert_true(h.ok);
    tls_peer_info(h.server, subject, 6, verify, 2);
    assert_string_equal(subject, "CN=cl");
    assert_string_equal(verify, "o");
    hs_free(&h);

    SSL_CTX_free(none);
    SSL_CTX_free(good);
    SSL_CTX_free(good12);
    SSL_CTX_free(self);
    fixture_free(&fx);
}

/* client_cert = ask: anything goes, the verdict is recorded */
static void test_client_cert_ask(void **state)
{
    struct fixture fx;
    SSL_CTX *none = client_ctx(0, 0, NULL, NULL);
    SSL_CTX *good = client_ctx(0, 0, NULL, "client");
    SSL_CTX *self = client_ctx(0, TLS1_2_VERSION, NULL, "self");
    char subject[256], verify[128];
    struct hs h;

    (void)state;
    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_ca_file = path("ca.pem");
    fx.svc.client_cert = CLIENT_CERT_ASK;
    fixture_build(&fx);

    h = handshake(fx.ts.server, self, NULL);
    assert_true(h.ok);
    tls_peer_info(h.server, subject, sizeof subject, verify, sizeof verify);
    assert_string_equal(subject, "CN=self signed client");
    assert_string_equal(verify, X509_verify_cert_error_string(
                                    X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT));
    hs_free(&h);

    h = handshake(fx.ts.server, good, NULL);
    assert_true(h.ok);
    tls_peer_info(h.server, subject, sizeof subject, verify, sizeof verify);
    assert_string_equal(subject, "CN=client one,O=Test Org");
    assert_string_equal(verify, "ok");
    hs_free(&h);

    h = handshake(fx.ts.server, none, NULL);
    assert_true(h.ok);
    tls_peer_info(h.server, subject, sizeof subject, verify, sizeof verify);
    assert_string_equal(subject, "");
    assert_string_equal(verify, "none");
    hs_free(&h);
    fixture_free(&fx);

    /* client_cert = none: never asked, so "none" even with a cert */
    fixture_init(&fx, "a_ec", NULL);
    fixture_build(&fx);
    h = handshake(fx.ts.server, good, NULL);
    assert_true(h.ok);
    tls_peer_info(h.server, subject, sizeof subject, verify, sizeof verify);
    assert_string_equal(subject, "");
    assert_string_equal(verify, "none");
    hs_free(&h);
    tls_peer_info(NULL, subject, sizeof subject, verify, sizeof verify);
    assert_string_equal(verify, "none");
    fixture_free(&fx);

    SSL_CTX_free(none);
    SSL_CTX_free(good);
    SSL_CTX_free(self);
}

/* backend leg: backend_tls_* knobs on the client context */
static void test_backend_knobs(void **state)
{
    struct fixture fx, srv;
    SSL_CTX *c;
    SSL *ssl;
    struct hs h;

    (void)state;
    fixture_init(&srv, "a_ec", NULL);
    srv.svc.client_tls_knobs.ciphersuites = "";     /* TLS 1.2 only */
    fixture_build(&srv);
    assert_int_equal(SSL_CTX_get_max_proto_version(srv.ts.server),
                     TLS1_2_VERSION);

    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_tls = CLIENT_TLS_NONE;
    fx.svc.backend_tls = BACKEND_TLS_MAY;
    fx.svc.backend_tls_knobs.min_protocol = TLS1_3_VERSION;
    fx.svc.backend_tls_knobs.session_tickets = false;
    {
        char err[512];

        assert_int_equal(tls_service_init(&fx.cfg, &fx.svc, &fx.ts, err,
                                          sizeof err), 0);
    }
    assert_null(fx.ts.server);
    assert_null(tls_server_ctx(&fx.ts, SIZE_MAX));
    c = fx.ts.client;
    assert_non_null(c);
    assert_int_equal(SSL_CTX_get_min_proto_version(c), TLS1_3_VERSION);
    assert_true(SSL_CTX_get_options(c) & SSL_OP_NO_TICKET);
    assert_int_equal(SSL_CTX_get_verify_mode(c), SSL_VERIFY_NONE);
    ssl = tls_client_ssl(c, "mail.test");
    assert_non_null(ssl);
    SSL_free(ssl);

    h = handshake(srv.ts.server, c, NULL);      /* server: TLS 1.2 only */
    assert_false(h.ok);
    hs_free(&h);
    fixture_free(&fx);

    /* the default floor is TLS 1.2; the system's ciphers otherwise */
    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_tls = CLIENT_TLS_NONE;
    fx.svc.backend_tls = BACKEND_TLS_VERIFY;
    fx.svc.enforce = true;
    fx.svc.backend_ca_file = path("ca.pem");
    {
        char err[512];

        assert_int_equal(tls_service_init(&fx.cfg, &fx.svc, &fx.ts, err,
                                          sizeof err), 0);
    }
    assert_int_equal(SSL_CTX_get_min_proto_version(fx.ts.client),
                     TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_get_verify_mode(fx.ts.client), SSL_VERIFY_PEER);
    h = handshake(srv.ts.server, fx.ts.client, "mail.test");
    assert_true(h.ok);
    assert_int_equal(SSL_version(h.client), TLS1_2_VERSION);
    hs_free(&h);
    fixture_free(&fx);
    fixture_free(&srv);
}

/* every error names file, the service's (or profile's) line, the key */
static void test_errors(void **state)
{
    struct fixture fx;
    const char *e;

    (void)state;
    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_tls_knobs.ciphers = "NOPE";
    e = fixture_fail(&fx);
    assert_prefix(e, "test.ini:7: [smtp] bad client_tls_ciphers "
                           "'NOPE': ");
    assert_non_null(strstr(e, "no cipher match"));
    fixture_free(&fx);

    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_tls_knobs.groups = "P-256:NOPE-999";
    e = fixture_fail(&fx);
    assert_prefix(e, "test.ini:7: [smtp] bad client_tls_groups "
                           "'P-256:NOPE-999': ");
    fixture_free(&fx);

    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_tls_knobs.ciphersuites = "TLS_NOPE";
    e = fixture_fail(&fx);
    assert_prefix(e, "test.ini:7: [smtp] bad client_tls_ciphersuites "
                           "'TLS_NOPE': ");
    fixture_free(&fx);

    fixture_init(&fx, "a_ec", NULL);
    fx.svc.backend_tls = BACKEND_TLS_ENCRYPT;
    fx.svc.backend_tls_knobs.ciphers = "NOPE:ALSO-NOPE";
    e = fixture_fail(&fx);
    assert_prefix(e, "test.ini:7: [smtp] bad backend_tls_ciphers "
                           "'NOPE:ALSO-NOPE': ");
    fixture_free(&fx);

    fixture_init(&fx, "a_ec", NULL);
    fx.svc.nprofiles = 1;
    fx.prof[0].ciphers = "NOPE";
    e = fixture_fail(&fx);
    assert_prefix(e, "test.ini:20: [profile printers] bad "
                           "client_tls_ciphers 'NOPE': ");
    fixture_free(&fx);

    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_tls_knobs.min_protocol = TLS1_3_VERSION;
    fx.svc.client_tls_knobs.ciphersuites = "";
    e = fixture_fail(&fx);
    assert_string_equal(e, "test.ini:7: [smtp] bad client_tls_ciphersuites "
                           "'': empty, but the floor is TLS 1.3\n");
    fixture_free(&fx);

    /* two pairs of one key type for the same names */
    fixture_init(&fx, "a_ec", "a_rsa", "a_ec2", NULL);
    e = fixture_fail(&fx);
    assert_prefix(e, "test.ini:7: [smtp] certificates ");
    assert_non_null(strstr(e, "same key type"));
    fixture_free(&fx);

    /* a key for another certificate */
    fixture_init(&fx, "a_ec", NULL);
    free(fx.pairs[0].key);
    fx.pairs[0].key = strdup(path("b_ec.key"));
    e = fixture_fail(&fx);
    assert_prefix(e, "test.ini:7: [smtp] cannot load key ");
    assert_non_null(strstr(e, "b_ec.key: "));
    assert_non_null(strstr(e, "key values mismatch"));
    fixture_free(&fx);

    /* a missing certificate file, and a file that is no certificate */
    fixture_init(&fx, "a_ec", "missing", NULL);
    e = fixture_fail(&fx);
    assert_true(strncmp(e, "test.ini:7: [smtp] cannot load certificate ",
                        43) == 0);
    assert_non_null(strstr(e, "missing.pem"));
    fixture_free(&fx);
    fixture_init(&fx, "bad", NULL);
    fx.pairs[0].cert[strlen(fx.pairs[0].cert) - 3] = '\0';
    strcat(fx.pairs[0].cert, "ini");
    e = fixture_fail(&fx);
    assert_true(strncmp(e, "test.ini:7: [smtp] cannot load certificate ",
                        43) == 0);
    fixture_free(&fx);

    /* client certificates without a CA file; an unreadable CA file */
    fixture_init(&fx, "a_ec", NULL);
    fx.svc.client_cert = CLIENT_CERT_ASK;
    e = fixture_fail(&fx);
    assert_string_equal(e, "test.ini:7: [smtp] client_cert = ask or require "
                           "needs client_ca_file\n");
    fx.svc.client_ca_file = path("nope.pem");
    e = fixture_fail(&fx);
    assert_true(strncmp(e, "test.ini:7: [smtp] cannot load client_ca_file ",
                        46) == 0);
    fixture_free(&fx);

    /* TLS without any certificate */
    fixture_init(&fx, NULL);
    fx.svc.cert = fx.svc.key = NULL;
    e = fixture_fail(&fx);
    assert_string_equal(e, "test.ini:7: [smtp] TLS toward clients needs "
                           "cert and key\n");
    fixture_free(&fx);
}

/* the pre-issue-3 form: only cert/key set, certs[] empty */
static void test_single_cert_fields(void **state)
{
    struct fixture fx;
    SSL_CTX *c = client_ctx(0, 0, NULL, NULL);
    struct hs h;

    (void)state;
    fixture_init(&fx, "a_rsa", NULL);
    fx.svc.ncerts = 0;
    fixture_build(&fx);
    h = handshake(fx.ts.server, c, NULL);
    assert_true(h.ok);
    assert_int_equal(peer_key_type(&h), EVP_PKEY_RSA);
    hs_free(&h);
    fx.svc.ncerts = 1;
    SSL_CTX_free(c);
    fixture_free(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_type),
        cmocka_unit_test(test_sni),
        cmocka_unit_test(test_min_protocol),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_groups_suites),
        cmocka_unit_test(test_profiles),
        cmocka_unit_test(test_profile_ciphers),
        cmocka_unit_test(test_client_cert_require),
        cmocka_unit_test(test_client_cert_ask),
        cmocka_unit_test(test_backend_knobs),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_single_cert_fields),
    };

    return cmocka_run_group_tests_name("tls", tests, gen_certs, rm_certs);
}
