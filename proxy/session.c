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

#include "log.h"
#include "session.h"
#include "session_int.h"

void session_backend_eof(struct session *s, int status);
void session_backend_drain(struct session *s);

static void session_close(struct session *s, enum reply_id reply);
static void session_client_process(struct session *s);
static void session_flow(struct session *s);

/* ---- bounded buffers --------------------------------------------------- */

int sbuf_append(struct sbuf *b, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (b->off + b->len + n > b->cap) {
        if (b->off > 0) {
            memmove(b->data, b->data + b->off, b->len);
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap : 4096;
            char *d;

            while (cap < b->len + n)
                cap *= 2;
            d = realloc(b->data, cap);
            if (d == NULL)
                return -1;
            b->data = d;
            b->cap = cap;
        }
    }
    memcpy(b->data + b->off + b->len, p, n);
    b->len += n;
    return 0;
}

/* sbuf_consume - drop n bytes from the front; an empty buffer is freed so
 * that idle sessions hold no buffers. */
void sbuf_consume(struct sbuf *b, size_t n)
{
    if (n >= b->len) {
        sbuf_free(b);
        return;
    }
    b->off += n;
    b->len -= n;
}

void sbuf_free(struct sbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ---- lifetime ----------------------------------------------------------- */

struct session *session_next(const struct session *s)
{
    return s->next;
}

void session_ref(struct session *s)
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
    sbuf_free(&s->cin);
    sbuf_free(&s->bin);
    free(s->greeting);
    free(s);
}

/* session_unref - a handle of s has closed; the last one frees s, after
 * the timer's own close callback. */
void session_unref(struct session *s)
{
    if (--s->refs > 0 || !s->closing)
        return;
    uv_close((uv_handle_t *)&s->timer, session_on_timer_close);
}

static void session_on_timer(uv_timer_t *t)
{
    struct session *s = t->data;

    if (s->closing) {
        /* the close deadline: a peer that does not read loses its output */
        if (s->client != NULL)
            conn_close(s->client);
        if (s->backend != NULL)
            conn_close(s->backend);
        return;
    }
    log_event(&s->w->log, LOG_INFO, s->id,
              "event=timeout waiting_for=%s",
              s->bstate != BACKEND_READY || s->fifo_len > 0 ? "backend"
                                                            : "client");
    session_close(s, REPLY_TIMEOUT);
}

/* session_touch - a leg showed life: restart the idle timer. */
void session_touch(struct session *s)
{
    if (!s->closing)
        uv_timer_start(&s->timer, session_on_timer,
                       (uint64_t)s->svc->idle_timeout * 1000, 0);
}

