/*
 * session_int.h - the inside of a session, shared by its three files:
 * session.c (lifetime, deadlines, the FIFO of owed replies, both legs'
 * callbacks), session_cmd.c (what the client sends) and session_relay.c
 * (what the backend answers).  The backend leg is an object of its own
 * (backend.h) that never sees this.  Nothing else includes this file but
 * the unit test of the session's tables.
 */
#ifndef STARTTLS_PROXY_SESSION_INT_H
#define STARTTLS_PROXY_SESSION_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "backend.h"
#include "config.h"
#include "conn.h"
#include "reply.h"
#include "sbuf.h"
#include "smtp.h"
#include "tls.h"
#include "loop.h"
#include "netaddr.h"


/* Where the client side of the relay is. */
enum client_mode {
    CLIENT_COMMAND,       /* reading command lines */
    CLIENT_DATA,          /* message content after 354, until CRLF.CRLF */
    CLIENT_BDAT,          /* exactly bdat_left bytes of a chunk */
    CLIENT_BDAT_SKIP,     /* a refused chunk's bytes, thrown away */
    CLIENT_AUTH,          /* the next line answers a 334 */
    CLIENT_SKIP_LINE,     /* rest of an over-long line, thrown away */
    CLIENT_STARTTLS,      /* after STARTTLS: every plaintext byte dropped */
    CLIENT_HANDSHAKE,     /* TLS handshake on the client leg */
    CLIENT_QUIT,          /* QUIT sent; nothing more is read */
    CLIENT_NMODES
};

/* What each reply the client is owed stands for, in command order. */
enum expect_kind {
    EXPECT_LOCAL,         /* a reply the proxy writes itself */
    EXPECT_STARTTLS,      /* our 220, then the handshake */
    EXPECT_EHLO,
    EXPECT_HELO,
    EXPECT_DATA,          /* 354 or a refusal */
    EXPECT_END_OF_DATA,
    EXPECT_BDAT,
    EXPECT_BDAT_LAST,
    EXPECT_AUTH,
    EXPECT_QUIT,
    EXPECT_HELO_FALLBACK, /* our HELO to a backend that refused EHLO */
    EXPECT_SILENT,        /* our own command; the reply is not relayed */
    EXPECT_XCLIENT,       /* our XCLIENT HELO=...; the client's EHLO waits */
    EXPECT_AUTH_CANCEL,   /* our "*" ending an AUTH exchange whose response
                             line the proxy refused; not relayed */
    EXPECT_OTHER,
    EXPECT_NKINDS
};

/*
 * The verb table (session_cmd.c): one row per verb.  The flags are checked in
 * this order by session_refusal; SV_OWN_REFUSAL handlers get the refusal
 * and deal with it themselves (a refused BDAT chunk is still read).
 */
enum session_verb_flag {
    SV_NEVER = 1 << 0,       /* never relayed: 502 (XCLIENT, XFORWARD) */
    SV_TLS_FIRST = 1 << 1,   /* refused before TLS under client_tls =
                                encrypt */
    SV_HELO_FIRST = 1 << 2,  /* refused after STARTTLS until the client
                                says EHLO/HELO again */
    SV_DIRTIES = 1 << 3,     /* the backend session holds state after it:
                                after the client's STARTTLS it gets a
                                fresh backend session */
    SV_WAITS = 1 << 4,       /* what follows is read after its reply */
    SV_LOCAL = 1 << 5,       /* answered by the proxy itself */
    SV_OWN_REFUSAL = 1 << 6
};

/* One command line as the handlers see it. */
struct session_line {
    const char *p;           /* the line, in cin */
    size_t len;              /* without its line end */
    size_t total;            /* with it */
    enum reply_id refusal;   /* for SV_OWN_REFUSAL handlers */
};

