/*
 * log.h - one line per event, "key=value", session id first.
 *
 * Lines look like
 *   2026-11-28T20:11:26.123Z info session=00000001a2b3c4d5 event=connect client=127.0.0.1:4242
 * The logger decides nothing: callers pass what happened.  Peer text goes
 * through log_escape() first.
 */
#ifndef STARTTLS_PROXY_LOG_H
#define STARTTLS_PROXY_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

struct logger {
    enum log_level level;
    FILE *out;          /* where lines go, unless to_syslog */
    bool to_syslog;     /* "log = syslog": syslog(3), facility mail */
    /* a session's own logger (log_tagged): level and target are base's,
     * which a reload may change; tag ("orig_dst=192.0.2.1:25") follows
     * the session id on every line.  NULL in the loop's logger. */
    const struct logger *base;
    const char *tag;
};

/* log_base - where lg's level and target are kept. */
static inline const struct logger *log_base(const struct logger *lg)
{
    return lg->base != NULL ? lg->base : lg;
}

/* log_enabled - true when a message at level would be written. */
static inline int log_enabled(const struct logger *lg, enum log_level level)
{
    return lg != NULL && level <= log_base(lg)->level;
}

/* log_tagged - a logger writing through base with tag (kept, not
 * copied) on every line; tag NULL or "": base's lines unchanged. */
static inline struct logger log_tagged(const struct logger *base,
                                       const char *tag)
{
    struct logger lg = { .level = base->level, .out = base->out,
                         .to_syslog = base->to_syslog, .base = log_base(base),
                         .tag = tag };

    return lg;
}

/*
 * log_event - write one line.  sid 0 means "no session" (the field is then
 * left out).  fmt holds the key=value pairs after the session id.
 */
void log_event(const struct logger *lg, enum log_level level, uint64_t sid,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * log_escape - copy peer text into dst as a safe, quoted-free token:
 * printable ASCII other than '\\', '"' and '=' is kept; everything else
 * (controls, spaces, 8-bit bytes) becomes \xNN.  At most cap-1 bytes are
 * written; a cut is marked with "...".  Always NUL-terminates; returns dst.
 */
char *log_escape(char *dst, size_t cap, const char *src, size_t len);

/* log_level_name - "error", "warn", "info" or "debug". */
const char *log_level_name(enum log_level level);

#endif
