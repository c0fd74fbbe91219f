/*
 * fuzz_session.c - libFuzzer target: one whole proxy session driven by the
 * fuzzer's bytes, against a scripted backend, all in one process.
 *
 * Every input gets a fresh uv loop with a worker (the proxy's own code,
 * unchanged), a listener on 127.0.0.1:<ephemeral>, an in-process backend
 * that answers like an MTA (and fails where the input says so), and an
 * in-process client that connects to the proxy and writes the input in
 * chunks.  The iteration ends when the client and every backend
 * connection are closed and the worker holds no session; a cap of
 * FZ_CAP_MS calls worker_stop() earlier.  Then the loop must run dry and
 * uv_loop_close() must succeed: a handle left open is a finding, like a
 * crash, a leak (ASan/LSan) or undefined behaviour (UBSan).
 *
 * Input layout (shorter inputs are ignored):
 *   byte 0  bits 0-2: config variant (fz_variants[]), low bits
 *           bits 3-4: chunking: 0 all at once, 1 line by line, 2 sizes
 *                     1..32 from a PRNG seeded by byte 3, 3 split at 0xFF
 *                     (the separator bytes are dropped)
 *           bit 5:    wait for the greeting before writing (else the
 *                     first chunk goes out at once: the pregreet path)
 *           bit 6:    the client speaks TLS: after the proxy's 220 to
 *                     STARTTLS, or from the start with client_implicit_tls
 *                     (else it goes on in plaintext: a broken handshake)
 *           bit 7:    at the end the client closes at once (else it
 *                     half-closes and reads until the proxy closes)
 *   byte 1  bits 0-2: backend fault (enum fz_fault), on reply number
 *                     byte 2 (0 is the greeting; replies are counted over
 *                     all backend connections of the session)
 *           bits 3-4: EHLO flavour (fz_ehlo_replies[])
 *           bit 5:    STARTTLS answer: 454 (else 220)
 *           bit 6:    AUTH answer: 334 challenge (else 535)
 *           bit 7:    end-of-data answer 554 (else 250)
 *   byte 2  the reply the fault strikes
 *   byte 3  bits 0-3: PRNG seed for chunk sizes
 *           bit 4:    config variant, high bit (variants 8-15)
 *           bit 5:    the backend speaks TLS after its 220 to STARTTLS and
 *                     with backend_implicit_tls (else it answers the
 *                     ClientHello with nonsense)
 *           bit 6:    the end is worker_stop() (the proxy shuts down
 *                     with the session live), not the client closing
 *           bit 7:    unused
 *   rest    the client's bytes
 *
 * Oracles besides the sanitizers (FUZZ_CHECK aborts):
 *   - what the client receives in plaintext is a sequence of well-formed
 *     SMTP replies (smtp_reply_scan), up to the proxy's 220 to STARTTLS,
 *     and again inside TLS;
 *   - every command line the backend receives ends in CRLF, holds no other
 *     CR or LF and no NUL, and is at most max_line_length long;
 *   - message content the backend receives after 354 holds no NUL and no
 *     bare CR or LF (the smuggling defence normalises or refuses them);
 *   - a PROXY header sent to the backend parses;
 *   - the backend never receives what the proxy refuses: a verb it does
 *     not know (no variant has ehlo_pass), XFORWARD, an
 *     XCLIENT it did not write itself (ADDR= other than the client's), or,
 *     under client_tls = encrypt (variant 2), MAIL/RCPT/DATA/BDAT/AUTH/
 *     VRFY/EXPN before the client's TLS is up.  The backend is a strict
 *     one: "BDAT" SP size, and with an EHLO flavour without CHUNKING it
 *     answers BDAT with 502 and reads the chunk as commands, as an MTA
 *     without CHUNKING does;
 *   - after worker_stop() everything is closed within FZ_STOP_GRACE_MS
 *     (a session that lingers until its 5 s close deadline although both
 *     peers read is a finding);
 *   - nothing is left open once the loop has run dry.
 *
 * The same file is built with replay.c (no libFuzzer) so that ctest
 * replays corpus/fuzz_session/; tests/fuzz/mk_session_corpus.py writes the
 * seed inputs.  With FUZZ_SESSION_DEBUG=1 in the environment the proxy
 * logs to stderr, and what the client and the backend receive is shown:
 *   FUZZ_SESSION_DEBUG=1 build/tests/fuzz/fuzz_session_replay FILE
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "config.h"
#include "connlimit.h"
#include "fuzz.h"
#include "listener.h"
#include "log.h"
#include "proxyproto.h"
#include "smtp.h"
#include "stats.h"
#include "tls.h"
#include "worker.h"

#define FZ_CAP_MS 200          /* wall time of one session at most */
#define FZ_GUARD_MS 8000       /* after this, whatever is open is stuck */
#define FZ_STOP_GRACE_MS 1000  /* worker_stop() to a dry loop, at most: our
                                  peers read everything, so the proxy's
                                  5 s close deadline is never needed */
#define FZ_QUIET 8             /* loop turns without I/O before the next
                                  client step */
#define FZ_MAX_STEPS 512       /* chunks; the rest then goes at once */
#define FZ_MAX_INPUT (64 * 1024)
#define FZ_BLINE 65540         /* backend line buffer: max_line_length */
#define FZ_NVARIANTS 16

/* ---- process-wide set-up, made once -------------------------------------- */

struct fz_variant {
    const char *keys;          /* service keys of the variant */
    const char *tail;          /* sections after the service, or "" */
    bool cert;                 /* needs cert/key */
    struct config *cfg;
    struct tls_service *tls;
};

/* each variant's configuration as a generation, made once, never freed */
static struct generation *fz_gens[FZ_NVARIANTS];

