/*
 * worker.c - a loop's listeners and sessions.
 */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "listener.h"
#include "session.h"

void worker_init(struct worker *w, uv_loop_t *loop, const struct config *cfg,
                 const struct tls_service *tls, unsigned id)
{
    memset(w, 0, offsetof(struct worker, rbuf));
    w->loop = loop;
    w->cfg = cfg;
    w->tls = tls;
    w->id = id;
    w->log.level = cfg->log_level;
    w->log.out = stderr;
    loop->data = w;
}

/* worker_listen - see worker.h. */
int worker_listen(struct worker *w, char *err, size_t err_len)
{
    size_t total = 0, i, j;

    for (i = 0; i < w->cfg->nservices; i++)
        total += w->cfg->services[i].nlisten;
    w->listeners = calloc(total, sizeof *w->listeners);
    if (w->listeners == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (i = 0; i < w->cfg->nservices; i++) {
        const struct service *svc = &w->cfg->services[i];

        for (j = 0; j < svc->nlisten; j++) {
            struct listener *l = listener_open(w, i, &svc->listen[j], err,
                                               err_len);
            if (l == NULL) {
                worker_stop(w);
                return -1;
            }
            w->listeners[w->nlisteners++] = l;
            log_event(&w->log, LOG_INFO, 0,
                      "event=listening service=%s listen=%s backend=%s:%s",
                      svc->name, svc->listen[j].text, svc->backend_host,
                      svc->backend_port);
        }
    }
    return 0;
}

/* worker_stop - see worker.h. */
void worker_stop(struct worker *w)
{
    struct session *s, *next;

    if (w->stopping)
        return;
    w->stopping = true;
    for (size_t i = 0; i < w->nlisteners; i++)
        listener_close(w->listeners[i]);
    free(w->listeners);
    w->listeners = NULL;
    w->nlisteners = 0;
    for (s = w->sessions; s != NULL; s = next) {
        next = session_next(s);
        session_shutdown(s, REPLY_SHUTDOWN);
    }
}

uint64_t worker_next_sid(struct worker *w)
{
    return ((uint64_t)(w->id + 1) << 48) | ++w->next_sid;
}
