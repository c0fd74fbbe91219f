/*
 * health.c - the backend probe (health.h).
 *
 * One probe per service with backend_health.  Each has one timer: while
 * a probe runs it is the probe's deadline, between probes the wait for
 * the next one.  A probe resolves the backend (uv_getaddrinfo), tries
 * its addresses in order until one connects, and for "smtp" reads one
 * complete reply and, when it is a 2xx greeting, writes QUIT and closes
 * without waiting for the 221.  Only a change of state is logged.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netdb.h>

#include "health.h"
#include "log.h"
#include "netaddr.h"

/* a greeting longer than this (all its lines) is a failure */
#define HEALTH_GREETING_MAX 2048

struct health_probe {
    struct health *h;
    char *service;
    char *host;
    char *port;
    enum backend_health mode;
    uint64_t interval_ms;
    uint64_t timeout_ms;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    struct addrinfo *addrs;        /* the resolver's answer, while probing */
    struct addrinfo *next;         /* the next address to try */
    char peer[NETADDR_TEXT];       /* the address being tried */
    char buf[HEALTH_GREETING_MAX];
    size_t len;
    bool running;                  /* a probe is under way */
    bool gai_busy;                 /* gai owes its callback */
    bool tcp_open;                 /* tcp is initialised, not yet closed */
    bool write_busy;               /* write owes its callback */
    int state;                     /* HEALTH_* */
    char reason[160];
};

struct health {
    const struct logger *log;
    struct health_probe *probes;
    size_t n;
    unsigned pending;              /* handles and requests not yet done */
    bool closing;
};

static void health_next(struct health_probe *pr);
static void health_on_timer(uv_timer_t *t);

static void health_unref(struct health *h)
{
    if (--h->pending > 0 || !h->closing)
        return;
    for (size_t i = 0; i < h->n; i++) {
        free(h->probes[i].service);
        free(h->probes[i].host);
        free(h->probes[i].port);
        if (h->probes[i].addrs != NULL)
            uv_freeaddrinfo(h->probes[i].addrs);
    }
    free(h->probes);
    free(h);
}

static void health_on_handle_closed(uv_handle_t *handle)
{
    struct health_probe *pr = handle->data;
    struct health *h = pr->h;
    bool retry = false;

    if (handle == (uv_handle_t *)&pr->tcp) {
        pr->tcp_open = false;
        retry = pr->running && !h->closing;
    }
    health_unref(h);              /* frees pr too when closing */
    if (retry)
        health_next(pr);
}

static const char *health_state_name(int state)
{
    return state == HEALTH_UP ? "up" : state == HEALTH_DOWN ? "down"
                                                            : "unknown";
}

/* health_done - the probe's result, logged when it changed; the next
 * probe in interval_ms.  The connection is closed unless keep_tcp (a
 * QUIT is on its way and closes it). */
static void health_done(struct health_probe *pr, int state,
                        const char *reason, bool keep_tcp)
{
    pr->running = false;
    if (pr->addrs != NULL) {
        uv_freeaddrinfo(pr->addrs);
        pr->addrs = pr->next = NULL;
    }
    if (!keep_tcp && pr->tcp_open && !uv_is_closing((uv_handle_t *)&pr->tcp))
        uv_close((uv_handle_t *)&pr->tcp, health_on_handle_closed);
    if (state != pr->state ||
        (state == HEALTH_DOWN && strcmp(reason, pr->reason) != 0)) {
        log_event(pr->h->log, state == HEALTH_UP ? LOG_INFO : LOG_WARN, 0,
                  "event=backend_health service=%s state=%s previous=%s "
                  "probe=%s backend=%s:%s%s%s%s%s%s", pr->service,
                  health_state_name(state), health_state_name(pr->state),
                  pr->mode == BACKEND_HEALTH_SMTP ? "smtp" : "connect",
                  pr->host, pr->port, pr->peer[0] ? " address=" : "",
                  pr->peer, reason[0] ? " reason=\"" : "", reason,
                  reason[0] ? "\"" : "");
    }
    pr->state = state;
    snprintf(pr->reason, sizeof pr->reason, "%s", reason);
    uv_timer_start(&pr->timer, health_on_timer, pr->interval_ms, 0);
}

static void health_finish(struct health_probe *pr, int state,
                          const char *reason)
{
    health_done(pr, state, reason, false);
}

static void health_on_write(uv_write_t *w, int status)
{
    struct health_probe *pr = w->data;

    (void)status;               /* the greeting decided it */
    pr->write_busy = false;
    if (pr->tcp_open && !uv_is_closing((uv_handle_t *)&pr->tcp))
        uv_close((uv_handle_t *)&pr->tcp, health_on_handle_closed);
    health_unref(pr->h);
}