struct session;
struct session_verb {
    uint8_t flags;           /* enum session_verb_flag */
    uint8_t expect;          /* enum expect_kind it is owed */
    /* a check of the verb's own, or NULL */
    enum reply_id (*refuse)(struct session *s, const struct smtp_cmd *cmd);
    /* relay it or answer it; consumes the line from cin */
    void (*handle)(struct session *s, const struct smtp_cmd *cmd,
                   const struct session_line *l);
};

/* session_verb - verb's row (the unknown verb's for anything else). */
const struct session_verb *session_verb(enum smtp_verb verb);

/* session_expect_waits - does a reply of this kind, while owed, hold back
 * the reading of the next command line?  (What "waiting" was.) */
bool session_expect_waits(enum expect_kind kind);

/* session_mode_name, session_transition_ok - the client mode machine;
 * every change goes through session_enter (session_cmd.c). */
const char *session_mode_name(enum client_mode mode);
bool session_transition_ok(enum client_mode from, enum client_mode to);

struct expect {
    uint8_t kind;         /* enum expect_kind */
    uint8_t reply;        /* enum reply_id, for EXPECT_LOCAL */
};

#define SESSION_FIFO 64               /* commands in flight, at most */
#define SESSION_INBUF_MAX (64 * 1024) /* buffered client bytes before we
                                         stop reading */
#define SESSION_REPLY_LINE 2048       /* one backend reply line */
#define SESSION_REPLY_LINES 200

struct session {
    struct loop_ctx *ctx;             /* the loop it runs on */
    struct generation *gen;           /* the configuration it started on
                                         (held until it ends) */
    const struct service *svc;
    const struct tls_service *tls;
    size_t svc_index;
    struct stats_service *st;         /* its counters on this loop, or NULL */
    uint64_t id;
    struct session *prev, *next;      /* ctx->sessions (session.c) */
    unsigned refs;                    /* handles still open */
    bool closing;
    bool draining;                    /* stopping: the message in flight
                                         ends it (session_drain_all) */
    uint64_t started_ms;

    /* client leg */
    struct conn *client;
    enum client_mode cmode;
    struct sbuf cin;                  /* client bytes not yet handled */
    bool in_process;                  /* re-entry guard */
    bool process_again;
    bool greeted;                     /* the client has its greeting */
    bool client_tls;                  /* client leg encrypted */
    bool need_helo;                   /* TLS began: EHLO/HELO again first */
    unsigned nwaiting;                /* owed replies that hold back the
                                         next command (session_expect_waits) */
    struct smtp_data_filter filter;   /* DATA content (smuggling defence) */
    bool msg_rejected;                /* bare_newline = reject fired */
    uint8_t reject_reply;             /* ... and the reply it gets */
    bool bare_logged;
    bool nul_logged;
    uint64_t nnul;                    /* NUL bytes removed, earlier messages */
    uint64_t bdat_left;
    struct expect fifo[SESSION_FIFO];
    unsigned fifo_head;
    unsigned fifo_len;

    /* backend leg: its own object (backend.h); the session reads its
     * facts and, once it is READY, writes to and reads from its conn */
    struct backend_leg b;
    bool backend_dirty;               /* saw more than EHLO/HELO/NOOP/... */
    bool backend_refresh;             /* a fresh backend after client TLS:
                                         its greeting is not relayed */
    bool backend_replay_helo;         /* ... and it gets the client's EHLO
                                         from us */
    char *held_helo;                  /* this backend session's 250 to an
                                         EHLO/HELO, kept while the client
                                         leg is plaintext (a repeated one
                                         may be refused after STARTTLS) */
    size_t held_helo_len;
    bool held_ehlo;                   /* ... it answered an EHLO */

    uv_timer_t timer;                 /* every deadline, see
                                         session_deadline() */
    uint64_t last_client;             /* uv_now() of the last client read */
    uint64_t cmd_start;               /* first byte of an unfinished command
                                         line; 0: none */
    uint64_t hs_start;                /* client TLS handshake began */
    uint64_t data_start;              /* message content window began */
    uint64_t data_bytes;              /* content bytes since data_start */
    bool client_paused;               /* we stopped reading the client */
    bool backend_paused;              /* ... the backend */

