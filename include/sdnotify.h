/*
 * sdnotify.h - the service manager's two protocols, without libsystemd:
 * readiness notification (sd_notify(3): one datagram to $NOTIFY_SOCKET)
 * and socket activation (sd_listen_fds(3): $LISTEN_PID, $LISTEN_FDS and
 * $LISTEN_FDNAMES describe the listening sockets passed from fd 3 on).
 * Both are no-ops when the variables are not set.
 */
#ifndef STARTTLS_PROXY_SDNOTIFY_H
#define STARTTLS_PROXY_SDNOTIFY_H

#include <stdbool.h>
#include <stddef.h>

#define SD_LISTEN_FDS_START 3

/* sdnotify_enabled - is there a $NOTIFY_SOCKET to tell? */
bool sdnotify_enabled(void);

/* sdnotify_send - send state (e.g. "READY=1\nSTATUS=...") to
 * $NOTIFY_SOCKET; 0 when sent or when there is no such socket, -1 on an
 * error (errno set). */
int sdnotify_send(const char *state);

/*
 * sdnotify_listen_fds - the number of sockets passed to this process
 * (0 when none were, or $LISTEN_PID names another process), and their
 * names from $LISTEN_FDNAMES in names[0..n) (NULL when not given; the
 * strings point into one allocation returned in *buf, free it).  The
 * variables are removed from the environment.  -1 on a malformed
 * $LISTEN_FDS.
 */
int sdnotify_listen_fds(char ***names, char **buf);

#endif
