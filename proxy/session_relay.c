/*
 * session_relay.c - the backend's side of the relay: each reply matched
 * to the command at the head of the FIFO and relayed to the client, the
 * EHLO reply rewritten (README "EHLO keywords"), a refused repeated EHLO
 * answered from the first one, the trace header.
 *
 * Part of the session; shares struct session through session_int.h.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "session_int.h"
#include "trace.h"

/* session_trace_header - "trace_header = yes": the Received: header
 * (trace.h) from what the session knows.  0 when it does not fit. */
size_t session_trace_header(const struct session *s, char *out, size_t cap)
{
    static const char *const policy[] = {"none", "may", "encrypt", "verify",
                                         "dane", "dane-only", "fingerprint",
                                         "sts"};
    const struct trace_facts f = {
        .helo = session_helo(s),
        .client = &s->client_sa,
        .esmtp = s->client_esmtp,
        .client_tls = s->client_tls ? s->client_tls_desc : NULL,
        .client_cert = s->client_cert_subject,
        .client_verify = s->client_cert_verify,
        .by = s->ctx->cfg->hostname,
        .id = s->id,
        /* transparent: the original destination, "[2001:db8::25]:25" */
        .backend_host = s->dst_text[0] ? s->dst_text
                        : s->b.host != NULL ? s->b.host : s->svc->backend_host,
        .backend_port = s->dst_text[0] ? NULL : s->svc->backend_port,
        .backend_policy = policy[s->svc->backend_tls],
        .backend_tls = s->b.tls_desc[0] != '\0' ? s->b.tls_desc : NULL,
        .backend_verify = s->b.verify,
        .backend_dane = s->b.dane[0] ? s->b.dane : NULL,
        .backend_sts = s->b.sts_desc,
        .when = time(NULL),
    };

    return trace_header(&f, out, cap);
}

/* ---- backend side (relay) ------------------------------------------------- */

/*
 * The EHLO keywords a client is shown (an allowlist; README "EHLO
 * keywords"): those whose meaning the relay keeps.  PIPELINING (commands
 * are forwarded in order, replies matched by a FIFO), SIZE, 8BITMIME,
 * SMTPUTF8 and DSN (parameters and content pass unchanged), ENHANCEDSTATUSCODES
 * (the proxy's own replies have them too), CHUNKING (BDAT is parsed and
 * passed by its count), HELP, VRFY, EXPN and ETRN (one line, one reply)
 * and LIMITS (RFC 9422: facts about the backend).  AUTH has a rule of
 * its own; STARTTLS is the proxy's own; everything else (XCLIENT,
 * XFORWARD, REQUIRETLS, BINARYMIME, BURL, XEXCH50, anything unknown) is
 * removed unless the service lists it in ehlo_pass.
 */
#define SESSION_EHLO_KEEP                                                 \
    (SMTP_CAP_PIPELINING | SMTP_CAP_SIZE | SMTP_CAP_8BITMIME |            \
     SMTP_CAP_SMTPUTF8 | SMTP_CAP_DSN | SMTP_CAP_ENHANCEDSTATUSCODES |    \
     SMTP_CAP_CHUNKING | SMTP_CAP_HELP | SMTP_CAP_VRFY | SMTP_CAP_EXPN |  \
     SMTP_CAP_ETRN | SMTP_CAP_LIMITS)

/* session_requiretls_path - see session_int.h. */
bool session_requiretls_path(const struct session *s)
{
    return s->client_tls && s->b.authenticated && !s->b.plain_retry &&
           s->b.tls_desc[0] != '\0';
}

/* session_ehlo_opts - what the client may be shown of the EHLO reply. */
static void session_ehlo_opts(const struct session *s,
                              struct smtp_ehlo_rewrite *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->offer_starttls = !s->client_tls && !s->svc->client_implicit_tls &&
                           s->client_policy != CLIENT_TLS_NONE;
    opts->keep = SESSION_EHLO_KEEP;
    /* backend_auth: the proxy is logged in already, the client never */
    if ((s->client_tls || s->plaintext_auth) &&
        s->svc->backend_auth == BACKEND_AUTH_NONE)
        opts->keep |= SMTP_CAP_AUTH;
    /* RFC 8689: only what the backend offered, and only over a path
     * that is authenticated TLS on both legs */
    if (session_requiretls_path(s))
        opts->keep |= SMTP_CAP_REQUIRETLS;
    opts->extra = (const char *const *)s->svc->ehlo_pass;
    opts->nextra = s->svc->nehlo_pass;
}

/* session_write_ehlo - rewrite an EHLO reply and send it to the client;
 * what was dropped is logged once per session (debug). */