static struct fz_variant fz_variants[FZ_NVARIANTS] = {
    /* 0: plaintext on both legs */
    { "client_tls = none\nbackend_tls = none\n", "", false, NULL, NULL },
    /* 1: STARTTLS offered on both legs (the usual set-up) */
    { "client_tls = may\nbackend_tls = may\n", "", true, NULL, NULL },
    /* 2: TLS required of the client; bare CR/LF refuse the message */
    { "client_tls = encrypt\nbackend_tls = may\nbare_newline = reject\n"
      "trace_header = yes\n", "", true, NULL, NULL },
    /* 3: AUTH in plaintext, XCLIENT to the backend, few errors allowed */
    { "client_tls = none\nbackend_tls = none\nclient_plaintext_auth = yes\n"
      "backend_client_address = xclient\nmax_errors = 3\n", "", false, NULL,
      NULL },
    /* 4: strict rules only logged; PROXY v2 to the backend; short lines */
    { "client_tls = encrypt\nbackend_tls = none\nenforce = no\n"
      "backend_client_address = proxy-v2\nmax_line_length = 512\n", "", true,
      NULL, NULL },
    /* 5: backend TLS required but only logged; PROXY v1; a profile */
    { "client_tls = may\nbackend_tls = encrypt\nenforce = no\n"
      "backend_client_address = proxy-v1\nprofiles = lan\n",
      "[profile lan]\nsources = 127.0.0.0/8\nclient_plaintext_auth = yes\n",
      true, NULL, NULL },
    /* 6: a PROXY header from the client first */
    { "client_tls = may\nbackend_tls = none\nclient_proxy_protocol = yes\n"
      "trusted_proxies = 127.0.0.0/8\nbare_newline = reject\n"
      "max_connections_per_ip = 1\n", "", true, NULL, NULL },
    /* 7: trace header, XCLIENT, a profile with its own TLS context */
    { "client_tls = may\nbackend_tls = may\ntrace_header = yes\n"
      "backend_client_address = xclient\nprofiles = old\n",
      "[profile old]\nsources = 127.0.0.1/32\n"
      "client_tls_min_protocol = TLSv1\nclient_tls_security_level = 0\n",
      true, NULL, NULL },
    /* 8: TLS from the first byte on the client leg */
    { "client_implicit_tls = yes\nbackend_tls = none\n", "", true, NULL,
      NULL },
    /* 9: TLS from the first byte on the backend leg */
    { "client_tls = may\nbackend_tls = may\nbackend_implicit_tls = yes\n",
      "", true, NULL, NULL },
    /* 10: the backend's certificate verified (the generated one) */
    { "client_tls = may\nbackend_tls = verify\nbackend_ca_file = @CA@\n"
      "backend_verify_name = proxy.test\ntrace_header = yes\n", "", true,
      NULL, NULL },
    /* 11: XCLIENT over backend TLS; bare CR/LF refuse the message */
    { "client_tls = may\nbackend_tls = may\nbackend_client_address = xclient\n"
      "bare_newline = reject\nclient_plaintext_auth = yes\n", "", true, NULL,
      NULL },
    /* 12: the longest lines, many errors, nothing enforced */
    { "client_tls = none\nbackend_tls = none\nmax_line_length = 65536\n"
      "max_errors = 1000\nenforce = no\n", "", false, NULL, NULL },
    /* 13: client certificates asked for (the fuzz client has one) */
    { "client_tls = may\nbackend_tls = may\nclient_cert = ask\n"
      "client_ca_file = @CA@\ntrace_header = yes\n", "", true, NULL, NULL },
    /* 14: implicit TLS, PROXY v1 to the backend, a cipher profile */
    { "client_implicit_tls = yes\nbackend_tls = may\n"
      "backend_client_address = proxy-v1\nprofiles = lan2\n",
      "[profile lan2]\nsources = 127.0.0.0/8\nclient_tls_ciphers = HIGH\n",
      true, NULL, NULL },
    /* 15: the PROXY header's address picks a profile; v2 onwards */
    { "client_tls = encrypt\nbackend_tls = none\nclient_proxy_protocol = yes\n"
      "trusted_proxies = 127.0.0.0/8\nbackend_client_address = proxy-v2\n"
      "profiles = doc\n",
      "[profile doc]\nsources = 192.0.2.0/24, 2001:db8::/32\n"
      "client_tls = none\n", true, NULL, NULL },
};

static char fz_dir[64];        /* the generated certificate */
static int fz_backend_fd = -1; /* the backend's listening socket */
static SSL_CTX *fz_client_ctx; /* the fuzz client's TLS */
static SSL_CTX *fz_backend_ctx;/* the scripted backend's TLS */
static FILE *fz_log;           /* the proxy's log: /dev/null or stderr */
static bool fz_debug;          /* FUZZ_SESSION_DEBUG is set */
static struct listen_addr fz_laddr;   /* 127.0.0.1:0 */
static struct worker fz_worker;       /* large: not on the stack */

/* fz_cleanup - remove the certificate directory at exit. */
static void fz_cleanup(void)
{
    char p[128];

    if (fz_dir[0] == '\0')
        return;
    snprintf(p, sizeof p, "%s/cert.pem", fz_dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/key.pem", fz_dir);
    unlink(p);
    rmdir(fz_dir);
}

/* fz_make_cert - a self-signed P-256 certificate for proxy.test. */
static int fz_make_cert(void)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    char p[128];
    FILE *f;
    int ok = 0;

    if (pk == NULL || x == NULL)
        goto out;
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 86400);
    X509_set_pubkey(x, pk);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"proxy.test", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
                              "DNS:proxy.test");
    if (ext == NULL)
        goto out;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (X509_sign(x, pk, EVP_sha256()) <= 0)
        goto out;
    snprintf(p, sizeof p, "%s/cert.pem", fz_dir);
    if ((f = fopen(p, "w")) == NULL)
        goto out;
    ok = PEM_write_X509(f, x);
    fclose(f);
    snprintf(p, sizeof p, "%s/key.pem", fz_dir);
    if (!ok || (f = fopen(p, "w")) == NULL) {
        ok = 0;
        goto out;
    }
    ok = PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
out:
    X509_free(x);
    EVP_PKEY_free(pk);
    return ok ? 0 : -1;
}

/* fz_backend_socket - the backend's listening socket on 127.0.0.1:0; each
 * iteration listens on a dup of it, so the port (in the configs) stays. */
static int fz_backend_socket(unsigned *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sin.sin_port);
    return fd;
}