    /* the client and the policy that applies to it */
    struct sockaddr_storage client_sa;
    struct sockaddr_storage client_dst; /* where the client connected to */
    size_t profile;                   /* svc->profiles index; SIZE_MAX */
    enum client_tls client_policy;    /* svc's, or the profile's */
    bool plaintext_auth;
    bool limits_held;                 /* counted in ctx->limits */
    unsigned nerrors;
    bool xclient_helo_sent;           /* ... and HELO= for this EHLO */
    bool pregreet_seen;
    char *helo_name;                  /* the client's EHLO/HELO argument,
                                         allocated to fit; NULL: none yet
                                         (session_helo) */
    bool client_esmtp;                /* it said EHLO, not HELO */
    bool bdat_in_message;             /* a BDAT chunk without LAST was sent */
    bool backend_chunking;            /* its EHLO reply offered CHUNKING */
    bool ehlo_drop_logged;            /* event=ehlo_dropped was logged */
    bool requiretls_offered;          /* the last EHLO reply showed it */
    /* the client certificate's subject and verification result; NULL
     * without one (allocated: few clients have one, and idle sessions
     * should be small) */
    char *client_cert_subject;
    char *client_cert_verify;

    /* the session's own logger: the loop's, with "orig_dst=ADDR:PORT"
     * on every line of a transparent service (dst_tag) */
    struct logger log;
    char dst_tag[NETADDR_TEXT + 16];
    char dst_text[NETADDR_TEXT];      /* the original destination; "" when
                                         not transparent */

    /* for the summary line */
    unsigned ncommands;
    unsigned nmessages;
    char client_addr[64];
    char client_tls_desc[80];
};


/* ---- the parts of a session, shared among its three files ---------------- */

/* session.c: lifetime, deadlines, the FIFO of owed replies, flow
 * control, both legs' callbacks */
/* SESSION_COUNT - one more in counter field of s's service (stats.h):
 * a load and a store of this loop's own word. */
#define SESSION_COUNT(s, field)                                            \
    do {                                                                   \
        if ((s)->st != NULL)                                               \
            stats_add(&(s)->st->field, 1);                                 \
    } while (0)

void session_arm(struct session *s);
void session_backend_restart(struct session *s);
void session_close(struct session *s, enum reply_id reply);
void session_count_error(struct session *s, int code);
bool session_enforce(struct session *s, const char *rule, const char *detail);
void session_fail(struct session *s, enum reply_id reply, const char *event,
                  const char *why);
void session_fifo_flush_local(struct session *s);
struct expect *session_fifo_head(struct session *s);
void session_fifo_pop(struct session *s);
void session_fifo_push(struct session *s, enum expect_kind kind,
                       enum reply_id reply);
void session_flow(struct session *s);
void session_local(struct session *s, enum reply_id id);
bool session_waiting_for_backend(const struct session *s);
bool session_in_message(const struct session *s);

/* session_cmd.c: the client mode, command lines and message content */
void session_enter(struct session *s, enum client_mode mode);
void session_client_process(struct session *s);
size_t session_data_direct(struct session *s, const char *p, size_t len);
void session_forward(struct session *s, const char *line, size_t len,
                     size_t total);
void session_helo_fallback(struct session *s);

/* session_relay.c: backend replies to the client, the trace header */
void session_backend_process(struct session *s);
size_t session_trace_header(const struct session *s, char *out, size_t cap);

/* session_requiretls_path - RFC 8689 on both legs: the client uses TLS
 * and the backend leg is authenticated TLS (verify, DANE, a pin; never
 * a plaintext retry). */
bool session_requiretls_path(const struct session *s);

/* session_helo - the client's EHLO/HELO name, "" before one. */
static inline const char *session_helo(const struct session *s)
{
    return s->helo_name != NULL ? s->helo_name : "";
}

#endif
