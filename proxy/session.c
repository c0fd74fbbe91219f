/*
 * session.c - the relay between the client leg and the backend leg: its
 * lifetime, deadlines, flow control and the callbacks of both legs.
 *
 * Client bytes are read into cin and handled line by line
 * (session_cmd.c): each command is either forwarded to the backend or
 * answered here.  Every command owes the client one reply; the owed
 * replies wait in a FIFO in command order (so PIPELINING works), and a
 * reply the proxy writes itself waits its turn there like any other.
 * Backend replies are matched to the head of the FIFO (session_relay.c);
 * one that nobody asked for ends the session.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "connlimit.h"
#include "log.h"
#include "netaddr.h"
#include "proxyproto.h"
#include "session.h"
#include "session_int.h"
#include "transparent.h"

static void session_client_input(struct session *s, const char *buf,
                                 size_t len);
static const struct conn_cbs client_cbs;

/* session_server_ctx - the client leg's TLS context (the profile's own
 * when it changes TLS settings). */
static SSL_CTX *session_server_ctx(const struct session *s)
{
    return tls_server_ctx(s->tls, s->profile);
}

/* ---- lifetime ----------------------------------------------------------- */

static void session_ref(struct session *s)
{
    s->refs++;
}

static void session_on_timer_close(uv_handle_t *h)
{
    struct session *s = h->data;
    struct loop_ctx *ctx = s->ctx;

    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        ctx->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    __atomic_sub_fetch(&ctx->nsessions, 1, __ATOMIC_RELAXED);
    if (s->limits_held)
        connlimit_release(ctx->limits,
                          generation_slot(s->gen, s->svc_index),
                          (const struct sockaddr *)&s->client_sa);
    sbuf_free(&s->cin);
    backend_free(&s->b);
    generation_release(s->gen);
    free(s->held_helo);
    free(s->helo_name);
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
bool session_waiting_for_backend(const struct session *s)
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
void session_arm(struct session *s)
{
    const char *what;
    uint64_t d, now;

    if (s->closing)
        return;
    d = session_deadline(s, &what);
    now = uv_now(s->ctx->loop);
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
    if (session_deadline(s, &what) > uv_now(s->ctx->loop)) {
        session_arm(s);   /* activity moved the deadline on */
        return;
    }
    log_event(&s->log, LOG_INFO, s->id, "event=timeout waiting_for=%s",
              what);
    if (s->cmode == CLIENT_HANDSHAKE)
        SESSION_COUNT(s, handshake[STATS_LEG_CLIENT][STATS_HS_TIMEOUT]);
    else if (strcmp(what, "backend_tls_handshake") != 0)
        SESSION_COUNT(s, events[STATS_EV_TIMEOUT]);
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
    s->last_client = uv_now(s->ctx->loop);
}

static void session_summary(struct session *s)
{
    char subject[200];

    const char *cert = s->client_cert_subject ? s->client_cert_subject : "";

    log_escape(subject, sizeof subject, cert, strlen(cert));
    if (s->st != NULL) {
        enum stats_tls ct = stats_tls_of(s->client_tls,
                                         s->client_cert_verify
                                             ? s->client_cert_verify : "");
        /* a backend leg refused or failed in its setup is "none" */
        enum stats_tls bt = s->b.state == BACKEND_READY
                                ? stats_tls_of(s->b.tls_desc[0] != '\0',
                                               s->b.verify)
                                : STATS_TLS_NONE;

        stats_add(&s->st->sessions[ct][bt], 1);
        stats_add(&s->st->ended, 1);
        if (session_in_message(s))
            stats_add(&s->st->messages[STATS_MSG_VANISHED], 1);
        stats_observe(s->st, STATS_H_SESSION,
                      (uv_now(s->ctx->loop) - s->started_ms) * 1000);
    }
    log_event(&s->log, LOG_INFO, s->id,
              "event=summary client=%s service=%s profile=%s client_tls=%s "
              "client_cert=\"%s\" backend=%s%s%s backend_tls=%s "
              "backend_verify=%s commands=%u messages=%u errors=%u "
              "nul_bytes=%llu backend_connections=%u duration_ms=%llu",
              s->client_addr, s->svc->name,
              s->profile < s->svc->nprofiles ? s->svc->profiles[s->profile]->name
                                             : "none",
              s->client_tls_desc[0] ? s->client_tls_desc : "plaintext", subject,
              s->dst_text[0] ? s->dst_text
              : s->svc->backend_host ? s->svc->backend_host : "unknown",
              s->svc->backend_host && !s->dst_text[0] ? ":" : "",
              s->svc->backend_host && !s->dst_text[0] ? s->svc->backend_port
                                                       : "",
              s->b.tls_desc[0] ? s->b.tls_desc : "plaintext",
              s->b.verify[0] ? s->b.verify : "none",
              s->ncommands, s->nmessages, s->nerrors,
              (unsigned long long)(s->nnul +
                                   (s->cmode == CLIENT_DATA
                                        ? smtp_data_filter_nul_count(&s->filter)
                                        : 0)),
              s->b.nconnections,
              (unsigned long long)(uv_now(s->ctx->loop) - s->started_ms));
}

static void session_write_reply(struct session *s, enum reply_id id)
{
    char line[512];
    size_t n = reply_format(id, s->ctx->cfg->hostname, line, sizeof line);

    if (n > 0 && s->client != NULL)
        conn_write(s->client, line, n);
}

/*
 * session_enforce - a strict rule would refuse something.  With
 * "enforce = no" it is only logged (would_refuse=...) and false is
 * returned: the caller lets the session go on.
 */
bool session_enforce(struct session *s, const char *rule, const char *detail)
{
    char esc[160];

    if (s->st != NULL)
        stats_add(&s->st->policy[stats_rule(rule)][s->svc->enforce], 1);
    if (s->svc->enforce)
        return true;
    log_escape(esc, sizeof esc, detail ? detail : "", detail ? strlen(detail) : 0);
    log_event(&s->log, LOG_WARN, s->id,
              "event=policy would_refuse=%s detail=\"%s\"", rule, esc);
    return false;
}

/*
 * session_count_error - the client was given an error reply (4xx/5xx);
 * past max_errors the session ends with 421 4.7.0, as a careful MTA cuts
 * off a client that keeps failing (a scanner, a confused appliance).
 */
void session_count_error(struct session *s, int code)
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
void session_close(struct session *s, enum reply_id reply)
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

/* session_in_message - a message is under way: the DATA command, its
 * content, or its end waits for the backend, or BDAT chunks have begun. */
bool session_in_message(const struct session *s)
{
    if (s->cmode == CLIENT_DATA || s->cmode == CLIENT_BDAT ||
        s->bdat_in_message)
        return true;
    for (unsigned i = 0; i < s->fifo_len; i++) {
        uint8_t k = s->fifo[(s->fifo_head + i) % SESSION_FIFO].kind;

        if (k == EXPECT_DATA || k == EXPECT_END_OF_DATA ||
            k == EXPECT_BDAT || k == EXPECT_BDAT_LAST)
            return true;
    }
    return false;
}

/* session_drain_all - see session.h. */
void session_drain_all(struct loop_ctx *ctx)
{
    unsigned kept = 0;

    for (struct session *s = ctx->sessions; s != NULL; s = s->next) {
        if (s->closing || s->draining)
            continue;
        if (session_in_message(s)) {
            s->draining = true;
            kept++;
        } else {
            session_close(s, REPLY_SHUTDOWN);
        }
    }
    log_event(&ctx->log, LOG_INFO, 0, "event=draining in_message=%u", kept);
}

/* session_shutdown_all - see session.h. */
void session_shutdown_all(struct loop_ctx *ctx, enum reply_id reply)
{
    /* a closed session leaves the list only in its timer's close
     * callback, later: the walk is safe */
    for (struct session *s = ctx->sessions; s != NULL; s = s->next)
        session_close(s, reply);
}

/* session_fail - log why, then close with reply. */
void session_fail(struct session *s, enum reply_id reply, const char *event,
                  const char *why)
{
    char esc[200];

    log_escape(esc, sizeof esc, why, strlen(why));
    log_event(&s->log, LOG_WARN, s->id, "event=%s reason=\"%s\"", event,
              esc);
    session_close(s, reply);
}

/* ---- the FIFO of owed replies -------------------------------------------- */

struct expect *session_fifo_head(struct session *s)
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

void session_fifo_push(struct session *s, enum expect_kind kind,
                       enum reply_id reply)
{
    unsigned i = (s->fifo_head + s->fifo_len) % SESSION_FIFO;

    s->fifo[i].kind = (uint8_t)kind;
    s->fifo[i].reply = (uint8_t)reply;
    s->fifo_len++;
    if (session_expect_waits(kind))
        s->nwaiting++;
}

void session_fifo_pop(struct session *s)
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
        SESSION_COUNT(s, events[STATS_EV_STARTTLS_INJECTION]);
        log_event(&s->log, LOG_WARN, s->id,
                  "event=starttls_injection dropped=%zu", s->cin.len);
        sbuf_free(&s->cin);
    }
    session_enter(s, CLIENT_HANDSHAKE);
    s->hs_start = uv_now(s->ctx->loop);
    session_arm(s);
    if (conn_start_tls_server(s->client, session_server_ctx(s)) != 0)
        session_fail(s, REPLY_NONE, "client_tls_failed", "cannot start TLS");
}