/* fz_subst_ca - keys with "@CA@" (the generated certificate) in buf. */
static int fz_subst_ca(const char *in, char *buf, size_t cap)
{
    const char *at = strstr(in, "@CA@");
    int n;

    if (at == NULL)
        n = snprintf(buf, cap, "%s", in);
    else
        n = snprintf(buf, cap, "%.*s%s/cert.pem%s", (int)(at - in), in,
                     fz_dir, at + 4);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* fz_load_variant - config and TLS contexts of one variant. */
static int fz_load_variant(struct fz_variant *v, unsigned port)
{
    char ini[2048], err[2048], keys[512];
    FILE *f;
    int n, r;

    if (fz_subst_ca(v->keys, keys, sizeof keys) != 0)
        return -1;
    n = snprintf(ini, sizeof ini,
                 "[proxy]\nhostname = proxy.test\nlog_level = debug\n"
                 "workers = 1\n"
                 "[fz]\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:%u\n"
                 "idle_timeout = 30\ncommand_timeout = 30\n"
                 "%s%s%s%s%s%s%s",
                 port, keys, v->cert ? "cert = " : "",
                 v->cert ? fz_dir : "", v->cert ? "/cert.pem\nkey = " : "",
                 v->cert ? fz_dir : "", v->cert ? "/key.pem\n" : "", v->tail);
    if (n <= 0 || (size_t)n >= sizeof ini)
        return -1;
    f = fmemopen(ini, (size_t)n, "r");
    if (f == NULL)
        return -1;
    r = config_load_stream(f, "fuzz_session.ini", &v->cfg, err, sizeof err);
    fclose(f);
    if (r != 0) {
        fprintf(stderr, "fuzz_session: config:\n%s\n%s", ini, err);
        return -1;
    }
    v->tls = calloc(v->cfg->nservices, sizeof *v->tls);
    if (v->tls == NULL)
        return -1;
    for (size_t i = 0; i < v->cfg->nservices; i++)
        if (tls_service_init(v->cfg, &v->cfg->services[i], &v->tls[i], err,
                             sizeof err) != 0) {
            fprintf(stderr, "fuzz_session: tls: %s", err);
            return -1;
        }
    return 0;
}

/* fz_ctx - a TLS context with the generated certificate (the client
 * shows it when asked: client_cert = ask trusts it); verifies nothing. */
static SSL_CTX *fz_ctx(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    char cert[128], key[128];

    snprintf(cert, sizeof cert, "%s/cert.pem", fz_dir);
    snprintf(key, sizeof key, "%s/key.pem", fz_dir);
    if (ctx == NULL ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        abort();
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_security_level(ctx, 0);
    SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
    return ctx;
}

/* fz_init - everything that outlives one input; aborts on failure. */
static void fz_init(void)
{
    static bool done;
    unsigned port = 0;
    const char *tmp = getenv("TMPDIR");

    if (done)
        return;
    done = true;
    signal(SIGPIPE, SIG_IGN);
    snprintf(fz_dir, sizeof fz_dir, "%s/fuzz_session.XXXXXX",
             tmp != NULL && strlen(tmp) < 32 ? tmp : "/tmp");
    if (mkdtemp(fz_dir) == NULL) {
        fz_dir[0] = '\0';
        abort();
    }
    atexit(fz_cleanup);
    if (fz_make_cert() != 0)
        abort();
    fz_backend_fd = fz_backend_socket(&port);
    if (fz_backend_fd < 0)
        abort();
    for (unsigned i = 0; i < FZ_NVARIANTS; i++)
        if (fz_load_variant(&fz_variants[i], port) != 0)
            abort();
    fz_client_ctx = fz_ctx(TLS_client_method());
    fz_backend_ctx = fz_ctx(TLS_server_method());
    fz_debug = getenv("FUZZ_SESSION_DEBUG") != NULL;
    fz_log = fz_debug ? stderr : fopen("/dev/null", "w");
    if (fz_log == NULL)
        abort();
    memset(&fz_laddr, 0, sizeof fz_laddr);
    uv_ip4_addr("127.0.0.1", 0, (struct sockaddr_in *)&fz_laddr.addr);
    fz_laddr.addr_len = sizeof(struct sockaddr_in);
    snprintf(fz_laddr.text, sizeof fz_laddr.text, "127.0.0.1:0");
}

/* ---- one iteration -------------------------------------------------------- */

enum fz_fault {
    FZ_FAULT_NONE,
    FZ_FAULT_CLOSE,        /* close instead of replying */
    FZ_FAULT_GARBAGE,      /* a line that is no reply */
    FZ_FAULT_UNSOLICITED,  /* the reply, then one more nobody asked for */
    FZ_FAULT_421,          /* 421, then close */
    FZ_FAULT_MIXED,        /* a multi-line reply with two codes */
    FZ_FAULT_HUGE,         /* a line over the limit, or too many lines */
    FZ_FAULT_REFUSE        /* 550 (554 for the greeting) instead */
};

enum fz_bmode {
    FZ_B_HEADER,           /* waiting for the proxy's PROXY header */
    FZ_B_CMD,
    FZ_B_DATA,
    FZ_B_BDAT,
    FZ_B_AUTH,             /* the next line answers our 334 */
    FZ_B_NOTLS             /* said 220 to STARTTLS; speaks no TLS */
};

struct fz;

struct fz_bconn {
    uv_tcp_t tcp;
    uv_shutdown_t sreq;
    struct fz *f;
    enum fz_bmode mode;
    bool closing;
    bool notls_answered;
    SSL *ssl;              /* TLS after STARTTLS or from the start */
    BIO *rbio, *wbio;
    bool tls_up;
    bool greet_pending;    /* implicit TLS: greet after the handshake */
    int dstate;            /* end-of-data scanner, see fz_backend_data */
    bool cr;               /* content: the last byte was a CR */
    uint64_t bdat_left;
    bool bdat_last;
    size_t llen;
    char line[FZ_BLINE];
    unsigned char hdr[PROXYPROTO_MAX_LEN];
    size_t hlen;
};

enum fz_ctls { FZ_TLS_NONE, FZ_TLS_HANDSHAKE, FZ_TLS_UP, FZ_TLS_DEAD };

struct fz_client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_shutdown_t sreq;
    bool open;             /* the handle is initialised and not closed */
    bool connected;
    bool ended;            /* our end action was taken */
    bool eof;
    bool checking;         /* replies are checked */
    unsigned nreplies;
    size_t rlen;
    char rbuf[65536];
    enum fz_ctls tls;
    SSL *ssl;
    BIO *rbio, *wbio;
    const uint8_t *in;
    size_t in_len, in_off;
    unsigned steps;
    uint32_t rng;
};

struct fz {
    uv_loop_t loop;
    struct worker *w;
    struct connlimit *limits;
    const struct fz_variant *v;
    unsigned variant, chunking;
    bool wait_greeting, client_tls, full_close;
    enum fz_fault fault;
    unsigned ehlo;
    bool starttls_454, auth_334, eod_554;
    bool backend_tls;      /* the backend really speaks TLS */
    bool end_stop;         /* the end is worker_stop() */
    unsigned fault_at;
    unsigned nreply;       /* backend replies so far */
    bool faulted;
    uv_tcp_t blisten;
    unsigned nbconns;      /* backend connections open */
    uv_idle_t idle;
    uv_timer_t cap, guard;
    unsigned quiet;
    bool capped, torn_down;
    bool stopped;          /* fz_stop() was called */
    struct fz_client cl;
};

static struct fz fz_state;

/* fz_trace - FUZZ_SESSION_DEBUG: show bytes someone received. */
static void fz_trace(const char *who, const void *buf, size_t len)
{
    char esc[512];

    if (!fz_debug)
        return;
    for (size_t off = 0; off < len; off += 120) {
        size_t n = len - off < 120 ? len - off : 120;

        log_escape(esc, sizeof esc, (const char *)buf + off, n);
        fprintf(stderr, "fuzz_session: %s <- %s\n", who, esc);
    }
}

/* fz_check - an oracle: abort with what was broken. */
static void fz_check(bool ok, const char *what)
{
    if (ok)
        return;
    fprintf(stderr, "fuzz_session: FINDING: %s\n", what);
    abort();
}

/* fz_on_write_done - free a queued write. */
static void fz_on_write_done(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* fz_write - queue a copy of buf on stream; errors show up as EOF later. */
static void fz_write(uv_stream_t *stream, const void *buf, size_t len)
{
    uv_write_t *req;
    uv_buf_t b;

    if (len == 0 || uv_is_closing((uv_handle_t *)stream))
        return;
    req = malloc(sizeof *req + len);
    if (req == NULL)
        abort();
    memcpy(req + 1, buf, len);
    b = uv_buf_init((char *)(req + 1), (unsigned)len);
    if (uv_write(req, stream, &b, 1, fz_on_write_done) != 0)
        free(req);
}

static void fz_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char buf[65536];

    (void)h;
    (void)suggested;
    b->base = buf;
    b->len = sizeof buf;
}

/* fz_flush_bio - what TLS wrote into wbio goes to the socket. */
static void fz_flush_bio(uv_tcp_t *tcp, BIO *wbio)
{
    char *p;
    long n = BIO_get_mem_data(wbio, &p);

    if (n > 0)
        fz_write((uv_stream_t *)tcp, p, (size_t)n);
    (void)BIO_reset(wbio);
}

/* fz_ssl_new - an SSL on two fresh memory BIOs. */
static SSL *fz_ssl_new(SSL_CTX *ctx, BIO **rbio, BIO **wbio)
{
    SSL *ssl = SSL_new(ctx);

    *rbio = BIO_new(BIO_s_mem());
    *wbio = BIO_new(BIO_s_mem());
    if (ssl == NULL || *rbio == NULL || *wbio == NULL)
        abort();
    BIO_set_mem_eof_return(*rbio, -1);   /* empty: wait, not EOF */
    SSL_set_bio(ssl, *rbio, *wbio);
    return ssl;
}

static void fz_bconn_begin(struct fz_bconn *bc);

/* ---- the backend ---------------------------------------------------------- */

static void fz_bconn_on_close(uv_handle_t *h)
{
    struct fz_bconn *bc = h->data;

    bc->f->nbconns--;
    SSL_free(bc->ssl);   /* frees both BIOs */
    free(bc);
}

static void fz_bconn_close(struct fz_bconn *bc)
{
    if (bc->closing)
        return;
    bc->closing = true;
    uv_close((uv_handle_t *)&bc->tcp, fz_bconn_on_close);
}

static void fz_bconn_on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    fz_bconn_close(req->data);
}

