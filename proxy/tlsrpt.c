/*
 * tlsrpt.c - TLS reporting counts and reports (see tlsrpt.h).
 *
 * The store is a list of domains, each for one window, each with its
 * policies (told apart by type, policy-string and mx-host), each with
 * its success and failure counts and its failure details (told apart by
 * every field but the count).  The state file holds the same, one line
 * per item, fields separated by blanks and %-escaped:
 *
 *   D START DOMAIN
 *   P TYPE OK FAILED POLICY MX_HOSTS
 *   F COUNT RESULT SENDING_IP MX_HOST RECEIVING_IP REASON
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <zlib.h>

#include "dns.h"
#include "statefile.h"
#include "tlsrpt.h"

#define TLSRPT_FILE_HEADER "# starttls-proxy TLSRPT counts 1\n"

struct tlsrpt_detail {
    char result[40];
    char sending_ip[48];
    char mx_host[256];
    char receiving_ip[48];
    char reason[128];
    unsigned long count;
};

struct tlsrpt_policy {
    enum tlsrpt_policy_type type;
    char *policy;                    /* lines */
    char *mx_hosts;                  /* lines */
    unsigned long ok, failed;
    size_t ndetails;
    struct tlsrpt_detail *details;   /* TLSRPT_MAX_DETAILS, on demand */
};

struct tlsrpt_domain {
    struct tlsrpt_domain *next;
    time_t start;
    char domain[256];
    size_t npolicies;
    struct tlsrpt_policy policies[TLSRPT_MAX_POLICIES];
};

struct tlsrpt_store {
    pthread_mutex_t mu;
    int dirfd;                       /* -1: memory only */
    unsigned interval;
    struct tlsrpt_domain *domains;
    size_t ndomains;
    bool dirty;
    unsigned long dropped;
};

/* ---- the TXT record (RFC 8460 3) ------------------------------------------ */

static bool tlsrpt_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* tlsrpt_add_uri - one rua URI (text[0..len), blanks trimmed). */
static void tlsrpt_add_uri(struct tlsrpt_rua *out, const char *text,
                           size_t len)
{
    while (len > 0 && tlsrpt_wsp(*text)) {
        text++;
        len--;
    }
    while (len > 0 && tlsrpt_wsp(text[len - 1]))
        len--;
    if (out->n == TLSRPT_MAX_RUA || len == 0 || len >= TLSRPT_URI_MAX)
        return;
    if (!(len > 7 && strncasecmp(text, "mailto:", 7) == 0) &&
        !(len > 8 && strncasecmp(text, "https://", 8) == 0))
        return;                      /* RFC 8460 3: only these two */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] <= ' ' || (unsigned char)text[i] >= 127)
            return;
    memcpy(out->uri[out->n], text, len);
    out->uri[out->n++][len] = '\0';
}

/* tlsrpt_txt_parse - see tlsrpt.h. */
int tlsrpt_txt_parse(const char *const *recs, const size_t *lens, size_t n,
                     struct tlsrpt_rua *out, char *why, size_t why_len)
{
    int which = dns_txt_pick(recs, lens, n, "v=TLSRPTv1");
    const char *r, *end;
    bool have_rua = false;

    memset(out, 0, sizeof *out);
    if (which < 0) {
        snprintf(why, why_len, which == -1
                                   ? "no v=TLSRPTv1 TXT record"
                                   : "more than one v=TLSRPTv1 TXT record");
        return -1;
    }
    r = recs[which] + strlen("v=TLSRPTv1");
    end = recs[which] + lens[which];
    while (r < end) {
        const char *f, *fe;

        while (r < end && (tlsrpt_wsp(*r) || *r == ';'))
            r++;
        f = r;
        while (r < end && *r != ';')
            r++;
        fe = r;
        if (fe - f > 4 && strncmp(f, "rua=", 4) == 0 && !have_rua) {
            const char *u = f + 4;

            have_rua = true;
            while (u < fe) {
                const char *c = memchr(u, ',', (size_t)(fe - u));

                if (c == NULL)
                    c = fe;
                tlsrpt_add_uri(out, u, (size_t)(c - u));
                u = c + 1;
            }
        }
        /* other fields are extensions (RFC 8460 3): ignored */
    }
    if (!have_rua || out->n == 0) {
        snprintf(why, why_len, have_rua ? "no mailto: or https: URI in rua"
                                        : "no rua field");
        return -1;
    }
    return 0;
}

