/*
 * log_syslog.c - the syslog(3) end of the logger ("log = syslog"), apart
 * from log.c because <syslog.h> defines LOG_INFO and LOG_DEBUG, which
 * are the names of our own levels.
 */
#include <syslog.h>

#include "log_syslog.h"

/* log_syslog_open - see log_syslog.h. */
void log_syslog_open(void)
{
    openlog("starttls-proxy", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

/* log_syslog_write - see log_syslog.h. */
void log_syslog_write(int severity, const char *line)
{
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

    syslog(prio[severity >= 0 && severity < 4 ? severity : 3], "%s", line);
}