/* fz_bconn_finish - send what is queued (and a close_notify), then close. */
static void fz_bconn_finish(struct fz_bconn *bc)
{
    if (bc->closing)
        return;
    if (bc->tls_up) {
        ERR_clear_error();
        (void)SSL_shutdown(bc->ssl);
        ERR_clear_error();
        fz_flush_bio(&bc->tcp, bc->wbio);
    }
    bc->sreq.data = bc;
    if (uv_shutdown(&bc->sreq, (uv_stream_t *)&bc->tcp,
                    fz_bconn_on_shutdown) != 0)
        fz_bconn_close(bc);
}

/* fz_bsend - bytes to the proxy, inside TLS once it is up. */
static void fz_bsend(struct fz_bconn *bc, const char *p, size_t len)
{
    size_t done;

    if (bc->closing || len == 0)
        return;
    if (bc->ssl == NULL) {
        fz_write((uv_stream_t *)&bc->tcp, p, len);
        return;
    }
    if (!bc->tls_up)
        return;   /* cannot happen: replies answer commands read in TLS */
    ERR_clear_error();
    if (SSL_write_ex(bc->ssl, p, len, &done) != 1)
        ERR_clear_error();
    fz_flush_bio(&bc->tcp, bc->wbio);
}

/* fz_bconn_tls_start - from the next byte on, the backend speaks TLS. */
static void fz_bconn_tls_start(struct fz_bconn *bc)
{
    bc->ssl = fz_ssl_new(fz_backend_ctx, &bc->rbio, &bc->wbio);
    SSL_set_accept_state(bc->ssl);
}

/*
 * fz_reply - send the backend's reply text (or the fault, when this is
 * the reply it strikes).  Returns true when text went out (the caller may
 * then change mode: DATA after 354...), false when something else did or
 * the connection is going away.
 */
static bool fz_reply(struct fz_bconn *bc, const char *text)
{
    struct fz *f = bc->f;
    unsigned n = f->nreply++;
    static char huge[8192];

    if (bc->closing)
        return false;
    if (f->faulted || f->fault == FZ_FAULT_NONE || n != f->fault_at) {
        fz_bsend(bc, text, strlen(text));
        return true;
    }
    f->faulted = true;
    switch (f->fault) {
    case FZ_FAULT_CLOSE:
        fz_bconn_close(bc);
        return false;
    case FZ_FAULT_GARBAGE:
        fz_bsend(bc, "garbage, not a reply\r\n", 22);
        return false;
    case FZ_FAULT_UNSOLICITED:
        fz_bsend(bc, text, strlen(text));
        fz_bsend(bc, "250 2.0.0 unsolicited\r\n", 23);
        return true;
    case FZ_FAULT_421:
        fz_bsend(bc, "421 4.3.0 going away\r\n", 22);
        fz_bconn_finish(bc);
        return false;
    case FZ_FAULT_MIXED:
        fz_bsend(bc, "250-first\r\n251 second\r\n", 23);
        return false;
    case FZ_FAULT_HUGE: {
        size_t len = 0;

        if (n % 2 == 0) {
            memcpy(huge, "250 ", 4);
            memset(huge + 4, 'x', 3000);
            len = 3004;
        } else {
            for (unsigned i = 0; i < 201 && len + 16 < sizeof huge; i++)
                len += (size_t)snprintf(huge + len, sizeof huge - len,
                                        "250-line%u\r\n", i);
        }
        memcpy(huge + len, "\r\n250 end\r\n", 11);
        fz_bsend(bc, huge, len + 11);
        return false;
    }
    case FZ_FAULT_REFUSE:
        fz_bsend(bc, n == 0 ? "554 5.3.2 no service\r\n"
                            : "550 5.0.0 refused\r\n", n == 0 ? 22 : 19);
        return false;
    default:
        fz_bsend(bc, text, strlen(text));
        return true;
    }
}

static const char *const fz_ehlo_replies[4] = {
    "250-backend.test Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
    "250-8BITMIME\r\n250-CHUNKING\r\n250-AUTH PLAIN LOGIN\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n",
    "250-backend.test Hello\r\n250-PIPELINING\r\n250-STARTTLS\r\n"
    "250-XCLIENT ADDR NAME HELO PROTO PORT\r\n250-XFORWARD NAME ADDR\r\n"
    "250-AUTH=LOGIN\r\n250-DSN\r\n250-CHUNKING\r\n250 8BITMIME\r\n",
    "502 5.5.1 EHLO not implemented\r\n",
    "250 backend.test\r\n",
};

/* fz_verb - is the line's first word verb (any case)? */
static bool fz_verb(const char *line, size_t len, const char *verb)
{
    size_t n = strlen(verb);

    return len >= n && strncasecmp(line, verb, n) == 0 &&
           (len == n || line[n] == ' ');
}