/* ---- counting ------------------------------------------------------------- */

static const char *tlsrpt_or_empty(const char *s)
{
    return s != NULL ? s : "";
}

/* tlsrpt_domain_get - the entry of (start, domain), made when there is
 * room; NULL otherwise.  Under s->mu. */
static struct tlsrpt_domain *tlsrpt_domain_get(struct tlsrpt_store *s,
                                               time_t start,
                                               const char *domain)
{
    struct tlsrpt_domain *d;

    for (d = s->domains; d != NULL; d = d->next)
        if (d->start == start && strcasecmp(d->domain, domain) == 0)
            return d;
    if (s->ndomains >= TLSRPT_MAX_DOMAINS || strlen(domain) >= sizeof d->domain ||
        (d = calloc(1, sizeof *d)) == NULL)
        return NULL;
    d->start = start;
    for (size_t i = 0; domain[i] != '\0'; i++)
        d->domain[i] = (char)tolower((unsigned char)domain[i]);
    d->next = s->domains;
    s->domains = d;
    s->ndomains++;
    return d;
}

/* tlsrpt_policy_get - d's policy of this type and text, made when there
 * is room; NULL otherwise. */
static struct tlsrpt_policy *tlsrpt_policy_get(struct tlsrpt_domain *d,
                                               enum tlsrpt_policy_type type,
                                               const char *policy,
                                               const char *mx_hosts)
{
    struct tlsrpt_policy *p;

    for (size_t i = 0; i < d->npolicies; i++) {
        p = &d->policies[i];
        if (p->type == type && strcmp(p->policy, policy) == 0 &&
            strcmp(p->mx_hosts, mx_hosts) == 0)
            return p;
    }
    if (d->npolicies == TLSRPT_MAX_POLICIES)
        return NULL;
    p = &d->policies[d->npolicies];
    memset(p, 0, sizeof *p);
    p->type = type;
    p->policy = strdup(policy);
    p->mx_hosts = strdup(mx_hosts);
    if (p->policy == NULL || p->mx_hosts == NULL) {
        free(p->policy);
        free(p->mx_hosts);
        return NULL;
    }
    d->npolicies++;
    return p;
}

/* tlsrpt_detail_fill - a detail's fields from r (cut to fit). */
static void tlsrpt_detail_fill(struct tlsrpt_detail *t,
                               const struct tlsrpt_result *r)
{
    snprintf(t->result, sizeof t->result, "%s", r->result);
    snprintf(t->sending_ip, sizeof t->sending_ip, "%s",
             tlsrpt_or_empty(r->sending_ip));
    snprintf(t->mx_host, sizeof t->mx_host, "%s",
             tlsrpt_or_empty(r->mx_host));
    snprintf(t->receiving_ip, sizeof t->receiving_ip, "%s",
             tlsrpt_or_empty(r->receiving_ip));
    snprintf(t->reason, sizeof t->reason, "%s", tlsrpt_or_empty(r->reason));
}

/* tlsrpt_detail_get - p's detail like t, made when there is room. */
static struct tlsrpt_detail *tlsrpt_detail_get(struct tlsrpt_policy *p,
                                               const struct tlsrpt_detail *t)
{
    for (size_t i = 0; i < p->ndetails; i++) {
        struct tlsrpt_detail *x = &p->details[i];

        if (strcmp(x->result, t->result) == 0 &&
            strcmp(x->sending_ip, t->sending_ip) == 0 &&
            strcmp(x->mx_host, t->mx_host) == 0 &&
            strcmp(x->receiving_ip, t->receiving_ip) == 0 &&
            strcmp(x->reason, t->reason) == 0)
            return x;
    }
    if (p->details == NULL &&
        (p->details = calloc(TLSRPT_MAX_DETAILS, sizeof *p->details)) == NULL)
        return NULL;
    if (p->ndetails == TLSRPT_MAX_DETAILS)
        return NULL;
    p->details[p->ndetails] = *t;
    p->details[p->ndetails].count = 0;
    return &p->details[p->ndetails++];
}

/* tlsrpt_count - add n sessions of r to window start.  Under s->mu.
 * False when there was no room. */
