/*
 * sts.c - MTA-STS policies and their cache (see sts.h).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "dns.h"
#include "statefile.h"
#include "sts.h"

/* ---- the TXT record (RFC 8461 3.1) ---------------------------------------- */

static bool sts_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* sts_txt_fields - one record: "v=STSv1" then fields split by
 * *WSP ";" *WSP; the id field is 1*32(ALPHA / DIGIT). */
static int sts_txt_fields(const char *r, size_t len, char *id, char *why,
                          size_t why_len)
{
    size_t i = 7;                        /* past "v=STSv1" */
    bool have_id = false;

    while (i < len) {
        size_t start, eq = 0, end;

        while (i < len && sts_wsp(r[i]))
            i++;
        if (i >= len)
            break;
        if (r[i] != ';') {
            snprintf(why, why_len, "TXT record: ';' expected");
            return -1;
        }
        i++;
        while (i < len && sts_wsp(r[i]))
            i++;
        if (i >= len)
            break;                       /* a final delimiter */
        start = i;
        while (i < len && r[i] != ';' && !sts_wsp(r[i])) {
            if (r[i] == '=' && eq == 0)
                eq = i;
            i++;
        }
        end = i;
        if (eq == 0 || eq == start || eq + 1 == end) {
            snprintf(why, why_len, "TXT record: malformed field");
            return -1;
        }
        if (eq - start == 2 && memcmp(r + start, "id", 2) == 0) {
            size_t n = end - eq - 1;

            if (have_id) {
                snprintf(why, why_len, "TXT record: two ids");
                return -1;
            }
            if (n > STS_ID_MAX) {
                snprintf(why, why_len, "TXT record: id longer than %d",
                         STS_ID_MAX);
                return -1;
            }
            for (size_t k = eq + 1; k < end; k++)
                if (!isalnum((unsigned char)r[k])) {
                    snprintf(why, why_len, "TXT record: id not alphanumeric");
                    return -1;
                }
            memcpy(id, r + eq + 1, n);
            id[n] = '\0';
            have_id = true;
        }
    }
    if (!have_id) {
        snprintf(why, why_len, "TXT record: no id");
        return -1;
    }
    return 0;
}

/* sts_txt_parse - see sts.h. */
int sts_txt_parse(const char *const *recs, const size_t *lens, size_t n,
                  char id[STS_ID_MAX + 1], char *why, size_t why_len)
{
    int which = dns_txt_pick(recs, lens, n, "v=STSv1");

    if (which < 0) {
        snprintf(why, why_len, which == -1 ? "no v=STSv1 TXT record"
                                           : "more than one v=STSv1 TXT record");
        return -1;
    }
    return sts_txt_fields(recs[which], lens[which], id, why, why_len);
}

/* ---- the policy (RFC 8461 3.2) -------------------------------------------- */

/* sts_host_ok - a host name: labels of letters, digits and hyphens, not
 * starting or ending with one, at most 63 bytes each and 253 in all. */
static bool sts_host_ok(const char *s, size_t len)
{
    size_t label = 0, i;

    if (len == 0 || len > 253)
        return false;
    for (i = 0; i < len; i++) {
        char c = s[i];

        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)c) && c != '-')
            return false;
        if (c == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[len - 1] != '-';
}

static void sts_policy_free(struct sts_policy *p)
{
    for (size_t i = 0; i < p->nmx; i++)
        free(p->mx[i]);
    free(p->text);
    free(p);
}

/* sts_policy_text - the fields as lines, for the TLSRPT policy-string
 * and the cache file. */
static int sts_policy_text(struct sts_policy *p)
{
    size_t cap = 64, off;

    for (size_t i = 0; i < p->nmx; i++)
        cap += strlen(p->mx[i]) + 6;
    p->text = malloc(cap);
    if (p->text == NULL)
        return -1;
    off = (size_t)snprintf(p->text, cap, "version: STSv1\nmode: %s\n",
                           sts_mode_name(p->mode));
    for (size_t i = 0; i < p->nmx; i++)
        off += (size_t)snprintf(p->text + off, cap - off, "mx: %s\n",
                                p->mx[i]);
    snprintf(p->text + off, cap - off, "max_age: %u\n", p->max_age);
    return 0;
}

/* sts_policy_field - one "key: value" line into p; seen[] counts the
 * fields that may appear only once. */
