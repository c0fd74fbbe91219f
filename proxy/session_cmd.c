/*
 * session_cmd.c - the client's side of the relay: command lines through
 * the verb table, message content through the smuggling filter.
 *
 * Part of the session (session.c owns its lifetime, the FIFO and both
 * legs' callbacks); shares struct session through session_int.h.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "session_int.h"

/* ---- the client mode ------------------------------------------------------ */

const char *session_mode_name(enum client_mode mode)
{
    static const char *const names[CLIENT_NMODES] = {
        "command", "data", "bdat", "bdat_skip", "auth", "skip_line",
        "starttls", "handshake", "quit"};

    return (unsigned)mode < CLIENT_NMODES ? names[mode] : "?";
}

#define M(m) (1u << (m))

/* session_next_mode - the modes each mode may go to (staying is always
 * allowed).  QUIT is the end: nothing more is read. */
static const unsigned session_next_mode[CLIENT_NMODES] = {
    [CLIENT_COMMAND] = M(CLIENT_DATA) | M(CLIENT_BDAT) | M(CLIENT_BDAT_SKIP) |
                       M(CLIENT_AUTH) | M(CLIENT_SKIP_LINE) |
                       M(CLIENT_STARTTLS) | M(CLIENT_HANDSHAKE) |
                       M(CLIENT_QUIT),
    [CLIENT_DATA] = M(CLIENT_COMMAND),
    [CLIENT_BDAT] = M(CLIENT_COMMAND),
    [CLIENT_BDAT_SKIP] = M(CLIENT_COMMAND),
    [CLIENT_AUTH] = M(CLIENT_COMMAND) | M(CLIENT_SKIP_LINE),
    [CLIENT_SKIP_LINE] = M(CLIENT_COMMAND),
    [CLIENT_STARTTLS] = M(CLIENT_HANDSHAKE),
    [CLIENT_HANDSHAKE] = M(CLIENT_COMMAND),
    [CLIENT_QUIT] = 0,
};

/* session_transition_ok - see session_int.h. */
bool session_transition_ok(enum client_mode from, enum client_mode to)
{
    if ((unsigned)from >= CLIENT_NMODES || (unsigned)to >= CLIENT_NMODES)
        return false;
    return from == to || (session_next_mode[from] & M(to)) != 0;
}

/*
 * session_enter - every change of the client mode goes through here:
 * checked against the table (builds with STATE_CHECKS abort on an
 * illegal one, others log it) and logged at debug.
 */
void session_enter(struct session *s, enum client_mode mode)
{
    if (s->cmode == mode)
        return;
    if (!session_transition_ok(s->cmode, mode)) {
        log_event(&s->log, LOG_ERROR, s->id,
                  "event=state_illegal machine=client from=%s to=%s",
                  session_mode_name(s->cmode), session_mode_name(mode));
#ifdef STATE_CHECKS
        abort();
#endif
    }
    log_event(&s->log, LOG_DEBUG, s->id, "event=state from=%s to=%s",
              session_mode_name(s->cmode), session_mode_name(mode));
    s->cmode = mode;
}

/* ---- client side ---------------------------------------------------------- */

/* session_forward - send one command line to the backend, always with
 * CRLF: a bare LF from the client never reaches the backend. */
void session_forward(struct session *s, const char *line, size_t len,
                     size_t total)
{
    if (!session_waiting_for_backend(s))
        backend_touch(&s->b);   /* its clock starts with our request */
    if (total == len + 2) {
        conn_write(s->b.conn, line, total);
        return;
    }
    char *tmp = malloc(len + 2);

    if (tmp == NULL) {
        session_fail(s, REPLY_BACKEND_LOST, "error", "out of memory");
        return;
    }
    memcpy(tmp, line, len);
    memcpy(tmp + len, "\r\n", 2);
    conn_write(s->b.conn, tmp, len + 2);
    free(tmp);
}

/* ---- the verb table -------------------------------------------------------- */

