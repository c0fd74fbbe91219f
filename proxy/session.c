/*
 * session.c - the relay between the client leg and the backend leg.
 *
 * Client bytes are read into cin and handled line by line: each command is
 * either forwarded to the backend or answered here.  Every command owes
 * the client one reply; the owed replies wait in a FIFO in command order
 * (so PIPELINING works), and a reply the proxy writes itself waits its
 * turn there like any other.  Backend replies are matched to the head of
 * the FIFO; one that nobody asked for ends the session.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "connlimit.h"
#include "log.h"
#include "proxyproto.h"
#include "session.h"
#include "session_int.h"

static void session_close(struct session *s, enum reply_id reply);
static void session_client_input(struct session *s, const char *buf,
                                 size_t len);
static const struct conn_cbs client_cbs;
static size_t session_trace_header(const struct session *s, char *out,
                                   size_t cap);

/* session_format_addr - "ip:port" or "[ip6]:port". */
static void session_format_addr(const struct sockaddr_storage *ss, char *out,
                                size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

        uv_ip4_name(a, host, sizeof host);
        snprintf(out, len, "%s:%d", host, ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

        uv_ip6_name(a, host, sizeof host);
        snprintf(out, len, "[%s]:%d", host, ntohs(a->sin6_port));
    }
}

/* session_server_ctx - the client leg's TLS context (the profile's own
 * when it changes TLS settings). */
static SSL_CTX *session_server_ctx(const struct session *s)
{
    return tls_server_ctx(s->tls, s->profile);
}
static void session_client_process(struct session *s);
static void session_flow(struct session *s);
static void session_arm(struct session *s);
static void session_fail(struct session *s, enum reply_id reply,
                         const char *event, const char *why);

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
static void session_enter(struct session *s, enum client_mode mode)
{
    if (s->cmode == mode)
        return;
    if (!session_transition_ok(s->cmode, mode)) {
        log_event(&s->w->log, LOG_ERROR, s->id,
                  "event=state_illegal machine=client from=%s to=%s",
                  session_mode_name(s->cmode), session_mode_name(mode));
#ifdef STATE_CHECKS
        abort();
#endif
    }
    log_event(&s->w->log, LOG_DEBUG, s->id, "event=state from=%s to=%s",
              session_mode_name(s->cmode), session_mode_name(mode));
    s->cmode = mode;
}

/* ---- lifetime ----------------------------------------------------------- */

struct session *session_next(const struct session *s)
{
    return s->next;
}

static void session_ref(struct session *s)
{
    s->refs++;
}

static void session_on_timer_close(uv_handle_t *h)
{
    struct session *s = h->data;
    struct worker *w = s->w;

    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    if (s->limits_held)
        connlimit_release(w->limits, s->svc_index,
                          (const struct sockaddr *)&s->client_sa);
    sbuf_free(&s->cin);
    backend_free(&s->b);
    free(s->held_helo);
    free(s->client_cert_subject);
    free(s->client_cert_verify);
    free(s);
}

/* session_unref - a handle of s has closed; the last one frees s, after
 * the timer's own close callback. */
static void session_unref(struct session *s)
{
    if (--s->refs > 0 || !s->closing)
        return;
    uv_close((uv_handle_t *)&s->timer, session_on_timer_close);
}

/* session_waiting_for_backend - a reply or the setup is owed by it. */
static bool session_waiting_for_backend(const struct session *s)
{
    unsigned i;

    if (s->b.state != BACKEND_READY)
        return true;
    for (i = 0; i < s->fifo_len; i++) {
        uint8_t k = s->fifo[(s->fifo_head + i) % SESSION_FIFO].kind;

        if (k != EXPECT_LOCAL && k != EXPECT_STARTTLS)
            return true;
    }
    return false;
}

/*
 * session_deadline - the earliest moment something is overdue, and what:
 * the silent leg (idle_timeout), an unfinished command line
 * (command_timeout: a client trickling bytes is cut off too), the TLS
 * handshake (tls_handshake_timeout), or message content arriving slower
 * than min_data_rate (after a 30 s grace, and not while we ourselves hold
 * the client back).
 */
static uint64_t session_deadline(const struct session *s, const char **what)
{
    const struct service *svc = s->svc;
    uint64_t d, t;

    if (session_waiting_for_backend(s)) {
        d = s->b.last + (uint64_t)svc->idle_timeout * 1000;
        *what = "backend";
    } else {
        d = s->last_client + (uint64_t)svc->idle_timeout * 1000;
        *what = "client";
    }
    if (s->cmode == CLIENT_HANDSHAKE && s->hs_start != 0) {
        t = s->hs_start + (uint64_t)svc->tls_handshake_timeout * 1000;
        if (t < d) {
            d = t;
            *what = "tls_handshake";
        }
    }
    t = backend_deadline(&s->b);
    if (t != 0) {
        if (t < d) {
            d = t;
            *what = "backend_tls_handshake";
        }
    }
    if ((s->cmode == CLIENT_COMMAND || s->cmode == CLIENT_AUTH) &&
        s->cmd_start != 0) {
        t = s->cmd_start + (uint64_t)svc->command_timeout * 1000;
        if (t < d) {
            d = t;
            *what = "command";
        }
    }
    if ((s->cmode == CLIENT_DATA || s->cmode == CLIENT_BDAT) &&
        svc->min_data_rate > 0 && !s->client_paused && s->data_start != 0) {
        uint64_t need = s->data_bytes * 1000 / svc->min_data_rate;

        t = s->data_start + (need > 30000 ? need : 30000);
        if (t < d) {
            d = t;
            *what = "data_rate";
        }
    }
    return d;
}

static void session_on_timer(uv_timer_t *t);