/* fz_backend_command - one command line (CRLF removed): answer it. */
static void fz_backend_command(struct fz_bconn *bc, const char *line,
                               size_t len)
{
    struct fz *f = bc->f;
    uint64_t size;
    bool last;

    fz_check(!fz_verb(line, len, "XFORWARD"), "XFORWARD reached the backend");
    if (fz_verb(line, len, "XCLIENT"))
        fz_check(f->v->cfg->services[0].backend_client_address ==
                     CLIENT_ADDRESS_XCLIENT &&
                 (len < 13 || strncmp(line, "XCLIENT ADDR=", 13) != 0 ||
                  (len > 23 && strncmp(line + 13, "127.0.0.1 ", 10) == 0)),
                 "an XCLIENT the proxy did not write reached the backend");
    if (f->variant == 2 && f->cl.tls != FZ_TLS_UP)
        fz_check(!fz_verb(line, len, "MAIL") && !fz_verb(line, len, "RCPT") &&
                 !fz_verb(line, len, "DATA") && !fz_verb(line, len, "BDAT") &&
                 !fz_verb(line, len, "AUTH") && !fz_verb(line, len, "VRFY") &&
                 !fz_verb(line, len, "EXPN"),
                 "client_tls = encrypt: a command reached the backend "
                 "before the client's TLS");

    if (fz_verb(line, len, "EHLO")) {
        fz_reply(bc, fz_ehlo_replies[f->ehlo]);
    } else if (fz_verb(line, len, "HELO")) {
        fz_reply(bc, "250 backend.test\r\n");
    } else if (fz_verb(line, len, "DATA")) {
        if (fz_reply(bc, "354 End data with <CR><LF>.<CR><LF>\r\n")) {
            bc->mode = FZ_B_DATA;
            bc->dstate = 2;   /* the command's CRLF starts the content */
            bc->cr = false;
        }
    } else if (fz_verb(line, len, "BDAT")) {
        if (f->ehlo >= 2) {
            /* no CHUNKING offered: the chunk is read as commands */
            fz_reply(bc, "502 5.5.1 command not implemented\r\n");
        } else if (len < 5 ||
                   smtp_bdat_parse(line + 5, len - 5, &size, &last) != 0) {
            fz_reply(bc, "501 5.5.4 syntax\r\n");
        } else if (size == 0) {
            fz_reply(bc, "250 2.0.0 chunk\r\n");
        } else {
            bc->mode = FZ_B_BDAT;
            bc->bdat_left = size;
            bc->bdat_last = last;
        }
    } else if (fz_verb(line, len, "AUTH")) {
        if (!f->auth_334)
            fz_reply(bc, "535 5.7.8 authentication failed\r\n");
        else if (len > 5 && memchr(line + 5, ' ', len - 5) != NULL)
            fz_reply(bc, "235 2.7.0 ok\r\n");   /* initial response */
        else if (fz_reply(bc, "334 \r\n"))
            bc->mode = FZ_B_AUTH;
    } else if (fz_verb(line, len, "STARTTLS")) {
        if (f->starttls_454 || bc->ssl != NULL)
            fz_reply(bc, "454 4.7.0 TLS not available\r\n");
        else if (fz_reply(bc, "220 2.0.0 go ahead\r\n")) {
            if (f->backend_tls)
                fz_bconn_tls_start(bc);
            else
                bc->mode = FZ_B_NOTLS;
        }
    } else if (fz_verb(line, len, "XCLIENT")) {
        fz_reply(bc, "220 backend.test ESMTP\r\n");
    } else if (fz_verb(line, len, "QUIT")) {
        if (fz_reply(bc, "221 2.0.0 bye\r\n"))
            fz_bconn_finish(bc);
    } else if (fz_verb(line, len, "MAIL") || fz_verb(line, len, "RCPT") ||
               fz_verb(line, len, "RSET") || fz_verb(line, len, "NOOP") ||
               fz_verb(line, len, "HELP") || fz_verb(line, len, "ETRN")) {
        fz_reply(bc, "250 2.0.0 ok\r\n");
    } else if (fz_verb(line, len, "VRFY") || fz_verb(line, len, "EXPN")) {
        fz_reply(bc, "252 2.1.5 maybe\r\n");
    } else {
        /* no variant passes extra keywords (ehlo_pass): a verb the proxy
         * does not know is refused by it, never relayed */
        fz_check(false, "a verb the proxy does not know reached the backend");
        fz_reply(bc, "500 5.5.2 unrecognized\r\n");
    }
}

/*
 * fz_backend_line_byte - a byte of a command line (or an AUTH response).
 * The oracle: CRLF at the end and nowhere else, within max_line_length.
 */
static void fz_backend_line_byte(struct fz_bconn *bc, char c)
{
    FUZZ_CHECK(bc->llen < sizeof bc->line);
    bc->line[bc->llen++] = c;
    fz_check(bc->llen <= bc->f->v->cfg->services[0].max_line_length,
             "a command line over max_line_length reached the backend");
    if (c != '\n') {
        fz_check(bc->llen < 2 || bc->line[bc->llen - 2] != '\r',
                 "a bare CR in a command line reached the backend");
        return;
    }
    fz_check(bc->llen >= 2 && bc->line[bc->llen - 2] == '\r',
             "a bare LF in a command line reached the backend");
    fz_check(memchr(bc->line, '\0', bc->llen) == NULL,
             "a NUL in a command line reached the backend");
    fz_check(memchr(bc->line, '\n', bc->llen - 1) == NULL &&
             memchr(bc->line, '\r', bc->llen - 2) == NULL,
             "a bare CR or LF in a command line reached the backend");
    bc->llen -= 2;
    if (bc->mode == FZ_B_AUTH) {
        bc->mode = FZ_B_CMD;
        fz_reply(bc, "235 2.7.0 ok\r\n");
    } else {
        fz_backend_command(bc, bc->line, bc->llen);
    }
    bc->llen = 0;
}

/*
 * fz_backend_data - a byte of message content.  dstate: 0 inside a line,
 * 2 after CRLF, 3 after CRLF ".", 4 after CRLF "." CR.  The oracle: no
 * CR without LF after it, no LF without CR before it.
 */
static void fz_backend_data(struct fz_bconn *bc, char c)
{
    fz_check(bc->cr ? c == '\n' : c != '\n',
             "a bare CR or LF in message content reached the backend");
    fz_check(c != '\0', "a NUL in message content reached the backend");
    bc->cr = c == '\r';
    switch (bc->dstate) {
    case 3:
        bc->dstate = c == '\r' ? 4 : 0;
        return;
    case 4:
        if (c == '\n') {
            bc->mode = FZ_B_CMD;
            fz_reply(bc, bc->f->eod_554 ? "554 5.7.1 rejected\r\n"
                                        : "250 2.0.0 queued\r\n");
            return;
        }
        bc->dstate = 0;
        return;
    case 2:
        if (c == '.') {
            bc->dstate = 3;
            return;
        }
        /* fall through */
    default:
        if (c == '\n')
            bc->dstate = 2;
        else
            bc->dstate = 0;
        return;
    }
}

