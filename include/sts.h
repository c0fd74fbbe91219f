/*
 * sts.h - MTA-STS (RFC 8461) policies: the parsers of the _mta-sts TXT
 * record and of the policy file, the MX pattern match, and the one
 * policy cache of the process.
 *
 * A policy is immutable once parsed and counted by references, so a
 * session keeps the one it started with while the cache moves on.  The
 * cache is shared by every worker loop under one mutex (it is touched
 * once per mx: session, never per byte), bounded (STS_CACHE_MAX), and
 * persisted to a file in [proxy] state_dir, rewritten atomically after
 * every change: a restart does not reopen the trust-on-first-use window
 * that RFC 8461 10.2 warns about.  The directory is opened before the
 * privilege drop and the chroot, and written through that descriptor.
 *
 * The fetching (TXT lookup, HTTPS) is in sts_fetch.h.
 */
#ifndef STARTTLS_PROXY_STS_H
#define STARTTLS_PROXY_STS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define STS_ID_MAX 32              /* RFC 8461 3.1: 1*32(ALPHA / DIGIT) */
#define STS_MAX_MX 64              /* mx patterns kept per policy */
#define STS_MAX_AGE 31557600u      /* RFC 8461 3.2: at most a year */
#define STS_POLICY_MAX 65536       /* RFC 8461 3.3: the body's size cap */
#define STS_CACHE_MAX 1000         /* domains kept */
#define STS_CACHE_FILE "mta-sts.cache"

enum sts_mode { STS_MODE_NONE = 0, STS_MODE_TESTING, STS_MODE_ENFORCE };

struct sts_policy {
    int refs;                      /* atomic */
    char domain[256];              /* the mail domain, lower case */
    char id[STS_ID_MAX + 1];       /* of the TXT record it was fetched for */
    enum sts_mode mode;
    unsigned max_age;
    time_t fetched;                /* expires at fetched + max_age */
    size_t nmx;
    char *mx[STS_MAX_MX];          /* lower case, "*." kept */
    char *text;                    /* the policy as fields, one per line
                                      (the TLSRPT policy-string) */
};

/* sts_txt_parse - the id of the TXT records of _mta-sts.DOMAIN: recs[0..n)
 * (each the record's strings joined).  RFC 8461 3.1: records that do not
 * begin with "v=STSv1;" are not ours; exactly one may remain, and it must
 * be well formed.  Returns 0 with the id in id, or -1 with why. */
int sts_txt_parse(const char *const *recs, const size_t *lens, size_t n,
                  char id[STS_ID_MAX + 1], char *why, size_t why_len);

/* sts_policy_parse - a policy file (RFC 8461 3.2), strictly: version,
 * mode and max_age exactly once, mx patterns that are host names with an
 * optional "*." (at least one unless mode is none), max_age at most
 * STS_MAX_AGE; other fields are extensions and ignored; lines end in LF
 * or CRLF, blank lines are allowed.  Returns a new policy (one
 * reference, no domain, id or time set) or NULL with why. */
struct sts_policy *sts_policy_parse(const char *body, size_t len, char *why,
                                    size_t why_len);

struct sts_policy *sts_policy_ref(struct sts_policy *p);
void sts_policy_unref(struct sts_policy *p);   /* NULL is fine */

/* sts_mx_match - the pattern of p that host matches (RFC 8461 4.1: case
 * does not count, "*." stands for exactly one label), or NULL. */
const char *sts_mx_match(const struct sts_policy *p, const char *host);

/* sts_expired - is p past its max_age at time now? */
bool sts_expired(const struct sts_policy *p, time_t now);

const char *sts_mode_name(enum sts_mode m);

struct sts_cache;

/* sts_cache_open - the cache, loaded from dir/STS_CACHE_FILE when there
 * is one (expired or malformed entries are dropped, and said in warn).
 * NULL dir: kept in memory only.  NULL with a message in err when dir
 * cannot be opened. */
struct sts_cache *sts_cache_open(const char *dir, char *err, size_t err_len,
                                 char *warn, size_t warn_len);
void sts_cache_close(struct sts_cache *c);

/* sts_cache_get - domain's unexpired policy (a new reference), or NULL. */
struct sts_policy *sts_cache_get(struct sts_cache *c, const char *domain,
                                 time_t now);

/* sts_cache_put - keep p (domain, id and fetched set) for its domain,
 * replacing the old one, and rewrite the file.  Returns 0, or -1 with
 * why when the file could not be written (the policy is kept in memory
 * anyway). */
int sts_cache_put(struct sts_cache *c, struct sts_policy *p, char *why,
                  size_t why_len);

/* sts_cache_count - policies held (tests, the log). */
size_t sts_cache_count(struct sts_cache *c);

#endif