/* session_arm - (re)start the timer for the earliest deadline. */
static void session_arm(struct session *s)
{
    const char *what;
    uint64_t d, now;

    if (s->closing)
        return;
    d = session_deadline(s, &what);
    now = uv_now(s->w->loop);
    uv_timer_start(&s->timer, session_on_timer, d > now ? d - now : 0, 0);
}

static void session_on_timer(uv_timer_t *t)
{
    struct session *s = t->data;
    const char *what;

    if (s->closing) {
        /* the close deadline: a peer that does not read loses its output */
        if (s->client != NULL)
            conn_close(s->client);
        if (s->b.conn != NULL)
            conn_close(s->b.conn);
        return;
    }
    if (session_deadline(s, &what) > uv_now(s->w->loop)) {
        session_arm(s);   /* activity moved the deadline on */
        return;
    }
    log_event(&s->w->log, LOG_INFO, s->id, "event=timeout waiting_for=%s",
              what);
    if (strcmp(what, "backend_tls_handshake") == 0) {
        backend_handshake_timeout(&s->b);   /* "may": retried in plaintext */
        session_arm(s);
        return;
    }
    session_close(s, s->cmode == CLIENT_HANDSHAKE ? REPLY_NONE : REPLY_TIMEOUT);
}

/*
 * session_touch_client - the client showed life (the backend leg keeps
 * its own time stamp).  Only a time stamp: the timer notices when it
 * fires and re-arms itself, so reads cost no timer operation.
 */
static void session_touch_client(struct session *s)
{
    s->last_client = uv_now(s->w->loop);
}

static void session_summary(struct session *s)
{
    char subject[200];

    const char *cert = s->client_cert_subject ? s->client_cert_subject : "";

    log_escape(subject, sizeof subject, cert, strlen(cert));
    log_event(&s->w->log, LOG_INFO, s->id,
              "event=summary client=%s service=%s profile=%s client_tls=%s "
              "client_cert=\"%s\" backend=%s:%s backend_tls=%s "
              "backend_verify=%s commands=%u messages=%u errors=%u "
              "nul_bytes=%llu backend_connections=%u duration_ms=%llu",
              s->client_addr, s->svc->name,
              s->profile < s->svc->nprofiles ? s->svc->profiles[s->profile]->name
                                             : "none",
              s->client_tls_desc[0] ? s->client_tls_desc : "plaintext", subject,
              s->svc->backend_host, s->svc->backend_port,
              s->b.tls_desc[0] ? s->b.tls_desc : "plaintext",
              s->b.verify[0] ? s->b.verify : "none",
              s->ncommands, s->nmessages, s->nerrors,
              (unsigned long long)(s->nnul +
                                   (s->cmode == CLIENT_DATA
                                        ? smtp_data_filter_nul_count(&s->filter)
                                        : 0)),
              s->b.nconnections,
              (unsigned long long)(uv_now(s->w->loop) - s->started_ms));
}

static void session_write_reply(struct session *s, enum reply_id id)
{
    char line[512];
    size_t n = reply_format(id, s->w->cfg->hostname, line, sizeof line);

    if (n > 0 && s->client != NULL)
        conn_write(s->client, line, n);
}

/*
 * session_enforce - a strict rule would refuse something.  With
 * "enforce = no" it is only logged (would_refuse=...) and false is
 * returned: the caller lets the session go on.
 */
static bool session_enforce(struct session *s, const char *rule,
                            const char *detail)
{
    char esc[160];

    if (s->svc->enforce)
        return true;
    log_escape(esc, sizeof esc, detail ? detail : "", detail ? strlen(detail) : 0);
    log_event(&s->w->log, LOG_WARN, s->id,
              "event=policy would_refuse=%s detail=\"%s\"", rule, esc);
    return false;
}

/*
 * session_count_error - the client was given an error reply (4xx/5xx);
 * past max_errors the session ends with 421 4.7.0, as a careful MTA cuts
 * off a client that keeps failing (a scanner, a confused appliance).
 */
static void session_count_error(struct session *s, int code)
{
    if (code < 400 || s->closing)
        return;
    if (++s->nerrors < s->svc->max_errors)
        return;
    if (s->nerrors == s->svc->max_errors &&
        session_enforce(s, "max_errors", "too many errors"))
        session_fail(s, REPLY_TOO_MANY_ERRORS, "too_many_errors",
                     "max_errors reached");
}

/*
 * session_close - end the session: optionally tell the client why, let
 * that reply leave, drop the backend at once (mid-message it never sees
 * an end-of-data: the message is not delivered, and the client, which got
 * no 250, keeps it).  Idempotent.
 */
static void session_close(struct session *s, enum reply_id reply)
{
    if (s->closing)
        return;
    if (reply != REPLY_NONE)
        session_write_reply(s, reply);
    s->closing = true;
    session_summary(s);
    backend_close(&s->b);
    if (s->client != NULL)
        conn_close_flush(s->client);
    uv_timer_start(&s->timer, session_on_timer, 5000, 0);
    if (s->refs == 0)
        uv_close((uv_handle_t *)&s->timer, session_on_timer_close);
}

void session_shutdown(struct session *s, enum reply_id reply)
{
    session_close(s, reply);
}

/* session_fail - log why, then close with reply. */
static void session_fail(struct session *s, enum reply_id reply,
                         const char *event, const char *why)
{
    char esc[200];

    log_escape(esc, sizeof esc, why, strlen(why));
    log_event(&s->w->log, LOG_WARN, s->id, "event=%s reason=\"%s\"", event,
              esc);
    session_close(s, reply);
}

/* ---- the FIFO of owed replies -------------------------------------------- */

static struct expect *fifo_head(struct session *s)
{
    return s->fifo_len ? &s->fifo[s->fifo_head] : NULL;
}

/* session_expect_waits - see session_int.h: the reply to EHLO or HELO
 * may change what the client may do, a 354 turns what follows into
 * content, a 334 into an AUTH response; our XCLIENT HELO= comes back
 * before the client's EHLO is read again. */