/*
 * fz_backend_bytes - plaintext from the proxy.  Returns how many bytes
 * were used: fewer than n when TLS starts after them (the rest is TLS).
 */
static size_t fz_backend_bytes(struct fz_bconn *bc, const char *p, size_t n)
{
    struct proxyproto_result pr;
    bool plain = bc->ssl == NULL;
    size_t i = 0;

    fz_trace("backend", p, n);
    while (i < n && !bc->closing && (bc->ssl == NULL) == plain) {
        char c = p[i];

        switch (bc->mode) {
        case FZ_B_HEADER:
            FUZZ_CHECK(bc->hlen < sizeof bc->hdr);
            bc->hdr[bc->hlen++] = (unsigned char)c;
            i++;
            switch (proxyproto_parse(bc->hdr, bc->hlen, &pr)) {
            case PROXYPROTO_MORE:
                break;
            case PROXYPROTO_OK:
                FUZZ_CHECK(pr.consumed == bc->hlen);
                bc->mode = FZ_B_CMD;
                fz_bconn_begin(bc);
                break;
            default:
                fz_check(false, "the proxy wrote a bad PROXY header");
            }
            break;
        case FZ_B_CMD:
        case FZ_B_AUTH:
            fz_backend_line_byte(bc, c);
            i++;
            break;
        case FZ_B_DATA:
            fz_backend_data(bc, c);
            i++;
            break;
        case FZ_B_BDAT: {
            size_t take = n - i;

            if (take > bc->bdat_left)
                take = (size_t)bc->bdat_left;
            bc->bdat_left -= take;
            i += take;
            if (bc->bdat_left == 0) {
                bc->mode = FZ_B_CMD;
                fz_reply(bc, "250 2.0.0 chunk\r\n");
            }
            break;
        }
        case FZ_B_NOTLS:
            /* a ClientHello: answer nonsense once, the handshake fails */
            if (!bc->notls_answered) {
                bc->notls_answered = true;
                fz_write((uv_stream_t *)&bc->tcp, "this is not TLS\r\n", 17);
            }
            i = n;
            break;
        }
    }
    return i;
}

/* fz_bconn_tls_pump - ciphertext is in rbio: handshake, then decrypt. */
static void fz_bconn_tls_pump(struct fz_bconn *bc)
{
    char buf[16384];
    size_t n;
    int r;

    if (!bc->tls_up) {
        ERR_clear_error();
        r = SSL_do_handshake(bc->ssl);
        fz_flush_bio(&bc->tcp, bc->wbio);
        if (r != 1) {
            if (SSL_get_error(bc->ssl, r) != SSL_ERROR_WANT_READ)
                fz_bconn_close(bc);
            ERR_clear_error();
            return;
        }
        bc->tls_up = true;
        if (bc->greet_pending) {
            bc->greet_pending = false;
            fz_reply(bc, "220 backend.test ESMTP fuzz\r\n");
        }
    }
    while (!bc->closing) {
        ERR_clear_error();
        if (SSL_read_ex(bc->ssl, buf, sizeof buf, &n) != 1)
            break;
        fz_backend_bytes(bc, buf, n);
    }
    ERR_clear_error();
    if (!bc->closing)
        fz_flush_bio(&bc->tcp, bc->wbio);
}

static void fz_bconn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct fz_bconn *bc = s->data;
    size_t used = 0;

    bc->f->quiet = 0;
    if (n < 0) {
        fz_bconn_close(bc);
        return;
    }
    if (bc->ssl == NULL)
        used = fz_backend_bytes(bc, b->base, (size_t)n);
    if (used < (size_t)n && bc->ssl != NULL && !bc->closing) {
        BIO_write(bc->rbio, b->base + used, (int)((size_t)n - used));
        fz_bconn_tls_pump(bc);
    }
}

/* fz_bconn_begin - after the PROXY header (if any): the greeting, or TLS
 * first with backend_implicit_tls. */
static void fz_bconn_begin(struct fz_bconn *bc)
{
    if (!bc->f->v->cfg->services[0].backend_implicit_tls) {
        fz_reply(bc, "220 backend.test ESMTP fuzz\r\n");
    } else if (bc->f->backend_tls) {
        bc->greet_pending = true;
        fz_bconn_tls_start(bc);
    } else {
        bc->mode = FZ_B_NOTLS;
    }
}

static void fz_backend_on_connection(uv_stream_t *server, int status)
{
    struct fz *f = server->data;
    struct fz_bconn *bc;
    int ca;

    f->quiet = 0;
    if (status != 0)
        return;
    bc = calloc(1, sizeof *bc);
    if (bc == NULL)
        abort();
    bc->f = f;
    uv_tcp_init(&f->loop, &bc->tcp);
    bc->tcp.data = bc;
    f->nbconns++;
    if (uv_accept(server, (uv_stream_t *)&bc->tcp) != 0) {
        fz_bconn_close(bc);
        return;
    }
    uv_tcp_nodelay(&bc->tcp, 1);   /* no Nagle: every step shows at once */
    uv_read_start((uv_stream_t *)&bc->tcp, fz_alloc, fz_bconn_on_read);
    ca = f->v->cfg->services[0].backend_client_address;
    if (ca == CLIENT_ADDRESS_PROXY_V1 || ca == CLIENT_ADDRESS_PROXY_V2) {
        bc->mode = FZ_B_HEADER;   /* the header comes first, then TLS */
        return;
    }
    bc->mode = FZ_B_CMD;
    fz_bconn_begin(bc);
}

/* ---- the client ----------------------------------------------------------- */

static void fz_client_on_close(uv_handle_t *h)
{
    struct fz *f = h->data;

    f->cl.open = false;
    SSL_free(f->cl.ssl);   /* frees both BIOs */
    f->cl.ssl = NULL;
}

static void fz_client_close(struct fz *f)
{
    if (f->cl.open && !uv_is_closing((uv_handle_t *)&f->cl.tcp))
        uv_close((uv_handle_t *)&f->cl.tcp, fz_client_on_close);
}

/* fz_client_flush - what our TLS wrote goes to the socket. */
static void fz_client_flush(struct fz *f)
{
    fz_flush_bio(&f->cl.tcp, f->cl.wbio);
}

static void fz_client_tls_start(struct fz *f, const char *rest, size_t n);
static void fz_stop(struct fz *f);
static void fz_client_tls_pump(struct fz *f);

/*
 * fz_client_replies - plaintext from the proxy: it must be a sequence of
 * well-formed replies.  A 220 after the greeting is the go-ahead for
 * STARTTLS: what follows is TLS.
 */