static int sts_policy_field(struct sts_policy *p, const char *key,
                            size_t klen, const char *val, size_t vlen,
                            unsigned seen[3], char *why, size_t why_len)
{
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(key, s, klen) == 0)
    if (KEY("version")) {
        if (seen[0]++ || vlen != 5 || memcmp(val, "STSv1", 5) != 0) {
            snprintf(why, why_len, seen[0] > 1 ? "version given twice"
                                               : "version is not STSv1");
            return -1;
        }
    } else if (KEY("mode")) {
        if (seen[1]++) {
            snprintf(why, why_len, "mode given twice");
            return -1;
        }
        if (vlen == 7 && memcmp(val, "enforce", 7) == 0)
            p->mode = STS_MODE_ENFORCE;
        else if (vlen == 7 && memcmp(val, "testing", 7) == 0)
            p->mode = STS_MODE_TESTING;
        else if (vlen == 4 && memcmp(val, "none", 4) == 0)
            p->mode = STS_MODE_NONE;
        else {
            snprintf(why, why_len, "mode is not enforce, testing or none");
            return -1;
        }
    } else if (KEY("max_age")) {
        unsigned long v = 0;

        if (seen[2]++) {
            snprintf(why, why_len, "max_age given twice");
            return -1;
        }
        if (vlen == 0 || vlen > 10) {
            snprintf(why, why_len, "max_age is not a number of seconds");
            return -1;
        }
        for (size_t i = 0; i < vlen; i++) {
            if (!isdigit((unsigned char)val[i])) {
                snprintf(why, why_len, "max_age is not a number of seconds");
                return -1;
            }
            v = v * 10 + (unsigned long)(val[i] - '0');
        }
        if (v > STS_MAX_AGE) {
            snprintf(why, why_len, "max_age is more than %u", STS_MAX_AGE);
            return -1;
        }
        p->max_age = (unsigned)v;
    } else if (KEY("mx")) {
        size_t skip = vlen > 2 && val[0] == '*' && val[1] == '.' ? 2 : 0;
        char *m;

        if (!sts_host_ok(val + skip, vlen - skip)) {
            snprintf(why, why_len, "mx is not a host name pattern");
            return -1;
        }
        if (p->nmx == STS_MAX_MX) {
            snprintf(why, why_len, "more than %d mx patterns", STS_MAX_MX);
            return -1;
        }
        m = malloc(vlen + 1);
        if (m == NULL) {
            snprintf(why, why_len, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < vlen; i++)
            m[i] = (char)tolower((unsigned char)val[i]);
        m[vlen] = '\0';
        p->mx[p->nmx++] = m;
    } else {
        /* an extension: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" /
         * "."), its value ignored */
        if (klen == 0 || klen > 32 || !isalnum((unsigned char)key[0])) {
            snprintf(why, why_len, "malformed field name");
            return -1;
        }
        for (size_t i = 1; i < klen; i++)
            if (!isalnum((unsigned char)key[i]) && key[i] != '_' &&
                key[i] != '-' && key[i] != '.') {
                snprintf(why, why_len, "malformed field name");
                return -1;
            }
    }
    return 0;
#undef KEY
}

