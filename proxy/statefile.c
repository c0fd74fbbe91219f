/*
 * statefile.c - atomic files in a state directory (see statefile.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "statefile.h"

/* statefile_tmp - NAME.tmp in out. */
static void statefile_tmp(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s.tmp", name);
}

/* statefile_begin - see statefile.h. */
FILE *statefile_begin(int dirfd, const char *name, char *why,
                      size_t why_len)
{
    char tmp[300];
    FILE *f;
    int fd;

    statefile_tmp(name, tmp, sizeof tmp);
    fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
        snprintf(why, why_len, "cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    return f;
}

/* statefile_commit - see statefile.h. */
int statefile_commit(FILE *f, int dirfd, const char *name, char *why,
                     size_t why_len)
{
    char tmp[300];
    int rc = 0;

    statefile_tmp(name, tmp, sizeof tmp);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = -1;
    if (fclose(f) != 0)
        rc = -1;
    if (rc == 0 && renameat(dirfd, tmp, dirfd, name) != 0)
        rc = -1;
    if (rc != 0) {
        snprintf(why, why_len, "cannot write %s: %s", name, strerror(errno));
        (void)unlinkat(dirfd, tmp, 0);
    }
    return rc;
}

/* statefile_write - see statefile.h. */
int statefile_write(int dirfd, const char *name, const void *data,
                    size_t len, char *why, size_t why_len)
{
    FILE *f = statefile_begin(dirfd, name, why, why_len);

    if (f == NULL)
        return -1;
    if (len > 0 && fwrite(data, 1, len, f) != len) {
        snprintf(why, why_len, "cannot write %s: %s", name, strerror(errno));
        fclose(f);
        return -1;
    }
    return statefile_commit(f, dirfd, name, why, why_len);
}

/* statefile_read - see statefile.h. */
FILE *statefile_read(int dirfd, const char *name, const char *header,
                     char *warn, size_t warn_len)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    char line[256];
    FILE *f;

    if (fd < 0) {
        if (errno != ENOENT)
            snprintf(warn, warn_len, "cannot read %s: %s", name,
                     strerror(errno));
        return NULL;
    }
    if ((f = fdopen(fd, "r")) == NULL) {
        snprintf(warn, warn_len, "cannot read %s: %s", name, strerror(errno));
        close(fd);
        return NULL;
    }
    if (fgets(line, sizeof line, f) == NULL || strcmp(line, header) != 0) {
        snprintf(warn, warn_len, "%s is not a file of this proxy's; ignored",
                 name);
        fclose(f);
        return NULL;
    }
    return f;
}