/* session_verb_passed - is the unknown verb of cmd's line a keyword the
 * service passes (ehlo_pass)? */
static bool session_verb_passed(const struct session *s,
                                const struct smtp_cmd *cmd)
{
    for (size_t i = 0; i < s->svc->nehlo_pass; i++)
        if (strlen(s->svc->ehlo_pass[i]) == cmd->word_len &&
            strncasecmp(s->svc->ehlo_pass[i], cmd->word, cmd->word_len) == 0)
            return true;
    return false;
}

/* the verb of an extension the proxy does not pass (XEXCH50, BURL,
 * ATRN...) would make the backend speak a protocol the relay does not
 * parse: only ehlo_pass keywords' verbs go on */
static enum reply_id session_unknown_refusal(struct session *s,
                                             const struct smtp_cmd *cmd)
{
    return session_verb_passed(s, cmd) ? REPLY_NONE : REPLY_UNKNOWN_COMMAND;
}

static enum reply_id session_starttls_refusal(struct session *s,
                                              const struct smtp_cmd *cmd)
{
    if (s->svc->client_implicit_tls || s->client_policy == CLIENT_TLS_NONE)
        return REPLY_STARTTLS_UNAVAILABLE;
    if (s->client_tls)
        return REPLY_TLS_ACTIVE;
    if (cmd->arg != NULL)
        return REPLY_STARTTLS_SYNTAX;
    return REPLY_NONE;
}

/* session_mail_requiretls - does MAIL's argument carry the REQUIRETLS
 * parameter (RFC 8689 4: a keyword without a value, after the path)? */
static bool session_mail_requiretls(const struct smtp_cmd *cmd)
{
    const char *p = cmd->arg, *end = cmd->arg + cmd->arg_len;
    const char *gt = p != NULL ? memchr(p, '>', cmd->arg_len) : NULL;

    if (p == NULL)
        return false;
    p = gt != NULL ? gt + 1 : memchr(p, ' ', cmd->arg_len);
    while (p != NULL && p < end) {
        const char *sp;
        size_t n;

        while (p < end && *p == ' ')
            p++;
        sp = memchr(p, ' ', (size_t)(end - p));
        n = (size_t)((sp != NULL ? sp : end) - p);
        if (n == 10 && strncasecmp(p, "REQUIRETLS", 10) == 0)
            return true;
        p = sp;
    }
    return false;
}

/* session_mail_refusal - MAIL ... REQUIRETLS is relayed only where the
 * keyword was shown and the path still deserves it. */
static enum reply_id session_mail_refusal(struct session *s,
                                          const struct smtp_cmd *cmd)
{
    if (!session_mail_requiretls(cmd))
        return REPLY_NONE;
    if (!s->requiretls_offered)
        return REPLY_REQUIRETLS_UNAVAILABLE;
    return session_requiretls_path(s) ? REPLY_NONE : REPLY_REQUIRETLS_WEAKER;
}

static enum reply_id session_auth_refusal(struct session *s,
                                          const struct smtp_cmd *cmd)
{
    (void)cmd;
    /* backend_auth: the backend session is the proxy's login; AUTH is
     * not shown, and a client's would be a second one */
    if (s->svc->backend_auth != BACKEND_AUTH_NONE)
        return REPLY_AUTH_BY_PROXY;
    return !s->client_tls && !s->plaintext_auth ? REPLY_AUTH_NEEDS_TLS
                                                : REPLY_NONE;
}

/*
 * session_refusal - the proxy's own answer to cmd, or REPLY_NONE when it
 * goes on: the verb's flags, in this order, then its own check.
 */