bool session_expect_waits(enum expect_kind kind)
{
    return kind == EXPECT_EHLO || kind == EXPECT_HELO ||
           kind == EXPECT_HELO_FALLBACK || kind == EXPECT_DATA ||
           kind == EXPECT_AUTH || kind == EXPECT_XCLIENT;
}

static void fifo_push(struct session *s, enum expect_kind kind,
                      enum reply_id reply)
{
    unsigned i = (s->fifo_head + s->fifo_len) % SESSION_FIFO;

    s->fifo[i].kind = (uint8_t)kind;
    s->fifo[i].reply = (uint8_t)reply;
    s->fifo_len++;
    if (session_expect_waits(kind))
        s->nwaiting++;
}

static void fifo_pop(struct session *s)
{
    if (session_expect_waits((enum expect_kind)s->fifo[s->fifo_head].kind))
        s->nwaiting--;
    s->fifo_head = (s->fifo_head + 1) % SESSION_FIFO;
    s->fifo_len--;
}

/*
 * session_start_client_tls - our 220 is at the head: send it, forget every
 * plaintext byte still buffered (RFC 3207 4.2: anything after STARTTLS in
 * the same write is an injection attempt), start the handshake.
 */
static void session_start_client_tls(struct session *s)
{
    session_write_reply(s, REPLY_STARTTLS_GO);
    if (s->cin.len > 0) {
        log_event(&s->w->log, LOG_WARN, s->id,
                  "event=starttls_injection dropped=%zu", s->cin.len);
        sbuf_free(&s->cin);
    }
    session_enter(s, CLIENT_HANDSHAKE);
    s->hs_start = uv_now(s->w->loop);
    session_arm(s);
    if (conn_start_tls_server(s->client, session_server_ctx(s)) != 0)
        session_fail(s, REPLY_NONE, "client_tls_failed", "cannot start TLS");
}

/* fifo_flush_local - write the proxy's own replies that reached the head. */
static void fifo_flush_local(struct session *s)
{
    struct expect *e;

    while (!s->closing && (e = fifo_head(s)) != NULL) {
        if (e->kind == EXPECT_LOCAL) {
            enum reply_id id = (enum reply_id)e->reply;

            fifo_pop(s);
            session_write_reply(s, id);
            session_count_error(s, reply_code(id));
        } else if (e->kind == EXPECT_STARTTLS) {
            fifo_pop(s);
            session_start_client_tls(s);
            return;
        } else {
            return;
        }
    }
}

static void session_local(struct session *s, enum reply_id id)
{
    fifo_push(s, EXPECT_LOCAL, id);
    fifo_flush_local(s);
}

/* ---- client side ---------------------------------------------------------- */

/* session_forward - send one command line to the backend, always with
 * CRLF: a bare LF from the client never reaches the backend. */
