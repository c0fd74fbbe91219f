/*
 * listener.c - listening sockets and accepting.
 */
#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "log.h"
#include "session.h"
#include "worker.h"

struct listener {
    uv_tcp_t tcp;
    struct worker *w;
    size_t svc_index;
    const struct listen_addr *addr;
};

/* listener_socket - see listener.h. */
int listener_socket(const struct listen_addr *addr, char *err, size_t err_len)
{
    int fd, one = 1;
    int family = addr->addr.ss_family;

    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        goto fail;
    if (family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
        goto fail;
    if (bind(fd, (const struct sockaddr *)&addr->addr, addr->addr_len) != 0 ||
        listen(fd, 511) != 0)
        goto fail;
    return fd;
fail:
    snprintf(err, err_len, "cannot listen on %s: %s", addr->text,
             strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

/* listener_check_free - see listener.h. */
int listener_check_free(const struct listen_addr *addr, char *err,
                        size_t err_len)
{
    int fd, one = 1, e = 0;
    int family = addr->addr.ss_family;

    /* SO_REUSEADDR (sockets of an earlier run in TIME_WAIT do not count)
     * but no SO_REUSEPORT: any socket listening there makes bind fail */
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
        bind(fd, (const struct sockaddr *)&addr->addr, addr->addr_len) != 0)
        e = errno;
    if (fd >= 0)
        close(fd);
    if (e == 0)
        return 0;
    snprintf(err, err_len, "cannot listen on %s: %s", addr->text,
             strerror(e));
    return -1;
}

static void listener_on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;

    if (status < 0) {
        log_event(&l->w->log, LOG_WARN, 0,
                  "event=accept_error listen=%s error=\"%s\"", l->addr->text,
                  uv_strerror(status));
        return;
    }
    session_accept(l->w, l->svc_index, server);
}

/* listener_open - see listener.h. */
struct listener *listener_open(struct worker *w, size_t svc_index,
                               const struct listen_addr *addr, int fd,
                               char *err, size_t err_len)
{
    struct listener *l = calloc(1, sizeof *l);
    int r;

    if (l == NULL || uv_tcp_init(w->loop, &l->tcp) != 0) {
        free(l);
        close(fd);
        snprintf(err, err_len, "%s: cannot set up listener", addr->text);
        return NULL;
    }
    l->w = w;
    l->svc_index = svc_index;
    l->addr = addr;
    l->tcp.data = l;
    r = uv_tcp_open(&l->tcp, fd);
    if (r != 0)
        close(fd);
    else
        r = uv_listen((uv_stream_t *)&l->tcp, 511, listener_on_connection);
    if (r != 0) {
        snprintf(err, err_len, "cannot listen on %s: %s", addr->text,
                 uv_strerror(r));
        listener_close(l);
        return NULL;
    }
    return l;
}

static void listener_on_close(uv_handle_t *h)
{
    free(h->data);
}

void listener_close(struct listener *l)
{
    if (!uv_is_closing((uv_handle_t *)&l->tcp))
        uv_close((uv_handle_t *)&l->tcp, listener_on_close);
}