static enum reply_id session_refusal(struct session *s,
                                     const struct session_verb *v,
                                     const struct smtp_cmd *cmd)
{
    enum reply_id r;

    if (v->flags & SV_NEVER)
        /* backends trust XCLIENT and XFORWARD from the proxy's address:
         * a client's is never relayed */
        return REPLY_NOT_IMPLEMENTED;
    if ((v->flags & SV_TLS_FIRST) && s->client_policy == CLIENT_TLS_ENCRYPT &&
        !s->client_tls &&
        session_enforce(s, "client_tls_encrypt", smtp_verb_name(cmd->verb)))
        return REPLY_MUST_STARTTLS;
    if (v->refuse != NULL && (r = v->refuse(s, cmd)) != REPLY_NONE)
        return r;
    /* after the client's STARTTLS, nothing that needs a session is served
     * before a new EHLO/HELO */
    if ((v->flags & SV_HELO_FIRST) && s->need_helo)
        return REPLY_NEED_HELO;
    return REPLY_NONE;
}

static void session_log_command(struct session *s, const struct smtp_cmd *cmd)
{
    char esc[160];
    size_t n = cmd->arg_len;

    if (!log_enabled(&s->log, LOG_DEBUG))
        return;
    if (cmd->verb == SMTP_VERB_AUTH && cmd->arg != NULL) {
        /* the mechanism only: an initial response is a secret */
        const char *sp = memchr(cmd->arg, ' ', cmd->arg_len);
        n = sp ? (size_t)(sp - cmd->arg) : cmd->arg_len;
    }
    log_escape(esc, sizeof esc, cmd->arg ? cmd->arg : "", n);
    log_event(&s->log, LOG_DEBUG, s->id, "event=command verb=%s arg=\"%s\"",
              smtp_verb_name(cmd->verb), esc);
}

/* session_remember_helo - keep the client's EHLO/HELO name (for HELO
 * fallback and the trace header), printable ASCII only. */
static void session_remember_helo(struct session *s, const struct smtp_cmd *cmd)
{
    char name[256];
    size_t n = 0;

    for (size_t i = 0; cmd->arg != NULL && i < cmd->arg_len &&
                       n + 1 < sizeof name; i++) {
        unsigned char c = (unsigned char)cmd->arg[i];

        if (c == ' ')
            break;
        if (c > 0x20 && c < 0x7f)
            name[n++] = (char)c;
    }
    name[n] = '\0';
    if (strcmp(name, session_helo(s)) == 0)
        return;
    /* held for the session's life: as long as it is, not 256 bytes */
    free(s->helo_name);
    s->helo_name = n > 0 ? strdup(name) : NULL;   /* NULL on ENOMEM too:
                                                     "unknown" then */
}

/*
 * session_helo_fallback - the backend refused EHLO (a HELO-only legacy
 * server): greet it with HELO and answer the client's EHLO ourselves when
 * its reply comes.
 */
void session_helo_fallback(struct session *s)
{
    char line[300];
    int n = snprintf(line, sizeof line, "HELO %s\r\n",
                     s->helo_name != NULL ? s->helo_name : "unknown");

    s->b.helo_only = true;
    session_forward(s, line, (size_t)n - 2, (size_t)n);
    session_fifo_push(s, EXPECT_HELO_FALLBACK, REPLY_NONE);
}

/* session_cmd_forward - the handler of most verbs: relay the line, owe
 * the client the backend's reply. */
static void session_cmd_forward(struct session *s, const struct smtp_cmd *cmd,
                                const struct session_line *l)
{
    const struct session_verb *v = session_verb(cmd->verb);

    if (v->flags & SV_DIRTIES)
        s->backend_dirty = true;
    session_forward(s, l->p, l->len, l->total);
    session_fifo_push(s, (enum expect_kind)v->expect, REPLY_NONE);
    sbuf_consume(&s->cin, l->total);
}

/* session_cmd_helo - EHLO and HELO (RFC 2920 3.1: they end a group; what
 * follows waits for the reply, which may change what the client may do). */
