/*
 * log_syslog.h - log lines to syslog(3): facility mail, ident
 * starttls-proxy, the pid in each message.
 */
#ifndef STARTTLS_PROXY_LOG_SYSLOG_H
#define STARTTLS_PROXY_LOG_SYSLOG_H

/* log_syslog_open - connect to the system logger now (before a chroot:
 * the connection is kept). */
void log_syslog_open(void);

/* log_syslog_write - one line; severity is 0 error, 1 warn, 2 info,
 * 3 debug (enum log_level's order). */
void log_syslog_write(int severity, const char *line);

#endif
