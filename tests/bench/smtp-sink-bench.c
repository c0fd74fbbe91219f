/*
 * smtp-sink-bench.c - an SMTP server that accepts mail as fast as it can
 * and discards it, with optional STARTTLS: the backend of the benchmarks.
 *
 * Replies to every complete command line in the input (RFC 2920
 * pipelining), batching the replies of one read into one write.  DATA is
 * scanned for CRLF.CRLF without being stored.  Postfix's smtp-sink has no
 * TLS, which is why this exists.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "bench_conn.h"

#define SINK_LINE_MAX 1024 /* RFC 5321 4.5.3.1.4 says 512; be lenient */
#define SINK_OUT_MAX 1024

struct sink;

struct sink_conn {
    struct bench_conn conn;
    struct sink *sink;
    struct sink_conn *prev, *next;
    int in_data;
    int dstate;       /* CRLF.CRLF scanner state, see sink_data_scan */
    int has_mail, has_rcpt;
    int discard_line; /* rest of an over-long line is being skipped */
    size_t linelen;
    size_t outlen;
    char out[SINK_OUT_MAX];
    char line[SINK_LINE_MAX];
};

struct sink {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_signal_t sigint, sigterm;
    SSL_CTX *tls; /* NULL: STARTTLS not offered */
    const char *hostname;
    int verbose;
    int stopping;
    struct sink_conn *conns;
    unsigned long open, total, messages, rejects, tls_sessions, dropped;
    unsigned long long bytes;
    struct bench_io io;
};

enum sink_act { SINK_NEXT, SINK_STARTTLS, SINK_QUIT };

static void usage(FILE *out)
{
    fprintf(out,
            "usage: smtp-sink-bench -p PORT [-H ADDR] [--cert FILE --key FILE]\n"
            "                       [--hostname NAME] [-v]\n"
            "  -p, --port PORT    port to listen on (required)\n"
            "  -H, --host ADDR    numeric IPv4 or IPv6 address (default 127.0.0.1)\n"
            "  --cert, --key      PEM certificate chain and key: offer STARTTLS\n"
            "  --hostname NAME    name in the greeting and EHLO reply\n"
            "  -v, --verbose      log every failed connection\n");
}

/* sink_reply_flush - write the batched replies. */
static int sink_reply_flush(struct sink_conn *sc)
{
    int r = 0;

    if (sc->outlen > 0 && !sc->conn.closing)
        r = bench_conn_write(&sc->conn, sc->out, sc->outlen, 0);
    sc->outlen = 0;
    return r;
}

/* sink_reply - queue one reply (text includes CRLF). */
static void sink_reply(struct sink_conn *sc, const char *text)
{
    size_t n = strlen(text);

    if (sc->outlen + n > sizeof sc->out)
        (void)sink_reply_flush(sc);
    if (n > sizeof sc->out) { /* cannot happen with our replies */
        (void)bench_conn_write(&sc->conn, text, n, 0);
        return;
    }
    memcpy(sc->out + sc->outlen, text, n);
    sc->outlen += n;
}

/* sink_verb - does the line start with verb, followed by end or space? */
static int sink_verb(const char *line, size_t len, const char *verb)
{
    size_t v = strlen(verb);

    if (len < v || strncasecmp(line, verb, v) != 0)
        return 0;
    return len == v || line[v] == ' ';
}