static void session_summary(struct session *s)
{
    log_event(&s->w->log, LOG_INFO, s->id,
              "event=summary client=%s service=%s client_tls=%s "
              "backend=%s:%s backend_tls=%s backend_verify=%s "
              "commands=%u messages=%u backend_connections=%u duration_ms=%llu",
              s->client_addr, s->svc->name,
              s->client_tls_desc[0] ? s->client_tls_desc : "plaintext",
              s->svc->backend_host, s->svc->backend_port,
              s->backend_tls_desc[0] ? s->backend_tls_desc : "plaintext",
              s->backend_verify[0] ? s->backend_verify : "none",
              s->ncommands, s->nmessages, s->nbackends,
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
    if (s->gai_busy)
        uv_cancel((uv_req_t *)&s->gai);
    if (s->backend != NULL)
        conn_close(s->backend);
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
void session_fail(struct session *s, enum reply_id reply, const char *event,
                  const char *why)
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

static void fifo_push(struct session *s, enum expect_kind kind,
                      enum reply_id reply)
{
    unsigned i = (s->fifo_head + s->fifo_len) % SESSION_FIFO;

    s->fifo[i].kind = (uint8_t)kind;
    s->fifo[i].reply = (uint8_t)reply;
    s->fifo_len++;
}

static void fifo_pop(struct session *s)
{
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
    s->cmode = CLIENT_HANDSHAKE;
    if (conn_start_tls_server(s->client, s->tls->server) != 0)
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
    if (total == len + 2) {
        conn_write(s->backend, line, total);
        return;
    }
    char *tmp = malloc(len + 2);

    if (tmp == NULL) {
        session_fail(s, REPLY_BACKEND_LOST, "error", "out of memory");
        return;
    }
    memcpy(tmp, line, len);
    memcpy(tmp + len, "\r\n", 2);
    conn_write(s->backend, tmp, len + 2);
    free(tmp);
}

/*
 * session_refusal - the proxy's own answer to cmd, or REPLY_NONE when it
 * goes to the backend.
 */
static enum reply_id session_refusal(struct session *s,
                                     const struct smtp_cmd *cmd)
{
    const struct service *svc = s->svc;

    switch (cmd->verb) {
    case SMTP_VERB_XCLIENT:
    case SMTP_VERB_XFORWARD:
        /* backends trust these from the proxy's address: never relay */
        return REPLY_NOT_IMPLEMENTED;
    case SMTP_VERB_STARTTLS:
        if (svc->client_implicit_tls || svc->client_tls == CLIENT_TLS_NONE)
            return REPLY_STARTTLS_UNAVAILABLE;
        if (s->client_tls)
            return REPLY_TLS_ACTIVE;
        if (cmd->arg != NULL)
            return REPLY_STARTTLS_SYNTAX;
        return REPLY_NONE;
    case SMTP_VERB_MAIL:
    case SMTP_VERB_RCPT:
    case SMTP_VERB_DATA:
    case SMTP_VERB_BDAT:
    case SMTP_VERB_AUTH:
    case SMTP_VERB_VRFY:
    case SMTP_VERB_EXPN:
        if (svc->client_tls == CLIENT_TLS_ENCRYPT && !s->client_tls)
            return REPLY_MUST_STARTTLS;
        if (cmd->verb == SMTP_VERB_AUTH && !s->client_tls &&
            !svc->client_plaintext_auth)
            return REPLY_AUTH_NEEDS_TLS;
        if (s->need_helo && cmd->verb != SMTP_VERB_VRFY &&
            cmd->verb != SMTP_VERB_EXPN)
            return REPLY_NEED_HELO;
        return REPLY_NONE;
    default:
        return REPLY_NONE;
    }
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

/* session_command - one command line from the client. */
static void session_command(struct session *s, const char *line, size_t len,
                            size_t total)
{
    struct smtp_cmd cmd;
    enum reply_id refusal;
    uint64_t size;
    bool last;

    smtp_cmd_parse(line, len, &cmd);
    s->ncommands++;
    session_log_command(s, &cmd);
    refusal = session_refusal(s, &cmd);
    if (cmd.verb == SMTP_VERB_BDAT) {
        if (smtp_bdat_parse(cmd.arg ? cmd.arg : "", cmd.arg_len, &size,
                            &last) != 0) {
            sbuf_consume(&s->cin, total);
            session_local(s, REPLY_BDAT_SYNTAX);
            return;
        }
        if (refusal != REPLY_NONE) {
            /* the chunk follows anyway: read it and throw it away */
            sbuf_consume(&s->cin, total);
            s->bdat_left = size;
            if (size > 0)
                s->cmode = CLIENT_BDAT_SKIP;
            session_local(s, refusal);
            return;
        }
    }
    if (refusal != REPLY_NONE) {
        sbuf_consume(&s->cin, total);
        session_local(s, refusal);
        return;
    }
    switch (cmd.verb) {
    case SMTP_VERB_EHLO:
    case SMTP_VERB_HELO:
        s->need_helo = false;
        session_forward(s, line, len, total);
        fifo_push(s, cmd.verb == SMTP_VERB_EHLO ? EXPECT_EHLO : EXPECT_HELO,
                  REPLY_NONE);
        break;
    case SMTP_VERB_NOOP:
    case SMTP_VERB_RSET:
    case SMTP_VERB_HELP:
        session_forward(s, line, len, total);
        fifo_push(s, EXPECT_OTHER, REPLY_NONE);
        break;
    case SMTP_VERB_STARTTLS:
        sbuf_consume(&s->cin, total);
        s->cmode = CLIENT_STARTTLS;
        fifo_push(s, EXPECT_STARTTLS, REPLY_NONE);
        fifo_flush_local(s);
        return;
    case SMTP_VERB_DATA:
        s->backend_dirty = true;
        s->waiting = true;   /* content must wait for the 354 */
        session_forward(s, line, len, total);
        fifo_push(s, EXPECT_DATA, REPLY_NONE);
        break;
    case SMTP_VERB_BDAT:
        s->backend_dirty = true;
        session_forward(s, line, len, total);
        fifo_push(s, last ? EXPECT_BDAT_LAST : EXPECT_BDAT, REPLY_NONE);
        sbuf_consume(&s->cin, total);
        s->bdat_left = size;
        if (size > 0)
            s->cmode = CLIENT_BDAT;
        return;
    case SMTP_VERB_AUTH:
        s->backend_dirty = true;
        s->waiting = true;   /* a 334 turns the next line into a response */
        session_forward(s, line, len, total);
        fifo_push(s, EXPECT_AUTH, REPLY_NONE);
        break;
    case SMTP_VERB_QUIT:
        session_forward(s, line, len, total);
        fifo_push(s, EXPECT_QUIT, REPLY_NONE);
        sbuf_free(&s->cin);
        s->cmode = CLIENT_QUIT;
        return;
    default:
        s->backend_dirty = true;
        session_forward(s, line, len, total);
        fifo_push(s, EXPECT_OTHER, REPLY_NONE);
        break;
    }
    sbuf_consume(&s->cin, total);
}

/* session_client_step - handle what cin holds in the current mode; returns
 * false when nothing more can be done now. */
static bool session_client_step(struct session *s)
{
    const char *p = sbuf_ptr(&s->cin);
    size_t len = s->cin.len, n, line_len, total;
    bool done;

    switch (s->cmode) {
    case CLIENT_COMMAND:
    case CLIENT_AUTH:
        if (s->waiting || s->fifo_len >= SESSION_FIFO)
            return false;
        switch (smtp_line_find(p, len, s->svc->max_line_length, &line_len,
                               &total)) {
        case SMTP_LINE_MORE:
            return false;
        case SMTP_LINE_TOO_LONG:
            log_event(&s->w->log, LOG_INFO, s->id, "event=line_too_long");
            s->cmode = CLIENT_SKIP_LINE;
            session_local(s, REPLY_LINE_TOO_LONG);
            return true;
        case SMTP_LINE_OK:
            break;
        }
        if (s->cmode == CLIENT_AUTH) {
            /* an AUTH response line: relayed, never parsed nor logged */
            s->cmode = CLIENT_COMMAND;
            s->waiting = true;
            session_forward(s, p, line_len, total);
            fifo_push(s, EXPECT_AUTH, REPLY_NONE);
            sbuf_consume(&s->cin, total);
            return true;
        }
        session_command(s, p, line_len, total);
        return true;
    case CLIENT_DATA:
        if (conn_pending(s->backend) >= CONN_HIGH_WATER)
            return false;
        n = smtp_data_scan(&s->eod, p, len, &done);
        conn_write(s->backend, p, n);
        sbuf_consume(&s->cin, n);
        if (done) {
            s->cmode = CLIENT_COMMAND;
            fifo_push(s, EXPECT_END_OF_DATA, REPLY_NONE);
        }
        return true;
    case CLIENT_BDAT:
    case CLIENT_BDAT_SKIP:
        if (s->cmode == CLIENT_BDAT &&
            conn_pending(s->backend) >= CONN_HIGH_WATER)
            return false;
        n = len < s->bdat_left ? len : (size_t)s->bdat_left;
        if (s->cmode == CLIENT_BDAT)
            conn_write(s->backend, p, n);
        sbuf_consume(&s->cin, n);
        s->bdat_left -= n;
        if (s->bdat_left == 0)
            s->cmode = CLIENT_COMMAND;
        return true;
    case CLIENT_SKIP_LINE: {
        const char *lf = memchr(p, '\n', len);

        if (lf == NULL) {
            sbuf_free(&s->cin);
            return false;
        }
        sbuf_consume(&s->cin, (size_t)(lf - p) + 1);
        s->cmode = CLIENT_COMMAND;
        return true;
    }
    case CLIENT_STARTTLS:
        log_event(&s->w->log, LOG_WARN, s->id,
                  "event=starttls_injection dropped=%zu", len);
        sbuf_free(&s->cin);
        return false;
    case CLIENT_HANDSHAKE:
    case CLIENT_QUIT:
        sbuf_free(&s->cin);
        return false;
    }
    return false;
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
               s->bstate == BACKEND_READY && s->backend != NULL &&
               session_client_step(s))
            ;
    } while (s->process_again && !s->closing);
    s->in_process = false;
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
    bp = s->backend != NULL ? conn_pending(s->backend) : 0;
    cp = s->client != NULL ? conn_pending(s->client) : 0;
    if (s->client != NULL && s->cmode != CLIENT_QUIT) {
        if (s->cin.len >= SESSION_INBUF_MAX || bp >= CONN_HIGH_WATER)
            conn_read_stop(s->client);
        else if (bp < CONN_LOW_WATER)
            conn_read_start(s->client);
    }
    if (s->backend != NULL && s->bstate != BACKEND_IDLE &&
        s->bstate != BACKEND_CONNECTING && s->bstate != BACKEND_RESOLVING) {
        if (s->bin.len >= SESSION_INBUF_MAX || cp >= CONN_HIGH_WATER)
            conn_read_stop(s->backend);
        else if (cp < CONN_LOW_WATER)
            conn_read_start(s->backend);
    }
}

static void session_try_greet(struct session *s)
{
    if (s->greeted || s->closing || s->bstate != BACKEND_READY)
        return;
    if (s->svc->client_implicit_tls && !s->client_tls)
        return;
    s->greeted = true;
    conn_write(s->client, s->greeting, s->greeting_len);
    session_client_process(s);
}

/* session_backend_ready - called by backend.c when setup is done. */
void session_backend_ready(struct session *s)
{
    if (s->backend_refresh) {
        /* a fresh backend after the client's STARTTLS: the client has been
         * greeted already and is about to send EHLO */
        s->backend_refresh = false;
        session_client_process(s);
        return;
    }
    session_try_greet(s);
}

static void client_on_data(struct conn *c, void *ud, const char *buf,
                           size_t len)
{
    struct session *s = ud;

    (void)c;
    if (s->closing)
        return;
    session_touch(s);
    if (s->cmode == CLIENT_STARTTLS) {
        log_event(&s->w->log, LOG_WARN, s->id,
                  "event=starttls_injection dropped=%zu", len);
        return;
    }
    if (s->cmode == CLIENT_QUIT)
        return;
    if (sbuf_append(&s->cin, buf, len) != 0) {
        session_fail(s, REPLY_NONE, "error", "out of memory");
        return;
    }
    session_client_process(s);
}

static void client_on_handshake(struct conn *c, void *ud, int status)
{
    struct session *s = ud;
    char esc[200];

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
    log_event(&s->w->log, LOG_INFO, s->id, "event=client_tls tls=%s",
              s->client_tls_desc);
    s->cmode = CLIENT_COMMAND;
    if (!s->greeted) {
        session_try_greet(s);   /* implicit TLS */
        return;
    }
    /* RFC 3207 4.2: forget what was learnt in plaintext */
    s->need_helo = true;
    if (s->backend_dirty) {
        log_event(&s->w->log, LOG_INFO, s->id,
                  "event=backend_refresh reason=plaintext_transaction_state");
        s->backend_dirty = false;
        s->backend_refresh = true;
        s->backend_plain_retry = false;
        if (s->backend != NULL)
            conn_close(s->backend);
        s->backend = NULL;
        backend_start(s);
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

/* session_relay_ehlo - the EHLO reply as the client must see it. */
static void session_relay_ehlo(struct session *s, const char *p,
                               const struct smtp_reply *rep)
{
    struct smtp_ehlo_rewrite opts;
    size_t cap = rep->len + rep->nlines + 32, n;
    char *out;

    opts.offer_starttls = !s->client_tls && !s->svc->client_implicit_tls &&
                          s->svc->client_tls != CLIENT_TLS_NONE;
    opts.remove = SMTP_CAP_STARTTLS | SMTP_CAP_XCLIENT | SMTP_CAP_XFORWARD;
    if (!s->client_tls && !s->svc->client_plaintext_auth)
        opts.remove |= SMTP_CAP_AUTH;
    out = malloc(cap);
    if (out == NULL || smtp_ehlo_rewrite(p, rep->len, &opts, out, cap, &n) != 0) {
        free(out);
        session_fail(s, REPLY_BACKEND_PROTOCOL, "backend_garbage",
                     "EHLO reply cannot be rewritten");
        return;
    }
    conn_write(s->client, out, n);
    free(out);
}

/* session_relay - one backend reply for the command at the FIFO head. */
static void session_relay(struct session *s, const char *p,
                          const struct smtp_reply *rep)
{
    enum expect_kind kind = (enum expect_kind)fifo_head(s)->kind;

    fifo_pop(s);
    switch (kind) {
    case EXPECT_EHLO:
        if (rep->code == 250) {
            session_relay_ehlo(s, p, rep);
            return;
        }
        break;
    case EXPECT_DATA:
        s->waiting = false;
        if (rep->code == 354) {
            s->cmode = CLIENT_DATA;
            smtp_data_scanner_init(&s->eod);
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
        s->waiting = false;
        if (rep->code == 334)
            s->cmode = CLIENT_AUTH;
        break;
    case EXPECT_QUIT:
        conn_write(s->client, p, rep->len);
        session_close(s, REPLY_NONE);
        return;
    default:
        break;
    }
    conn_write(s->client, p, rep->len);
}

/* session_backend_process - relay complete replies from bin. */
static void session_backend_process(struct session *s)
{
    struct smtp_reply rep;
    enum smtp_reply_result r;
    struct expect *e;
    char esc[200];

    while (!s->closing && s->bin.len > 0) {
        r = smtp_reply_scan(sbuf_ptr(&s->bin), s->bin.len, SESSION_REPLY_LINE,
                            SESSION_REPLY_LINES, &rep);
        if (r == SMTP_REPLY_MORE)
            break;
        e = fifo_head(s);
        if (r == SMTP_REPLY_BAD || e == NULL || e->kind == EXPECT_LOCAL ||
            e->kind == EXPECT_STARTTLS) {
            log_escape(esc, sizeof esc, sbuf_ptr(&s->bin),
                       s->bin.len < 80 ? s->bin.len : 80);
            log_event(&s->w->log, LOG_WARN, s->id,
                      "event=backend_garbage kind=%s data=\"%s\"",
                      r == SMTP_REPLY_BAD ? "not_a_reply" : "unsolicited", esc);
            session_close(s, REPLY_BACKEND_PROTOCOL);
            return;
        }
        session_relay(s, sbuf_ptr(&s->bin), &rep);
        sbuf_consume(&s->bin, rep.len);
        fifo_flush_local(s);
    }
    if (!s->closing)
        session_client_process(s);
}

/* session_backend_data - bytes from the backend, in setup or relaying. */
void session_backend_data(struct conn *c, void *ud, const char *buf,
                          size_t len)
{
    struct session *s = ud;

    if (s->closing || c != s->backend)
        return;
    session_touch(s);
    if (sbuf_append(&s->bin, buf, len) != 0) {
        session_fail(s, REPLY_BACKEND_LOST, "error", "out of memory");
        return;
    }
    if (s->bstate != BACKEND_READY)
        backend_setup_input(s);
    else
        session_backend_process(s);
    session_flow(s);
}

/* session_backend_eof - the relaying backend went away. */
void session_backend_eof(struct session *s, int status)
{
    struct expect *e = fifo_head(s);

    if (e != NULL && e->kind == EXPECT_QUIT) {
        session_close(s, REPLY_NONE);
        return;
    }
    session_fail(s, REPLY_BACKEND_LOST, "backend_lost",
                 status == 0 ? "connection closed by backend"
                             : conn_error(s->backend));
}

void session_backend_drain(struct session *s)
{
    session_client_process(s);
}

/* ---- accept --------------------------------------------------------------- */

void session_accept(struct worker *w, size_t svc_index, void *server)
{
    struct session *s = calloc(1, sizeof *s);

    if (s == NULL)
        return;
    s->w = w;
    s->svc = &w->cfg->services[svc_index];
    s->tls = &w->tls[svc_index];
    s->id = worker_next_sid(w);
    s->started_ms = uv_now(w->loop);
    uv_timer_init(w->loop, &s->timer);
    s->timer.data = s;
    s->next = w->sessions;
    if (w->sessions != NULL)
        w->sessions->prev = s;
    w->sessions = s;

    s->client = conn_new(w, &client_cbs, s);
    if (s->client == NULL) {
        session_close(s, REPLY_NONE);
        return;
    }
    session_ref(s);
    if (conn_accept(s->client, server) != 0) {
        session_close(s, REPLY_NONE);
        return;
    }
    snprintf(s->client_addr, sizeof s->client_addr, "%s", conn_peer(s->client));
    log_event(&w->log, LOG_INFO, s->id, "event=connect client=%s service=%s",
              s->client_addr, s->svc->name);
    session_touch(s);
    if (s->svc->client_implicit_tls) {
        s->cmode = CLIENT_HANDSHAKE;
        if (conn_start_tls_server(s->client, s->tls->server) != 0) {
            session_close(s, REPLY_NONE);
            return;
        }
    } else {
        conn_read_start(s->client);
    }
    backend_start(s);
}