static void session_cmd_helo(struct session *s, const struct smtp_cmd *cmd,
                             const struct session_line *l)
{
    s->need_helo = false;
    session_remember_helo(s, cmd);
    s->client_esmtp = cmd->verb == SMTP_VERB_EHLO;
    if (s->b.xclient_ok && !s->xclient_helo_sent) {
        /* tell the backend the client's HELO name first; XCLIENT resets
         * it to a fresh session, then this line is read again */
        char x[300];
        int xn = backend_xclient_helo(session_helo(s), s->client_esmtp, x,
                                      sizeof x);

        s->xclient_helo_sent = true;
        s->ncommands--;
        session_forward(s, x, (size_t)xn - 2, (size_t)xn);
        session_fifo_push(s, EXPECT_XCLIENT, REPLY_NONE);
        return;
    }
    s->xclient_helo_sent = false;
    if (cmd->verb == SMTP_VERB_EHLO && s->b.helo_only) {
        session_helo_fallback(s);
        sbuf_consume(&s->cin, l->total);
        return;
    }
    session_cmd_forward(s, cmd, l);
}

/* session_cmd_starttls - answered here, in its turn (session_fifo_flush_local
 * starts the handshake when the 220 is written). */
static void session_cmd_starttls(struct session *s, const struct smtp_cmd *cmd,
                                 const struct session_line *l)
{
    (void)cmd;
    sbuf_consume(&s->cin, l->total);
    session_enter(s, CLIENT_STARTTLS);
    session_fifo_push(s, EXPECT_STARTTLS, REPLY_NONE);
    session_fifo_flush_local(s);
}

/* session_cmd_bdat - a chunk: its size is parsed here, and a refused
 * chunk is read and thrown away (it follows the command anyway). */
static void session_cmd_bdat(struct session *s, const struct smtp_cmd *cmd,
                             const struct session_line *l)
{
    enum reply_id refusal = l->refusal;
    char cmdline[64];
    uint64_t size;
    bool last, bad;
    int cn;

    bad = smtp_bdat_parse(cmd->arg ? cmd->arg : "", cmd->arg_len, &size,
                          &last) != 0;
    sbuf_consume(&s->cin, l->total);     /* cmd points into it: no more */
    if (bad) {
        session_local(s, REPLY_BDAT_SYNTAX);
        return;
    }
    if (refusal == REPLY_NONE && !s->backend_chunking)
        refusal = REPLY_NOT_IMPLEMENTED;   /* never let a backend without
                                              CHUNKING read a chunk as
                                              commands */
    if (refusal != REPLY_NONE) {
        s->bdat_left = size;
        if (size > 0)
            session_enter(s, CLIENT_BDAT_SKIP);
        session_local(s, refusal);
        return;
    }
    s->backend_dirty = true;
    if (s->svc->trace_header && !s->bdat_in_message) {
        /* the header is part of the first chunk: say so in its size */
        char hdr[2048];
        size_t hn = session_trace_header(s, hdr, sizeof hdr);

        cn = snprintf(cmdline, sizeof cmdline, "BDAT %llu%s\r\n",
                      (unsigned long long)(size + hn), last ? " LAST" : "");
        session_forward(s, cmdline, (size_t)cn - 2, (size_t)cn);
        conn_write(s->b.conn, hdr, hn);
    } else {
        /* rebuilt from the parsed values: the backend reads exactly what
         * the proxy counted */
        cn = snprintf(cmdline, sizeof cmdline, "BDAT %llu%s\r\n",
                      (unsigned long long)size, last ? " LAST" : "");
        session_forward(s, cmdline, (size_t)cn - 2, (size_t)cn);
    }
    s->bdat_in_message = !last;
    session_fifo_push(s, last ? EXPECT_BDAT_LAST : EXPECT_BDAT, REPLY_NONE);
    s->bdat_left = size;
    if (size > 0) {
        session_enter(s, CLIENT_BDAT);
        s->data_start = uv_now(s->ctx->loop);
        s->data_bytes = 0;
        session_arm(s);
    }
}

