/*
 * tlsrpt_send.c - finding where a TLS report goes and sending it (see
 * tlsrpt_send.h).
 *
 * A job is one domain's report: the TXT lookup, then the file, then one
 * POST per https: address; it ends when the last POST has answered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "dns.h"
#include "log.h"
#include "statefile.h"
#include "sts_fetch.h"
#include "tlsrpt.h"
#include "tlsrpt_send.h"

#define TLSRPT_CONTENT_TYPE "application/tlsrpt+gzip"

struct tlsrpt_job {
    struct tlsrpt_sender *s;
    struct tlsrpt_job *prev, *next;  /* s->jobs */
    struct tlsrpt_report *r;
    struct dns_query *qtxt;
    char file[600];
    unsigned posts;                  /* POSTs under way */
    bool keep;                       /* a mailto: wants the file, or a
                                        POST failed */
};

struct tlsrpt_sender {
    uv_timer_t timer;
    struct tlsrpt_store *st;
    struct dns_resolver *r;
    struct sts_fetcher *f;
    char *organization, *contact, *submitter;
    tlsrpt_store_fn store_for;
    void *ud;
    struct logger *log;
    struct tlsrpt_job *jobs;
};

static void tlsrpt_job_free(struct tlsrpt_job *j)
{
    struct tlsrpt_sender *s = j->s;

    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        s->jobs = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    dns_cancel(j->qtxt);
    tlsrpt_report_free(j->r);
    free(j);
}

/* tlsrpt_job_done - the job's last POST answered (or none was made). */
static void tlsrpt_job_done(struct tlsrpt_job *j)
{
    struct tlsrpt_sender *s = j->s;

    if (!j->keep && j->file[0] != '\0' &&
        unlinkat(tlsrpt_dirfd(s->st), j->file, 0) == 0)
        log_event(s->log, LOG_DEBUG, 0, "event=tlsrpt_removed file=%s",
                  j->file);
    tlsrpt_job_free(j);
}

static void tlsrpt_on_post(void *ud, long status, const char *why)
{
    struct tlsrpt_job *j = ud;
    char esc[500];

    if (why[0] == '\0') {
        log_event(j->s->log, LOG_INFO, 0, "event=tlsrpt_sent domain=%s "
                  "status=%ld file=%s", j->r->domain, status, j->file);
    } else {
        j->keep = true;
        log_event(j->s->log, LOG_WARN, 0, "event=tlsrpt_failed domain=%s "
                  "status=%ld file=%s error=\"%s\"", j->r->domain, status,
                  j->file, log_escape(esc, sizeof esc, why, strlen(why)));
    }
    if (--j->posts == 0)
        tlsrpt_job_done(j);
}

/* tlsrpt_sessions - the report's session counts, for the log. */
static void tlsrpt_sessions(const char *json, unsigned long *ok,
                            unsigned long *failed)
{
    static const char ks[] = "\"total-successful-session-count\":";
    static const char kf[] = "\"total-failure-session-count\":";
    const char *p;

    *ok = *failed = 0;
    for (p = json; (p = strstr(p, ks)) != NULL; p += sizeof ks - 1)
        *ok += strtoul(p + sizeof ks - 1, NULL, 10);
    for (p = json; (p = strstr(p, kf)) != NULL; p += sizeof kf - 1)
        *failed += strtoul(p + sizeof kf - 1, NULL, 10);
}

/* tlsrpt_job_write - the report as a file: its name in j->file.  The
 * gzip'd report in *gz (the caller's); -1 when it cannot be made. */