static bool tlsrpt_count(struct tlsrpt_store *s, time_t start,
                         const struct tlsrpt_result *r, unsigned long n)
{
    struct tlsrpt_domain *d = tlsrpt_domain_get(s, start, r->domain);
    struct tlsrpt_policy *p;
    struct tlsrpt_detail t, *x;

    if (d == NULL ||
        (p = tlsrpt_policy_get(d, r->type, tlsrpt_or_empty(r->policy),
                               tlsrpt_or_empty(r->mx_hosts))) == NULL)
        return false;
    if (r->result == NULL) {
        p->ok += n;
        return true;
    }
    p->failed += n;                  /* the summary counts it anyway */
    tlsrpt_detail_fill(&t, r);
    if ((x = tlsrpt_detail_get(p, &t)) == NULL)
        return false;
    x->count += n;
    return true;
}

/* tlsrpt_record - see tlsrpt.h. */
void tlsrpt_record(struct tlsrpt_store *s, time_t now,
                   const struct tlsrpt_result *r)
{
    time_t start = now - now % (time_t)s->interval;

    pthread_mutex_lock(&s->mu);
    if (!tlsrpt_count(s, start, r, 1))
        s->dropped++;
    s->dirty = true;
    pthread_mutex_unlock(&s->mu);
}