static void session_cmd_quit(struct session *s, const struct smtp_cmd *cmd,
                             const struct session_line *l)
{
    (void)cmd;
    session_forward(s, l->p, l->len, l->total);
    session_fifo_push(s, EXPECT_QUIT, REPLY_NONE);
    sbuf_free(&s->cin);
    session_enter(s, CLIENT_QUIT);
}

/*
 * One row per verb (README "Architecture"): what the proxy requires
 * before relaying it, what it does to the backend session, which reply
 * it is owed, and its handler.  SV_WAITS verbs end a pipelining group for
 * the proxy too: the next line is read after their reply (see
 * session_expect_waits), because the reply changes how it is read.
 */
static const struct session_verb session_verbs[SMTP_VERB_COUNT] = {
    [SMTP_VERB_UNKNOWN] = {SV_HELO_FIRST | SV_DIRTIES, EXPECT_OTHER,
                           session_unknown_refusal, session_cmd_forward},
    [SMTP_VERB_EHLO] = {SV_WAITS, EXPECT_EHLO, NULL, session_cmd_helo},
    [SMTP_VERB_HELO] = {SV_WAITS, EXPECT_HELO, NULL, session_cmd_helo},
    [SMTP_VERB_MAIL] = {SV_TLS_FIRST | SV_HELO_FIRST | SV_DIRTIES,
                        EXPECT_OTHER, session_mail_refusal,
                        session_cmd_forward},
    [SMTP_VERB_RCPT] = {SV_TLS_FIRST | SV_HELO_FIRST | SV_DIRTIES,
                        EXPECT_OTHER, NULL, session_cmd_forward},
    [SMTP_VERB_DATA] = {SV_TLS_FIRST | SV_HELO_FIRST | SV_DIRTIES | SV_WAITS,
                        EXPECT_DATA, NULL, session_cmd_forward},
    [SMTP_VERB_BDAT] = {SV_TLS_FIRST | SV_HELO_FIRST | SV_DIRTIES |
                            SV_OWN_REFUSAL,
                        EXPECT_BDAT, NULL, session_cmd_bdat},
    [SMTP_VERB_RSET] = {0, EXPECT_OTHER, NULL, session_cmd_forward},
    [SMTP_VERB_NOOP] = {0, EXPECT_OTHER, NULL, session_cmd_forward},
    [SMTP_VERB_QUIT] = {0, EXPECT_QUIT, NULL, session_cmd_quit},
    [SMTP_VERB_VRFY] = {SV_TLS_FIRST | SV_DIRTIES, EXPECT_OTHER, NULL,
                        session_cmd_forward},
    [SMTP_VERB_EXPN] = {SV_TLS_FIRST | SV_DIRTIES, EXPECT_OTHER, NULL,
                        session_cmd_forward},
    [SMTP_VERB_HELP] = {0, EXPECT_OTHER, NULL, session_cmd_forward},
    [SMTP_VERB_STARTTLS] = {SV_LOCAL, EXPECT_STARTTLS,
                            session_starttls_refusal, session_cmd_starttls},
    [SMTP_VERB_AUTH] = {SV_TLS_FIRST | SV_HELO_FIRST | SV_DIRTIES | SV_WAITS,
                        EXPECT_AUTH, session_auth_refusal,
                        session_cmd_forward},
    [SMTP_VERB_XCLIENT] = {SV_NEVER, EXPECT_LOCAL, NULL, NULL},
    [SMTP_VERB_XFORWARD] = {SV_NEVER, EXPECT_LOCAL, NULL, NULL},
    [SMTP_VERB_ETRN] = {SV_DIRTIES, EXPECT_OTHER, NULL, session_cmd_forward},
};

/* session_verb - verb's row (the unknown verb's for anything else). */
const struct session_verb *session_verb(enum smtp_verb verb)
{
    return &session_verbs[(unsigned)verb < SMTP_VERB_COUNT ? verb
                                                           : SMTP_VERB_UNKNOWN];
}

