/*
 * sdnotify.c - readiness notification and socket activation, the
 * documented protocols of sd_notify(3) and sd_listen_fds(3).
 */
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* sdnotify_enabled - see sdnotify.h. */
bool sdnotify_enabled(void)
{
    const char *path = getenv("NOTIFY_SOCKET");

    return path != NULL && path[0] != '\0';
}

/* sdnotify_send - see sdnotify.h. */
int sdnotify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    socklen_t len;
    size_t n;
    ssize_t r;
    int fd;

    if (path == NULL || path[0] == '\0')
        return 0;
    n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof sa.sun_path) {
        errno = EINVAL;
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';     /* an abstract socket */
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
                      (path[0] == '/' ? 1 : 0));
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    r = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
               (const struct sockaddr *)&sa, len);
    close(fd);
    return r < 0 ? -1 : 0;
}

/* sdnotify_listen_fds - see sdnotify.h. */
int sdnotify_listen_fds(char ***names, char **buf)
{
    const char *pid_s = getenv("LISTEN_PID");
    const char *fds_s = getenv("LISTEN_FDS");
    const char *names_s = getenv("LISTEN_FDNAMES");
    char *end, **list = NULL, *copy = NULL;
    long pid, n;
    int r = 0;

    *names = NULL;
    *buf = NULL;
    if (pid_s == NULL || fds_s == NULL)
        goto out;
    pid = strtol(pid_s, &end, 10);
    if (*end != '\0' || pid != (long)getpid())
        goto out;                   /* meant for another process */
    n = strtol(fds_s, &end, 10);
    if (*end != '\0' || n < 0 || n > 1024) {
        r = -1;
        goto out;
    }
    if (n > 0) {
        list = calloc((size_t)n, sizeof *list);
        if (list == NULL) {
            r = -1;
            goto out;
        }
        if (names_s != NULL && (copy = strdup(names_s)) != NULL) {
            char *p = copy;

            for (long i = 0; i < n && p != NULL; i++) {
                char *colon = strchr(p, ':');

                if (colon != NULL)
                    *colon = '\0';
                list[i] = p;
                p = colon != NULL ? colon + 1 : NULL;
            }
        }
        for (long i = 0; i < n; i++)
            (void)fcntl(SD_LISTEN_FDS_START + (int)i, F_SETFD, FD_CLOEXEC);
    }
    *names = list;
    *buf = copy;
    r = (int)n;
out:
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (r <= 0) {
        free(list);
        free(copy);
        *names = NULL;
        *buf = NULL;
    }
    return r;
}