static void health_on_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *b)
{
    struct health_probe *pr = handle->data;

    (void)hint;
    b->base = pr->buf + pr->len;
    b->len = sizeof pr->buf - pr->len;
}

/*
 * health_reply_end - the length of the first complete reply in buf (its
 * last line is "NNN " or "NNN" then CRLF or LF), 0 if none yet.
 */
static size_t health_reply_end(const char *buf, size_t len)
{
    size_t start = 0;

    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i - start < 4 || buf[start + 3] != '-')
            return i + 1;
        start = i + 1;
    }
    return 0;
}

static void health_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct health_probe *pr = s->data;
    static const char quit[] = "QUIT\r\n";
    char reason[80];
    size_t end;

    (void)b;
    if (!pr->running)
        return;
    if (nread < 0) {
        snprintf(reason, sizeof reason, "closed before a greeting (%s)",
                 nread == UV_EOF ? "EOF" : uv_strerror((int)nread));
        health_finish(pr, HEALTH_DOWN, reason);
        return;
    }
    pr->len += (size_t)nread;
    end = health_reply_end(pr->buf, pr->len);
    if (end == 0) {
        if (pr->len == sizeof pr->buf)
            health_finish(pr, HEALTH_DOWN, "greeting too long");
        return;
    }
    uv_read_stop(s);
    if (end < 4 || pr->buf[0] != '2' || pr->buf[1] < '0' ||
        pr->buf[1] > '9' || pr->buf[2] < '0' || pr->buf[2] > '9') {
        snprintf(reason, sizeof reason, "greeting %.3s", pr->buf);
        health_finish(pr, HEALTH_DOWN, reason);
        return;
    }
    /* up: say goodbye, and close once QUIT is written (no 221 awaited) */
    {
        uv_buf_t q = uv_buf_init((char *)quit, sizeof quit - 1);

        pr->write.data = pr;
        if (uv_write(&pr->write, s, &q, 1, health_on_write) == 0) {
            pr->write_busy = true;
            pr->h->pending++;
            health_done(pr, HEALTH_UP, "", true);
            return;
        }
    }
    health_finish(pr, HEALTH_UP, "");
}

static void health_on_connect(uv_connect_t *c, int status)
{
    struct health_probe *pr = c->data;
    struct health *h = pr->h;
    bool stale = !pr->running || h->closing;

    health_unref(h);              /* frees pr too when closing */
    if (stale)
        return;
    if (status != 0) {
        snprintf(pr->reason, sizeof pr->reason, "%s", uv_strerror(status));
        /* the next address, once this handle is closed */
        uv_close((uv_handle_t *)&pr->tcp, health_on_handle_closed);
        return;
    }
    if (pr->mode == BACKEND_HEALTH_CONNECT) {
        health_finish(pr, HEALTH_UP, "");
        return;
    }
    pr->len = 0;
    if (uv_read_start((uv_stream_t *)&pr->tcp, health_on_alloc,
                      health_on_read) != 0)
        health_finish(pr, HEALTH_DOWN, "cannot read");
}

/* health_next - try the next address, or end the probe as down with the
 * last address's error */
static void health_next(struct health_probe *pr)
{
    struct addrinfo *ai = pr->next;
    int rc;

    if (ai == NULL) {
        char reason[sizeof pr->reason];

        snprintf(reason, sizeof reason, "%s",
                 pr->reason[0] ? pr->reason : "no address");
        health_finish(pr, HEALTH_DOWN, reason);
        return;
    }
    pr->next = ai->ai_next;
    netaddr_text((const struct sockaddr_storage *)ai->ai_addr, pr->peer,
                 sizeof pr->peer);
    if (uv_tcp_init(pr->timer.loop, &pr->tcp) != 0) {
        health_finish(pr, HEALTH_DOWN, "cannot make a socket");
        return;
    }
    pr->tcp.data = pr;
    pr->tcp_open = true;
    pr->h->pending++;
    pr->connect.data = pr;
    rc = uv_tcp_connect(&pr->connect, &pr->tcp, ai->ai_addr,
                        health_on_connect);
    if (rc != 0) {
        snprintf(pr->reason, sizeof pr->reason, "%s", uv_strerror(rc));
        uv_close((uv_handle_t *)&pr->tcp, health_on_handle_closed);
        return;
    }
    pr->h->pending++;
}

static void health_on_resolved(uv_getaddrinfo_t *req, int status,
                               struct addrinfo *res)
{
    struct health_probe *pr = req->data;
    struct health *h = pr->h;
    char reason[sizeof pr->reason];

