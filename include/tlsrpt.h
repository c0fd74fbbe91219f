/*
 * tlsrpt.h - SMTP TLS reporting (RFC 8460) for mx: backends: the parser
 * of the _smtp._tls TXT record, the counts of backend-leg TLS results
 * per report window, policy domain and policy, and the JSON report.
 *
 * One store per process, shared by the worker loops under one mutex
 * (touched once per attempt on an mx: host, never per byte), bounded
 * (TLSRPT_MAX_DOMAINS, _POLICIES, _DETAILS: what does not fit is
 * counted as dropped and said in the log), and kept in [proxy]
 * tlsrpt_dir: the counts are written there every few seconds when they
 * changed and at a clean stop, so a restart does not lose a day's
 * report.  The directory is opened before the privilege drop and the
 * chroot, and written through that descriptor.
 *
 * Pure: no loop.  Finding the report's address and sending it is
 * tlsrpt_send.h's.
 */
#ifndef STARTTLS_PROXY_TLSRPT_H
#define STARTTLS_PROXY_TLSRPT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define TLSRPT_MAX_RUA 4           /* report addresses kept per record */
#define TLSRPT_URI_MAX 512
#define TLSRPT_MAX_DOMAINS 1000    /* windows x domains held */
#define TLSRPT_MAX_POLICIES 16     /* per domain and window */
#define TLSRPT_MAX_DETAILS 64      /* failure-details per policy */
#define TLSRPT_STATE_FILE "tlsrpt.state"

/* RFC 8460 4.4 policy-type */
enum tlsrpt_policy_type { TLSRPT_TLSA = 0, TLSRPT_STS, TLSRPT_NO_POLICY };

/* The report addresses of a _smtp._tls record (RFC 8460 3). */
struct tlsrpt_rua {
    size_t n;
    char uri[TLSRPT_MAX_RUA][TLSRPT_URI_MAX];
};

/* tlsrpt_txt_parse - the rua of the TXT records recs[0..n) of
 * _smtp._tls.DOMAIN (each record's strings joined).  RFC 8460 3: records
 * that do not begin with "v=TLSRPTv1" are not ours; exactly one may
 * remain; it needs a rua of mailto: or https: URIs (others are skipped;
 * at least one must be left).  Returns 0, or -1 with why. */
int tlsrpt_txt_parse(const char *const *recs, const size_t *lens, size_t n,
                     struct tlsrpt_rua *out, char *why, size_t why_len);

/* One attempt on an MX host: what tlsrpt_record counts.  Lists are
 * lines joined by '\n' ("" for none). */
struct tlsrpt_result {
    const char *domain;              /* the policy domain */
    enum tlsrpt_policy_type type;
    const char *policy;              /* policy-string lines */
    const char *mx_hosts;            /* mx-host entries */
    const char *result;              /* NULL: a successful session; else
                                        an RFC 8460 4.3 result-type */
    const char *sending_ip;          /* failure details; "" for none */
    const char *mx_host;
    const char *receiving_ip;
    const char *reason;              /* failure-reason-code */
};

struct tlsrpt_store;

/* tlsrpt_open - the store with interval-second windows, its counts
 * loaded from dir/TLSRPT_STATE_FILE when there is one (malformed lines
 * are dropped and said in warn).  NULL dir: in memory only.  NULL with
 * a message in err when dir cannot be opened. */
struct tlsrpt_store *tlsrpt_open(const char *dir, unsigned interval,
                                 char *err, size_t err_len, char *warn,
                                 size_t warn_len);

/* tlsrpt_close - free s (tlsrpt_save first to keep its counts). */
void tlsrpt_close(struct tlsrpt_store *s);

/* tlsrpt_record - count r in the window that holds now. */
void tlsrpt_record(struct tlsrpt_store *s, time_t now,
                   const struct tlsrpt_result *r);

/* tlsrpt_save - write the counts to the state file if they changed
 * since the last save.  Returns 0, or -1 with why. */
int tlsrpt_save(struct tlsrpt_store *s, char *why, size_t why_len);

/* tlsrpt_dropped - results not counted for lack of room since the last
 * call (and the counter reset). */
unsigned long tlsrpt_dropped(struct tlsrpt_store *s);

/* One domain's counts for one finished window. */
struct tlsrpt_report {
    char domain[256];
    time_t start, end;               /* [start, end) */
    struct tlsrpt_domain *d;         /* private */
};

/* tlsrpt_take - a window that ended at or before now, taken out of the
 * store (its counts are the caller's from now on), or NULL. */
struct tlsrpt_report *tlsrpt_take(struct tlsrpt_store *s, time_t now);
void tlsrpt_report_free(struct tlsrpt_report *r);

/* What a report says of its sender (RFC 8460 4.4). */
struct tlsrpt_meta {
    const char *organization;        /* organization-name */
    const char *contact;             /* contact-info */
    const char *report_id;           /* report-id */
};

/* tlsrpt_json - r as RFC 8460 4.4 JSON: a malloc'd NUL-terminated text
 * of *len bytes, or NULL when out of memory. */
char *tlsrpt_json(const struct tlsrpt_report *r, const struct tlsrpt_meta *m,
                  size_t *len);

/* tlsrpt_gzip - data[0..len) in the gzip format (RFC 1952): malloc'd,
 * *out_len bytes; NULL when out of memory. */
unsigned char *tlsrpt_gzip(const void *data, size_t len, size_t *out_len);

/* tlsrpt_dirfd - the directory's descriptor (reports are written there
 * too), -1 in memory only. */
int tlsrpt_dirfd(const struct tlsrpt_store *s);

const char *tlsrpt_policy_type_name(enum tlsrpt_policy_type t);

#endif
