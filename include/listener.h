/*
 * listener.h - bind, listen, accept, and hand each socket to a session.
 */
#ifndef STARTTLS_PROXY_LISTENER_H
#define STARTTLS_PROXY_LISTENER_H

#include <stddef.h>

#include "config.h"

struct worker;
struct listener;

/*
 * listener_open - listen on addr for service number svc_index of w.
 * Returns NULL with a message in err on failure.
 */
struct listener *listener_open(struct worker *w, size_t svc_index,
                               const struct listen_addr *addr, char *err,
                               size_t err_len);

/* listener_close - stop accepting; the memory goes in the close callback. */
void listener_close(struct listener *l);

#endif