/* sink_command - act on one command line (CRLF stripped). */
static enum sink_act sink_command(struct sink_conn *sc, const char *line,
                                  size_t len)
{
    struct sink *s = sc->sink;
    char buf[512];

    if (sink_verb(line, len, "EHLO")) {
        sc->has_mail = sc->has_rcpt = 0;
        snprintf(buf, sizeof buf,
                 "250-%s\r\n250-PIPELINING\r\n250-SIZE 0\r\n250-8BITMIME\r\n"
                 "%s250 ENHANCEDSTATUSCODES\r\n",
                 s->hostname,
                 s->tls != NULL && sc->conn.ssl == NULL ? "250-STARTTLS\r\n"
                                                        : "");
        sink_reply(sc, buf);
    } else if (sink_verb(line, len, "HELO")) {
        sc->has_mail = sc->has_rcpt = 0;
        snprintf(buf, sizeof buf, "250 %s\r\n", s->hostname);
        sink_reply(sc, buf);
    } else if (sink_verb(line, len, "MAIL")) {
        if (sc->has_mail) {
            sink_reply(sc, "503 5.5.1 Error: nested MAIL command\r\n");
            s->rejects++;
        } else {
            sc->has_mail = 1;
            sink_reply(sc, "250 2.1.0 Ok\r\n");
        }
    } else if (sink_verb(line, len, "RCPT")) {
        if (!sc->has_mail) {
            sink_reply(sc, "503 5.5.1 Error: need MAIL command\r\n");
            s->rejects++;
        } else {
            sc->has_rcpt = 1;
            sink_reply(sc, "250 2.1.5 Ok\r\n");
        }
    } else if (sink_verb(line, len, "DATA")) {
        if (!sc->has_rcpt) {
            sink_reply(sc, "503 5.5.1 Error: need RCPT command\r\n");
            s->rejects++;
        } else {
            sink_reply(sc, "354 End data with <CR><LF>.<CR><LF>\r\n");
            sc->in_data = 1;
            sc->dstate = 2; /* the DATA line's CRLF starts the first line */
        }
    } else if (sink_verb(line, len, "RSET")) {
        sc->has_mail = sc->has_rcpt = 0;
        sink_reply(sc, "250 2.0.0 Ok\r\n");
    } else if (sink_verb(line, len, "NOOP")) {
        sink_reply(sc, "250 2.0.0 Ok\r\n");
    } else if (sink_verb(line, len, "QUIT")) {
        sink_reply(sc, "221 2.0.0 Bye\r\n");
        return SINK_QUIT;
    } else if (sink_verb(line, len, "STARTTLS")) {
        if (s->tls == NULL) {
            sink_reply(sc, "502 5.5.1 Error: command not implemented\r\n");
            s->rejects++;
        } else if (sc->conn.ssl != NULL) {
            sink_reply(sc, "554 5.5.1 Error: TLS already active\r\n");
            s->rejects++;
        } else if (len != 8) {
            sink_reply(sc, "501 5.5.4 Syntax: STARTTLS\r\n");
            s->rejects++;
        } else {
            sink_reply(sc, "220 2.0.0 Ready to start TLS\r\n");
            return SINK_STARTTLS;
        }
    } else {
        sink_reply(sc, "502 5.5.2 Error: command not recognized\r\n");
        s->rejects++;
    }
    return SINK_NEXT;
}

/* sink_data_scan - consume message bytes up to and including the
 * CRLF.CRLF terminator; returns the bytes consumed and leaves DATA mode
 * when the terminator was seen.  States: 0 inside a line, 1 after CR,
 * 2 at the start of a line, 3 after a leading dot, 4 after ".CR". */
static size_t sink_data_scan(struct sink_conn *sc, const char *p, size_t n)
{
    size_t k = 0;

    while (k < n) {
        char ch;

        if (sc->dstate == 0) {
            const char *cr = memchr(p + k, '\r', n - k);

            if (cr == NULL) {
                k = n;
                break;
            }
            k = (size_t)(cr - p) + 1;
            sc->dstate = 1;
            continue;
        }
        ch = p[k++];
        switch (sc->dstate) {
        case 1:
            sc->dstate = ch == '\n' ? 2 : ch == '\r' ? 1 : 0;
            break;
        case 2:
            sc->dstate = ch == '.' ? 3 : ch == '\r' ? 1 : 0;
            break;
        case 3:
            sc->dstate = ch == '\r' ? 4 : 0;
            break;
        default: /* 4 */
            if (ch == '\n') {
                sc->in_data = 0;
                sc->has_mail = sc->has_rcpt = 0;
                sc->sink->messages++;
                sc->sink->bytes += k;
                sink_reply(sc, "250 2.0.0 Ok: queued as BENCH\r\n");
                return k;
            }
            sc->dstate = ch == '\r' ? 1 : 0;
            break;
        }
    }
    sc->sink->bytes += k;
    return k;
}