static int tlsrpt_job_write(struct tlsrpt_job *j, unsigned char **gz,
                            size_t *gz_len)
{
    struct tlsrpt_sender *s = j->s;
    unsigned char rnd[4];
    char id[512], stamp[32], why[300], esc[400];
    struct tlsrpt_meta m;
    unsigned long ok, failed;
    struct tm tm;
    size_t len;
    char *json;

    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 0, sizeof rnd);
    gmtime_r(&j->r->start, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(id, sizeof id, "%s.%02x%02x%02x%02x.%s@%s", stamp, rnd[0],
             rnd[1], rnd[2], rnd[3], j->r->domain, s->submitter);
    m.organization = s->organization;
    m.contact = s->contact;
    m.report_id = id;
    if ((json = tlsrpt_json(j->r, &m, &len)) == NULL ||
        (*gz = tlsrpt_gzip(json, len, gz_len)) == NULL) {
        free(json);
        log_event(s->log, LOG_ERROR, 0, "event=tlsrpt_error domain=%s "
                  "error=\"out of memory\"", j->r->domain);
        return -1;
    }
    tlsrpt_sessions(json, &ok, &failed);
    free(json);
    /* RFC 8460 5.3: sender!policy-domain!begin!end!unique-id */
    snprintf(j->file, sizeof j->file, "%s!%s!%lld!%lld!%02x%02x%02x%02x"
             ".json.gz", s->submitter, j->r->domain, (long long)j->r->start,
             (long long)j->r->end - 1, rnd[0], rnd[1], rnd[2], rnd[3]);
    if (tlsrpt_dirfd(s->st) >= 0 &&
        statefile_write(tlsrpt_dirfd(s->st), j->file, *gz, *gz_len, why,
                        sizeof why) != 0) {
        log_event(s->log, LOG_ERROR, 0, "event=tlsrpt_error domain=%s "
                  "error=\"%s\"", j->r->domain,
                  log_escape(esc, sizeof esc, why, strlen(why)));
        j->file[0] = '\0';
    }
    log_event(s->log, LOG_INFO, 0, "event=tlsrpt_report domain=%s "
              "report_id=%s successful=%lu failed=%lu file=%s", j->r->domain,
              id, ok, failed, j->file[0] ? j->file : "none");
    return 0;
}

/* tlsrpt_on_txt - the domain's _smtp._tls record: where it goes. */
static void tlsrpt_on_txt(void *ud, const struct dns_answer *a)
{
    struct tlsrpt_job *j = ud;
    struct tlsrpt_sender *s = j->s;
    char recs[DNS_TXT_MAX][DNS_TXT_LEN], why[200];
    const char *rp[DNS_TXT_MAX];
    size_t lens[DNS_TXT_MAX], n;
    struct tlsrpt_rua rua;
    unsigned char *gz = NULL;
    size_t gz_len = 0;

    j->qtxt = NULL;
    n = dns_txt_join(a, recs, rp, lens);
    if (a->status != DNS_OK)
        snprintf(why, sizeof why, "TXT %s", dns_status_name(a->status));
    if (a->status != DNS_OK ||
        tlsrpt_txt_parse(rp, lens, n, &rua, why, sizeof why) != 0) {
        log_event(s->log, LOG_INFO, 0, "event=tlsrpt_skipped domain=%s "
                  "reason=\"%s\"", j->r->domain, why);
        tlsrpt_job_free(j);
        return;
    }
    if (tlsrpt_job_write(j, &gz, &gz_len) != 0) {
        tlsrpt_job_free(j);
        return;
    }
    j->posts = 1;                    /* held until every POST started */
    for (size_t i = 0; i < rua.n; i++) {
        if (strncasecmp(rua.uri[i], "mailto:", 7) == 0) {
            j->keep = true;
            log_event(s->log, LOG_WARN, 0, "event=tlsrpt_mailto domain=%s "
                      "to=%s file=%s", j->r->domain, rua.uri[i] + 7,
                      j->file[0] ? j->file : "none");
            continue;
        }
        j->posts++;
        if (sts_post(s->f, rua.uri[i], gz, gz_len, TLSRPT_CONTENT_TYPE,
                     s->store_for(s->ud, j->r->domain), tlsrpt_on_post,
                     j) != 0) {
            j->posts--;
            j->keep = true;
            log_event(s->log, LOG_WARN, 0, "event=tlsrpt_failed domain=%s "
                      "rua=%s error=\"cannot start the POST\"", j->r->domain,
                      rua.uri[i]);
        }
    }
    free(gz);
    if (--j->posts == 0)
        tlsrpt_job_done(j);
}

