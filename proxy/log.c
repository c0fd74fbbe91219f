/*
 * log.c - event lines on a stdio stream.
 */
#include "log.h"
#include "log_syslog.h"

#include <stdarg.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

const char *log_level_name(enum log_level level)
{
    switch (level) {
    case LOG_ERROR: return "error";
    case LOG_WARN: return "warn";
    case LOG_INFO: return "info";
    case LOG_DEBUG: return "debug";
    }
    return "?";
}

/* log_event - format the line into one buffer so it is written at once;
 * syslog adds the time itself. */
void log_event(const struct logger *lg, enum log_level level, uint64_t sid,
               const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n = 0;
    int r;
    va_list ap;
    const char *tag = lg != NULL ? lg->tag : NULL;

    if (!log_enabled(lg, level))
        return;
    lg = log_base(lg);
    if (!lg->to_syslog) {
        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
        r = snprintf(line + n, sizeof line - n, ".%03ldZ ",
                     (long)(tv.tv_usec / 1000));
        if (r > 0)
            n += (size_t)r;
    }
    r = snprintf(line + n, sizeof line - n, "%s ", log_level_name(level));
    if (r > 0)
        n += (size_t)r;
    if (sid != 0) {
        r = snprintf(line + n, sizeof line - n, "session=%016llx ",
                     (unsigned long long)sid);
        if (r > 0)
            n += (size_t)r;
    }
    if (tag != NULL && tag[0] != '\0' && n < sizeof line) {
        r = snprintf(line + n, sizeof line - n, "%s ", tag);
        if (r > 0)
            n += (size_t)r;
    }
    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (r > 0)
        n += (size_t)r;
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    if (lg->to_syslog) {
        line[n] = '\0';
        log_syslog_write((int)level, line);
        return;
    }
    line[n++] = '\n';
    fwrite(line, 1, n, lg->out);
    fflush(lg->out);
}

/* log_escape_plain - a byte that stands for itself in a log value */
static int log_escape_plain(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '\\' && c != '"' && c != '=';
}

/* log_escape - see log.h.  What fits goes in whole; otherwise as much as
 * leaves room for "..." and the NUL, never half an escape. */
char *log_escape(char *dst, size_t cap, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, whole = 0, room;

    if (cap == 0)
        return dst;
    for (size_t i = 0; i < len; i++)
        whole += log_escape_plain((unsigned char)src[i]) ? 1 : 4;
    room = whole < cap ? cap - 1 : (cap >= 4 ? cap - 4 : 0);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        int plain = log_escape_plain(c);

        if (o + (plain ? 1 : 4) > room)
            break;
        if (plain) {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    if (whole >= cap && cap >= 4) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
    return dst;
}