/* sts_policy_parse - see sts.h. */
struct sts_policy *sts_policy_parse(const char *body, size_t len, char *why,
                                    size_t why_len)
{
    struct sts_policy *p;
    unsigned seen[3] = {0, 0, 0};
    size_t i = 0;

    if (len > STS_POLICY_MAX) {
        snprintf(why, why_len, "policy larger than %d bytes", STS_POLICY_MAX);
        return NULL;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    p->refs = 1;
    while (i < len) {
        size_t start = i, end, colon, v;

        while (i < len && body[i] != '\n')
            i++;
        end = i;
        if (i < len)
            i++;                          /* the LF */
        if (end > start && body[end - 1] == '\r')
            end--;
        while (end > start && sts_wsp(body[end - 1]))
            end--;                        /* *WSP before the line end */
        if (end == start)
            continue;                     /* a blank line */
        for (colon = start; colon < end && body[colon] != ':'; colon++)
            if (body[colon] == '\0' || body[colon] == '\r')
                break;
        if (colon == end || body[colon] != ':') {
            snprintf(why, why_len, "a line without \"key:\"");
            goto bad;
        }
        for (v = colon + 1; v < end && sts_wsp(body[v]); v++)
            ;
        for (size_t k = v; k < end; k++)
            if ((unsigned char)body[k] < 0x20 && body[k] != '\t') {
                snprintf(why, why_len, "a control character in a value");
                goto bad;
            }
        if (sts_policy_field(p, body + start, colon - start, body + v,
                             end - v, seen, why, why_len) != 0)
            goto bad;
    }
    if (!seen[0] || !seen[1] || !seen[2]) {
        snprintf(why, why_len, "no %s field",
                 !seen[0] ? "version" : !seen[1] ? "mode" : "max_age");
        goto bad;
    }
    if (p->nmx == 0 && p->mode != STS_MODE_NONE) {
        snprintf(why, why_len, "no mx field");
        goto bad;
    }
    if (sts_policy_text(p) != 0) {
        snprintf(why, why_len, "out of memory");
        goto bad;
    }
    return p;
bad:
    sts_policy_free(p);
    return NULL;
}

/* sts_policy_ref - see sts.h. */
struct sts_policy *sts_policy_ref(struct sts_policy *p)
{
    if (p != NULL)
        __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
    return p;
}

/* sts_policy_unref - see sts.h. */
void sts_policy_unref(struct sts_policy *p)
{
    if (p != NULL && __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
        sts_policy_free(p);
}

/* sts_mx_match - see sts.h. */
const char *sts_mx_match(const struct sts_policy *p, const char *host)
{
    size_t hl = strlen(host);

    if (hl > 0 && host[hl - 1] == '.')
        hl--;                             /* the root's dot */
    for (size_t i = 0; i < p->nmx; i++) {
        const char *m = p->mx[i];

        if (m[0] == '*' && m[1] == '.') {
            /* RFC 8461 4.1: the wildcard is exactly one label */
            const char *dot = memchr(host, '.', hl);
            size_t rest;

            if (dot == NULL || dot == host)
                continue;
            rest = hl - (size_t)(dot + 1 - host);
            if (rest == strlen(m + 2) &&
                strncasecmp(dot + 1, m + 2, rest) == 0)
                return m;
        } else if (strlen(m) == hl && strncasecmp(host, m, hl) == 0) {
            return m;
        }
    }
    return NULL;
}

/* sts_expired - see sts.h. */
bool sts_expired(const struct sts_policy *p, time_t now)
{
    return now >= p->fetched + (time_t)p->max_age;
}

/* sts_mode_name - see sts.h. */
const char *sts_mode_name(enum sts_mode m)
{
    switch (m) {
    case STS_MODE_ENFORCE:
        return "enforce";
    case STS_MODE_TESTING:
        return "testing";
    default:
        return "none";
    }
}

/* ---- the cache ------------------------------------------------------------ */

struct sts_cache {
    pthread_mutex_t mu;
    int dirfd;                           /* -1: memory only */
    struct sts_policy *p[STS_CACHE_MAX];
    size_t n;
};

/* sts_cache_find - the slot of domain, or c->n. */
static size_t sts_cache_find(struct sts_cache *c, const char *domain)
{
    size_t i;

    for (i = 0; i < c->n; i++)
        if (strcasecmp(c->p[i]->domain, domain) == 0)
            break;
    return i;
}

/*
 * The file: a header line, then one policy per line,
 *   DOMAIN TAB ID TAB FETCHED TAB FIELD;FIELD;...
 * where the fields are the policy's lines with ";" for the line ends
 * (none of the kept values can hold a ";").  Read back through
 * sts_policy_parse, so a damaged file cannot smuggle in what a fetched
 * policy could not hold.
 */
#define STS_FILE_HEADER "starttls-proxy mta-sts cache 1\n"

/* sts_cache_load_line - one line of the file into the cache; false when
 * it is malformed or expired. */
static bool sts_cache_load_line(struct sts_cache *c, char *line, time_t now)
{
    char *f[4], *save = NULL, why[128];
    struct sts_policy *p;
    char *q;
    int i;

    for (i = 0; i < 4; i++) {
        f[i] = strtok_r(i == 0 ? line : NULL, "\t\n", &save);
        if (f[i] == NULL)
            return false;
    }
    if (strlen(f[0]) > 253 || strlen(f[1]) > STS_ID_MAX ||
        c->n == STS_CACHE_MAX)
        return false;
    for (q = f[3]; *q != '\0'; q++)
        if (*q == ';')
            *q = '\n';
    p = sts_policy_parse(f[3], strlen(f[3]), why, sizeof why);
    if (p == NULL)
        return false;
    snprintf(p->domain, sizeof p->domain, "%s", f[0]);
    snprintf(p->id, sizeof p->id, "%s", f[1]);
    p->fetched = (time_t)strtoll(f[2], NULL, 10);
    if (sts_expired(p, now) || p->fetched > now + 86400 ||
        sts_cache_find(c, p->domain) != c->n) {
        sts_policy_unref(p);
        return false;
    }
    c->p[c->n++] = p;
    return true;
}

/* sts_cache_load - read the file, if there is one. */
static void sts_cache_load(struct sts_cache *c, char *warn, size_t warn_len)
{
    FILE *f = statefile_read(c->dirfd, STS_CACHE_FILE, STS_FILE_HEADER, warn,
                             warn_len);
    char line[8192];
    unsigned dropped = 0;
    time_t now = time(NULL);

    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL)
        if (!sts_cache_load_line(c, line, now))
            dropped++;
    fclose(f);
    if (dropped > 0)
        snprintf(warn, warn_len, "%u expired or malformed entries of %s "
                 "dropped", dropped, STS_CACHE_FILE);
}

/* sts_cache_open - see sts.h. */
struct sts_cache *sts_cache_open(const char *dir, char *err, size_t err_len,
                                 char *warn, size_t warn_len)
{
    struct sts_cache *c = calloc(1, sizeof *c);

    if (warn_len > 0)
        warn[0] = '\0';
    if (c == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->dirfd = -1;
    if (dir != NULL) {
        c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->dirfd < 0) {
            snprintf(err, err_len, "state_dir %s: %s", dir, strerror(errno));
            free(c);
            return NULL;
        }
        sts_cache_load(c, warn, warn_len);
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

/* sts_cache_close - see sts.h. */
void sts_cache_close(struct sts_cache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        sts_policy_unref(c->p[i]);
    if (c->dirfd >= 0)
        close(c->dirfd);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* sts_cache_get - see sts.h. */
struct sts_policy *sts_cache_get(struct sts_cache *c, const char *domain,
                                 time_t now)
{
    struct sts_policy *p = NULL;
    size_t i;

    pthread_mutex_lock(&c->mu);
    i = sts_cache_find(c, domain);
    if (i < c->n && !sts_expired(c->p[i], now))
        p = sts_policy_ref(c->p[i]);
    pthread_mutex_unlock(&c->mu);
    return p;
}

/* sts_cache_write - the whole cache to a temporary file, then renamed
 * over the old one: a crash leaves one or the other, never half.  Under
 * c->mu. */
static int sts_cache_write(struct sts_cache *c, char *why, size_t why_len)
{
    FILE *f;

    if (c->dirfd < 0)
        return 0;
    f = statefile_begin(c->dirfd, STS_CACHE_FILE, why, why_len);
    if (f == NULL)
        return -1;
    fputs(STS_FILE_HEADER, f);
    for (size_t i = 0; i < c->n; i++) {
        const struct sts_policy *p = c->p[i];

        fprintf(f, "%s\t%s\t%lld\t", p->domain, p->id,
                (long long)p->fetched);
        for (const char *q = p->text; *q != '\0'; q++)
            fputc(*q == '\n' ? ';' : *q, f);
        fputc('\n', f);
    }
    return statefile_commit(f, c->dirfd, STS_CACHE_FILE, why, why_len);
}

/* sts_cache_put - see sts.h.  When full, the policy closest to expiry
 * makes room. */
int sts_cache_put(struct sts_cache *c, struct sts_policy *p, char *why,
                  size_t why_len)
{
    size_t i;
    int rc;

    pthread_mutex_lock(&c->mu);
    i = sts_cache_find(c, p->domain);
    if (i == c->n && c->n == STS_CACHE_MAX) {
        i = 0;
        for (size_t k = 1; k < c->n; k++)
            if (c->p[k]->fetched + (time_t)c->p[k]->max_age <
                c->p[i]->fetched + (time_t)c->p[i]->max_age)
                i = k;
    }
    if (i < c->n)
        sts_policy_unref(c->p[i]);
    else
        c->n++;
    c->p[i] = sts_policy_ref(p);
    rc = sts_cache_write(c, why, why_len);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* sts_cache_count - see sts.h. */
size_t sts_cache_count(struct sts_cache *c)
{
    size_t n;

    pthread_mutex_lock(&c->mu);
    n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}
