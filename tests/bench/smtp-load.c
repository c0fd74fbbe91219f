/*
 * smtp-load.c - SMTP load generator for the benchmarks.
 *
 * N concurrent sessions, each: greeting, EHLO, optionally STARTTLS, the
 * handshake and EHLO again, then M transactions (MAIL, RCPT, DATA, a body
 * of S bytes, optionally pipelined), or K NOOP round trips, or an idle
 * hold; then QUIT.  Sessions are started either to keep N open at once
 * (closed loop) or, with --rate, R per second on a clock whatever the
 * server's speed (open loop, N is then only the cap on open sessions).  Every reply code is checked against the one expected;
 * anything else is an error, and a run with errors is not a result (exit
 * status 1).  One machine-readable line on stdout, human text on stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "bench_conn.h"

#define LOAD_LINE_MAX 1024
#define LOAD_BODY_CHUNK (64 * 1024)
#define LOAD_MAX_SAMPLES (16u * 1024 * 1024)
#define LOAD_ERRORS_SHOWN 10
#define LOAD_FROM "MAIL FROM:<load@bench.invalid>\r\n"
#define LOAD_RCPT "RCPT TO:<sink@bench.invalid>\r\n"

enum load_state {
    LS_FREE,
    LS_CONNECT,
    LS_IMPLICIT_HS, /* implicit TLS: handshake before the greeting */
    LS_GREETING,
    LS_EHLO1,
    LS_STARTTLS,
    LS_HANDSHAKE,
    LS_EHLO2,
    LS_OPEN_MAIL,
    LS_OPEN_RCPT,
    LS_IDLE,
    LS_NOOP,
    LS_MAIL,
    LS_RCPT,
    LS_DATA,
    LS_PIPE,
    LS_BODY,
    LS_QUIT,
    LS_CLOSEWAIT,
};

static const char *const load_state_names[] = {
    "free", "connect", "implicit-handshake", "greeting", "ehlo", "starttls",
    "handshake", "ehlo-after-tls", "open-mail", "open-rcpt", "idle", "noop",
    "mail", "rcpt", "data", "pipelined-mail-rcpt-data", "end-of-data", "quit",
    "close-wait",
};

struct load;

struct load_sess {
    struct bench_conn conn;
    struct load *load;
    uv_connect_t creq;
    enum load_state state;
    int exp[3];
    unsigned nexp, iexp;
    int mline, mcode;
    int pending;  /* counted in load->pending (not yet past EHLO) */
    int held;     /* counted in load->held */
    int done;     /* 221 received: the session counts */
    unsigned msgs, noops;
    size_t body_off;
    uint64_t t_start, t_op;
    uint64_t last_ms;
    size_t linelen;
    char line[LOAD_LINE_MAX];
};

struct load_opts {
    const char *host;
    int port;
    unsigned conc;
    unsigned long total;   /* 0: until the duration ends */
    double duration;       /* seconds, 0: none */
    int starttls, implicit, pipeline, idle, tls_resume, open_txn;
    unsigned messages;
    size_t size;
    unsigned long noops;
    unsigned max_pending;  /* 0: no limit on sessions in setup */
    double rate;           /* sessions offered per second; 0: closed loop */
    double timeout;
    const char *ready_file;
    const char *ehlo_name;
    const char *ciphersuites;
    const char *groups;
};

struct load {
    struct load_opts o;
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    SSL_CTX *tls;
    SSL_SESSION *resume;
    char *msg;        /* body plus ".\r\n", shared by every session */
    size_t msglen;
    char ehlo[300];
    struct load_sess *slots;
    unsigned *freelist;
    unsigned nfree;
    unsigned active, pending, held, held_max;
    int held_reported, stopping, aborting, finished;
    unsigned long started, sessions, messages, errors, tls_sessions, resumed;
    unsigned long offered, missed; /* --rate: offers due, and those that
                                      found every slot busy */
    unsigned long long bytes;
    uint64_t t0, t_end;
    uv_timer_t sweep, deadline, pace;
    uv_signal_t sigint, sigterm;
    int deadline_on;
    uint32_t *lat;
    size_t nlat, caplat;
    char tls_info[160];
    struct bench_io io;
};

static void load_launch(struct load *L);
static void load_maybe_finish(struct load *L);
static void sess_message(struct load_sess *s);

