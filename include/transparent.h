/*
 * transparent.h - transparent interception (README "Transparent
 * interception"): the connection's original destination from the kernel,
 * whether the proxy may connect there, and the backend socket's options.
 *
 * transparent_verdict() is pure (tested on its own); the others are thin
 * wrappers around one system call each, so that the session and the
 * backend leg never call getsockopt or setsockopt themselves.
 */
#ifndef STARTTLS_PROXY_TRANSPARENT_H
#define STARTTLS_PROXY_TRANSPARENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "config.h"

/* What a transparent session may do with its original destination. */
enum transparent_verdict {
    TRANSPARENT_OK = 0,
    TRANSPARENT_LOOP,     /* one of our own addresses or listeners */
    TRANSPARENT_DENIED    /* outside transparent_destinations */
};

/*
 * transparent_original_dst - where the client meant to connect, on the
 * accepted socket fd: SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST
 * (IPv6) for redirect, the socket's own address for tproxy.  Returns 0
 * and fills *out, or -1 with errno set (ENOENT: no NAT entry, i.e. the
 * connection was not redirected and conntrack knows nothing of it).
 */
int transparent_original_dst(int fd, enum transparent mode,
                             struct sockaddr_storage *out);

/*
 * transparent_is_local - is addr one of this host's addresses (of any
 * interface, in this network namespace), a loopback address (127.0.0.0/8,
 * ::1) or unspecified?  Read with getifaddrs() each time: addresses come
 * and go.  On failure to read them, true (refusing is the safe side).
 */
bool transparent_is_local(const struct sockaddr_storage *addr);

/*
 * transparent_verdict - may a session of svc connect to dst?  A loop when
 * dst is local (is_local, from transparent_is_local) or equals a listen
 * address of any service of cfg; denied when svc has
 * transparent_destinations and dst is in none of them.  The loop is
 * checked first.
 */
enum transparent_verdict transparent_verdict(const struct config *cfg,
                                             const struct service *svc,
                                             const struct sockaddr_storage *dst,
                                             bool is_local);

/* transparent_verdict_name - "ok", "loop", "denied". */
const char *transparent_verdict_name(enum transparent_verdict v);

/*
 * transparent_listen_opts - on a listening socket fd of a service with
 * transparent = tproxy: IP_TRANSPARENT (IPV6_TRANSPARENT for IPv6), so
 * that connections to any address the TPROXY rule sends it are accepted.
 * Before bind().  Returns 0, or -1 with errno set (EPERM without
 * CAP_NET_ADMIN).
 */
int transparent_listen_opts(int fd, int family);

/*
 * transparent_backend_socket - a non-blocking TCP socket of family for the
 * backend leg: SO_MARK = mark when mark != 0 (so that nftables rules can
 * leave the proxy's own connections alone), and when src is not NULL
 * IP_TRANSPARENT and bound to src's address (port 0: any), so that the
 * destination sees the client's address (transparent_source = client).
 * Returns the descriptor, or -1 with a message in err.
 */
int transparent_backend_socket(int family, unsigned mark,
                               const struct sockaddr_storage *src, char *err,
                               size_t err_len);

#endif