/* session_command - one command line from the client: a lookup in the
 * verb table and a call. */
static void session_command(struct session *s, const char *line, size_t len,
                            size_t total)
{
    struct smtp_cmd cmd;
    const struct session_verb *v;
    struct session_line l = {line, len, total, REPLY_NONE};

    smtp_cmd_parse(line, len, &cmd);
    s->ncommands++;
    session_log_command(s, &cmd);
    v = session_verb(cmd.verb);
    l.refusal = session_refusal(s, v, &cmd);
    if (l.refusal != REPLY_NONE && !(v->flags & SV_OWN_REFUSAL)) {
        sbuf_consume(&s->cin, total);
        session_local(s, l.refusal);
        return;
    }
    v->handle(s, &cmd, &l);
}

/*
 * session_reject_message - "bare_newline = reject" found a bare CR or LF
 * or a NUL (event names which; reply is what the client gets at the end):
 * the backend is cut off mid-message (it never sees an end-of-data, so it
 * delivers nothing of it), the rest is read and thrown away, and a fresh
 * backend session takes over after the 550.
 */
static void session_reject_message(struct session *s, const char *event,
                                   enum reply_id reply)
{
    log_event(&s->log, LOG_WARN, s->id, "event=%s action=reject", event);
    s->msg_rejected = true;
    s->reject_reply = (uint8_t)reply;
    backend_stop(&s->b);    /* it must not see the end of this message */
}

/*
 * session_data_direct - the fast path for message content that arrives
 * with nothing buffered before it: what needs no rewriting goes to the
 * backend straight from the read, without a copy into cin.  Returns the
 * bytes consumed; the caller buffers the rest for session_data_step.
 */
size_t session_data_direct(struct session *s, const char *p, size_t len)
{
    size_t n;
    bool done;

    if (s->cin.len > 0 || s->cmode != CLIENT_DATA || s->msg_rejected ||
        s->in_process || s->closing || !s->greeted ||
        s->b.state != BACKEND_READY || s->b.conn == NULL ||
        conn_pending(s->b.conn) >= CONN_HIGH_WATER)
        return 0;
    n = smtp_data_filter_pass(&s->filter, p, len, &done);
    if (n > 0) {
        conn_write(s->b.conn, p, n);
        s->data_bytes += n;
    }
    return n;
}

/* session_data_step - message content through the smuggling filter. */
static bool session_data_step(struct session *s, const char *p, size_t len)
{
    char *out = s->ctx->scratch;
    size_t n, out_len;
    bool done;

    if (s->msg_rejected) {
        n = smtp_data_filter(&s->filter, p, len, NULL, 0, &out_len, &done);
    } else {
        if (conn_pending(s->b.conn) >= CONN_HIGH_WATER)
            return false;
        /* what needs no rewriting (nearly all mail) goes out as it came */
        n = smtp_data_filter_pass(&s->filter, p, len, &done);
        if (n > 0) {
            conn_write(s->b.conn, p, n);
            sbuf_consume(&s->cin, n);
            s->data_bytes += n;
            return true;
        }
        n = smtp_data_filter(&s->filter, p, len, out, sizeof s->ctx->scratch,
                             &out_len, &done);
        if (smtp_data_filter_bare_seen(&s->filter) && !s->bare_logged) {
            s->bare_logged = true;
            if (s->svc->bare_newline == BARE_NEWLINE_REJECT &&
                !s->msg_rejected &&
                session_enforce(s, "bare_newline", "message")) {
                SESSION_COUNT(s, events[STATS_EV_SMUGGLING_REFUSED]);
                session_reject_message(s, "bare_newline_message",
                                       REPLY_BARE_NEWLINE_MESSAGE);
            } else {
                if (!s->msg_rejected)
                    SESSION_COUNT(s, events[STATS_EV_SMUGGLING_NORMALIZED]);
                log_event(&s->log, LOG_INFO, s->id,
                          "event=bare_newline_message action=%s",
                          s->msg_rejected ? "reject" : "normalize");
            }
        }
        if (smtp_data_filter_nul_seen(&s->filter) && !s->nul_logged) {
            /* a backend that drops NULs could read "\r\n\0.\r\n" as an
             * end: they never reach it (removed, or the message refused) */
            s->nul_logged = true;
            SESSION_COUNT(s, events[STATS_EV_NUL_REMOVED]);
            if (s->svc->bare_newline == BARE_NEWLINE_REJECT &&
                !s->msg_rejected && session_enforce(s, "nul_byte", "message"))
                session_reject_message(s, "nul_message", REPLY_NUL_MESSAGE);
            else
                log_event(&s->log, LOG_INFO, s->id,
                          "event=nul_message action=%s",
                          s->msg_rejected ? "reject" : "normalize");
        }
        if (!s->msg_rejected)
            conn_write(s->b.conn, out, out_len);
    }
    sbuf_consume(&s->cin, n);
    s->data_bytes += n;
    if (!done)
        return true;
    session_enter(s, CLIENT_COMMAND);
    s->nnul += smtp_data_filter_nul_count(&s->filter);
    if (!s->msg_rejected) {
        session_fifo_push(s, EXPECT_END_OF_DATA, REPLY_NONE);
        return true;
    }
    s->msg_rejected = false;
    session_local(s, (enum reply_id)s->reject_reply);
    if (s->closing)
        return false;
    s->backend_replay_helo = true;
    session_backend_restart(s);
    return true;
}

