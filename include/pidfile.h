/*
 * pidfile.h - the pid file ([proxy] pid_file) and what `-s reload`
 * reads from it.
 *
 * The file holds two lines: the pid, and the state of the last reload
 * ("reloads=K generation=N result=ok|failed|none").  It is opened before
 * the privilege drop and kept open, so that the proxy can update the
 * second line as any user and inside a chroot.
 */
#ifndef STARTTLS_PROXY_PIDFILE_H
#define STARTTLS_PROXY_PIDFILE_H

#include <stdbool.h>
#include <sys/types.h>

struct pidfile {
    int fd;                /* -1: none */
    char *path;
    pid_t pid;
};

/* pidfile_create - write our pid to path; -1 with errno on failure. */
int pidfile_create(struct pidfile *pf, const char *path);

/* pidfile_state - record the last reload's outcome. */
void pidfile_state(struct pidfile *pf, unsigned long reloads,
                   unsigned long generation, const char *result);

/* pidfile_remove - at exit: remove the file if it is still ours. */
void pidfile_remove(struct pidfile *pf);

/*
 * pidfile_read - the pid and the reload state line in path.  Returns -1
 * (errno set) when it cannot be read or holds no pid.
 */
int pidfile_read(const char *path, pid_t *pid, char *state, size_t cap);

#endif