static void session_write_ehlo(struct session *s, const char *p, size_t len,
                               unsigned nlines)
{
    struct smtp_ehlo_rewrite opts;
    size_t cap = len + nlines + 32, n;
    char dropped[256], esc[512];
    char *out;

    session_ehlo_opts(s, &opts);
    s->requiretls_offered = (opts.keep & SMTP_CAP_REQUIRETLS) &&
                            (smtp_ehlo_caps(p, len) & SMTP_CAP_REQUIRETLS);
    if (!s->ehlo_drop_logged && log_enabled(&s->log, LOG_DEBUG)) {
        opts.dropped = dropped;
        opts.dropped_cap = sizeof dropped;
    }
    out = malloc(cap);
    if (out == NULL || smtp_ehlo_rewrite(p, len, &opts, out, cap, &n) != 0) {
        free(out);
        session_fail(s, REPLY_BACKEND_PROTOCOL, "backend_garbage",
                     "EHLO reply cannot be rewritten");
        return;
    }
    conn_write(s->client, out, n);
    free(out);
    if (opts.dropped != NULL && dropped[0] != '\0') {
        s->ehlo_drop_logged = true;
        log_escape(esc, sizeof esc, dropped, strlen(dropped));
        log_event(&s->log, LOG_DEBUG, s->id,
                  "event=ehlo_dropped keywords=%s", esc);
    }
}

/* session_one_line - "250 <the text of the reply's first line>" CRLF
 * into line (of SESSION_REPLY_LINE + 8 bytes); returns its length. */
static size_t session_one_line(const char *p, const struct smtp_reply *rep,
                               char *line)
{
    size_t text = rep->len;
    int n;

    for (size_t i = 0; i < rep->len; i++)
        if (p[i] == '\r' || p[i] == '\n') {
            text = i;
            break;
        }
    text = text > 4 ? text - 4 : 0;
    n = snprintf(line, SESSION_REPLY_LINE + 8, "250 %.*s\r\n", (int)text,
                 text ? p + 4 : "");
    return (size_t)n;
}

/*
 * session_write_helo_as_ehlo - the backend took our HELO: answer the
 * client's EHLO ourselves, with the backend's greeting line and only what
 * the proxy itself provides (STARTTLS); the backend has no extensions.
 */
static void session_write_helo_as_ehlo(struct session *s, const char *p,
                                       const struct smtp_reply *rep)
{
    char line[SESSION_REPLY_LINE + 8];

    session_write_ehlo(s, line, session_one_line(p, rep, line), 1);
}

/*
 * session_hold_helo - keep the backend's 250 to an EHLO (ehlo) or HELO of
 * this backend session while the client leg is plaintext: the client's
 * EHLO after its STARTTLS goes into the same backend session, and a
 * backend may refuse a repeated one (RFC 5321 4.1.4; OpenSMTPD answers
 * "503 5.5.1 Invalid command: Already identified", even after RSET).
 */
static void session_hold_helo(struct session *s, const char *p, size_t len,
                              bool ehlo)
{
    char *copy;

    if (s->client_tls || (copy = malloc(len)) == NULL)
        return;
    memcpy(copy, p, len);
    free(s->held_helo);
    s->held_helo = copy;
    s->held_helo_len = len;
    s->held_ehlo = ehlo;
}

/*
 * session_answer_repeat - the backend refused a repeated EHLO (ehlo) or
 * HELO with a 5xx in a session that is still clean: the client gets the
 * answer it would have had, from the backend's own earlier reply
 * (rewritten for the client leg as it is now), and the backend keeps the
 * name it was told first.  Returns false when there is nothing to answer
 * from: the refusal is relayed.
 */
static bool session_answer_repeat(struct session *s,
                                  const struct smtp_reply *rep, bool ehlo)
{
    char line[SESSION_REPLY_LINE + 8];
    struct smtp_reply held;

    if (rep->code < 500 || s->held_helo == NULL || s->backend_dirty ||
        smtp_reply_scan(s->held_helo, s->held_helo_len, SESSION_REPLY_LINE,
                        SESSION_REPLY_LINES, &held) != SMTP_REPLY_OK)
        return false;
    log_event(&s->log, LOG_INFO, s->id,
              "event=backend_repeat_refused verb=%s code=%d "
              "action=earlier_reply", ehlo ? "EHLO" : "HELO", rep->code);
    if (!ehlo)
        conn_write(s->client, line, session_one_line(s->held_helo, &held,
                                                     line));
    else if (s->held_ehlo)
        session_write_ehlo(s, s->held_helo, held.len, held.nlines);
    else
        session_write_helo_as_ehlo(s, s->held_helo, &held);
    return true;
}