/* tlsrpt_dropped - see tlsrpt.h. */
unsigned long tlsrpt_dropped(struct tlsrpt_store *s)
{
    unsigned long n;

    pthread_mutex_lock(&s->mu);
    n = s->dropped;
    s->dropped = 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- the state file ------------------------------------------------------- */

/* tlsrpt_put_field - " FIELD", %-escaped; "-" for the empty text. */
static void tlsrpt_put_field(FILE *f, const char *v)
{
    fputc(' ', f);
    if (*v == '\0') {
        fputc('-', f);
        return;
    }
    for (; *v != '\0'; v++) {
        unsigned char c = (unsigned char)*v;

        if (c <= ' ' || c == '%' || c == '-' || c >= 127)
            fprintf(f, "%%%02X", c);
        else
            fputc(c, f);
    }
}

/* tlsrpt_unescape - a field back in place; false when malformed. */
static bool tlsrpt_unescape(char *v)
{
    char *o = v;

    if (strcmp(v, "-") == 0) {
        *v = '\0';
        return true;
    }
    for (; *v != '\0'; v++) {
        if (*v == '%') {
            unsigned x;

            if (!isxdigit((unsigned char)v[1]) ||
                !isxdigit((unsigned char)v[2]) ||
                sscanf(v + 1, "%2x", &x) != 1 || x == 0)
                return false;
            *o++ = (char)x;
            v += 2;
        } else {
            *o++ = *v;
        }
    }
    *o = '\0';
    return true;
}

/* tlsrpt_save - see tlsrpt.h. */
int tlsrpt_save(struct tlsrpt_store *s, char *why, size_t why_len)
{
    FILE *f;
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    if (!s->dirty || s->dirfd < 0)
        goto out;
    f = statefile_begin(s->dirfd, TLSRPT_STATE_FILE, why, why_len);
    if (f == NULL) {
        rc = -1;
        goto out;
    }
    fputs(TLSRPT_FILE_HEADER, f);
    for (const struct tlsrpt_domain *d = s->domains; d != NULL; d = d->next) {
        fprintf(f, "D %lld", (long long)d->start);
        tlsrpt_put_field(f, d->domain);
        fputc('\n', f);
        for (size_t i = 0; i < d->npolicies; i++) {
            const struct tlsrpt_policy *p = &d->policies[i];

            fprintf(f, "P %d %lu %lu", (int)p->type, p->ok, p->failed);
            tlsrpt_put_field(f, p->policy);
            tlsrpt_put_field(f, p->mx_hosts);
            fputc('\n', f);
            for (size_t k = 0; k < p->ndetails; k++) {
                const struct tlsrpt_detail *t = &p->details[k];

                fprintf(f, "F %lu", t->count);
                tlsrpt_put_field(f, t->result);
                tlsrpt_put_field(f, t->sending_ip);
                tlsrpt_put_field(f, t->mx_host);
                tlsrpt_put_field(f, t->receiving_ip);
                tlsrpt_put_field(f, t->reason);
                fputc('\n', f);
            }
        }
    }
    rc = statefile_commit(f, s->dirfd, TLSRPT_STATE_FILE, why, why_len);
    if (rc == 0)
        s->dirty = false;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* tlsrpt_split - line's blank-separated fields, unescaped, into f[0..max);
 * returns how many, or -1 when a field is malformed. */
static int tlsrpt_split(char *line, char **f, int max)
{
    int n = 0;
    char *save = NULL;

    for (char *t = strtok_r(line, " \n", &save); t != NULL;
         t = strtok_r(NULL, " \n", &save)) {
        if (n == max || !tlsrpt_unescape(t))
            return -1;
        f[n++] = t;
    }
    return n;
}

/* tlsrpt_load_line - one line of the state file; false when malformed.
 * *d and *p are the current domain and policy (sets them too). */
static bool tlsrpt_load_line(struct tlsrpt_store *s, char *line,
                             struct tlsrpt_domain **d,
                             struct tlsrpt_policy **p)
{
    char *f[8];
    int n = tlsrpt_split(line, f, 8);
    struct tlsrpt_detail t;

    if (n == 3 && strcmp(f[0], "D") == 0) {
        *d = tlsrpt_domain_get(s, (time_t)strtoll(f[1], NULL, 10), f[2]);
        *p = NULL;
        return *d != NULL;
    }
    if (n == 6 && strcmp(f[0], "P") == 0 && *d != NULL) {
        int type = atoi(f[1]);

        if (type < TLSRPT_TLSA || type > TLSRPT_NO_POLICY)
            return false;
        *p = tlsrpt_policy_get(*d, (enum tlsrpt_policy_type)type, f[4], f[5]);
        if (*p == NULL)
            return false;
        (*p)->ok += strtoul(f[2], NULL, 10);
        (*p)->failed += strtoul(f[3], NULL, 10);
        return true;
    }
    if (n == 7 && strcmp(f[0], "F") == 0 && *p != NULL && f[2][0] != '\0') {
        struct tlsrpt_result r = {.result = f[2], .sending_ip = f[3],
                                  .mx_host = f[4], .receiving_ip = f[5],
                                  .reason = f[6]};
        struct tlsrpt_detail *x;

        tlsrpt_detail_fill(&t, &r);
        if ((x = tlsrpt_detail_get(*p, &t)) == NULL)
            return false;
        x->count += strtoul(f[1], NULL, 10);
        return true;
    }
    return false;
}

/* tlsrpt_load - read the state file, if there is one. */
static void tlsrpt_load(struct tlsrpt_store *s, char *warn, size_t warn_len)
{
    FILE *f = statefile_read(s->dirfd, TLSRPT_STATE_FILE, TLSRPT_FILE_HEADER,
                             warn, warn_len);
    struct tlsrpt_domain *d = NULL;
    struct tlsrpt_policy *p = NULL;
    unsigned dropped = 0;
    char line[4096];

    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL)
        if (!tlsrpt_load_line(s, line, &d, &p))
            dropped++;
    fclose(f);
    if (dropped > 0)
        snprintf(warn, warn_len, "%u malformed lines of %s dropped", dropped,
                 TLSRPT_STATE_FILE);
}

/* ---- the store ------------------------------------------------------------ */

/* tlsrpt_open - see tlsrpt.h. */
struct tlsrpt_store *tlsrpt_open(const char *dir, unsigned interval,
                                 char *err, size_t err_len, char *warn,
                                 size_t warn_len)
{
    struct tlsrpt_store *s = calloc(1, sizeof *s);

    if (warn_len > 0)
        warn[0] = '\0';
    if (s == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    s->interval = interval > 0 ? interval : 86400;
    s->dirfd = -1;
    pthread_mutex_init(&s->mu, NULL);
    if (dir != NULL) {
        s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dirfd < 0) {
            snprintf(err, err_len, "tlsrpt_dir %s: %s", dir, strerror(errno));
            tlsrpt_close(s);
            return NULL;
        }
        tlsrpt_load(s, warn, warn_len);
    }
    return s;
}

static void tlsrpt_domain_free(struct tlsrpt_domain *d)
{
    for (size_t i = 0; i < d->npolicies; i++) {
        free(d->policies[i].policy);
        free(d->policies[i].mx_hosts);
        free(d->policies[i].details);
    }
    free(d);
}

/* tlsrpt_close - see tlsrpt.h. */
void tlsrpt_close(struct tlsrpt_store *s)
{
    if (s == NULL)
        return;
    while (s->domains != NULL) {
        struct tlsrpt_domain *d = s->domains;

        s->domains = d->next;
        tlsrpt_domain_free(d);
    }
    if (s->dirfd >= 0)
        close(s->dirfd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* tlsrpt_dirfd - see tlsrpt.h. */
int tlsrpt_dirfd(const struct tlsrpt_store *s)
{
    return s->dirfd;
}

/* tlsrpt_take - see tlsrpt.h. */
struct tlsrpt_report *tlsrpt_take(struct tlsrpt_store *s, time_t now)
{
    struct tlsrpt_domain **pp, *d = NULL;
    struct tlsrpt_report *r;

    pthread_mutex_lock(&s->mu);
    for (pp = &s->domains; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->start + (time_t)s->interval <= now) {
            d = *pp;
            *pp = d->next;
            s->ndomains--;
            s->dirty = true;
            break;
        }
    pthread_mutex_unlock(&s->mu);
    if (d == NULL)
        return NULL;
    if ((r = calloc(1, sizeof *r)) == NULL) {
        tlsrpt_domain_free(d);
        return NULL;
    }
    snprintf(r->domain, sizeof r->domain, "%s", d->domain);
    r->start = d->start;
    r->end = d->start + (time_t)s->interval;
    r->d = d;
    return r;
}

void tlsrpt_report_free(struct tlsrpt_report *r)
{
    if (r == NULL)
        return;
    tlsrpt_domain_free(r->d);
    free(r);
}

/* ---- the report (RFC 8460 4.4) -------------------------------------------- */

const char *tlsrpt_policy_type_name(enum tlsrpt_policy_type t)
{
    switch (t) {
    case TLSRPT_TLSA:
        return "tlsa";
    case TLSRPT_STS:
        return "sts";
    default:
        return "no-policy-found";
    }
}

struct jbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void jb_raw(struct jbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *np;

        while (cap < b->len + n + 1)
            cap *= 2;
        if ((np = realloc(b->p, cap)) == NULL) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void jb_puts(struct jbuf *b, const char *s)
{
    jb_raw(b, s, strlen(s));
}

/* jb_str - s[0..n) as a JSON string (RFC 8259 7). */
static void jb_strn(struct jbuf *b, const char *s, size_t n)
{
    jb_raw(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            jb_raw(b, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            jb_raw(b, esc, 6);
        } else {
            jb_raw(b, (const char *)&c, 1);
        }
    }
    jb_raw(b, "\"", 1);
}

static void jb_str(struct jbuf *b, const char *s)
{
    jb_strn(b, s, strlen(s));
}

/* jb_member - ,"name": (the comma unless first) */
static void jb_member(struct jbuf *b, bool *first, const char *name)
{
    if (!*first)
        jb_raw(b, ",", 1);
    *first = false;
    jb_str(b, name);
    jb_raw(b, ":", 1);
}

/* jb_lines - lines (joined by '\n') as an array of strings. */
static void jb_lines(struct jbuf *b, const char *lines)
{
    bool first = true;

    jb_raw(b, "[", 1);
    while (*lines != '\0') {
        const char *nl = strchr(lines, '\n');
        size_t n = nl ? (size_t)(nl - lines) : strlen(lines);

        if (n > 0) {
            if (!first)
                jb_raw(b, ",", 1);
            first = false;
            jb_strn(b, lines, n);
        }
        lines += n + (nl ? 1 : 0);
    }
    jb_raw(b, "]", 1);
}

static void jb_time(struct jbuf *b, time_t t)
{
    struct tm tm;
    char text[40];

    gmtime_r(&t, &tm);
    strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    jb_str(b, text);
}

static void jb_ulong(struct jbuf *b, unsigned long v)
{
    char text[24];

    snprintf(text, sizeof text, "%lu", v);
    jb_puts(b, text);
}

/* jb_detail - one failure-details entry; empty fields are left out. */
static void jb_detail(struct jbuf *b, const struct tlsrpt_detail *t)
{
    bool first = true;

    jb_raw(b, "{", 1);
    jb_member(b, &first, "result-type");
    jb_str(b, t->result);
    if (t->sending_ip[0]) {
        jb_member(b, &first, "sending-mta-ip");
        jb_str(b, t->sending_ip);
    }
    if (t->mx_host[0]) {
        jb_member(b, &first, "receiving-mx-hostname");
        jb_str(b, t->mx_host);
    }
    if (t->receiving_ip[0]) {
        jb_member(b, &first, "receiving-ip");
        jb_str(b, t->receiving_ip);
    }
    jb_member(b, &first, "failed-session-count");
    jb_ulong(b, t->count);
    if (t->reason[0]) {
        jb_member(b, &first, "failure-reason-code");
        jb_str(b, t->reason);
    }
    jb_raw(b, "}", 1);
}

/* jb_policy - one policies[] entry. */
static void jb_policy(struct jbuf *b, const char *domain,
                      const struct tlsrpt_policy *p)
{
    bool first = true, inner = true;

    jb_raw(b, "{", 1);
    jb_member(b, &first, "policy");
    jb_raw(b, "{", 1);
    jb_member(b, &inner, "policy-type");
    jb_str(b, tlsrpt_policy_type_name(p->type));
    if (p->policy[0]) {
        jb_member(b, &inner, "policy-string");
        jb_lines(b, p->policy);
    }
    jb_member(b, &inner, "policy-domain");
    jb_str(b, domain);
    if (p->mx_hosts[0]) {
        jb_member(b, &inner, "mx-host");
        jb_lines(b, p->mx_hosts);
    }
    jb_raw(b, "}", 1);
    jb_member(b, &first, "summary");
    jb_puts(b, "{\"total-successful-session-count\":");
    jb_ulong(b, p->ok);
    jb_puts(b, ",\"total-failure-session-count\":");
    jb_ulong(b, p->failed);
    jb_raw(b, "}", 1);
    if (p->ndetails > 0) {
        jb_member(b, &first, "failure-details");
        jb_raw(b, "[", 1);
        for (size_t i = 0; i < p->ndetails; i++) {
            if (i > 0)
                jb_raw(b, ",", 1);
            jb_detail(b, &p->details[i]);
        }
        jb_raw(b, "]", 1);
    }
    jb_raw(b, "}", 1);
}

/* tlsrpt_json - see tlsrpt.h.  The window's last second is its
 * end-datetime, as in RFC 8460 4.4's example. */
char *tlsrpt_json(const struct tlsrpt_report *r, const struct tlsrpt_meta *m,
                  size_t *len)
{
    struct jbuf b = {0};
    bool first = true;

    jb_raw(&b, "{", 1);
    jb_member(&b, &first, "organization-name");
    jb_str(&b, m->organization);
    jb_member(&b, &first, "date-range");
    jb_puts(&b, "{\"start-datetime\":");
    jb_time(&b, r->start);
    jb_puts(&b, ",\"end-datetime\":");
    jb_time(&b, r->end - 1);
    jb_raw(&b, "}", 1);
    jb_member(&b, &first, "contact-info");
    jb_str(&b, m->contact);
    jb_member(&b, &first, "report-id");
    jb_str(&b, m->report_id);
    jb_member(&b, &first, "policies");
    jb_raw(&b, "[", 1);
    for (size_t i = 0; i < r->d->npolicies; i++) {
        if (i > 0)
            jb_raw(&b, ",", 1);
        jb_policy(&b, r->domain, &r->d->policies[i]);
    }
    jb_puts(&b, "]}\n");
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* tlsrpt_gzip - see tlsrpt.h. */
unsigned char *tlsrpt_gzip(const void *data, size_t len, size_t *out_len)
{
    z_stream z;
    uLong cap;
    unsigned char *out;

    memset(&z, 0, sizeof z);
    /* 15 + 16: a gzip header and trailer around the deflate stream */
    if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    cap = deflateBound(&z, (uLong)len) + 32;
    if ((out = malloc(cap)) == NULL) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) {
        deflateEnd(&z);
        free(out);
        return NULL;
    }
    *out_len = z.total_out;
    deflateEnd(&z);
    return out;
}