/* sink_on_data - split input into command lines or message data. */
static void sink_on_data(struct bench_conn *c, const char *p, size_t n)
{
    struct sink_conn *sc = c->user;
    size_t i = 0;

    while (i < n && !c->closing) {
        const char *lf;
        size_t take, len;
        enum sink_act act;

        if (sc->in_data) {
            i += sink_data_scan(sc, p + i, n - i);
            continue;
        }
        lf = memchr(p + i, '\n', n - i);
        take = lf != NULL ? (size_t)(lf - (p + i)) + 1 : n - i;
        if (sc->discard_line) {
            sc->discard_line = lf == NULL;
            i += take;
            continue;
        }
        if (sc->linelen + take > sizeof sc->line) {
            sc->linelen = 0;
            sc->discard_line = lf == NULL;
            i += take;
            sink_reply(sc, "500 5.5.2 Error: line too long\r\n");
            sc->sink->rejects++;
            continue;
        }
        memcpy(sc->line + sc->linelen, p + i, take);
        sc->linelen += take;
        i += take;
        if (lf == NULL)
            break;
        len = sc->linelen - 1;
        if (len > 0 && sc->line[len - 1] == '\r')
            len--;
        sc->linelen = 0;
        act = sink_command(sc, sc->line, len);
        if (act == SINK_QUIT) {
            (void)sink_reply_flush(sc);
            bench_conn_end(c);
            return;
        }
        if (act == SINK_STARTTLS) {
            /* RFC 3207 5: nothing sent before the handshake may be used */
            if (i < n)
                sc->sink->dropped++;
            if (sink_reply_flush(sc) != 0 ||
                bench_conn_start_tls(c, sc->sink->tls, 1, NULL) != 0) {
                bench_conn_close(c);
            }
            return;
        }
    }
    if (sink_reply_flush(sc) != 0)
        bench_conn_close(c);
}

static void sink_on_handshake(struct bench_conn *c)
{
    struct sink_conn *sc = c->user;

    sc->sink->tls_sessions++;
    sc->has_mail = sc->has_rcpt = 0;
}

static void sink_on_eof(struct bench_conn *c)
{
    bench_conn_close(c);
}

static void sink_on_error(struct bench_conn *c, const char *what)
{
    struct sink_conn *sc = c->user;

    if (sc->sink->verbose)
        fprintf(stderr, "smtp-sink-bench: connection: %s\n", what);
}

static void sink_on_close(struct bench_conn *c)
{
    struct sink_conn *sc = c->user;
    struct sink *s = sc->sink;

    if (sc->prev != NULL)
        sc->prev->next = sc->next;
    else
        s->conns = sc->next;
    if (sc->next != NULL)
        sc->next->prev = sc->prev;
    s->open--;
    free(sc);
}

static const struct bench_conn_ops sink_ops = {
    .on_data = sink_on_data,
    .on_handshake = sink_on_handshake,
    .on_eof = sink_on_eof,
    .on_error = sink_on_error,
    .on_drain = NULL,
    .on_close = sink_on_close,
};

/* sink_on_connection - accept, greet. */
static void sink_on_connection(uv_stream_t *server, int status)
{
    struct sink *s = server->data;
    struct sink_conn *sc;
    char greeting[300];

    if (status < 0 || s->stopping)
        return;
    sc = calloc(1, sizeof *sc);
    if (sc == NULL)
        return;
    if (bench_conn_init(s->loop, &sc->conn, &sink_ops, &s->io, sc) != 0) {
        free(sc);
        return;
    }
    sc->sink = s;
    sc->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = sc;
    s->conns = sc;
    s->open++;
    s->total++;
    if (uv_accept(server, (uv_stream_t *)&sc->conn.tcp) != 0 ||
        bench_conn_start_read(&sc->conn) != 0) {
        bench_conn_close(&sc->conn);
        return;
    }
    snprintf(greeting, sizeof greeting, "220 %s ESMTP smtp-sink-bench\r\n",
             s->hostname);
    if (bench_conn_write(&sc->conn, greeting, strlen(greeting), 0) != 0)
        bench_conn_close(&sc->conn);
}