static void usage(FILE *out)
{
    fprintf(out,
        "usage: smtp-load -p PORT [options]\n"
        "  -H, --host ADDR        numeric server address (default 127.0.0.1)\n"
        "  -p, --port PORT        server port (required)\n"
        "  -c, --concurrency N    concurrent sessions (default 1)\n"
        "  -n, --sessions N       total sessions (default: N = concurrency\n"
        "                         unless --duration is given)\n"
        "  -d, --duration SECS    start sessions until SECS have passed; with\n"
        "                         --idle: hold that long (default: until\n"
        "                         SIGTERM/SIGINT)\n"
        "  --starttls             EHLO, STARTTLS, handshake, EHLO again\n"
        "  --implicit-tls         TLS from the first byte\n"
        "  -m, --messages M       transactions per session (default 1)\n"
        "  -s, --size S           message size in bytes (default 4096)\n"
        "  --pipeline             send MAIL, RCPT and DATA in one write\n"
        "  --idle                 hold every session open after EHLO\n"
        "  --noop K               K NOOP round trips per session (latency)\n"
        "  --open-txn             with --idle/--noop: MAIL and RCPT first\n"
        "  --tls-resume           resume TLS sessions (tickets)\n"
        "  --max-pending N        sessions in setup at once (default 0 =\n"
        "                         unlimited; --idle: 200)\n"
        "  --rate R               offer R new sessions per second on a clock\n"
        "                         (open loop) instead of keeping -c open;\n"
        "                         -c is then the cap on open sessions\n"
        "                         (default 1000) and an offer that finds\n"
        "                         it reached is counted as missed\n"
        "  --timeout SECS         wait for each reply, and for the server\n"
        "                         to close after 221 (default 30)\n"
        "  --ready-file FILE      --idle: written when all sessions are held\n"
        "  --ehlo NAME            EHLO argument (default load.bench.invalid)\n"
        "  --ciphersuites LIST    TLS 1.3 suites to offer\n"
        "  --groups LIST          key exchange groups to offer\n"
        "Output: one line on stdout, sessions=.. messages=.. errors=.. ...;\n"
        "exit status 1 if any reply was not the expected one.\n");
}

/* load_now_us - monotonic microseconds. */
static uint64_t load_now_us(void)
{
    return uv_hrtime() / 1000u;
}

