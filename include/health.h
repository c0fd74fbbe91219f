/*
 * health.h - the backend probe ([service] backend_health).
 *
 * The main thread's loop probes the backend of every service that asks
 * for it, every backend_health_interval seconds: "connect" opens a TCP
 * connection and closes it, "smtp" also reads the greeting and answers
 * QUIT (never a session: no EHLO, no MAIL). The last result of each is
 * what /metrics (starttls_proxy_backend_up) and /healthz report. It never
 * steers sessions: each session still tries its backend itself.
 */
#ifndef STARTTLS_PROXY_HEALTH_H
#define STARTTLS_PROXY_HEALTH_H

#include <stddef.h>

#include <uv.h>

#include "config.h"

struct logger;
struct health;

/* no result (yet): the service has no probe, or none has ended */
#define HEALTH_UNKNOWN (-1)
#define HEALTH_DOWN 0
#define HEALTH_UP 1

/* the longest a probe may take, when the interval is longer */
#define HEALTH_TIMEOUT_MS 5000

/*
 * health_start - probe the backends of cfg's services that have
 * backend_health on loop; the first probe starts at once.  prev (may be
 * NULL), the probes of the configuration before a reload, hands over the
 * last result of each service of the same name, so a reload does not
 * turn a backend unknown.  NULL when no service asks for a probe (or out
 * of memory, logged).  cfg is only read during the call.
 */
struct health *health_start(uv_loop_t *loop, const struct config *cfg,
                            const struct logger *log,
                            const struct health *prev);

/* health_close - stop every probe; the memory goes with the last close
 * callback, so the loop can run dry.  NULL-safe. */
void health_close(struct health *h);

/* health_state - the last result for the service named name:
 * HEALTH_UP, HEALTH_DOWN or HEALTH_UNKNOWN; *reason (may be NULL) the
 * reason of a DOWN, else "".  NULL-safe. */
int health_state(const struct health *h, const char *name,
                 const char **reason);

#endif