static void fz_client_replies(struct fz *f, const char *p, size_t n)
{
    struct fz_client *c = &f->cl;
    struct smtp_reply rep;
    size_t off = 0;

    fz_trace("client", p, n);
    if (!c->checking)
        return;
    if (c->rlen + n > sizeof c->rbuf) {
        c->checking = false;   /* a reply this long: not ours to judge */
        return;
    }
    memcpy(c->rbuf + c->rlen, p, n);
    c->rlen += n;
    while (off < c->rlen) {
        enum smtp_reply_result r = smtp_reply_scan(c->rbuf + off,
                                                   c->rlen - off, 4096, 1000,
                                                   &rep);

        if (r == SMTP_REPLY_MORE)
            break;
        fz_check(r == SMTP_REPLY_OK, "the client got something not a reply");
        off += rep.len;
        c->nreplies++;
        if (rep.code == 220 && c->nreplies > 1 && c->tls == FZ_TLS_NONE) {
            c->checking = false;
            if (f->client_tls && !f->capped)
                fz_client_tls_start(f, c->rbuf + off, c->rlen - off);
            else
                c->tls = FZ_TLS_DEAD;   /* plaintext into a handshake */
            c->rlen = 0;
            return;
        }
    }
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
}

static void fz_client_tls_start(struct fz *f, const char *rest, size_t n)
{
    struct fz_client *c = &f->cl;

    c->ssl = fz_ssl_new(fz_client_ctx, &c->rbio, &c->wbio);
    SSL_set_connect_state(c->ssl);
    SSL_set_tlsext_host_name(c->ssl, "proxy.test");
    c->tls = FZ_TLS_HANDSHAKE;
    if (n > 0)
        BIO_write(c->rbio, rest, (int)n);
    fz_client_tls_pump(f);
}

/* fz_client_tls_pump - handshake, then decrypt into the reply check. */
static void fz_client_tls_pump(struct fz *f)
{
    struct fz_client *c = &f->cl;
    char buf[16384];
    size_t n;
    int r;

    if (c->tls == FZ_TLS_HANDSHAKE) {
        ERR_clear_error();
        r = SSL_do_handshake(c->ssl);
        fz_client_flush(f);
        if (r != 1) {
            if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
                ERR_clear_error();
                c->tls = FZ_TLS_DEAD;
                fz_client_close(f);
            }
            return;
        }
        c->tls = FZ_TLS_UP;
        c->checking = true;
        c->rlen = 0;
    }
    while (c->tls == FZ_TLS_UP) {
        ERR_clear_error();
        if (SSL_read_ex(c->ssl, buf, sizeof buf, &n) != 1)
            break;
        fz_client_replies(f, buf, n);
    }
    ERR_clear_error();
    if (c->tls == FZ_TLS_UP)
        fz_client_flush(f);
}

static void fz_client_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct fz *f = s->data;
    struct fz_client *c = &f->cl;

    f->quiet = 0;
    if (n < 0) {
        c->eof = true;
        fz_client_close(f);
        return;
    }
    if (c->tls == FZ_TLS_HANDSHAKE || c->tls == FZ_TLS_UP) {
        BIO_write(c->rbio, b->base, (int)n);
        fz_client_tls_pump(f);
        return;
    }
    if (c->tls == FZ_TLS_NONE)
        fz_client_replies(f, b->base, (size_t)n);
}

/* fz_client_send - one chunk, inside TLS when it is up. */
static void fz_client_send(struct fz *f, const uint8_t *p, size_t n)
{
    struct fz_client *c = &f->cl;
    size_t done;

    if (n == 0)
        return;
    if (c->tls != FZ_TLS_UP) {
        fz_write((uv_stream_t *)&c->tcp, p, n);
        return;
    }
    ERR_clear_error();
    if (SSL_write_ex(c->ssl, p, n, &done) != 1) {
        ERR_clear_error();
        return;
    }
    fz_client_flush(f);
}

/* fz_next_chunk - the length of the next chunk and how many input bytes it
 * uses (a separator is used but not sent). */
static size_t fz_next_chunk(struct fz *f, size_t *used)
{
    struct fz_client *c = &f->cl;
    const uint8_t *p = c->in + c->in_off;
    size_t left = c->in_len - c->in_off, n = left;
    const uint8_t *q;

    *used = left;
    if (c->steps >= FZ_MAX_STEPS)
        return left;
    switch (f->chunking) {
    case 1:
        q = memchr(p, '\n', left);
        if (q != NULL)
            n = *used = (size_t)(q - p) + 1;
        break;
    case 2:
        c->rng ^= c->rng << 13;
        c->rng ^= c->rng >> 17;
        c->rng ^= c->rng << 5;
        n = 1 + c->rng % 32;
        if (n > left)
            n = left;
        *used = n;
        break;
    case 3:
        q = memchr(p, 0xff, left);
        if (q != NULL) {
            n = (size_t)(q - p);
            *used = n + 1;
        }
        break;
    default:
        break;
    }
    return n;
}

static void fz_client_on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

/* fz_client_step - the proxy has gone quiet: the next chunk, or the end. */
static void fz_client_step(struct fz *f)
{
    struct fz_client *c = &f->cl;
    size_t n, used;

    if (!c->open || !c->connected || c->ended || c->eof ||
        c->tls == FZ_TLS_HANDSHAKE || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->in_off < c->in_len && !f->capped) {
        n = fz_next_chunk(f, &used);
        fz_client_send(f, c->in + c->in_off, n);
        c->in_off += used;
        c->steps++;
        return;
    }
    c->ended = true;
    if (f->end_stop) {
        fz_stop(f);   /* 421 to the client, which reads to the end */
        return;
    }
    if (c->tls == FZ_TLS_UP) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl);
        ERR_clear_error();
        fz_client_flush(f);
    }
    if (f->full_close) {
        fz_client_close(f);
        return;
    }
    c->sreq.data = f;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp,
                    fz_client_on_shutdown) != 0)
        fz_client_close(f);
}

static void fz_client_on_connect(uv_connect_t *req, int status)
{
    struct fz *f = req->data;

    f->quiet = 0;
    if (status != 0 || uv_is_closing((uv_handle_t *)&f->cl.tcp)) {
        fz_client_close(f);
        return;
    }
    f->cl.connected = true;
    uv_tcp_nodelay(&f->cl.tcp, 1);
    uv_read_start((uv_stream_t *)&f->cl.tcp, fz_alloc, fz_client_on_read);
    if (f->v->cfg->services[0].client_implicit_tls) {
        /* TLS from the first byte; the greeting comes inside it */
        f->cl.checking = false;
        if (f->client_tls)
            fz_client_tls_start(f, NULL, 0);
        else
            f->cl.tls = FZ_TLS_DEAD;
    }
    if (!f->wait_greeting)
        fz_client_step(f);   /* talk first */
}

/* ---- the iteration's frame ------------------------------------------------ */

static void fz_walk_print(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "fuzz_session: open handle %s%s%s\n",
            uv_handle_type_name(uv_handle_get_type(h)),
            uv_is_active(h) ? " active" : "",
            uv_is_closing(h) ? " closing" : "");
}

