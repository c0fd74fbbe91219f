/*
 * listener.c - listening sockets and accepting.
 */
#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "log.h"

/* listener_socket - see listener.h. */
int listener_socket(const struct listen_addr *addr, char *err, size_t err_len)
{
    int fd, one = 1, e;
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
    e = errno;
    snprintf(err, err_len, "cannot listen on %s: %s", addr->text,
             strerror(e));
    if (fd >= 0)
        close(fd);
    errno = e;                     /* the caller may explain EACCES */
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
    errno = e;
    return -1;
}

/*
 * Accepting.  The listening socket is watched with a uv_poll and accepted
 * here rather than by uv_listen, so that running out of descriptors can
 * stop the accepting: libuv's own loop retries accept() at once when it
 * fails with EMFILE and its spare descriptor is gone (another worker
 * thread took it), and spins.  Out of descriptors (EMFILE, ENFILE) or
 * kernel memory (ENOBUFS, ENOMEM), the listener stops watching its socket
 * for LISTENER_PAUSE_MS; connections wait in the kernel's backlog until
 * descriptors are free again, nothing spins.  At most LISTENER_BATCH
 * connections are taken per wakeup, so that one busy listener does not
 * starve the sessions of its loop.
 */
enum { LISTENER_BATCH = 64, LISTENER_PAUSE_MS = 100 };

struct listener {
    uv_poll_t poll;
    uv_timer_t pause;
    int fd;
    uv_loop_t *loop;
    struct logger *log;
    size_t svc_index;
    const struct listen_addr *addr;
    listener_accept_cb on_accept;
    void *ud;
    unsigned handles;              /* open libuv handles: poll, pause */
    bool paused;
    uint64_t paused_at;            /* uv_now() when the pause began */
    unsigned pauses;               /* pauses since the last accept */
};

static void listener_on_readable(uv_poll_t *h, int status, int events);

static void listener_on_resume(uv_timer_t *t)
{
    struct listener *l = t->data;

    l->paused = false;
    uv_poll_start(&l->poll, UV_READABLE, listener_on_readable);
}

/* listener_pause - no descriptor (or memory) for a new connection: stop
 * watching the socket for a while.  Logged once per episode. */
static void listener_pause(struct listener *l, int err)
{
    uv_poll_stop(&l->poll);
    l->paused = true;
    if (l->pauses++ == 0) {
        l->paused_at = uv_now(l->loop);
        log_event(l->log, LOG_WARN, 0,
                  "event=accept_paused listen=%s error=\"%s\" retry_ms=%d",
                  l->addr->text, strerror(err), LISTENER_PAUSE_MS);
    }
    uv_timer_start(&l->pause, listener_on_resume, LISTENER_PAUSE_MS, 0);
}

static void listener_on_readable(uv_poll_t *h, int status, int events)
{
    struct listener *l = h->data;

    (void)events;
    if (status < 0) {
        log_event(l->log, LOG_WARN, 0,
                  "event=accept_error listen=%s error=\"%s\"", l->addr->text,
                  uv_strerror(status));
        return;
    }
    for (int n = 0; n < LISTENER_BATCH && !l->paused; n++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &plen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            switch (errno) {
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
                continue;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                listener_pause(l, errno);
                return;
            case EAGAIN:
                return;
            default:
                log_event(l->log, LOG_WARN, 0,
                          "event=accept_error listen=%s error=\"%s\"",
                          l->addr->text, strerror(errno));
                return;
            }
        }
        if (l->pauses > 0) {
            log_event(l->log, LOG_INFO, 0,
                      "event=accept_resumed listen=%s paused_ms=%llu",
                      l->addr->text,
                      (unsigned long long)(uv_now(l->loop) - l->paused_at));
            l->pauses = 0;
        }
        l->on_accept(l->ud, l->svc_index, fd, &peer);
    }
}

/* listener_open - see listener.h. */
struct listener *listener_open(uv_loop_t *loop, struct logger *log,
                               size_t svc_index,
                               const struct listen_addr *addr, int fd,
                               listener_accept_cb on_accept, void *ud,
                               char *err, size_t err_len)
{
    struct listener *l = calloc(1, sizeof *l);
    int r;

    if (l == NULL) {
        close(fd);
        snprintf(err, err_len, "%s: cannot set up listener", addr->text);
        return NULL;
    }
    l->loop = loop;
    l->log = log;
    l->fd = fd;
    l->svc_index = svc_index;
    l->addr = addr;
    l->on_accept = on_accept;
    l->ud = ud;
    l->poll.data = l->pause.data = l;
    r = uv_poll_init(loop, &l->poll, fd);
    if (r != 0) {
        close(fd);
        free(l);
        snprintf(err, err_len, "cannot listen on %s: %s", addr->text,
                 uv_strerror(r));
        return NULL;
    }
    uv_timer_init(loop, &l->pause);
    l->handles = 2;
    r = uv_poll_start(&l->poll, UV_READABLE, listener_on_readable);
    if (r != 0) {
        snprintf(err, err_len, "cannot listen on %s: %s", addr->text,
                 uv_strerror(r));
        listener_close(l);
        return NULL;
    }
    return l;
}

/* listener_on_close - the last of the two handles frees the listener
 * and closes its socket (uv_poll never owns the descriptor). */
static void listener_on_close(uv_handle_t *h)
{
    struct listener *l = h->data;

    if (--l->handles > 0)
        return;
    if (l->fd >= 0)
        close(l->fd);
    free(l);
}

/* listener_set_service - see listener.h. */
void listener_set_service(struct listener *l, size_t svc_index,
                          const struct listen_addr *addr)
{
    l->svc_index = svc_index;
    l->addr = addr;
}

/* listener_addr - see listener.h. */
const struct listen_addr *listener_addr(const struct listener *l)
{
    return l->addr;
}

/* listener_service - see listener.h. */
size_t listener_service(const struct listener *l)
{
    return l->svc_index;
}

/* listener_drain_close - see listener.h.  The socket is closed here, at
 * once, rather than in the close callback: a connection the kernel
 * queues after the last accept would wait there for nobody. */
size_t listener_drain_close(struct listener *l)
{
    size_t n = 0;

    if (uv_is_closing((uv_handle_t *)&l->poll))
        return 0;
    uv_poll_stop(&l->poll);
    uv_timer_stop(&l->pause);
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &plen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno != EAGAIN)
                log_event(l->log, LOG_WARN, 0,
                          "event=accept_error listen=%s error=\"%s\"",
                          l->addr->text, strerror(errno));
            break;
        }
        n++;
        l->on_accept(l->ud, l->svc_index, fd, &peer);
    }
    close(l->fd);
    l->fd = -1;
    listener_close(l);
    return n;
}

void listener_close(struct listener *l)
{
    if (uv_is_closing((uv_handle_t *)&l->poll))
        return;
    uv_close((uv_handle_t *)&l->poll, listener_on_close);
    uv_close((uv_handle_t *)&l->pause, listener_on_close);
}