/* session_fifo_flush_local - write the proxy's own replies that reached the head. */
void session_fifo_flush_local(struct session *s)
{
    struct expect *e;

    while (!s->closing && (e = session_fifo_head(s)) != NULL) {
        if (e->kind == EXPECT_LOCAL) {
            enum reply_id id = (enum reply_id)e->reply;

            session_fifo_pop(s);
            session_write_reply(s, id);
            session_count_error(s, reply_code(id));
        } else if (e->kind == EXPECT_STARTTLS) {
            session_fifo_pop(s);
            session_start_client_tls(s);
            return;
        } else {
            return;
        }
    }
}

void session_local(struct session *s, enum reply_id id)
{
    session_fifo_push(s, EXPECT_LOCAL, id);
    session_fifo_flush_local(s);
}

/*
 * session_backend_restart - a fresh backend session, whose greeting is
 * not relayed: after the client's STARTTLS (the backend saw plaintext
 * transaction state) or after a refused message (it was cut off in the
 * middle).  What was held from the old backend session goes.
 */
void session_backend_restart(struct session *s)
{
    free(s->held_helo);
    s->held_helo = NULL;
    s->backend_dirty = false;
    s->backend_refresh = true;
    backend_restart(&s->b, false);
}

/*
 * session_flow - back-pressure: stop reading a leg while the other leg's
 * output (or our own input buffer) is above its mark, start again below
 * the low mark.
 */