/* tlsrpt_start - a job for r. */
static void tlsrpt_start(struct tlsrpt_sender *s, struct tlsrpt_report *r)
{
    struct tlsrpt_job *j = calloc(1, sizeof *j);
    char name[300];

    if (j == NULL) {
        tlsrpt_report_free(r);
        return;
    }
    j->s = s;
    j->r = r;
    j->next = s->jobs;
    if (s->jobs != NULL)
        s->jobs->prev = j;
    s->jobs = j;
    snprintf(name, sizeof name, "_smtp._tls.%s", r->domain);
    j->qtxt = dns_query(s->r, name, DNS_TYPE_TXT, tlsrpt_on_txt, j);
    if (j->qtxt == NULL) {
        log_event(s->log, LOG_WARN, 0, "event=tlsrpt_skipped domain=%s "
                  "reason=\"cannot look up %s\"", r->domain, name);
        tlsrpt_job_free(j);
    }
}

/* tlsrpt_on_tick - save the counts; send what has finished. */
static void tlsrpt_on_tick(uv_timer_t *t)
{
    struct tlsrpt_sender *s = t->data;
    struct tlsrpt_report *r;
    unsigned long dropped;
    char why[300], esc[400];

    while ((r = tlsrpt_take(s->st, time(NULL))) != NULL)
        tlsrpt_start(s, r);
    if (tlsrpt_save(s->st, why, sizeof why) != 0)
        log_event(s->log, LOG_ERROR, 0, "event=tlsrpt_error error=\"%s\"",
                  log_escape(esc, sizeof esc, why, strlen(why)));
    if ((dropped = tlsrpt_dropped(s->st)) > 0)
        log_event(s->log, LOG_WARN, 0, "event=tlsrpt_full dropped=%lu",
                  dropped);
}

static char *tlsrpt_dup(const char *v)
{
    return strdup(v != NULL ? v : "");
}

static void tlsrpt_sender_free(struct tlsrpt_sender *s)
{
    free(s->organization);
    free(s->contact);
    free(s->submitter);
    free(s);
}

/* tlsrpt_sender_new - see tlsrpt_send.h. */
struct tlsrpt_sender *tlsrpt_sender_new(uv_loop_t *loop,
                                        struct tlsrpt_store *st,
                                        struct dns_resolver *r,
                                        struct sts_fetcher *f,
                                        const struct tlsrpt_settings *set,
                                        tlsrpt_store_fn store_for, void *ud,
                                        struct logger *log)
{
    struct tlsrpt_sender *s = calloc(1, sizeof *s);

    if (s == NULL || r == NULL || f == NULL || st == NULL) {
        free(s);
        return NULL;
    }
    s->st = st;
    s->r = r;
    s->f = f;
    s->store_for = store_for;
    s->ud = ud;
    s->log = log;
    s->organization = tlsrpt_dup(set->organization);
    s->contact = tlsrpt_dup(set->contact);
    s->submitter = tlsrpt_dup(set->submitter);
    if (s->organization == NULL || s->contact == NULL ||
        s->submitter == NULL) {
        tlsrpt_sender_free(s);
        return NULL;
    }
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, tlsrpt_on_tick, set->tick_ms, set->tick_ms);
    return s;
}

static void tlsrpt_on_closed(uv_handle_t *h)
{
    tlsrpt_sender_free(h->data);
}

/* tlsrpt_sender_close - see tlsrpt_send.h. */
void tlsrpt_sender_close(struct tlsrpt_sender *s)
{
    char why[300], esc[400];

    if (s == NULL)
        return;
    while (s->jobs != NULL) {
        if (s->jobs->file[0] != '\0')
            log_event(s->log, LOG_WARN, 0, "event=tlsrpt_failed domain=%s "
                      "file=%s error=\"stopped while sending\"",
                      s->jobs->r->domain, s->jobs->file);
        tlsrpt_job_free(s->jobs);
    }
    if (tlsrpt_save(s->st, why, sizeof why) != 0)
        log_event(s->log, LOG_ERROR, 0, "event=tlsrpt_error error=\"%s\"",
                  log_escape(esc, sizeof esc, why, strlen(why)));
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, tlsrpt_on_closed);
}