/* fz_on_guard - long after worker_stop() something is still open. */
static void fz_on_guard(uv_timer_t *t)
{
    struct fz *f = t->data;

    fprintf(stderr, "fuzz_session: still running %d ms after %s "
            "(client %s, %u backend connections, sessions %s)\n",
            f->stopped ? FZ_STOP_GRACE_MS : FZ_GUARD_MS,
            f->stopped ? "worker_stop()" : "the start",
            f->cl.open ? "open" : "closed", f->nbconns,
            f->w->ctx.sessions != NULL ? "left" : "none");
    uv_walk(&f->loop, fz_walk_print, NULL);
    abort();
}

/* fz_stop - the proxy shuts down: every session ends (421 4.3.2) and the
 * loop must run dry within FZ_STOP_GRACE_MS. */
static void fz_stop(struct fz *f)
{
    if (f->stopped)
        return;
    f->stopped = true;
    worker_stop(f->w);
    uv_timer_start(&f->guard, fz_on_guard, FZ_STOP_GRACE_MS, 0);
}

/* fz_on_cap - time is up. */
static void fz_on_cap(uv_timer_t *t)
{
    struct fz *f = t->data;

    f->capped = true;
    fz_stop(f);
}

static void fz_teardown(struct fz *f)
{
    f->torn_down = true;
    worker_stop(f->w);
    uv_close((uv_handle_t *)&f->blisten, NULL);
    uv_close((uv_handle_t *)&f->idle, NULL);
    uv_close((uv_handle_t *)&f->cap, NULL);
}

/* fz_on_idle - every loop turn: count quiet turns, step the client, and
 * end the iteration once everything is closed. */
static void fz_on_idle(uv_idle_t *h)
{
    struct fz *f = h->data;

    if (f->torn_down)
        return;
    if (!f->cl.open && f->nbconns == 0 && f->w->ctx.sessions == NULL) {
        fz_teardown(f);
        return;
    }
    if (++f->quiet < FZ_QUIET)
        return;
    f->quiet = 0;
    fz_client_step(f);
}

/* fz_drain_backlog - connections a previous iteration left in the
 * backend's accept queue (the proxy gave up on them) are dropped. */
static void fz_drain_backlog(void)
{
    int fd;

    while ((fd = accept4(fz_backend_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
        close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz *f = &fz_state;
    struct sockaddr_in sin;
    socklen_t slen = sizeof sin;
    char err[256];
    int lfd, bfd;
    uint64_t t0 = uv_hrtime();

    if (size < 4 || size > FZ_MAX_INPUT)
        return 0;
    fz_init();
    fz_drain_backlog();

    memset(f, 0, sizeof *f);
    f->variant = (data[0] & 7) | (data[3] & 0x10) >> 1;
    f->chunking = (data[0] >> 3) & 3;
    f->wait_greeting = (data[0] & 0x20) != 0;
    f->client_tls = (data[0] & 0x40) != 0;
    f->full_close = (data[0] & 0x80) != 0;
    f->fault = (enum fz_fault)(data[1] & 7);
    f->ehlo = (data[1] >> 3) & 3;
    f->starttls_454 = (data[1] & 0x20) != 0;
    f->auth_334 = (data[1] & 0x40) != 0;
    f->eod_554 = (data[1] & 0x80) != 0;
    f->fault_at = data[2];
    f->cl.rng = 0x9e3779b9u ^ (data[3] & 15);
    f->backend_tls = (data[3] & 0x20) != 0;
    f->end_stop = (data[3] & 0x40) != 0;
    f->cl.in = data + 4;
    f->cl.in_len = size - 4;
    f->cl.checking = true;
    f->v = &fz_variants[f->variant];

    FUZZ_CHECK(uv_loop_init(&f->loop) == 0);
    f->limits = connlimit_new(f->v->cfg->nservices);
    FUZZ_CHECK(f->limits != NULL);
    f->w = &fz_worker;
    {
        size_t vi = (size_t)(f->v - fz_variants);

        if (fz_gens[vi] == NULL)
            fz_gens[vi] = generation_new(f->v->cfg, f->v->tls, 1);
        FUZZ_CHECK(fz_gens[vi] != NULL);
        worker_init(f->w, &f->loop, fz_gens[vi], f->limits, 0);
    }
    f->w->ctx.log.out = fz_log;

    /* the proxy's listener, on a fresh port */
    lfd = listener_socket(&fz_laddr, err, sizeof err);
    FUZZ_CHECK(lfd >= 0);
    FUZZ_CHECK(getsockname(lfd, (struct sockaddr *)&sin, &slen) == 0);
    FUZZ_CHECK(worker_listen(f->w, &lfd, err, sizeof err) == 0);

    /* the backend */
    bfd = dup(fz_backend_fd);
    FUZZ_CHECK(bfd >= 0);
    uv_tcp_init(&f->loop, &f->blisten);
    f->blisten.data = f;
    FUZZ_CHECK(uv_tcp_open(&f->blisten, bfd) == 0);
    FUZZ_CHECK(uv_listen((uv_stream_t *)&f->blisten, 64,
                         fz_backend_on_connection) == 0);

    /* the client */
    uv_tcp_init(&f->loop, &f->cl.tcp);
    f->cl.tcp.data = f;
    f->cl.open = true;
    f->cl.creq.data = f;
    if (uv_tcp_connect(&f->cl.creq, &f->cl.tcp, (struct sockaddr *)&sin,
                       fz_client_on_connect) != 0)
        fz_client_close(f);

    uv_idle_init(&f->loop, &f->idle);
    f->idle.data = f;
    uv_idle_start(&f->idle, fz_on_idle);
    uv_timer_init(&f->loop, &f->cap);
    f->cap.data = f;
    uv_timer_start(&f->cap, fz_on_cap, FZ_CAP_MS, 0);
    uv_timer_init(&f->loop, &f->guard);
    f->guard.data = f;
    uv_timer_start(&f->guard, fz_on_guard, FZ_GUARD_MS, 0);
    uv_unref((uv_handle_t *)&f->guard);

    uv_run(&f->loop, UV_RUN_DEFAULT);
    /* only the guard may be left: everything else closed by itself */
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&f->loop) != 0) {
        uv_walk(&f->loop, fz_walk_print, NULL);
        FUZZ_CHECK(0);
    }
    FUZZ_CHECK(f->torn_down && f->w->ctx.sessions == NULL && f->nbconns == 0);
    FUZZ_CHECK(conn_loop_idle(&f->w->ctx.conns));
    worker_release(f->w);
    stats_free(&f->w->ctx.stats);  /* the proxy frees them after its scrape */
    connlimit_free(f->limits);
    if (fz_debug)
        fprintf(stderr, "fuzz_session: done in %llu ms%s\n",
                (unsigned long long)(uv_hrtime() - t0) / 1000000,
                f->capped ? " (capped)" : "");
    return 0;
}
