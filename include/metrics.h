/*
 * metrics.h - the metrics endpoint: a small HTTP/1.1 listener on a libuv
 * loop ([proxy] metrics_listen).
 *
 * It runs on the main thread's loop, which otherwise only waits for
 * signals and reloads, so a slow or hostile scraper can never hold up a
 * worker; a scrape reads the workers' counters (stats.h) without a lock.
 * One request per connection; the head is capped at
 * PROMTEXT_REQUEST_MAX bytes (431) and must arrive within
 * METRICS_REQUEST_MS (then the connection is closed); at most
 * METRICS_MAX_CONNS connections at once (more are closed on accept).
 */
#ifndef STARTTLS_PROXY_METRICS_H
#define STARTTLS_PROXY_METRICS_H

#include <stddef.h>

#include <uv.h>

#include "config.h"
#include "promtext.h"

#define METRICS_REQUEST_MS 5000
#define METRICS_MAX_CONNS 32

struct logger;
struct metrics_server;

/*
 * metrics_render_cb - the answer to a GET of /metrics or /healthz
 * (what): append the body to body, set *content_type, return the HTTP
 * status.
 */
typedef int (*metrics_render_cb)(void *ud, enum promtext_req what,
                                 struct promtext_buf *body,
                                 const char **content_type);

/*
 * metrics_open - serve on the n listening sockets fds (listener_socket,
 * one per addrs[i]) in loop; the server owns them from now on (closed on
 * failure too).  NULL with a message in err.
 */
struct metrics_server *metrics_open(uv_loop_t *loop, struct logger *log,
                                    const int *fds,
                                    const struct listen_addr *addrs,
                                    size_t n, metrics_render_cb render,
                                    void *ud, char *err, size_t err_len);

/* metrics_close - stop listening and close every connection; the memory
 * goes with the last close callback.  NULL-safe. */
void metrics_close(struct metrics_server *m);

#endif