/*
 * session_auth_cancel - the proxy refuses the line that should answer
 * the backend's 334 (too long, a bare CR or LF, a NUL): the backend is
 * still waiting for it, so the exchange is cancelled there too (RFC 4954
 * 4: "*"), or the two would read what follows differently.  Its answer
 * is not relayed; the client gets the proxy's own refusal after it.
 */
static void session_auth_cancel(struct session *s)
{
    if (s->cmode != CLIENT_AUTH)
        return;
    log_event(&s->log, LOG_INFO, s->id, "event=auth_cancelled");
    session_forward(s, "*\r\n", 1, 3);
    session_fifo_push(s, EXPECT_AUTH_CANCEL, REPLY_NONE);
}

/* session_client_step - handle what cin holds in the current mode; returns
 * false when nothing more can be done now. */
static bool session_client_step(struct session *s)
{
    const char *p = sbuf_ptr(&s->cin);
    size_t len = s->cin.len, n, line_len, total;

    switch (s->cmode) {
    case CLIENT_COMMAND:
    case CLIENT_AUTH:
        if (s->nwaiting > 0 || s->fifo_len >= SESSION_FIFO)
            return false;
        if (s->draining && !s->bdat_in_message)
            return false;    /* stopping: only the message in flight */
        switch (smtp_line_find(p, len, s->svc->max_line_length, &line_len,
                               &total)) {
        case SMTP_LINE_MORE:
            return false;
        case SMTP_LINE_TOO_LONG:
            log_event(&s->log, LOG_INFO, s->id, "event=line_too_long");
            SESSION_COUNT(s, events[STATS_EV_LINE_TOO_LONG]);
            session_auth_cancel(s);
            session_enter(s, CLIENT_SKIP_LINE);
            session_local(s, REPLY_LINE_TOO_LONG);
            return true;
        case SMTP_LINE_OK:
            break;
        }
        if (smtp_line_has_bare_cr_lf(p, line_len, total)) {
            /* a line a backend could split differently (smuggling) */
            log_event(&s->log, LOG_INFO, s->id, "event=bare_newline_command");
            SESSION_COUNT(s, events[STATS_EV_BARE_NEWLINE_COMMAND]);
            sbuf_consume(&s->cin, total);
            session_auth_cancel(s);
            session_enter(s, CLIENT_COMMAND);
            session_local(s, REPLY_BARE_NEWLINE_COMMAND);
            return true;
        }
        if (memchr(p, '\0', line_len) != NULL) {
            /* RFC 5321 2.3.8: no NUL in a command; a backend may cut the
             * line there, or drop it and read something else */
            log_event(&s->log, LOG_INFO, s->id, "event=nul_command");
            SESSION_COUNT(s, events[STATS_EV_NUL_REMOVED]);
            sbuf_consume(&s->cin, total);
            session_auth_cancel(s);
            session_enter(s, CLIENT_COMMAND);
            session_local(s, REPLY_NUL_COMMAND);
            return true;
        }
        if (s->cmode == CLIENT_AUTH) {
            /* an AUTH response line: relayed, never parsed nor logged */
            session_enter(s, CLIENT_COMMAND);
            session_forward(s, p, line_len, total);
            session_fifo_push(s, EXPECT_AUTH, REPLY_NONE);
            sbuf_consume(&s->cin, total);
            return true;
        }
        session_command(s, p, line_len, total);
        return true;
    case CLIENT_DATA:
        return session_data_step(s, p, len);
    case CLIENT_BDAT:
    case CLIENT_BDAT_SKIP:
        if (s->cmode == CLIENT_BDAT &&
            conn_pending(s->b.conn) >= CONN_HIGH_WATER)
            return false;
        n = len < s->bdat_left ? len : (size_t)s->bdat_left;
        if (s->cmode == CLIENT_BDAT)
            conn_write(s->b.conn, p, n);
        sbuf_consume(&s->cin, n);
        s->data_bytes += n;
        s->bdat_left -= n;
        if (s->bdat_left == 0)
            session_enter(s, CLIENT_COMMAND);
        return true;
    case CLIENT_SKIP_LINE: {
        const char *lf = memchr(p, '\n', len);

        if (lf == NULL) {
            sbuf_free(&s->cin);
            return false;
        }
        sbuf_consume(&s->cin, (size_t)(lf - p) + 1);
        session_enter(s, CLIENT_COMMAND);
        return true;
    }
    case CLIENT_STARTTLS:
        SESSION_COUNT(s, events[STATS_EV_STARTTLS_INJECTION]);
        log_event(&s->log, LOG_WARN, s->id,
                  "event=starttls_injection dropped=%zu", len);
        sbuf_free(&s->cin);
        return false;
    case CLIENT_HANDSHAKE:
    case CLIENT_QUIT:
    case CLIENT_NMODES:
        sbuf_free(&s->cin);
        return false;
    }
    return false;
}

