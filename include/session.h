/*
 * session.h - one client connection and its backend leg.
 */
#ifndef STARTTLS_PROXY_SESSION_H
#define STARTTLS_PROXY_SESSION_H

#include <stddef.h>
#include <sys/socket.h>

#include "reply.h"

struct loop_ctx;

/*
 * session_accept - a session on ctx's loop for the accepted connection fd
 * (owned by the session from now on) of service svc_index, from peer (as
 * accept4 gave it); starts its backend leg.
 * Failures are logged and end only this session.
 */
void session_accept(struct loop_ctx *ctx, size_t svc_index, int fd,
                    const struct sockaddr_storage *peer);

/* session_shutdown_all - end every session of ctx with reply (if not
 * REPLY_NONE).  They are freed as their handles close. */
void session_shutdown_all(struct loop_ctx *ctx, enum reply_id reply);

/* session_drain_all - a graceful stop: sessions with no message in
 * flight end now with 421 4.3.2; the others when the backend has
 * answered that message (the client gets the answer, then the 421). */
void session_drain_all(struct loop_ctx *ctx);

#endif