    pr->gai_busy = false;
    if (h->closing || status == UV_ECANCELED || !pr->running) {
        if (res != NULL)
            uv_freeaddrinfo(res);
        health_unref(h);          /* frees pr too when closing */
        return;
    }
    health_unref(h);
    if (status != 0) {
        snprintf(reason, sizeof reason, "resolving %s: %s", pr->host,
                 uv_strerror(status));
        health_finish(pr, HEALTH_DOWN, reason);
        return;
    }
    pr->addrs = pr->next = res;
    pr->reason[0] = '\0';
    health_next(pr);
}

/*
 * health_on_timer - between probes: start one; during one: its deadline
 * has passed.
 */
static void health_on_timer(uv_timer_t *t)
{
    struct health_probe *pr = t->data;
    struct addrinfo hints;

    if (pr->running) {
        if (pr->gai_busy)
            uv_cancel((uv_req_t *)&pr->gai);
        health_finish(pr, HEALTH_DOWN, "timed out");
        return;
    }
    if (pr->gai_busy || pr->tcp_open || pr->write_busy) {
        /* the last one is still winding down: look again shortly */
        uv_timer_start(&pr->timer, health_on_timer, 100, 0);
        return;
    }
    pr->running = true;
    pr->peer[0] = '\0';
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    pr->gai.data = pr;
    if (uv_getaddrinfo(t->loop, &pr->gai, health_on_resolved, pr->host,
                       pr->port, &hints) != 0) {
        health_finish(pr, HEALTH_DOWN, "cannot resolve");
        return;
    }
    pr->gai_busy = true;
    pr->h->pending++;
    uv_timer_start(&pr->timer, health_on_timer, pr->timeout_ms, 0);
}

struct health *health_start(uv_loop_t *loop, const struct config *cfg,
                            const struct logger *log,
                            const struct health *prev)
{
    struct health *h;
    size_t n = 0;

    for (size_t i = 0; i < cfg->nservices; i++)
        if (cfg->services[i].backend_health != BACKEND_HEALTH_NONE)
            n++;
    if (n == 0)
        return NULL;
    h = calloc(1, sizeof *h);
    if (h == NULL || (h->probes = calloc(n, sizeof *h->probes)) == NULL) {
        free(h);
        log_event(log, LOG_ERROR, 0, "event=backend_health_error "
                  "error=\"out of memory\"");
        return NULL;
    }
    h->log = log;
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct service *svc = &cfg->services[i];
        struct health_probe *pr = &h->probes[h->n];
        const char *reason = NULL;

        if (svc->backend_health == BACKEND_HEALTH_NONE)
            continue;
        pr->h = h;
        pr->mode = svc->backend_health;
        pr->interval_ms = (uint64_t)svc->backend_health_interval * 1000;
        pr->timeout_ms = pr->interval_ms < HEALTH_TIMEOUT_MS
                             ? pr->interval_ms : HEALTH_TIMEOUT_MS;
        pr->service = strdup(svc->name);
        pr->host = strdup(svc->backend_host);
        pr->port = strdup(svc->backend_port);
        pr->state = health_state(prev, svc->name, &reason);
        if (reason != NULL)
            snprintf(pr->reason, sizeof pr->reason, "%s", reason);
        if (pr->service == NULL || pr->host == NULL || pr->port == NULL) {
            free(pr->service);
            free(pr->host);
            free(pr->port);
            memset(pr, 0, sizeof *pr);
            log_event(log, LOG_ERROR, 0, "event=backend_health_error "
                      "service=%s error=\"out of memory\"", svc->name);
            continue;
        }
        uv_timer_init(loop, &pr->timer);
        pr->timer.data = pr;
        h->pending++;
        h->n++;
        uv_timer_start(&pr->timer, health_on_timer, 0, 0);
    }
    return h;
}

void health_close(struct health *h)
{
    if (h == NULL)
        return;
    h->closing = true;
    h->pending++;                 /* held until every close is asked for */
    for (size_t i = 0; i < h->n; i++) {
        struct health_probe *pr = &h->probes[i];

        pr->running = false;
        if (pr->gai_busy)
            uv_cancel((uv_req_t *)&pr->gai);
        if (pr->tcp_open && !uv_is_closing((uv_handle_t *)&pr->tcp))
            uv_close((uv_handle_t *)&pr->tcp, health_on_handle_closed);
        uv_close((uv_handle_t *)&pr->timer, health_on_handle_closed);
    }
    health_unref(h);
}

int health_state(const struct health *h, const char *name,
                 const char **reason)
{
    if (reason != NULL)
        *reason = "";
    if (h == NULL)
        return HEALTH_UNKNOWN;
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->probes[i].service, name) == 0) {
            if (reason != NULL && h->probes[i].state == HEALTH_DOWN)
                *reason = h->probes[i].reason;
            return h->probes[i].state;
        }
    return HEALTH_UNKNOWN;
}
