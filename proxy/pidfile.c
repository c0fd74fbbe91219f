/*
 * pidfile.c - the pid file and the reload state in it.
 */
#include "pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* pidfile_write - the whole content, from the start. */
static void pidfile_write(struct pidfile *pf, const char *state)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "%ld\n%s\n", (long)pf->pid, state);

    if (pf->fd < 0 || n <= 0)
        return;
    if (pwrite(pf->fd, buf, (size_t)n, 0) == n)
        (void)ftruncate(pf->fd, n);
}

/* pidfile_create - see pidfile.h. */
int pidfile_create(struct pidfile *pf, const char *path)
{
    pf->pid = getpid();
    pf->path = strdup(path);
    pf->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (pf->fd < 0 && errno == ENOENT && pf->path != NULL) {
        /* /run/starttls-proxy/ is systemd's RuntimeDirectory; without
         * systemd the proxy makes it (one level, as root at start) */
        char *slash = strrchr(pf->path, '/');

        if (slash != NULL && slash != pf->path) {
            *slash = '\0';
            (void)mkdir(pf->path, 0755);
            *slash = '/';
            pf->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
                          0644);
        }
    }
    if (pf->fd < 0 || pf->path == NULL) {
        int e = errno;

        if (pf->fd >= 0)
            close(pf->fd);
        free(pf->path);
        pf->fd = -1;
        pf->path = NULL;
        errno = e;
        return -1;
    }
    pidfile_write(pf, "reloads=0 generation=1 result=none");
    return 0;
}

/* pidfile_state - see pidfile.h. */
void pidfile_state(struct pidfile *pf, unsigned long reloads,
                   unsigned long generation, const char *result)
{
    char state[128];

    snprintf(state, sizeof state, "reloads=%lu generation=%lu result=%s",
             reloads, generation, result);
    pidfile_write(pf, state);
}

/* pidfile_remove - see pidfile.h.  Another instance may have written
 * the file since: only our own pid is removed (a chroot or a lost
 * privilege may prevent it; the file is then left, harmless). */
void pidfile_remove(struct pidfile *pf)
{
    pid_t pid;
    char state[128];

    if (pf->fd < 0)
        return;
    if (pidfile_read(pf->path, &pid, state, sizeof state) == 0 &&
        pid == pf->pid)
        (void)unlink(pf->path);
    close(pf->fd);
    pf->fd = -1;
    free(pf->path);
    pf->path = NULL;
}

/* pidfile_read - see pidfile.h. */
int pidfile_read(const char *path, pid_t *pid, char *state, size_t cap)
{
    char buf[256], *nl, *end;
    ssize_t n;
    long v;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        errno = EINVAL;
        return -1;
    }
    buf[n] = '\0';
    v = strtol(buf, &end, 10);
    if (end == buf || *end != '\n' || v <= 0) {
        errno = EINVAL;
        return -1;
    }
    *pid = (pid_t)v;
    nl = strchr(end + 1, '\n');
    if (nl != NULL)
        *nl = '\0';
    snprintf(state, cap, "%s", end + 1);
    return 0;
}
