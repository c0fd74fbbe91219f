/*
 * transparent.c - original destinations, the loop guard, and the socket
 * options of transparent interception.
 *
 * redirect: nftables "redirect" (or "dnat") rewrote the destination; the
 * original is in conntrack and comes back through SO_ORIGINAL_DST (IPv4)
 * or IP6T_SO_ORIGINAL_DST (IPv6).  tproxy: nftables "tproxy" delivered
 * the packet unchanged to an IP_TRANSPARENT listener; the accepted
 * socket's own address is the original destination.
 */
#include "transparent.h"

#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "netaddr.h"

/* <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h> clash
 * with <netinet/in.h>; their values are the kernel's ABI */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

/* transparent_original_dst - see transparent.h. */
int transparent_original_dst(int fd, enum transparent mode,
                             struct sockaddr_storage *out)
{
    struct sockaddr_storage ss, local;
    socklen_t len = sizeof local;

    memset(&local, 0, sizeof local);
    if (getsockname(fd, (struct sockaddr *)&local, &len) != 0)
        return -1;
    if (local.ss_family != AF_INET && local.ss_family != AF_INET6) {
        errno = EAFNOSUPPORT;
        return -1;
    }
    if (mode == TRANSPARENT_TPROXY) {
        *out = local;
        return 0;
    }
    memset(&ss, 0, sizeof ss);
    len = sizeof ss;
    if (local.ss_family == AF_INET) {
        len = sizeof(struct sockaddr_in);
        if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len) != 0)
            return -1;
    } else {
        len = sizeof(struct sockaddr_in6);
        if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len) != 0)
            return -1;
    }
    *out = ss;
    return 0;
}

/* transparent_is_local - see transparent.h. */
bool transparent_is_local(const struct sockaddr_storage *addr)
{
    struct ifaddrs *ifa, *i;
    size_t alen;
    const unsigned char *a = netaddr_bytes(addr, &alen);
    static const unsigned char zero[16];
    bool local = false;

    if (a == NULL)
        return true;
    if (memcmp(a, zero, alen) == 0)
        return true;                       /* 0.0.0.0, :: */
    if (alen == 4 && a[0] == 127)
        return true;                       /* 127.0.0.0/8 */
    if (alen == 16 && memcmp(a, zero, 15) == 0 && a[15] == 1)
        return true;                       /* ::1 */
    if (getifaddrs(&ifa) != 0)
        return true;
    for (i = ifa; i != NULL && !local; i = i->ifa_next) {
        struct sockaddr_storage ss;

        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != addr->ss_family)
            continue;
        memset(&ss, 0, sizeof ss);
        memcpy(&ss, i->ifa_addr, addr->ss_family == AF_INET
                                     ? sizeof(struct sockaddr_in)
                                     : sizeof(struct sockaddr_in6));
        local = netaddr_same_host(&ss, addr);
    }
    freeifaddrs(ifa);
    return local;
}

/* transparent_same_listener - dst is listen address l: the same address
 * and port (a wildcard listener is found by the local check). */
static bool transparent_same_listener(const struct listen_addr *l,
                                      const struct sockaddr_storage *dst)
{
    return netaddr_port(&l->addr) == netaddr_port(dst) &&
           netaddr_same_host(&l->addr, dst);
}

/* transparent_verdict - see transparent.h. */
enum transparent_verdict transparent_verdict(const struct config *cfg,
                                             const struct service *svc,
                                             const struct sockaddr_storage *dst,
                                             bool is_local)
{
    if (is_local)
        return TRANSPARENT_LOOP;
    for (size_t i = 0; i < cfg->nservices; i++)
        for (size_t j = 0; j < cfg->services[i].nlisten; j++)
            if (transparent_same_listener(&cfg->services[i].listen[j], dst))
                return TRANSPARENT_LOOP;
    if (svc->ntransparent_destinations > 0 &&
        !netaddr_in_cidrs(svc->transparent_destinations,
                          svc->ntransparent_destinations, dst))
        return TRANSPARENT_DENIED;
    return TRANSPARENT_OK;
}

/* transparent_verdict_name - see transparent.h. */
const char *transparent_verdict_name(enum transparent_verdict v)
{
    switch (v) {
    case TRANSPARENT_OK: return "ok";
    case TRANSPARENT_LOOP: return "loop";
    case TRANSPARENT_DENIED: return "denied";
    }
    return "?";
}

/* transparent_listen_opts - see transparent.h. */
int transparent_listen_opts(int fd, int family)
{
    int one = 1;

    if (family == AF_INET6)
        return setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one);
    return setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
}

/* transparent_backend_socket - see transparent.h. */
int transparent_backend_socket(int family, unsigned mark,
                               const struct sockaddr_storage *src, char *err,
                               size_t err_len)
{
    int fd, e;
    const char *what = "socket";

    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    what = "SO_MARK (needs CAP_NET_ADMIN)";
    if (mark != 0 &&
        setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
        goto fail;
    if (src != NULL) {
        struct sockaddr_storage from = *src;

        what = "IP_TRANSPARENT (needs CAP_NET_ADMIN)";
        if (src->ss_family != family) {
            errno = EAFNOSUPPORT;
            goto fail;
        }
        if (transparent_listen_opts(fd, family) != 0)
            goto fail;
        what = "bind to the client's address";
        if (family == AF_INET)
            ((struct sockaddr_in *)&from)->sin_port = 0;
        else
            ((struct sockaddr_in6 *)&from)->sin6_port = 0;
        if (bind(fd, (const struct sockaddr *)&from,
                 family == AF_INET ? sizeof(struct sockaddr_in)
                                   : sizeof(struct sockaddr_in6)) != 0)
            goto fail;
    }
    return fd;
fail:
    e = errno;
    snprintf(err, err_len, "%s: %s", what, strerror(e));
    if (fd >= 0)
        close(fd);
    errno = e;
    return -1;
}