/* sink_stop - close the listener and every connection. */
static void sink_on_signal(uv_signal_t *h, int signum)
{
    struct sink *s = h->data;
    struct sink_conn *sc, *next;

    (void)signum;
    if (s->stopping)
        return;
    s->stopping = 1;
    uv_close((uv_handle_t *)&s->listener, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    for (sc = s->conns; sc != NULL; sc = next) {
        next = sc->next;
        bench_conn_close(&sc->conn);
    }
}

/* sink_tls_ctx - server context with our certificate. */
static SSL_CTX *sink_tls_ctx(const char *cert, const char *key)
{
    char err[160];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "smtp-sink-bench: %s / %s: %s\n", cert, key,
                bench_tls_error(err, sizeof err));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* sink_parse_port - strtol with range check. */
static int sink_parse_port(const char *s, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},
        {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"hostname", required_argument, NULL, 'n'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct sink *s;
    const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
    struct sockaddr_storage ss;
    int port = 0, opt, r, rc = 0;

    s = calloc(1, sizeof *s);
    if (s == NULL)
        return 1;
    s->hostname = "sink.bench.invalid";
    while ((opt = getopt_long(argc, argv, "p:H:vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (sink_parse_port(optarg, &port) != 0) {
                fprintf(stderr, "smtp-sink-bench: bad port %s\n", optarg);
                free(s);
                return 2;
            }
            break;
        case 'H': host = optarg; break;
        case 'c': cert = optarg; break;
        case 'k': key = optarg; break;
        case 'n': s->hostname = optarg; break;
        case 'v': s->verbose = 1; break;
        case 'h': usage(stdout); free(s); return 0;
        default: usage(stderr); free(s); return 2;
        }
    }
    if (port == 0 || optind != argc || (cert == NULL) != (key == NULL)) {
        usage(stderr);
        free(s);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    (void)bench_raise_nofile();
    if (cert != NULL && (s->tls = sink_tls_ctx(cert, key)) == NULL) {
        free(s);
        return 1;
    }
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        fprintf(stderr, "smtp-sink-bench: bad address %s\n", host);
        SSL_CTX_free(s->tls);
        free(s);
        return 2;
    }
    s->loop = uv_default_loop();
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    r = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->listener, 4096, sink_on_connection);
    if (r != 0) {
        fprintf(stderr, "smtp-sink-bench: listen %s:%d: %s\n", host, port,
                uv_strerror(r));
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_run(s->loop, UV_RUN_DEFAULT);
        (void)uv_loop_close(s->loop);
        SSL_CTX_free(s->tls);
        free(s);
        return 1;
    }
    uv_signal_init(s->loop, &s->sigint);
    uv_signal_init(s->loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, sink_on_signal, SIGINT);
    uv_signal_start(&s->sigterm, sink_on_signal, SIGTERM);
    fprintf(stderr, "smtp-sink-bench: listening on %s port %d%s\n", host, port,
            s->tls != NULL ? " (STARTTLS offered)" : "");
    uv_run(s->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(s->loop) != 0) {
        fprintf(stderr, "smtp-sink-bench: handles left open at exit\n");
        rc = 1;
    }
    fprintf(stderr,
            "smtp-sink-bench: connections=%lu tls=%lu messages=%lu "
            "bytes=%llu rejects=%lu dropped_after_starttls=%lu\n",
            s->total, s->tls_sessions, s->messages, s->bytes, s->rejects,
            s->dropped);
    SSL_CTX_free(s->tls);
    free(s);
    return rc;
}
