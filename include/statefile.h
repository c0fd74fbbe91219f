/*
 * statefile.h - files the proxy keeps in a directory it opened before
 * the privilege drop and the chroot (the MTA-STS cache, the TLS
 * reporting counts and reports), always written atomically: a new file
 * NAME.tmp, flushed to disk, then renamed over NAME, so a reader or a
 * crash sees the old file or the new one, never half of one.
 */
#ifndef STARTTLS_PROXY_STATEFILE_H
#define STARTTLS_PROXY_STATEFILE_H

#include <stddef.h>
#include <stdio.h>

/* statefile_begin - open dirfd/NAME.tmp (mode 0600) for writing; NULL
 * with why. */
FILE *statefile_begin(int dirfd, const char *name, char *why,
                      size_t why_len);

/* statefile_commit - flush, sync and close f (from statefile_begin),
 * then rename it to dirfd/NAME.  Returns 0, or -1 with why (the
 * temporary file removed, NAME untouched). */
int statefile_commit(FILE *f, int dirfd, const char *name, char *why,
                     size_t why_len);

/* statefile_write - dirfd/NAME holds data[0..len) from now on. */
int statefile_write(int dirfd, const char *name, const void *data,
                    size_t len, char *why, size_t why_len);

/* statefile_read - dirfd/NAME open for reading, its first line (header,
 * with its newline) read and checked.  NULL when there is no such file
 * (warn untouched), or when it cannot be read or is not ours (why said
 * in warn). */
FILE *statefile_read(int dirfd, const char *name, const char *header,
                     char *warn, size_t warn_len);

#endif
