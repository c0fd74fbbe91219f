/*
 * listener.c - one listening socket per configured address.
 */
#include "listener.h"

#include <stdio.h>
#include <stdlib.h>

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

struct listener *listener_open(struct worker *w, size_t svc_index,
                               const struct listen_addr *addr, char *err,
                               size_t err_len)
{
    struct listener *l = calloc(1, sizeof *l);
    int r;

    if (l == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    l->w = w;
    l->svc_index = svc_index;
    l->addr = addr;
    r = uv_tcp_init(w->loop, &l->tcp);
    if (r != 0) {
        free(l);
        snprintf(err, err_len, "%s: %s", addr->text, uv_strerror(r));
        return NULL;
    }
    l->tcp.data = l;
    r = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&addr->addr,
                    addr->addr.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (r == 0)
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