/*
 * session_command_clock - start the command deadline when an unfinished
 * line sits at the end of the input, stop it when there is none.
 */
static void session_command_clock(struct session *s)
{
    bool partial = (s->cmode == CLIENT_COMMAND || s->cmode == CLIENT_AUTH ||
                    s->cmode == CLIENT_SKIP_LINE) &&
                   s->cin.len > 0 &&
                   sbuf_ptr(&s->cin)[s->cin.len - 1] != '\n';

    if (!partial) {
        s->cmd_start = 0;
    } else if (s->cmd_start == 0) {
        s->cmd_start = uv_now(s->ctx->loop);
        session_arm(s);
    }
}

/* session_client_process - handle buffered client input as far as the
 * state allows.  Re-entry (a callback fired from inside) only asks the
 * running pass to look again. */
void session_client_process(struct session *s)
{
    if (s->in_process) {
        s->process_again = true;
        return;
    }
    s->in_process = true;
    do {
        s->process_again = false;
        while (!s->closing && s->cin.len > 0 && s->greeted &&
               ((s->b.state == BACKEND_READY && s->b.conn != NULL) ||
                (s->cmode == CLIENT_DATA && s->msg_rejected)) &&
               session_client_step(s))
            ;
    } while (s->process_again && !s->closing);
    s->in_process = false;
    session_command_clock(s);
    session_flow(s);
}