/* session_relay - one backend reply for the command at the FIFO head. */
static void session_relay(struct session *s, const char *p,
                          const struct smtp_reply *rep)
{
    enum expect_kind kind = (enum expect_kind)session_fifo_head(s)->kind;

    session_fifo_pop(s);
    switch (kind) {
    case EXPECT_EHLO:
        if (session_answer_repeat(s, rep, true))
            return;
        if (rep->code == 500 || rep->code == 502) {
            /* a HELO-only server: keep the client's EHLO working */
            log_event(&s->log, LOG_INFO, s->id,
                      "event=backend_helo_only code=%d", rep->code);
            session_helo_fallback(s);
            return;
        }
        if (rep->code == 250) {
            s->backend_chunking =
                (smtp_ehlo_caps(p, rep->len) & SMTP_CAP_CHUNKING) != 0;
            session_hold_helo(s, p, rep->len, true);
            session_write_ehlo(s, p, rep->len, rep->nlines);
            return;
        }
        break;
    case EXPECT_HELO_FALLBACK:
        if (session_answer_repeat(s, rep, true))
            return;
        if (rep->code == 250) {
            session_hold_helo(s, p, rep->len, false);
            session_write_helo_as_ehlo(s, p, rep);
            return;
        }
        break;
    case EXPECT_HELO:
        if (session_answer_repeat(s, rep, false))
            return;
        if (rep->code == 250)
            session_hold_helo(s, p, rep->len, false);
        break;
    case EXPECT_DATA:
        if (rep->code == 354) {
            session_enter(s, CLIENT_DATA);
            smtp_data_filter_init(&s->filter,
                                  s->svc->bare_newline == BARE_NEWLINE_REJECT
                                      ? SMTP_BARE_REJECT : SMTP_BARE_NORMALIZE);
            s->bare_logged = false;
            s->nul_logged = false;
            if (s->svc->trace_header) {
                char hdr[2048];
                size_t hn = session_trace_header(s, hdr, sizeof hdr);

                conn_write(s->b.conn, hdr, hn);
            }
            s->data_start = uv_now(s->ctx->loop);
            s->data_bytes = 0;
            session_arm(s);
        }
        break;
    case EXPECT_END_OF_DATA:
    case EXPECT_BDAT_LAST:
        if (rep->code >= 200 && rep->code < 300)
            s->nmessages++;
        SESSION_COUNT(s, messages[rep->code < 300   ? STATS_MSG_ACCEPTED
                                  : rep->code < 500 ? STATS_MSG_TEMPFAIL
                                                    : STATS_MSG_REFUSED]);
        log_event(&s->log, LOG_INFO, s->id,
                  "event=message_reply code=%d", rep->code);
        break;
    case EXPECT_AUTH:
        if (rep->code == 334)
            session_enter(s, CLIENT_AUTH);
        break;
    case EXPECT_QUIT:
        conn_write(s->client, p, rep->len);
        session_close(s, REPLY_NONE);
        return;
    case EXPECT_XCLIENT:
        if (rep->code != 220)
            log_event(&s->log, LOG_WARN, s->id,
                      "event=xclient_refused code=%d", rep->code);
        return;
    case EXPECT_AUTH_CANCEL:
        /* the backend's answer to our "*" (501, or whatever it says) */
        log_event(&s->log, LOG_DEBUG, s->id,
                  "event=auth_cancel_reply code=%d", rep->code);
        return;
    case EXPECT_SILENT:
        /* our own EHLO or HELO to a fresh backend; the client asked
         * nothing */
        if (rep->code >= 400)
            log_event(&s->log, LOG_WARN, s->id,
                      "event=backend_replay_refused code=%d", rep->code);
        else if (rep->code == 250 && s->client_esmtp && !s->b.helo_only)
            s->backend_chunking =
                (smtp_ehlo_caps(p, rep->len) & SMTP_CAP_CHUNKING) != 0;
        if (rep->code == 250)
            session_hold_helo(s, p, rep->len,
                              s->client_esmtp && !s->b.helo_only);
        return;
    default:
        break;
    }
    conn_write(s->client, p, rep->len);
    session_count_error(s, rep->code);
    if (s->draining && !s->closing && !session_in_message(s))
        session_close(s, REPLY_SHUTDOWN);  /* the message the stop waited
                                              for has its answer */
}

/* session_backend_process - relay complete replies from bin. */
void session_backend_process(struct session *s)
{
    struct smtp_reply rep;
    enum smtp_reply_result r;
    struct expect *e;
    char esc[200];

    while (!s->closing && s->b.in.len > 0) {
        r = smtp_reply_scan(sbuf_ptr(&s->b.in), s->b.in.len, SESSION_REPLY_LINE,
                            SESSION_REPLY_LINES, &rep);
        if (r == SMTP_REPLY_MORE)
            break;
        e = session_fifo_head(s);
        if (r == SMTP_REPLY_BAD || e == NULL || e->kind == EXPECT_LOCAL ||
            e->kind == EXPECT_STARTTLS) {
            log_escape(esc, sizeof esc, sbuf_ptr(&s->b.in),
                       s->b.in.len < 80 ? s->b.in.len : 80);
            SESSION_COUNT(s, events[STATS_EV_BACKEND_GARBAGE]);
            log_event(&s->log, LOG_WARN, s->id,
                      "event=backend_garbage kind=%s data=\"%s\"",
                      r == SMTP_REPLY_BAD ? "not_a_reply" : "unsolicited", esc);
            session_close(s, REPLY_BACKEND_PROTOCOL);
            return;
        }
        session_relay(s, sbuf_ptr(&s->b.in), &rep);
        sbuf_consume(&s->b.in, rep.len);
        session_fifo_flush_local(s);
    }
    if (!s->closing)
        session_client_process(s);
}