/* load_sample - keep one latency sample (microseconds). */
static void load_sample(struct load *L, uint64_t us)
{
    if (L->nlat == L->caplat) {
        size_t cap = L->caplat ? L->caplat * 2 : 4096;
        uint32_t *p;

        if (L->caplat >= LOAD_MAX_SAMPLES)
            return;
        p = realloc(L->lat, cap * sizeof *p);
        if (p == NULL)
            return;
        L->lat = p;
        L->caplat = cap;
    }
    L->lat[L->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* sess_count_error - count one failed session, show the first few. */
static void sess_count_error(struct load_sess *s, const char *fmt, ...)
{
    struct load *L = s->load;
    va_list ap;

    L->errors++;
    if (L->errors > LOAD_ERRORS_SHOWN) {
        if (L->errors == LOAD_ERRORS_SHOWN + 1)
            fprintf(stderr, "smtp-load: further errors not shown\n");
        return;
    }
    fprintf(stderr, "smtp-load: error in state %s: ",
            load_state_names[s->state]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* sess_fail - count an error and close the session. */
#define sess_fail(s, ...)                                                     \
    do {                                                                      \
        sess_count_error((s), __VA_ARGS__);                                   \
        bench_conn_close(&(s)->conn);                                         \
    } while (0)

/* sess_expect - the replies the next step waits for, in order. */
static void sess_expect(struct load_sess *s, enum load_state st, int a, int b,
                        int c)
{
    s->state = st;
    s->nexp = 0;
    s->iexp = 0;
    s->last_ms = uv_now(s->load->loop); /* the reply timeout starts now */
    s->exp[s->nexp++] = a;
    if (b != 0)
        s->exp[s->nexp++] = b;
    if (c != 0)
        s->exp[s->nexp++] = c;
}

/* sess_send - write a command; the session fails if it cannot. */
static int sess_send(struct load_sess *s, const char *text, size_t len)
{
    if (bench_conn_write(&s->conn, text, len, 0) != 0) {
        sess_fail(s, "cannot write");
        return -1;
    }
    return 0;
}

#define SESS_SEND(s, lit) sess_send((s), (lit), sizeof(lit) - 1)

/* sess_quit - QUIT, expect 221. */
static void sess_quit(struct load_sess *s)
{
    if (SESS_SEND(s, "QUIT\r\n") == 0)
        sess_expect(s, LS_QUIT, 221, 0, 0);
}

/* sess_noop - one NOOP round trip. */
static void sess_noop(struct load_sess *s)
{
    s->t_op = load_now_us();
    if (SESS_SEND(s, "NOOP\r\n") == 0)
        sess_expect(s, LS_NOOP, 250, 0, 0);
}

/* sess_after_open - past EHLO (and MAIL/RCPT with --open-txn). */
static void sess_after_open(struct load_sess *s)
{
    struct load *L = s->load;

    if (L->o.idle && L->stopping) {
        sess_quit(s);
        return;
    }
    if (L->o.idle) {
        s->state = LS_IDLE;
        s->held = 1;
        L->held++;
        if (L->held > L->held_max)
            L->held_max = L->held;
        if (L->held == L->o.conc && !L->held_reported) {
            L->held_reported = 1;
            fprintf(stderr, "smtp-load: held=%u sessions\n", L->held);
            if (L->o.ready_file != NULL) {
                FILE *f = fopen(L->o.ready_file, "w");

                if (f != NULL) {
                    fprintf(f, "held=%u\n", L->held);
                    fclose(f);
                }
            }
        }
        return;
    }
    if (L->o.noops > 0) {
        sess_noop(s);
        return;
    }
    if (L->o.messages > 0) {
        sess_message(s);
        return;
    }
    sess_quit(s);
}

/* sess_ready - the final EHLO was accepted. */
static void sess_ready(struct load_sess *s)
{
    struct load *L = s->load;

    if (s->pending) {
        s->pending = 0;
        L->pending--;
        load_launch(L);
    }
    /* a started session does its whole workload (at least one message);
     * the deadline only stops new sessions, further messages and holds */
    if (L->o.open_txn) {
        if (SESS_SEND(s, LOAD_FROM) == 0)
            sess_expect(s, LS_OPEN_MAIL, 250, 0, 0);
        return;
    }
    sess_after_open(s);
}

/* sess_message - start one transaction. */
static void sess_message(struct load_sess *s)
{
    if (s->load->o.pipeline) {
        if (SESS_SEND(s, LOAD_FROM LOAD_RCPT "DATA\r\n") == 0)
            sess_expect(s, LS_PIPE, 250, 250, 354);
    } else if (SESS_SEND(s, LOAD_FROM) == 0) {
        sess_expect(s, LS_MAIL, 250, 0, 0);
    }
}

/* sess_body - send message bytes up to the high watermark; on_drain
 * continues. */
static void sess_body(struct load_sess *s)
{
    struct load *L = s->load;

    s->last_ms = uv_now(L->loop); /* progress: the peer is reading */
    while (s->body_off < L->msglen &&
           s->conn.wq_bytes < BENCH_CONN_HIGH_WATER && !s->conn.closing) {
        size_t chunk = L->msglen - s->body_off;

        if (chunk > LOAD_BODY_CHUNK)
            chunk = LOAD_BODY_CHUNK;
        if (bench_conn_write(&s->conn, L->msg + s->body_off, chunk, 1) != 0) {
            sess_fail(s, "cannot write message");
            return;
        }
        s->body_off += chunk;
    }
}

/* sess_step - every reply the state waited for has arrived. */
static void sess_step(struct load_sess *s)
{
    struct load *L = s->load;

    switch (s->state) {
    case LS_GREETING:
        if (sess_send(s, L->ehlo, strlen(L->ehlo)) == 0)
            sess_expect(s, LS_EHLO1, 250, 0, 0);
        break;
    case LS_EHLO1:
        if (L->o.starttls) {
            if (SESS_SEND(s, "STARTTLS\r\n") == 0)
                sess_expect(s, LS_STARTTLS, 220, 0, 0);
        } else {
            sess_ready(s);
        }
        break;
    case LS_STARTTLS:
        s->state = LS_HANDSHAKE;
        s->nexp = s->iexp = 0;
        if (bench_conn_start_tls(&s->conn, L->tls, 0,
                                 L->o.tls_resume ? L->resume : NULL) != 0) {
            char e[160];

            sess_fail(s, "cannot start TLS: %s", bench_tls_error(e, sizeof e));
        }
        break;
    case LS_EHLO2:
        sess_ready(s);
        break;
    case LS_OPEN_MAIL:
        if (SESS_SEND(s, LOAD_RCPT) == 0)
            sess_expect(s, LS_OPEN_RCPT, 250, 0, 0);
        break;
    case LS_OPEN_RCPT:
        sess_after_open(s);
        break;
    case LS_NOOP:
        load_sample(L, load_now_us() - s->t_op);
        s->noops++;
        if (s->noops < L->o.noops && !L->aborting)
            sess_noop(s);
        else
            sess_quit(s);
        break;
    case LS_MAIL:
        if (SESS_SEND(s, LOAD_RCPT) == 0)
            sess_expect(s, LS_RCPT, 250, 0, 0);
        break;
    case LS_RCPT:
        if (SESS_SEND(s, "DATA\r\n") == 0)
            sess_expect(s, LS_DATA, 354, 0, 0);
        break;
    case LS_DATA:
    case LS_PIPE:
        sess_expect(s, LS_BODY, 250, 0, 0);
        s->body_off = 0;
        sess_body(s);
        break;
    case LS_BODY:
        L->messages++;
        L->bytes += L->o.size;
        s->msgs++;
        if (s->msgs < L->o.messages && !L->stopping)
            sess_message(s);
        else
            sess_quit(s);
        break;
    case LS_QUIT:
        s->done = 1;
        L->sessions++;
        if (L->o.noops == 0 && !L->o.idle)
            load_sample(L, load_now_us() - s->t_start);
        s->state = LS_CLOSEWAIT; /* RFC 5321 4.1.1.10: the server closes */
        s->nexp = s->iexp = 0;
        break;
    default:
        sess_fail(s, "internal: no step for this state");
        break;
    }
}

/* sess_reply - one complete reply; check it against the expectation. */
static void sess_reply(struct load_sess *s, int code)
{
    int want;

    if (s->iexp >= s->nexp) {
        sess_fail(s, "unsolicited reply: %.200s", s->line);
        return;
    }
    want = s->exp[s->iexp++];
    if (code != want) {
        sess_fail(s, "expected %d, got: %.200s", want, s->line);
        return;
    }
    if (s->iexp == s->nexp)
        sess_step(s);
}

/* sess_on_data - split replies into lines; RFC 5321 4.2.1 multiline. */
static void sess_on_data(struct bench_conn *c, const char *p, size_t n)
{
    struct load_sess *s = c->user;
    size_t i = 0;

    s->last_ms = uv_now(s->load->loop);
    while (i < n && !c->closing) {
        const char *lf;
        size_t take, len;
        int code, cont;

        if (s->state == LS_CLOSEWAIT)
            return; /* close_notify etc. after 221: nothing to check */
        if (s->state == LS_HANDSHAKE) {
            /* bytes behind the 220 to STARTTLS would be injected before
             * the handshake (RFC 3207 5) */
            sess_fail(s, "%zu plaintext bytes after the STARTTLS reply",
                      n - i);
            return;
        }
        lf = memchr(p + i, '\n', n - i);
        take = lf != NULL ? (size_t)(lf - (p + i)) + 1 : n - i;
        if (s->linelen + take >= sizeof s->line) {
            sess_fail(s, "reply line longer than %d bytes", LOAD_LINE_MAX);
            return;
        }
        memcpy(s->line + s->linelen, p + i, take);
        s->linelen += take;
        i += take;
        if (lf == NULL)
            return;
        len = s->linelen - 1;
        if (len > 0 && s->line[len - 1] == '\r')
            len--;
        s->line[len] = '\0';
        s->linelen = 0;
        if (len < 3 || s->line[0] < '2' || s->line[0] > '5' ||
            s->line[1] < '0' || s->line[1] > '9' || s->line[2] < '0' ||
            s->line[2] > '9' ||
            (len > 3 && s->line[3] != ' ' && s->line[3] != '-')) {
            sess_fail(s, "malformed reply: %.200s", s->line);
            return;
        }
        code = (s->line[0] - '0') * 100 + (s->line[1] - '0') * 10 +
               (s->line[2] - '0');
        cont = len > 3 && s->line[3] == '-';
        if (s->mline && code != s->mcode) {
            sess_fail(s, "multiline reply changed its code: %.200s", s->line);
            return;
        }
        if (cont) {
            s->mline = 1;
            s->mcode = code;
            continue;
        }
        s->mline = 0;
        sess_reply(s, code);
    }
}

static void sess_on_handshake(struct bench_conn *c)
{
    struct load_sess *s = c->user;
    struct load *L = s->load;

    L->tls_sessions++;
    if (SSL_session_reused(c->ssl))
        L->resumed++;
    if (L->tls_info[0] == '\0') {
        int group = (int)SSL_get_negotiated_group(c->ssl);
        const char *gname = SSL_group_to_name(c->ssl, group);

        snprintf(L->tls_info, sizeof L->tls_info, "%s %s group=%s",
                 SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
                 gname != NULL ? gname : "?");
    }
    if (s->state == LS_IMPLICIT_HS) {
        sess_expect(s, LS_GREETING, 220, 0, 0);
        return;
    }
    if (s->state != LS_HANDSHAKE) {
        sess_fail(s, "handshake finished in the wrong state");
        return;
    }
    if (sess_send(s, L->ehlo, strlen(L->ehlo)) == 0)
        sess_expect(s, LS_EHLO2, 250, 0, 0);
}

static void sess_on_eof(struct bench_conn *c)
{
    struct load_sess *s = c->user;

    if (s->state != LS_CLOSEWAIT)
        sess_fail(s, "server closed the connection");
    else
        bench_conn_close(c);
}

static void sess_on_error(struct bench_conn *c, const char *what)
{
    struct load_sess *s = c->user;

    if (!s->done) /* a reset after 221 does not spoil the session */
        sess_count_error(s, "%s", what);
}

static void sess_on_drain(struct bench_conn *c)
{
    struct load_sess *s = c->user;

    if (s->state == LS_BODY && s->body_off < s->load->msglen)
        sess_body(s);
}

static void sess_on_close(struct bench_conn *c)
{
    struct load_sess *s = c->user;
    struct load *L = s->load;

    if (s->pending)
        L->pending--;
    if (s->held)
        L->held--;
    s->pending = s->held = 0;
    s->state = LS_FREE;
    L->active--;
    L->freelist[L->nfree++] = (unsigned)(s - L->slots);
    load_launch(L);
}

static const struct bench_conn_ops sess_ops = {
    .on_data = sess_on_data,
    .on_handshake = sess_on_handshake,
    .on_eof = sess_on_eof,
    .on_error = sess_on_error,
    .on_drain = sess_on_drain,
    .on_close = sess_on_close,
};

static void sess_on_connect(uv_connect_t *req, int status)
{
    struct load_sess *s = req->data;
    struct load *L = s->load;
    int r;

    if (s->conn.closing)
        return;
    if (status < 0) {
        sess_fail(s, "connect: %s", uv_strerror(status));
        return;
    }
    s->last_ms = uv_now(L->loop);
    r = bench_conn_start_read(&s->conn);
    if (r != 0) {
        sess_fail(s, "read: %s", uv_strerror(r));
        return;
    }
    if (L->o.implicit) {
        s->state = LS_IMPLICIT_HS;
        if (bench_conn_start_tls(&s->conn, L->tls, 0,
                                 L->o.tls_resume ? L->resume : NULL) != 0) {
            char e[160];

            sess_fail(s, "cannot start TLS: %s", bench_tls_error(e, sizeof e));
        }
        return;
    }
    sess_expect(s, LS_GREETING, 220, 0, 0);
}

/* sess_start - open one session in a free slot; 0 or -1. */
static int sess_start(struct load *L, struct load_sess *s)
{
    int r;

    memset(s, 0, sizeof *s);
    s->load = L;
    if (bench_conn_init(L->loop, &s->conn, &sess_ops, &L->io, s) != 0)
        return -1;
    s->creq.data = s;
    s->state = LS_CONNECT;
    s->t_start = load_now_us();
    s->last_ms = uv_now(L->loop);
    s->pending = 1;
    L->pending++;
    L->active++;
    L->started++;
    r = uv_tcp_connect(&s->creq, &s->conn.tcp,
                       (const struct sockaddr *)&L->addr, sess_on_connect);
    if (r != 0) {
        sess_fail(s, "connect: %s", uv_strerror(r));
        return 0; /* counted and closing; its slot comes back */
    }
    return 0;
}

/* load_want_more - the run is to start further sessions. */
static int load_want_more(const struct load *L)
{
    unsigned long n = L->o.rate > 0 ? L->offered : L->started;

    return !L->stopping && (L->o.total == 0 || n < L->o.total);
}

/* load_start_one - start a session in a free slot (there is one); on
 * failure the slot goes back, the run stops, and -1. */
static int load_start_one(struct load *L)
{
    unsigned i = L->freelist[--L->nfree];

    if (sess_start(L, &L->slots[i]) == 0)
        return 0;
    L->freelist[L->nfree++] = i;
    L->errors++;
    fprintf(stderr, "smtp-load: cannot create a socket\n");
    L->stopping = 1;
    return -1;
}

/* load_launch - fill free slots while the run wants more sessions (closed
 * loop; with --rate only the pace timer starts sessions). */
static void load_launch(struct load *L)
{
    while (L->o.rate == 0 && !L->stopping && L->nfree > 0 &&
           (L->o.total == 0 || L->started < L->o.total) &&
           (L->o.max_pending == 0 || L->pending < L->o.max_pending)) {
        if (load_start_one(L) != 0)
            break;
    }
    load_maybe_finish(L);
}

static void load_close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* load_maybe_finish - when nothing is left to run, close the timers so
 * that uv_run returns. */
static void load_maybe_finish(struct load *L)
{
    if (L->finished || L->active > 0)
        return;
    if (load_want_more(L))
        return;
    L->finished = 1;
    L->t_end = uv_hrtime();
    load_close_handle((uv_handle_t *)&L->pace);
    load_close_handle((uv_handle_t *)&L->sweep);
    load_close_handle((uv_handle_t *)&L->deadline);
    load_close_handle((uv_handle_t *)&L->sigint);
    load_close_handle((uv_handle_t *)&L->sigterm);
}

/* load_stop - start no new sessions; release held ones. */
static void load_stop(struct load *L)
{
    if (L->stopping)
        return;
    L->stopping = 1;
    if (L->deadline_on)
        uv_timer_stop(&L->deadline);
    uv_timer_stop(&L->pace);
    for (unsigned i = 0; i < L->o.conc; i++) {
        struct load_sess *s = &L->slots[i];

        if (s->state == LS_IDLE && !s->conn.closing) {
            s->held = 0;
            L->held--;
            sess_quit(s);
        }
    }
    load_maybe_finish(L);
}

/* load_on_pace - --rate: start every session that is due by now, at
 * t0 + k / rate; one that finds no free slot is missed, not queued (the
 * offered load does not bend to the server's speed). */
static void load_on_pace(uv_timer_t *t)
{
    struct load *L = t->data;
    double elapsed = (double)(uv_hrtime() - L->t0) / 1e9;
    unsigned long due = (unsigned long)(elapsed * L->o.rate) + 1;

    while (L->offered < due && load_want_more(L)) {
        L->offered++;
        if (L->nfree == 0) {
            L->missed++;
            continue;
        }
        if (load_start_one(L) != 0) {
            uv_timer_stop(&L->pace);
            break;
        }
    }
    if (!load_want_more(L))
        uv_timer_stop(&L->pace);
    load_maybe_finish(L);
}

static void load_on_deadline(uv_timer_t *t)
{
    load_stop(t->data);
}

static void load_on_signal(uv_signal_t *h, int signum)
{
    struct load *L = h->data;

    (void)signum;
    if (!L->stopping) {
        fprintf(stderr, "smtp-load: stopping\n");
        load_stop(L);
        return;
    }
    /* second signal: abandon what is in flight, as errors */
    L->aborting = 1;
    for (unsigned i = 0; i < L->o.conc; i++) {
        struct load_sess *s = &L->slots[i];

        if (s->state != LS_FREE && s->state != LS_CLOSEWAIT &&
            !s->conn.closing)
            sess_fail(s, "interrupted");
    }
}

/* load_on_sweep - time out sessions that wait too long for a reply. */
static void load_on_sweep(uv_timer_t *t)
{
    struct load *L = t->data;
    uint64_t now = uv_now(L->loop);
    uint64_t limit = (uint64_t)(L->o.timeout * 1000.0);

    for (unsigned i = 0; i < L->o.conc; i++) {
        struct load_sess *s = &L->slots[i];

        if (s->state == LS_FREE || s->state == LS_IDLE || s->conn.closing)
            continue;
        if (s->state == LS_CLOSEWAIT) {
            if (now - s->last_ms > limit) {
                sess_count_error(s, "server did not close within %.0f s "
                                    "after 221", L->o.timeout);
                bench_conn_close(&s->conn);
            }
            continue;
        }
        if (now - s->last_ms > limit)
            sess_fail(s, "timeout after %.0f s", L->o.timeout);
    }
}

/* load_new_session_cb - keep the latest ticket for --tls-resume. */
static int load_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct load *L = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

    SSL_SESSION_free(L->resume);
    L->resume = sess;
    return 1; /* we keep the reference */
}

/* load_tls_ctx - the client context: no verification (benchmark). */
static SSL_CTX *load_tls_ctx(struct load *L)
{
    char e[160];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_app_data(ctx, L);
    if (L->o.tls_resume) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, load_new_session_cb);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    if (L->o.ciphersuites != NULL &&
        SSL_CTX_set_ciphersuites(ctx, L->o.ciphersuites) != 1) {
        fprintf(stderr, "smtp-load: --ciphersuites %s: %s\n",
                L->o.ciphersuites, bench_tls_error(e, sizeof e));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (L->o.groups != NULL && SSL_CTX_set1_groups_list(ctx, L->o.groups) != 1) {
        fprintf(stderr, "smtp-load: --groups %s: %s\n", L->o.groups,
                bench_tls_error(e, sizeof e));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* load_make_message - headers and 7-bit lines that never start with a
 * dot, exactly size bytes ending in CRLF, then the terminator. */
static int load_make_message(struct load *L)
{
    static const char head[] = "From: <load@bench.invalid>\r\n"
                               "To: <sink@bench.invalid>\r\n"
                               "Subject: smtp-load\r\n\r\n";
    size_t size = L->o.size, off;
    char *m;

    if (size < sizeof head - 1 + 2)
        size = sizeof head - 1 + 2;
    L->o.size = size;
    m = malloc(size + 3);
    if (m == NULL)
        return -1;
    memcpy(m, head, sizeof head - 1);
    off = sizeof head - 1;
    while (off < size) {
        size_t left = size - off;
        size_t line = left > 78 ? 76 : left - 2;

        if (left > 78 && left - 78 < 3)
            line = left - 5; /* leave room for a last line of >= 1 char */
        for (size_t k = 0; k < line; k++)
            m[off + k] = (char)('a' + (off + k) % 26);
        off += line;
        m[off++] = '\r';
        m[off++] = '\n';
    }
    memcpy(m + size, ".\r\n", 3);
    L->msg = m;
    L->msglen = size + 3;
    return 0;
}

/* load_parse_ul - strtoul with a range check. */
static int load_parse_ul(const char *s, unsigned long lo, unsigned long hi,
                         unsigned long *out)
{
    char *end;
    unsigned long v;

    if (*s == '-' || *s == '\0')
        return -1;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int load_parse_secs(const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v > 0) || v > 1e6)
        return -1;
    *out = v;
    return 0;
}

static int load_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* load_percentile - p in [0,100] of the sorted samples. */
static uint32_t load_percentile(const struct load *L, unsigned p)
{
    if (L->nlat == 0)
        return 0;
    return L->lat[(L->nlat - 1) * p / 100];
}

/* load_options - parse argv into L->o; 0, or the exit status. */
static int load_options(struct load *L, int argc, char **argv)
{
    enum {
        O_STARTTLS = 256, O_IMPLICIT, O_PIPELINE, O_IDLE, O_NOOP, O_RESUME,
        O_MAXPEND, O_TIMEOUT, O_READY, O_EHLO, O_SUITES, O_GROUPS, O_OPENTXN,
        O_RATE,
    };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"concurrency", required_argument, NULL, 'c'},
        {"sessions", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'},
        {"messages", required_argument, NULL, 'm'},
        {"size", required_argument, NULL, 's'},
        {"starttls", no_argument, NULL, O_STARTTLS},
        {"implicit-tls", no_argument, NULL, O_IMPLICIT},
        {"pipeline", no_argument, NULL, O_PIPELINE},
        {"idle", no_argument, NULL, O_IDLE},
        {"noop", required_argument, NULL, O_NOOP},
        {"open-txn", no_argument, NULL, O_OPENTXN},
        {"tls-resume", no_argument, NULL, O_RESUME},
        {"max-pending", required_argument, NULL, O_MAXPEND},
        {"rate", required_argument, NULL, O_RATE},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"ready-file", required_argument, NULL, O_READY},
        {"ehlo", required_argument, NULL, O_EHLO},
        {"ciphersuites", required_argument, NULL, O_SUITES},
        {"groups", required_argument, NULL, O_GROUPS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long v;
    int opt, have_total = 0, have_pending = 0, have_conc = 0;

    L->o.host = "127.0.0.1";
    L->o.conc = 1;
    L->o.messages = 1;
    L->o.size = 4096;
    L->o.timeout = 30;
    L->o.ehlo_name = "load.bench.invalid";
    while ((opt = getopt_long(argc, argv, "H:p:c:n:d:m:s:h", longopts,
                              NULL)) != -1) {
        switch (opt) {
        case 'H': L->o.host = optarg; break;
        case 'p':
            if (load_parse_ul(optarg, 1, 65535, &v) != 0)
                goto bad;
            L->o.port = (int)v;
            break;
        case 'c':
            if (load_parse_ul(optarg, 1, 1000000, &v) != 0)
                goto bad;
            L->o.conc = (unsigned)v;
            have_conc = 1;
            break;
        case 'n':
            if (load_parse_ul(optarg, 1, 1000000000UL, &v) != 0)
                goto bad;
            L->o.total = v;
            have_total = 1;
            break;
        case 'd':
            if (load_parse_secs(optarg, &L->o.duration) != 0)
                goto bad;
            break;
        case 'm':
            if (load_parse_ul(optarg, 0, 100000000UL, &v) != 0)
                goto bad;
            L->o.messages = (unsigned)v;
            break;
        case 's':
            if (load_parse_ul(optarg, 0, 1024UL * 1024 * 1024, &v) != 0)
                goto bad;
            L->o.size = v;
            break;
        case O_STARTTLS: L->o.starttls = 1; break;
        case O_IMPLICIT: L->o.implicit = 1; break;
        case O_PIPELINE: L->o.pipeline = 1; break;
        case O_IDLE: L->o.idle = 1; break;
        case O_OPENTXN: L->o.open_txn = 1; break;
        case O_RESUME: L->o.tls_resume = 1; break;
        case O_NOOP:
            if (load_parse_ul(optarg, 1, 1000000000UL, &v) != 0)
                goto bad;
            L->o.noops = v;
            break;
        case O_MAXPEND:
            if (load_parse_ul(optarg, 0, 1000000, &v) != 0)
                goto bad;
            L->o.max_pending = (unsigned)v;
            have_pending = 1;
            break;
        case O_TIMEOUT:
            if (load_parse_secs(optarg, &L->o.timeout) != 0)
                goto bad;
            break;
        case O_RATE:
            if (load_parse_secs(optarg, &L->o.rate) != 0)
                goto bad;
            break;
        case O_READY: L->o.ready_file = optarg; break;
        case O_EHLO: L->o.ehlo_name = optarg; break;
        case O_SUITES: L->o.ciphersuites = optarg; break;
        case O_GROUPS: L->o.groups = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || L->o.port == 0) {
        usage(stderr);
        return 2;
    }
    if (L->o.starttls && L->o.implicit) {
        fprintf(stderr, "smtp-load: --starttls and --implicit-tls exclude "
                        "each other\n");
        return 2;
    }
    if (L->o.idle && L->o.noops > 0) {
        fprintf(stderr, "smtp-load: --idle and --noop exclude each other\n");
        return 2;
    }
    if (L->o.open_txn && !L->o.idle && L->o.noops == 0) {
        fprintf(stderr, "smtp-load: --open-txn needs --idle or --noop\n");
        return 2;
    }
    if (L->o.rate > 0) {
        if (L->o.idle) {
            fprintf(stderr, "smtp-load: --rate and --idle exclude each other\n");
            return 2;
        }
        if (!have_total && L->o.duration == 0) {
            fprintf(stderr, "smtp-load: --rate needs --sessions or --duration\n");
            return 2;
        }
        if (!have_conc)
            L->o.conc = 1000;
    }
    if (L->o.idle) {
        if (have_total && L->o.total != L->o.conc) {
            fprintf(stderr, "smtp-load: --idle holds --concurrency sessions; "
                            "drop --sessions\n");
            return 2;
        }
        L->o.total = L->o.conc;
        if (!have_pending)
            L->o.max_pending = 200;
    } else if (!have_total && L->o.duration == 0) {
        L->o.total = L->o.conc;
    }
    if (strlen(L->o.ehlo_name) > 255 || strpbrk(L->o.ehlo_name, "\r\n")) {
        fprintf(stderr, "smtp-load: bad --ehlo\n");
        return 2;
    }
    snprintf(L->ehlo, sizeof L->ehlo, "EHLO %s\r\n", L->o.ehlo_name);
    return -1; /* go on */
bad:
    fprintf(stderr, "smtp-load: bad value for -%c: %s\n",
            opt < 256 ? opt : '-', optarg);
    return 2;
}

/* load_report - the result line and the human summary. */
static void load_report(struct load *L)
{
    double secs = (double)(L->t_end - L->t0) / 1e9;

    if (secs <= 0)
        secs = 1e-9;
    if (L->nlat > 0)
        qsort(L->lat, L->nlat, sizeof *L->lat, load_cmp_u32);
    fprintf(stderr,
            "smtp-load: %lu sessions (%lu started), %lu messages, %lu errors "
            "in %.3f s; %lu TLS handshakes (%lu resumed)%s%s; latency "
            "samples=%zu (%s)\n",
            L->sessions, L->started, L->messages, L->errors, secs,
            L->tls_sessions, L->resumed, L->tls_info[0] ? "; " : "",
            L->tls_info, L->nlat,
            L->o.noops ? "NOOP round trip" : "whole session");
    printf("sessions=%lu messages=%lu errors=%lu seconds=%.3f "
           "sessions_per_s=%.1f msgs_per_s=%.1f mbytes_per_s=%.2f "
           "p50_us=%" PRIu32 " p99_us=%" PRIu32 " held=%u tls_resumed=%lu "
           "bytes=%llu offered=%lu missed=%lu\n",
           L->sessions, L->messages, L->errors, secs,
           (double)L->sessions / secs, (double)L->messages / secs,
           (double)L->bytes / secs / 1e6, load_percentile(L, 50),
           load_percentile(L, 99), L->held_max, L->resumed, L->bytes,
           L->o.rate > 0 ? L->offered : L->started, L->missed);
    if (L->o.rate > 0)
        fprintf(stderr, "smtp-load: offered %lu sessions at %.1f/s; %lu "
                        "missed (found all %u slots busy)\n",
                L->offered, L->o.rate, L->missed, L->o.conc);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct load *L;
    unsigned long nofile;
    int r, rc;

    L = calloc(1, sizeof *L);
    if (L == NULL)
        return 1;
    rc = load_options(L, argc, argv);
    if (rc >= 0) {
        free(L);
        return rc;
    }
    signal(SIGPIPE, SIG_IGN);
    nofile = bench_raise_nofile();
    if (nofile < (unsigned long)L->o.conc + 16)
        fprintf(stderr, "smtp-load: warning: open files limit %lu is below "
                        "the concurrency %u\n", nofile, L->o.conc);
    if (uv_ip4_addr(L->o.host, L->o.port, (struct sockaddr_in *)&L->addr) != 0 &&
        uv_ip6_addr(L->o.host, L->o.port, (struct sockaddr_in6 *)&L->addr) != 0) {
        fprintf(stderr, "smtp-load: bad address %s\n", L->o.host);
        free(L);
        return 2;
    }
    L->slots = calloc(L->o.conc, sizeof *L->slots);
    L->freelist = calloc(L->o.conc, sizeof *L->freelist);
    if (L->slots == NULL || L->freelist == NULL || load_make_message(L) != 0 ||
        ((L->o.starttls || L->o.implicit) &&
         (L->tls = load_tls_ctx(L)) == NULL)) {
        fprintf(stderr, "smtp-load: setup failed\n");
        free(L->slots);
        free(L->freelist);
        free(L->msg);
        free(L);
        return 1;
    }
    for (unsigned i = 0; i < L->o.conc; i++)
        L->freelist[i] = L->o.conc - 1 - i;
    L->nfree = L->o.conc;

    L->loop = uv_default_loop();
    uv_timer_init(L->loop, &L->sweep);
    uv_timer_init(L->loop, &L->deadline);
    uv_timer_init(L->loop, &L->pace);
    uv_signal_init(L->loop, &L->sigint);
    uv_signal_init(L->loop, &L->sigterm);
    L->sweep.data = L->deadline.data = L->pace.data = L->sigint.data =
        L->sigterm.data = L;
    uv_timer_start(&L->sweep, load_on_sweep, 1000, 1000);
    if (L->o.duration > 0) {
        uv_timer_start(&L->deadline, load_on_deadline,
                       (uint64_t)(L->o.duration * 1000.0), 0);
        L->deadline_on = 1;
    }
    uv_signal_start(&L->sigint, load_on_signal, SIGINT);
    uv_signal_start(&L->sigterm, load_on_signal, SIGTERM);

    L->t0 = uv_hrtime();
    if (L->o.rate > 0)
        uv_timer_start(&L->pace, load_on_pace, 0, 1);
    load_launch(L);
    uv_run(L->loop, UV_RUN_DEFAULT);
    r = uv_loop_close(L->loop);
    if (r != 0)
        fprintf(stderr, "smtp-load: handles left open at exit\n");
    if (L->t_end == 0)
        L->t_end = uv_hrtime();
    load_report(L);
    rc = (L->errors > 0 || L->sessions == 0 || r != 0) ? 1 : 0;
    SSL_SESSION_free(L->resume);
    SSL_CTX_free(L->tls);
    free(L->lat);
    free(L->slots);
    free(L->freelist);
    free(L->msg);
    free(L);
    return rc;
}
