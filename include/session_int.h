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
#include "smtp.h"
#include "tls.h"
#include "worker.h"

/* a bounded byte queue: data[off .. off+len) is unread */
struct sbuf {
    char *data;
    size_t off;
    size_t len;
    size_t cap;
};

int sbuf_append(struct sbuf *b, const char *p, size_t n);
void sbuf_consume(struct sbuf *b, size_t n);
void sbuf_free(struct sbuf *b);
static inline const char *sbuf_ptr(const struct sbuf *b)
{
    return b->data + b->off;
}

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
    CLIENT_QUIT           /* QUIT sent; nothing more is read */
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
    struct smtp_data_scanner eod;
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
    char *greeting;                   /* the backend's own, relayed once */
    size_t greeting_len;

    uv_timer_t timer;                 /* idle and close deadlines */

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
void session_touch(struct session *s);
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

#endif