static void session_forward(struct session *s, const char *line, size_t len,
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

static enum reply_id session_auth_refusal(struct session *s,
                                          const struct smtp_cmd *cmd)
{
    (void)cmd;
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

    if (!log_enabled(&s->w->log, LOG_DEBUG))
        return;
    if (cmd->verb == SMTP_VERB_AUTH && cmd->arg != NULL) {
        /* the mechanism only: an initial response is a secret */
        const char *sp = memchr(cmd->arg, ' ', cmd->arg_len);
        n = sp ? (size_t)(sp - cmd->arg) : cmd->arg_len;
    }
    log_escape(esc, sizeof esc, cmd->arg ? cmd->arg : "", n);
    log_event(&s->w->log, LOG_DEBUG, s->id, "event=command verb=%s arg=\"%s\"",
              smtp_verb_name(cmd->verb), esc);
}

/* session_remember_helo - keep the client's EHLO/HELO name (for HELO
 * fallback and the trace header), printable ASCII only. */
static void session_remember_helo(struct session *s, const struct smtp_cmd *cmd)
{
    size_t n = 0;

    for (size_t i = 0; cmd->arg != NULL && i < cmd->arg_len &&
                       n + 1 < sizeof s->helo_name; i++) {
        unsigned char c = (unsigned char)cmd->arg[i];

        if (c == ' ')
            break;
        if (c > 0x20 && c < 0x7f)
            s->helo_name[n++] = (char)c;
    }
    s->helo_name[n] = '\0';
}

/*
 * session_helo_fallback - the backend refused EHLO (a HELO-only legacy
 * server): greet it with HELO and answer the client's EHLO ourselves when
 * its reply comes.
 */
static void session_helo_fallback(struct session *s)
{
    char line[300];
    int n = snprintf(line, sizeof line, "HELO %s\r\n",
                     s->helo_name[0] ? s->helo_name : "unknown");

    s->b.helo_only = true;
    session_forward(s, line, (size_t)n - 2, (size_t)n);
    fifo_push(s, EXPECT_HELO_FALLBACK, REPLY_NONE);
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
    fifo_push(s, (enum expect_kind)v->expect, REPLY_NONE);
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
        int xn = backend_xclient_helo(s->helo_name, s->client_esmtp, x,
                                      sizeof x);

        s->xclient_helo_sent = true;
        s->ncommands--;
        session_forward(s, x, (size_t)xn - 2, (size_t)xn);
        fifo_push(s, EXPECT_XCLIENT, REPLY_NONE);
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

/* session_cmd_starttls - answered here, in its turn (fifo_flush_local
 * starts the handshake when the 220 is written). */
static void session_cmd_starttls(struct session *s, const struct smtp_cmd *cmd,
                                 const struct session_line *l)
{
    (void)cmd;
    sbuf_consume(&s->cin, l->total);
    session_enter(s, CLIENT_STARTTLS);
    fifo_push(s, EXPECT_STARTTLS, REPLY_NONE);
    fifo_flush_local(s);
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
    fifo_push(s, last ? EXPECT_BDAT_LAST : EXPECT_BDAT, REPLY_NONE);
    s->bdat_left = size;
    if (size > 0) {
        session_enter(s, CLIENT_BDAT);
        s->data_start = uv_now(s->w->loop);
        s->data_bytes = 0;
        session_arm(s);
    }
}

static void session_cmd_quit(struct session *s, const struct smtp_cmd *cmd,
                             const struct session_line *l)
{
    (void)cmd;
    session_forward(s, l->p, l->len, l->total);
    fifo_push(s, EXPECT_QUIT, REPLY_NONE);
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
                        EXPECT_OTHER, NULL, session_cmd_forward},
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

/* session_comment_text - peer text made safe inside an RFC 5322 comment:
 * printable ASCII only, no parentheses or backslashes, capped. */
static void session_comment_text(const char *in, char *out, size_t cap)
{
    size_t o = 0;

    for (; *in != '\0' && o + 1 < cap; in++) {
        unsigned char c = (unsigned char)*in;

        out[o++] = (c < 0x20 || c > 0x7e || c == '(' || c == ')' ||
                    c == '\\') ? '?' : (char)c;
    }
    out[o] = '\0';
}

/*
 * session_trace_header - "trace_header = yes": one Received: header
 * (RFC 5321 4.4, RFC 5322 3.6.7) that records both legs: who the client
 * is and how it reached us (protocol, cipher, certificate), and how we
 * reached the backend (policy, protocol, cipher, verification).  Returns
 * its length in out, 0 when it does not fit.
 */
static size_t session_trace_header(const struct session *s, char *out,
                                   size_t cap)
{
    static const char *const policy[] = {"none", "may", "encrypt", "verify"};
    char helo[128], subject[200], addr[INET6_ADDRSTRLEN + 8] = "unknown";
    char host[INET6_ADDRSTRLEN] = "", client[400], backend[300], date[64];
    char tls_ver[96] = "", *cipher;
    time_t now = time(NULL);
    struct tm tm;
    int n;

    session_comment_text(s->helo_name[0] ? s->helo_name : "unknown", helo,
                         sizeof helo);
    if (s->client_sa.ss_family == AF_INET) {
        uv_ip4_name((const struct sockaddr_in *)&s->client_sa, host, sizeof host);
        snprintf(addr, sizeof addr, "[%s]", host);
    } else if (s->client_sa.ss_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)&s->client_sa, host, sizeof host);
        snprintf(addr, sizeof addr, "[IPv6:%s]", host);
    }
    if (s->client_tls) {
        snprintf(tls_ver, sizeof tls_ver, "%s", s->client_tls_desc);
        cipher = strchr(tls_ver, '/');
        if (cipher != NULL)
            *cipher++ = '\0';
        session_comment_text(s->client_cert_subject ? s->client_cert_subject
                                                    : "none",
                             subject, sizeof subject);
        snprintf(client, sizeof client,
                 "(using %s with cipher %s; client certificate %s, %s)",
                 tls_ver, cipher ? cipher : "?", subject,
                 s->client_cert_verify ? s->client_cert_verify : "none");
    } else {
        snprintf(client, sizeof client, "(no TLS)");
    }
    if (s->b.tls_desc[0] != '\0') {
        char verify[100];

        snprintf(tls_ver, sizeof tls_ver, "%s", s->b.tls_desc);
        cipher = strchr(tls_ver, '/');
        if (cipher != NULL)
            *cipher++ = '\0';
        session_comment_text(s->b.verify, verify, sizeof verify);
        snprintf(backend, sizeof backend,
                 "(backend %s:%s policy %s using %s with cipher %s; "
                 "certificate %s)",
                 s->svc->backend_host, s->svc->backend_port,
                 policy[s->svc->backend_tls], tls_ver, cipher ? cipher : "?",
                 verify);
    } else {
        snprintf(backend, sizeof backend, "(backend %s:%s policy %s; no TLS)",
                 s->svc->backend_host, s->svc->backend_port,
                 policy[s->svc->backend_tls]);
    }
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    n = snprintf(out, cap,
                 "Received: from %s (%s)\r\n"
                 "\t%s\r\n"
                 "\tby %s (starttls-proxy) with %s%s id %016llx\r\n"
                 "\t%s;\r\n"
                 "\t%s\r\n",
                 helo, addr, client, s->w->cfg->hostname,
                 s->client_esmtp ? "ESMTP" : "SMTP", s->client_tls ? "S" : "",
                 (unsigned long long)s->id, backend, date);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/*
 * session_backend_restart - a fresh backend session, whose greeting is
 * not relayed: after the client's STARTTLS (the backend saw plaintext
 * transaction state) or after a refused message (it was cut off in the
 * middle).  What was held from the old backend session goes.
 */
static void session_backend_restart(struct session *s)
{
    free(s->held_helo);
    s->held_helo = NULL;
    s->backend_dirty = false;
    s->backend_refresh = true;
    backend_restart(&s->b, false);
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
    log_event(&s->w->log, LOG_WARN, s->id, "event=%s action=reject", event);
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
static size_t session_data_direct(struct session *s, const char *p,
                                  size_t len)
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
    char *out = s->w->fbuf;
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
        n = smtp_data_filter(&s->filter, p, len, out, sizeof s->w->fbuf,
                             &out_len, &done);
        if (smtp_data_filter_bare_seen(&s->filter) && !s->bare_logged) {
            s->bare_logged = true;
            if (s->svc->bare_newline == BARE_NEWLINE_REJECT &&
                !s->msg_rejected &&
                session_enforce(s, "bare_newline", "message"))
                session_reject_message(s, "bare_newline_message",
                                       REPLY_BARE_NEWLINE_MESSAGE);
            else
                log_event(&s->w->log, LOG_INFO, s->id,
                          "event=bare_newline_message action=%s",
                          s->msg_rejected ? "reject" : "normalize");
        }
        if (smtp_data_filter_nul_seen(&s->filter) && !s->nul_logged) {
            /* a backend that drops NULs could read "\r\n\0.\r\n" as an
             * end: they never reach it (removed, or the message refused) */
            s->nul_logged = true;
            if (s->svc->bare_newline == BARE_NEWLINE_REJECT &&
                !s->msg_rejected && session_enforce(s, "nul_byte", "message"))
                session_reject_message(s, "nul_message", REPLY_NUL_MESSAGE);
            else
                log_event(&s->w->log, LOG_INFO, s->id,
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
        fifo_push(s, EXPECT_END_OF_DATA, REPLY_NONE);
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
        switch (smtp_line_find(p, len, s->svc->max_line_length, &line_len,
                               &total)) {
        case SMTP_LINE_MORE:
            return false;
        case SMTP_LINE_TOO_LONG:
            log_event(&s->w->log, LOG_INFO, s->id, "event=line_too_long");
            session_enter(s, CLIENT_SKIP_LINE);
            session_local(s, REPLY_LINE_TOO_LONG);
            return true;
        case SMTP_LINE_OK:
            break;
        }
        if (smtp_line_has_bare_cr_lf(p, line_len, total)) {
            /* a line a backend could split differently (smuggling) */
            log_event(&s->w->log, LOG_INFO, s->id, "event=bare_newline_command");
            sbuf_consume(&s->cin, total);
            session_enter(s, CLIENT_COMMAND);
            session_local(s, REPLY_BARE_NEWLINE_COMMAND);
            return true;
        }
        if (memchr(p, '\0', line_len) != NULL) {
            /* RFC 5321 2.3.8: no NUL in a command; a backend may cut the
             * line there, or drop it and read something else */
            log_event(&s->w->log, LOG_INFO, s->id, "event=nul_command");
            sbuf_consume(&s->cin, total);
            session_enter(s, CLIENT_COMMAND);
            session_local(s, REPLY_NUL_COMMAND);
            return true;
        }
        if (s->cmode == CLIENT_AUTH) {
            /* an AUTH response line: relayed, never parsed nor logged */
            session_enter(s, CLIENT_COMMAND);
            session_forward(s, p, line_len, total);
            fifo_push(s, EXPECT_AUTH, REPLY_NONE);
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
        log_event(&s->w->log, LOG_WARN, s->id,
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
        s->cmd_start = uv_now(s->w->loop);
        session_arm(s);
    }
}

/* session_client_process - handle buffered client input as far as the
 * state allows.  Re-entry (a callback fired from inside) only asks the
 * running pass to look again. */
static void session_client_process(struct session *s)
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

/*
 * session_flow - back-pressure: stop reading a leg while the other leg's
 * output (or our own input buffer) is above its mark, start again below
 * the low mark.
 */
static void session_flow(struct session *s)
{
    size_t bp, cp;

    if (s->closing)
        return;
    bp = s->b.conn != NULL ? conn_pending(s->b.conn) : 0;
    cp = s->client != NULL ? conn_pending(s->client) : 0;
    if (s->client != NULL && s->cmode != CLIENT_QUIT) {
        if (s->cin.len >= SESSION_INBUF_MAX || bp >= CONN_HIGH_WATER) {
            conn_read_stop(s->client);
            s->client_paused = true;
            if (s->b.conn != NULL)
                conn_arm_drain(s->b.conn);
        } else if (s->client_paused && bp >= CONN_LOW_WATER) {
            /* between the marks: resume when the backend has drained */
            conn_arm_drain(s->b.conn);
        } else if (bp < CONN_LOW_WATER) {
            if (s->client_paused) {
                /* the rate is the client's only while we let it send */
                s->client_paused = false;
                s->data_start = uv_now(s->w->loop);
                s->data_bytes = 0;
            }
            conn_read_start(s->client);
        }
    }
    if (s->b.conn != NULL && s->b.state != BACKEND_IDLE &&
        s->b.state != BACKEND_CONNECTING && s->b.state != BACKEND_RESOLVING) {
        if (s->b.in.len >= SESSION_INBUF_MAX || cp >= CONN_HIGH_WATER) {
            conn_read_stop(s->b.conn);
            s->backend_paused = true;
            if (s->client != NULL)
                conn_arm_drain(s->client);
        } else if (s->backend_paused && cp >= CONN_LOW_WATER) {
            conn_arm_drain(s->client);
        } else if (cp < CONN_LOW_WATER) {
            s->backend_paused = false;
            conn_read_start(s->b.conn);
        }
    }
}

static void session_try_greet(struct session *s)
{
    if (s->greeted || s->closing || s->b.state != BACKEND_READY)
        return;
    if (s->svc->client_implicit_tls && !s->client_tls)
        return;
    s->greeted = true;
    conn_write(s->client, s->b.greeting, s->b.greeting_len);
    session_client_process(s);
}

/* session_on_backend_ready - the backend leg is set up (its events). */
static void session_on_backend_ready(void *owner)
{
    struct session *s = owner;

    if (s->backend_refresh) {
        /* a fresh backend after the client's STARTTLS (the client is about
         * to send EHLO) or after a refused message (it is not: say its
         * EHLO again for it) */
        s->backend_refresh = false;
        if (s->backend_replay_helo && s->helo_name[0] != '\0') {
            char line[300];
            int n = snprintf(line, sizeof line, "%s %s\r\n",
                             s->b.helo_only || !s->client_esmtp
                                 ? "HELO" : "EHLO",
                             s->helo_name);

            /* what this backend offers is learnt from its own reply */
            s->backend_chunking = false;
            session_forward(s, line, (size_t)n - 2, (size_t)n);
            fifo_push(s, EXPECT_SILENT, REPLY_NONE);
        }
        s->backend_replay_helo = false;
        session_client_process(s);
        return;
    }
    session_try_greet(s);
}

static void session_begin(struct session *s);

/*
 * The accept phase of "client_proxy_protocol = yes": before the session
 * begins, the client conn has these callbacks and its bytes are only a
 * trusted load balancer's PROXY header (v1 or v2), which says who the
 * client is.  From then on that address is used everywhere (limits,
 * profiles, logs, the trace header, what the backend is told), and the
 * conn is handed to the session's own callbacks.  The command deadline
 * (command_timeout) runs from the accept.
 */
static void proxy_header_on_data(struct conn *c, void *ud, const char *buf,
                                 size_t len)
{
    struct session *s = ud;
    struct proxyproto_result r;
    struct sbuf early;
    char esc[120];

    if (s->closing)
        return;
    session_touch_client(s);
    if (sbuf_append(&s->cin, buf, len) != 0) {
        session_fail(s, REPLY_NONE, "error", "out of memory");
        return;
    }
    switch (proxyproto_parse((const unsigned char *)sbuf_ptr(&s->cin),
                             s->cin.len, &r)) {
    case PROXYPROTO_MORE:
        return;
    case PROXYPROTO_BAD:
        log_escape(esc, sizeof esc, sbuf_ptr(&s->cin),
                   s->cin.len < 40 ? s->cin.len : 40);
        log_event(&s->w->log, LOG_WARN, s->id,
                  "event=proxy_header_refused reason=malformed data=\"%s\"",
                  esc);
        session_close(s, REPLY_PROXY_HEADER);
        return;
    case PROXYPROTO_OK:
        break;
    }
    sbuf_consume(&s->cin, r.consumed);
    if (r.kind == PROXYPROTO_KIND_PROXY) {
        s->client_sa = r.src;
        s->client_dst = r.dst;
        session_format_addr(&s->client_sa, s->client_addr,
                            sizeof s->client_addr);
    }
    log_event(&s->w->log, LOG_INFO, s->id,
              "event=proxy_header version=%d client=%s via=%s", r.version,
              s->client_addr, conn_peer(c));
    s->cmd_start = 0;
    conn_set_cbs(c, &client_cbs, s);
    early = s->cin;          /* bytes behind the header: before our greeting */
    memset(&s->cin, 0, sizeof s->cin);
    session_begin(s);
    if (!s->closing && early.len > 0)
        session_client_input(s, sbuf_ptr(&early), early.len);
    sbuf_free(&early);
}

static void client_on_eof(struct conn *c, void *ud, int status);
static void client_on_drain(struct conn *c, void *ud);
static void client_on_close(struct conn *c, void *ud);

static const struct conn_cbs proxy_header_cbs = {
    .on_data = proxy_header_on_data,
    .on_eof = client_on_eof,
    .on_drain = client_on_drain,
    .on_close = client_on_close,
};

/* session_client_input - bytes from the client. */
static void session_client_input(struct session *s, const char *buf,
                                 size_t len)
{
    size_t n;


    if (s->closing)
        return;
    session_touch_client(s);
    if (!s->greeted && !s->pregreet_seen) {
        /* RFC 5321 3.1: the client waits for the greeting.  One that talks
         * first is a spam engine or a confused device; Postfix's
         * postscreen refuses the same way. */
        char esc[200];

        s->pregreet_seen = true;
        log_escape(esc, sizeof esc, buf, len < 120 ? len : 120);
        log_event(&s->w->log, LOG_WARN, s->id,
                  "event=pregreet bytes=%zu data=\"%s\"", len, esc);
        if (session_enforce(s, "pregreet", "client spoke before greeting")) {
            session_close(s, REPLY_PREGREET);
            return;
        }
    }
    if (s->cmode == CLIENT_STARTTLS) {
        log_event(&s->w->log, LOG_WARN, s->id,
                  "event=starttls_injection dropped=%zu", len);
        return;
    }
    if (s->cmode == CLIENT_QUIT)
        return;
    n = session_data_direct(s, buf, len);
    if (sbuf_append(&s->cin, buf + n, len - n) != 0) {
        session_fail(s, REPLY_NONE, "error", "out of memory");
        return;
    }
    session_client_process(s);
}

static void client_on_data(struct conn *c, void *ud, const char *buf,
                           size_t len)
{
    (void)c;
    session_client_input(ud, buf, len);
}

static void client_on_handshake(struct conn *c, void *ud, int status)
{
    struct session *s = ud;
    char esc[200], subject[256], verify[96];

    if (s->closing)
        return;
    if (status != 0) {
        log_escape(esc, sizeof esc, conn_error(c), strlen(conn_error(c)));
        log_event(&s->w->log, LOG_WARN, s->id,
                  "event=client_tls_failed error=\"%s\"", esc);
        conn_close(c);
        session_close(s, REPLY_NONE);
        return;
    }
    s->client_tls = true;
    tls_describe(conn_ssl(c), s->client_tls_desc, sizeof s->client_tls_desc);
    tls_peer_info(conn_ssl(c), subject, sizeof subject, verify,
                  sizeof verify);
    if (subject[0] != '\0' && s->client_cert_subject == NULL)
        s->client_cert_subject = strdup(subject);
    if (strcmp(verify, "none") != 0 && s->client_cert_verify == NULL)
        s->client_cert_verify = strdup(verify);
    log_escape(esc, sizeof esc, subject, strlen(subject));
    log_event(&s->w->log, LOG_INFO, s->id,
              "event=client_tls tls=%s client_cert=\"%s\" client_cert_verify=%s",
              s->client_tls_desc, esc, verify);
    session_enter(s, CLIENT_COMMAND);
    if (!s->greeted) {
        session_try_greet(s);   /* implicit TLS */
        return;
    }
    /* RFC 3207 4.2: forget what was learnt in plaintext */
    s->need_helo = true;
    if (s->backend_dirty) {
        log_event(&s->w->log, LOG_INFO, s->id,
                  "event=backend_refresh reason=plaintext_transaction_state");
        session_backend_restart(s);
        return;
    }
    session_client_process(s);
}

static void client_on_eof(struct conn *c, void *ud, int status)
{
    struct session *s = ud;

    (void)c;
    if (s->closing)
        return;
    log_event(&s->w->log, LOG_INFO, s->id,
              "event=client_closed status=%s in_message=%s",
              status == 0 ? "eof" : uv_strerror(status),
              s->cmode == CLIENT_DATA || s->cmode == CLIENT_BDAT ? "yes" : "no");
    if (s->client != NULL)
        conn_close(s->client);
    session_close(s, REPLY_NONE);
}

static void client_on_drain(struct conn *c, void *ud)
{
    (void)c;
    session_flow(ud);
}

static void client_on_close(struct conn *c, void *ud)
{
    struct session *s = ud;

    (void)c;
    s->client = NULL;
    session_unref(s);
}

static const struct conn_cbs client_cbs = {
    .on_data = client_on_data,
    .on_handshake = client_on_handshake,
    .on_eof = client_on_eof,
    .on_drain = client_on_drain,
    .on_close = client_on_close,
};

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

/* session_ehlo_opts - what the client may be shown of the EHLO reply. */
static void session_ehlo_opts(const struct session *s,
                              struct smtp_ehlo_rewrite *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->offer_starttls = !s->client_tls && !s->svc->client_implicit_tls &&
                           s->client_policy != CLIENT_TLS_NONE;
    opts->keep = SESSION_EHLO_KEEP;
    if (s->client_tls || s->plaintext_auth)
        opts->keep |= SMTP_CAP_AUTH;
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
    if (!s->ehlo_drop_logged && log_enabled(&s->w->log, LOG_DEBUG)) {
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
        log_event(&s->w->log, LOG_DEBUG, s->id,
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
    log_event(&s->w->log, LOG_INFO, s->id,
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
    enum expect_kind kind = (enum expect_kind)fifo_head(s)->kind;

    fifo_pop(s);
    switch (kind) {
    case EXPECT_EHLO:
        if (session_answer_repeat(s, rep, true))
            return;
        if (rep->code == 500 || rep->code == 502) {
            /* a HELO-only server: keep the client's EHLO working */
            log_event(&s->w->log, LOG_INFO, s->id,
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
            s->data_start = uv_now(s->w->loop);
            s->data_bytes = 0;
            session_arm(s);
        }
        break;
    case EXPECT_END_OF_DATA:
    case EXPECT_BDAT_LAST:
        if (rep->code >= 200 && rep->code < 300)
            s->nmessages++;
        log_event(&s->w->log, LOG_INFO, s->id,
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
            log_event(&s->w->log, LOG_WARN, s->id,
                      "event=xclient_refused code=%d", rep->code);
        return;
    case EXPECT_SILENT:
        /* our own EHLO or HELO to a fresh backend; the client asked
         * nothing */
        if (rep->code >= 400)
            log_event(&s->w->log, LOG_WARN, s->id,
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
}

/* session_backend_process - relay complete replies from bin. */
static void session_backend_process(struct session *s)
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
        e = fifo_head(s);
        if (r == SMTP_REPLY_BAD || e == NULL || e->kind == EXPECT_LOCAL ||
            e->kind == EXPECT_STARTTLS) {
            log_escape(esc, sizeof esc, sbuf_ptr(&s->b.in),
                       s->b.in.len < 80 ? s->b.in.len : 80);
            log_event(&s->w->log, LOG_WARN, s->id,
                      "event=backend_garbage kind=%s data=\"%s\"",
                      r == SMTP_REPLY_BAD ? "not_a_reply" : "unsolicited", esc);
            session_close(s, REPLY_BACKEND_PROTOCOL);
            return;
        }
        session_relay(s, sbuf_ptr(&s->b.in), &rep);
        sbuf_consume(&s->b.in, rep.len);
        fifo_flush_local(s);
    }
    if (!s->closing)
        session_client_process(s);
}

/* ---- the backend leg's events (backend.h) ---------------------------------- */

static void session_on_backend_input(void *owner, bool relaying)
{
    struct session *s = owner;

    if (s->closing)
        return;
    if (relaying)
        session_backend_process(s);
    session_flow(s);
}

/* session_on_backend_lost - the relaying backend went away. */
static void session_on_backend_lost(void *owner, int status)
{
    struct session *s = owner;
    struct expect *e = fifo_head(s);

    if (e != NULL && e->kind == EXPECT_QUIT) {
        session_close(s, REPLY_NONE);
        return;
    }
    session_fail(s, REPLY_BACKEND_LOST, "backend_lost",
                 status == 0 ? "connection closed by backend"
                             : conn_error(s->b.conn));
}

static void session_on_backend_drain(void *owner)
{
    session_client_process(owner);
}

static void session_on_backend_refuse(void *owner, enum reply_id reply,
                                      const char *event, const char *why)
{
    session_fail(owner, reply, event, why);
}

static bool session_on_backend_enforce(void *owner, const char *rule,
                                       const char *detail)
{
    return session_enforce(owner, rule, detail);
}

static void session_on_backend_arm(void *owner)
{
    session_arm(owner);
}

static void session_on_backend_ref(void *owner, int delta)
{
    if (delta > 0)
        session_ref(owner);
    else
        session_unref(owner);
}

static const struct backend_events session_backend_events = {
    .ready = session_on_backend_ready,
    .input = session_on_backend_input,
    .lost = session_on_backend_lost,
    .drain = session_on_backend_drain,
    .refuse = session_on_backend_refuse,
    .enforce = session_on_backend_enforce,
    .arm = session_on_backend_arm,
    .ref = session_on_backend_ref,
};

/* ---- accept --------------------------------------------------------------- */

/* session_cidr_match - is addr inside one of the ranges? */
static bool session_cidr_match(const struct cidr *c, size_t n,
                               const struct sockaddr_storage *addr)
{
    const unsigned char *a;
    size_t alen;

    if (addr->ss_family == AF_INET) {
        a = (const unsigned char *)&((const struct sockaddr_in *)addr)->sin_addr;
        alen = 4;
    } else if (addr->ss_family == AF_INET6) {
        a = (const unsigned char *)&((const struct sockaddr_in6 *)addr)->sin6_addr;
        alen = 16;
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char *b;
        unsigned bits = c[i].prefix, k;

        if (c[i].addr.ss_family != addr->ss_family)
            continue;
        b = alen == 4
            ? (const unsigned char *)&((const struct sockaddr_in *)&c[i].addr)->sin_addr
            : (const unsigned char *)&((const struct sockaddr_in6 *)&c[i].addr)->sin6_addr;
        for (k = 0; bits >= 8; k++, bits -= 8)
            if (a[k] != b[k])
                break;
        if (bits >= 8)
            continue;
        if (bits == 0 || ((a[k] ^ b[k]) & (0xff00u >> bits) & 0xff) == 0)
            return true;
    }
    return false;
}

/*
 * session_begin - the client's address is known (from the socket or a
 * trusted PROXY header): choose its profile, count it against the limits,
 * start TLS or reading, and set up the backend leg.
 */
static void session_begin(struct session *s)
{
    const struct service *svc = s->svc;
    enum connlimit_result lim;

    s->profile = SIZE_MAX;
    s->client_policy = svc->client_tls;
    s->plaintext_auth = svc->client_plaintext_auth;
    for (size_t i = 0; i < svc->nprofiles; i++) {
        const struct profile *p = svc->profiles[i];

        if (!session_cidr_match(p->sources, p->nsources, &s->client_sa))
            continue;
        s->profile = i;
        if (p->has_client_tls)
            s->client_policy = p->client_tls;
        if (p->has_client_plaintext_auth)
            s->plaintext_auth = p->client_plaintext_auth;
        log_event(&s->w->log, LOG_INFO, s->id, "event=profile name=%s",
                  p->name);
        break;
    }

    lim = connlimit_acquire(s->w->limits, s->svc_index,
                            (const struct sockaddr *)&s->client_sa,
                            svc->max_connections, svc->max_connections_per_ip,
                            !svc->enforce);
    s->limits_held = lim == CONNLIMIT_OK || !svc->enforce;
    if (lim != CONNLIMIT_OK) {
        const char *which = lim == CONNLIMIT_SERVICE_FULL
                                ? "max_connections" : "max_connections_per_ip";

        log_event(&s->w->log, LOG_WARN, s->id, "event=limit limit=%s", which);
        if (session_enforce(s, which, s->client_addr)) {
            session_close(s, lim == CONNLIMIT_SERVICE_FULL
                                 ? REPLY_TOO_MANY_CONNECTIONS
                                 : REPLY_TOO_MANY_FROM_ADDRESS);
            return;
        }
    }

    if (svc->client_implicit_tls) {
        session_enter(s, CLIENT_HANDSHAKE);
        s->hs_start = uv_now(s->w->loop);
        if (conn_start_tls_server(s->client, session_server_ctx(s)) != 0) {
            session_close(s, REPLY_NONE);
            return;
        }
    } else {
        session_enter(s, CLIENT_COMMAND);
        conn_read_start(s->client);
    }
    session_arm(s);
    backend_start(&s->b, false);
}

void session_accept(struct worker *w, size_t svc_index, int fd)
{
    struct session *s = calloc(1, sizeof *s);

    if (s == NULL) {
        close(fd);
        return;
    }
    s->w = w;
    s->svc = &w->cfg->services[svc_index];
    s->svc_index = svc_index;
    s->tls = &w->tls[svc_index];
    s->id = worker_next_sid(w);
    s->started_ms = uv_now(w->loop);
    s->last_client = s->b.last = s->started_ms;
    uv_timer_init(w->loop, &s->timer);
    s->timer.data = s;
    backend_init(&s->b, w, w->loop, &w->log, s->svc, s->tls->client,
                 w->cfg->hostname, worker_backend_session(w, svc_index), s->id,
                 &(struct backend_client){&s->client_sa, &s->client_dst,
                                          s->client_addr},
                 &session_backend_events, s);
    s->next = w->sessions;
    if (w->sessions != NULL)
        w->sessions->prev = s;
    w->sessions = s;

    /* with a PROXY header to come, the conn starts in the accept phase */
    s->client = conn_new(w, s->svc->client_proxy_protocol ? &proxy_header_cbs
                                                          : &client_cbs, s);
    if (s->client == NULL) {
        close(fd);
        session_close(s, REPLY_NONE);
        return;
    }
    session_ref(s);
    if (conn_open(s->client, fd) != 0) {
        session_close(s, REPLY_NONE);
        return;
    }
    s->client_sa = *conn_peer_addr(s->client);
    conn_local_addr(s->client, &s->client_dst);
    snprintf(s->client_addr, sizeof s->client_addr, "%s", conn_peer(s->client));
    log_event(&w->log, LOG_INFO, s->id, "event=connect client=%s service=%s",
              s->client_addr, s->svc->name);
    if (s->svc->client_proxy_protocol) {
        /* a load balancer in front says who the client is, but only one
         * we trust may */
        if (!session_cidr_match(s->svc->trusted_proxies,
                                s->svc->ntrusted_proxies, &s->client_sa)) {
            log_event(&w->log, LOG_WARN, s->id,
                      "event=proxy_header_refused reason=untrusted_peer");
            session_close(s, REPLY_NONE);
            return;
        }
        s->cmd_start = s->started_ms;
        conn_read_start(s->client);
        session_arm(s);
        return;
    }
    session_begin(s);
}
