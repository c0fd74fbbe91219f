/*
 * session_int.h - the inside of a session, shared by its two halves:
 * session.c (the relay between the legs) and backend.c (setting up the
 * backend leg).  Nothing else includes this.
 */
#ifndef STARTTLS_PROXY_SESSION_INT_H
#define STARTTLS_PROXY_SESSION_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "config.h"
#include "conn.h"
#include "reply.h"
#include "sbuf.h"
#include "smtp.h"
#include "tls.h"
#include "worker.h"


/* The backend leg's setup, in order (DESIGN.md, step 2). */
enum backend_state {
    BACKEND_IDLE,         /* not started */
    BACKEND_RESOLVING,
    BACKEND_CONNECTING,
    BACKEND_TLS_IMPLICIT, /* handshake before the greeting */
    BACKEND_GREETING,
    BACKEND_EHLO,
    BACKEND_STARTTLS,
    BACKEND_TLS_HANDSHAKE,
    BACKEND_XCLIENT_EHLO, /* EHLO to learn whether XCLIENT is offered */
    BACKEND_XCLIENT,      /* XCLIENT ADDR=... sent, 220 expected */
    BACKEND_READY,        /* relaying */
    BACKEND_FAILED
};

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
    CLIENT_PROXY_HEADER   /* waiting for a load balancer's PROXY header */
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
    EXPECT_OTHER
};

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
    struct worker *w;
    const struct service *svc;
    const struct tls_service *tls;
    size_t svc_index;
    uint64_t id;
    struct session *prev, *next;      /* the worker's list */
    unsigned refs;                    /* handles still open */
    bool closing;
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
    bool waiting;                     /* a reply must come before more
                                         commands (DATA, AUTH, QUIT) */
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

    /* backend leg */
    struct conn *backend;
    enum backend_state bstate;
    struct sbuf bin;                  /* backend bytes not yet handled */
    struct sockaddr_storage baddr;
    uv_getaddrinfo_t gai;
    bool gai_busy;
    bool backend_dirty;               /* saw more than EHLO/HELO/NOOP/... */
    bool backend_plain_retry;         /* "may": TLS failed, now plaintext */
    bool backend_refresh;             /* a fresh backend after client TLS:
                                         its greeting is not relayed */
    bool backend_replay_helo;         /* ... and it gets the client's EHLO
                                         from us */
    char *greeting;                   /* the backend's own, relayed once */
    size_t greeting_len;
    char *held_helo;                  /* this backend session's 250 to an
                                         EHLO/HELO, kept while the client
                                         leg is plaintext (a repeated one
                                         may be refused after STARTTLS) */
    size_t held_helo_len;
    bool held_ehlo;                   /* ... it answered an EHLO */

    uv_timer_t timer;                 /* every deadline, see
                                         session_deadline() */
    uint64_t last_client;             /* uv_now() of the last client read */
    uint64_t last_backend;            /* ... of the last backend read, or
                                         of the request it owes a reply to */
    uint64_t cmd_start;               /* first byte of an unfinished command
                                         line; 0: none */
    uint64_t hs_start;                /* client TLS handshake began */
    uint64_t bhs_start;               /* backend TLS handshake began; 0:
                                         none under way */
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
    bool limits_held;                 /* counted in w->limits */
    unsigned nerrors;
    bool backend_helo_only;           /* the backend refused EHLO */
    bool xclient_ok;                  /* the backend took our XCLIENT */
    bool xclient_helo_sent;           /* ... and HELO= for this EHLO */
    bool pregreet_seen;
    char helo_name[256];              /* the client's EHLO/HELO argument */
    bool client_esmtp;                /* it said EHLO, not HELO */
    bool bdat_in_message;             /* a BDAT chunk without LAST was sent */
    bool backend_chunking;            /* its EHLO reply offered CHUNKING */
    bool ehlo_drop_logged;            /* event=ehlo_dropped was logged */
    /* the client certificate's subject and verification result; NULL
     * without one (allocated: few clients have one, and idle sessions
     * should be small) */
    char *client_cert_subject;
    char *client_cert_verify;

    /* for the summary line */
    unsigned ncommands;
    unsigned nmessages;
    unsigned nbackends;
    char client_addr[64];
    char client_tls_desc[80];
    char backend_tls_desc[80];
    char backend_verify[96];
};

/* session.c, used by backend.c */
void session_backend_ready(struct session *s);
void session_fail(struct session *s, enum reply_id reply, const char *event,
                  const char *why);
void session_touch_backend(struct session *s);
/* session_arm - a deadline may have moved closer: re-arm the timer. */
void session_arm(struct session *s);
bool session_enforce(struct session *s, const char *rule, const char *detail);
void session_ref(struct session *s);
void session_unref(struct session *s);
void session_backend_data(struct conn *c, void *ud, const char *buf,
                          size_t len);

/* backend.c */
/* backend_start - open a backend connection and run its setup. */
void backend_start(struct session *s);
/* backend_setup_input - feed setup replies; called with s->bin filled. */
void backend_setup_input(struct session *s);
const char *backend_state_name(enum backend_state st);
/* backend_handshake_timeout - the backend's TLS handshake took longer than
 * tls_handshake_timeout: a failed handshake (session.c's timer). */
void backend_handshake_timeout(struct session *s);
/* backend_xclient_helo - "XCLIENT HELO=<client's name> PROTO=..." CRLF. */
int backend_xclient_helo(const struct session *s, bool esmtp, char *out,
                         size_t cap);

#endif
