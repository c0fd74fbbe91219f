/*
 * session.h - one client connection and its backend leg.
 */
#ifndef STARTTLS_PROXY_SESSION_H
#define STARTTLS_PROXY_SESSION_H

#include <stddef.h>

#include "reply.h"

struct worker;
struct session;

/*
 * session_accept - a session for the accepted connection fd (owned by the
 * session from now on) of service svc_index; starts its backend leg.
 * Failures are logged and end only this session.
 */
void session_accept(struct worker *w, size_t svc_index, int fd);

/* session_shutdown - end s: send reply (if not REPLY_NONE) and close. */
void session_shutdown(struct session *s, enum reply_id reply);

/* session_next - the next session in its worker's list (for shutdown). */
struct session *session_next(const struct session *s);

#endif