void session_flow(struct session *s)
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
                s->data_start = uv_now(s->ctx->loop);
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

    if (s->b.auth_ehlo != NULL) {
        /* backend_auth: the client's EHLO is this backend session's
         * second; one that refuses it is answered from the first
         * (session_relay.c, session_answer_repeat) */
        free(s->held_helo);
        s->held_helo = s->b.auth_ehlo;
        s->held_helo_len = s->b.auth_ehlo_len;
        s->held_ehlo = true;
        s->b.auth_ehlo = NULL;
        s->b.auth_ehlo_len = 0;
    }

    if (s->backend_refresh) {
        /* a fresh backend after the client's STARTTLS (the client is about
         * to send EHLO) or after a refused message (it is not: say its
         * EHLO again for it) */
        s->backend_refresh = false;
        if (s->backend_replay_helo && s->helo_name != NULL) {
            char line[300];
            int n = snprintf(line, sizeof line, "%s %s\r\n",
                             s->b.helo_only || !s->client_esmtp
                                 ? "HELO" : "EHLO",
                             s->helo_name);

            /* what this backend offers is learnt from its own reply */
            s->backend_chunking = false;
            session_forward(s, line, (size_t)n - 2, (size_t)n);
            session_fifo_push(s, EXPECT_SILENT, REPLY_NONE);
        }
        s->backend_replay_helo = false;
        session_client_process(s);
        return;
    }
    stats_observe(s->st, STATS_H_BACKEND_SETUP,
                  (uv_now(s->ctx->loop) - s->started_ms) * 1000);
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
        log_event(&s->log, LOG_WARN, s->id,
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
        netaddr_text(&s->client_sa, s->client_addr,
                            sizeof s->client_addr);
    }
    log_event(&s->log, LOG_INFO, s->id,
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
    if (s->st != NULL)
        stats_add(&s->st->bytes[STATS_DIR_FROM_CLIENT], len);
    session_touch_client(s);
    if (!s->greeted && !s->pregreet_seen) {
        /* RFC 5321 3.1: the client waits for the greeting.  One that talks
         * first is a spam engine or a confused device; Postfix's
         * postscreen refuses the same way. */
        char esc[200];

        s->pregreet_seen = true;
        SESSION_COUNT(s, events[STATS_EV_PREGREET]);
        log_escape(esc, sizeof esc, buf, len < 120 ? len : 120);
        log_event(&s->log, LOG_WARN, s->id,
                  "event=pregreet bytes=%zu data=\"%s\"", len, esc);
        if (session_enforce(s, "pregreet", "client spoke before greeting")) {
            session_close(s, REPLY_PREGREET);
            return;
        }
    }
    if (s->cmode == CLIENT_STARTTLS) {
        SESSION_COUNT(s, events[STATS_EV_STARTTLS_INJECTION]);
        log_event(&s->log, LOG_WARN, s->id,
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
        SESSION_COUNT(s, handshake[STATS_LEG_CLIENT][STATS_HS_HANDSHAKE]);
        log_escape(esc, sizeof esc, conn_error(c), strlen(conn_error(c)));
        log_event(&s->log, LOG_WARN, s->id,
                  "event=client_tls_failed error=\"%s\"", esc);
        conn_close(c);
        session_close(s, REPLY_NONE);
        return;
    }
    s->client_tls = true;
    stats_observe(s->st, STATS_H_CLIENT_HANDSHAKE,
                  (uv_now(s->ctx->loop) - s->hs_start) * 1000);
    tls_describe(conn_ssl(c), s->client_tls_desc, sizeof s->client_tls_desc);
    tls_peer_info(conn_ssl(c), subject, sizeof subject, verify,
                  sizeof verify);
    if (subject[0] != '\0' && s->client_cert_subject == NULL)
        s->client_cert_subject = strdup(subject);
    if (strcmp(verify, "none") != 0 && s->client_cert_verify == NULL)
        s->client_cert_verify = strdup(verify);
    log_escape(esc, sizeof esc, subject, strlen(subject));
    log_event(&s->log, LOG_INFO, s->id,
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
        log_event(&s->log, LOG_INFO, s->id,
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
    log_event(&s->log, LOG_INFO, s->id,
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
    struct expect *e = session_fifo_head(s);

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

/*
 * session_begin - the client's address is known (from the socket or a
 * trusted PROXY header): choose its profile, count it against the limits,
 * start TLS or reading, and set up the backend leg.
 */
static void session_begin(struct session *s)
{
    const struct service *svc = s->svc;
    enum connlimit_result lim;

    /* the service's sources: who may use it at all (with backend_auth,
     * who may send through the provider's account); refused before any
     * backend connection is made */
    if (svc->nsources > 0 &&
        !netaddr_in_cidrs(svc->sources, svc->nsources, &s->client_sa)) {
        log_event(&s->log, LOG_WARN, s->id,
                  "event=source_refused client=%s", s->client_addr);
        /* refused under enforce = no too: counted as enforced */
        if (s->st != NULL)
            stats_add(&s->st->policy[STATS_RULE_SOURCES][1], 1);
        session_close(s, REPLY_SOURCE_REFUSED);
        return;
    }
    s->profile = SIZE_MAX;
    s->client_policy = svc->client_tls;
    s->plaintext_auth = svc->client_plaintext_auth;
    for (size_t i = 0; i < svc->nprofiles; i++) {
        const struct profile *p = svc->profiles[i];

        if (!netaddr_in_cidrs(p->sources, p->nsources, &s->client_sa))
            continue;
        s->profile = i;
        if (p->has_client_tls)
            s->client_policy = p->client_tls;
        if (p->has_client_plaintext_auth)
            s->plaintext_auth = p->client_plaintext_auth;
        log_event(&s->log, LOG_INFO, s->id, "event=profile name=%s",
                  p->name);
        break;
    }

    lim = connlimit_acquire(s->ctx->limits,
                            generation_slot(s->gen, s->svc_index),
                            (const struct sockaddr *)&s->client_sa,
                            svc->max_connections, svc->max_connections_per_ip,
                            !svc->enforce);
    s->limits_held = lim == CONNLIMIT_OK || !svc->enforce;
    if (lim != CONNLIMIT_OK) {
        const char *which = lim == CONNLIMIT_SERVICE_FULL
                                ? "max_connections" : "max_connections_per_ip";

        log_event(&s->log, LOG_WARN, s->id, "event=limit limit=%s", which);
        SESSION_COUNT(s, events[STATS_EV_LIMIT]);
        if (session_enforce(s, which, s->client_addr)) {
            session_close(s, lim == CONNLIMIT_SERVICE_FULL
                                 ? REPLY_TOO_MANY_CONNECTIONS
                                 : REPLY_TOO_MANY_FROM_ADDRESS);
            return;
        }
    }

    if (svc->client_implicit_tls) {
        session_enter(s, CLIENT_HANDSHAKE);
        s->hs_start = uv_now(s->ctx->loop);
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

/*
 * session_transparent - transparent = redirect | tproxy: the client's
 * original destination (from the kernel, on the accepted socket fd)
 * becomes client_dst, where the backend leg connects, and every log line
 * of the session names it.  Then the guards, before any backend
 * connection: not ourselves (a loop), and inside transparent_destinations.
 * Returns false when the session was refused (and is closing).
 */
static bool session_transparent(struct session *s, int fd)
{
    static const enum reply_id replies[] = {
        [TRANSPARENT_LOOP] = REPLY_TRANSPARENT_LOOP,
        [TRANSPARENT_DENIED] = REPLY_TRANSPARENT_DENIED,
    };
    enum transparent_verdict v;
    struct sockaddr_storage dst;

    if (transparent_original_dst(fd, s->svc->transparent, &dst) != 0) {
        log_event(&s->log, LOG_WARN, s->id,
                  "event=transparent_refused reason=unknown error=\"%s\" "
                  "client=%s", strerror(errno), s->client_addr);
        SESSION_COUNT(s, events[STATS_EV_TRANSPARENT_UNKNOWN]);
        session_close(s, REPLY_TRANSPARENT_UNKNOWN);
        return false;
    }
    s->client_dst = dst;
    netaddr_text(&dst, s->dst_text, sizeof s->dst_text);
    snprintf(s->dst_tag, sizeof s->dst_tag, "orig_dst=%s", s->dst_text);
    log_event(&s->log, LOG_INFO, s->id,
              "event=connect client=%s service=%s transparent=%s",
              s->client_addr, s->svc->name,
              s->svc->transparent == TRANSPARENT_TPROXY ? "tproxy"
                                                        : "redirect");
    v = transparent_verdict(s->ctx->cfg, s->svc, &dst,
                            transparent_is_local(&dst));
    if (v == TRANSPARENT_OK)
        return true;
    log_event(&s->log, LOG_WARN, s->id,
              "event=transparent_refused reason=%s client=%s",
              transparent_verdict_name(v), s->client_addr);
    SESSION_COUNT(s, events[v == TRANSPARENT_LOOP
                                ? STATS_EV_TRANSPARENT_LOOP
                                : STATS_EV_TRANSPARENT_DENIED]);
    session_close(s, replies[v]);
    return false;
}

void session_accept(struct loop_ctx *ctx, size_t svc_index, int fd,
                    const struct sockaddr_storage *peer)
{
    struct session *s = calloc(1, sizeof *s);

    if (s == NULL) {
        close(fd);
        return;
    }
    s->ctx = ctx;
    s->gen = ctx->gen;          /* it finishes on this one, reload or not */
    generation_hold(s->gen);
    s->svc = &ctx->cfg->services[svc_index];
    s->svc_index = svc_index;
    s->st = stats_of(&ctx->stats, generation_slot(s->gen, svc_index));
    SESSION_COUNT(s, started);
    s->tls = &ctx->tls[svc_index];
    s->id = loop_next_sid(ctx);
    s->started_ms = uv_now(ctx->loop);
    s->last_client = s->b.last = s->started_ms;
    uv_timer_init(ctx->loop, &s->timer);
    s->timer.data = s;
    s->log = log_tagged(&ctx->log, s->dst_tag);
    /* transparent: every session has a backend of its own, so none is
     * resumed (a ticket from one destination is no use to the next) */
    backend_init(&s->b, &ctx->conns, ctx->loop, &s->log, s->svc,
                 s->tls->client, ctx->cfg->hostname,
                 s->svc->transparent != TRANSPARENT_OFF
                     ? NULL : loop_backend_session(ctx, svc_index), s->id,
                 &(struct backend_client){&s->client_sa, &s->client_dst,
                                          s->client_addr},
                 &session_backend_events, s);
    s->b.stats = s->st;
    if (config_service_dns(s->svc))
        backend_use_dns(&s->b, loop_dns(ctx));
    if (config_service_sts(s->svc))
        backend_use_sts(&s->b, loop_sts(ctx));
    if (ctx->gen->tlsrpt != NULL && config_service_tlsrpt(ctx->cfg, s->svc))
        backend_use_tlsrpt(&s->b, ctx->gen->tlsrpt);
    s->next = ctx->sessions;
    if (ctx->sessions != NULL)
        ctx->sessions->prev = s;
    ctx->sessions = s;
    __atomic_add_fetch(&ctx->nsessions, 1, __ATOMIC_RELAXED);

    /* with a PROXY header to come, the conn starts in the accept phase */
    s->client = conn_new(&ctx->conns,
                         s->svc->client_proxy_protocol ? &proxy_header_cbs
                                                       : &client_cbs,
                         s);
    if (s->client == NULL) {
        close(fd);
        session_close(s, REPLY_NONE);
        return;
    }
    session_ref(s);
    if (conn_open(s->client, fd, peer) != 0) {
        session_close(s, REPLY_NONE);
        return;
    }
    s->client_sa = *conn_peer_addr(s->client);
    conn_local_addr(s->client, &s->client_dst);
    snprintf(s->client_addr, sizeof s->client_addr, "%s", conn_peer(s->client));
    if (s->svc->transparent != TRANSPARENT_OFF) {
        if (!session_transparent(s, fd))
            return;
        session_begin(s);   /* client_proxy_protocol is refused by -t */
        return;
    }
    log_event(&s->log, LOG_INFO, s->id, "event=connect client=%s service=%s",
              s->client_addr, s->svc->name);
    if (s->svc->client_proxy_protocol) {
        /* a load balancer in front says who the client is, but only one
         * we trust may */
        if (!netaddr_in_cidrs(s->svc->trusted_proxies,
                                s->svc->ntrusted_proxies, &s->client_sa)) {
            log_event(&s->log, LOG_WARN, s->id,
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
