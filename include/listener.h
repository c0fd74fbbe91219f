/*
 * listener.h - bind, listen, accept, and hand each socket to a session.
 *
 * Sockets are bound up front, one per address per worker, with
 * SO_REUSEPORT so the kernel spreads new connections evenly over the
 * workers' loops; a bind error is known before any worker starts.
 */
#ifndef STARTTLS_PROXY_LISTENER_H
#define STARTTLS_PROXY_LISTENER_H

#include <stddef.h>
#include <sys/socket.h>

#include <uv.h>

#include "config.h"

struct logger;
struct listener;

/*
 * listener_check_free - 0 if nothing listens on addr, else -1 with a
 * message in err ("Address already in use") and errno set.  SO_REUSEPORT lets any
 * process of the same user join the workers' sockets, so a second
 * instance (or a second service on the same address) would silently get
 * a share of the connections: call this before the first
 * listener_socket for an address.
 */
int listener_check_free(const struct listen_addr *addr, char *err,
                        size_t err_len);

/*
 * listener_socket - a listening socket for addr (SO_REUSEPORT set).
 * Returns the descriptor, or -1 with a message in err and errno set.
 */
int listener_socket(const struct listen_addr *addr, char *err, size_t err_len);

/*
 * listener_accept_cb - a new connection for service svc_index: fd is an
 * accepted, non-blocking socket that the callee owns from now on; peer is
 * the client's address as accept4 gave it.
 */
typedef void (*listener_accept_cb)(void *ud, size_t svc_index, int fd,
                                   const struct sockaddr_storage *peer);

/*
 * listener_open - accept on fd (from listener_socket) in loop for
 * service number svc_index, handing each connection to on_accept(ud).  Out of
 * descriptors it stops accepting for a moment instead of retrying at once
 * (logged as event=accept_paused, then event=accept_resumed).  Returns
 * NULL with a message in err; fd is closed then.
 */
struct listener *listener_open(uv_loop_t *loop, struct logger *log,
                               size_t svc_index,
                               const struct listen_addr *addr, int fd,
                               listener_accept_cb on_accept, void *ud,
                               char *err, size_t err_len);

/* listener_set_service - a reload kept the listener's address: it now
 * lives at addr (in the new configuration), for service svc_index. */
void listener_set_service(struct listener *l, size_t svc_index,
                          const struct listen_addr *addr);

/* listener_addr - the address l listens on (as its configuration says). */
const struct listen_addr *listener_addr(const struct listener *l);

/* listener_service - the service number l accepts for. */
size_t listener_service(const struct listener *l);

/*
 * listener_drain_close - a reload removed l's address: stop accepting,
 * hand every connection already queued to on_accept (synchronously, so
 * the caller's configuration is still the one they came for), close the
 * socket and then l (as listener_close).  Returns how many it handed.
 */
size_t listener_drain_close(struct listener *l);

/* listener_close - stop accepting; the memory goes in the close callback. */
void listener_close(struct listener *l);

#endif
