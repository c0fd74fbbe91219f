/*
 * stats.c - per-worker counters and their exposition.
 */
#include "stats.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char *const stats_tls_names[STATS_TLS_N] = {
    "none", "plaintext", "tls", "verified", "dane", "fingerprint"
};
static const char *const stats_msg_names[STATS_MSG_N] = {
    "accepted", "refused", "tempfail", "client_vanished"
};
static const char *const stats_leg_names[STATS_LEG_N] = {
    "client", "backend"
};
static const char *const stats_hs_names[STATS_HS_N] = {
    "handshake", "timeout", "closed", "verify", "dane", "fingerprint", "sts"
};
static const char *const stats_rule_names[STATS_RULE_N] = {
    "backend_tls", "dane", "sts", "fingerprint", "client_tls_encrypt",
    "pregreet", "bare_newline", "nul_byte", "max_errors", "max_connections",
    "max_connections_per_ip", "sources", "backend_auth", "other"
};
static const char *const stats_event_names[STATS_EV_N] = {
    "smuggling_normalized", "smuggling_refused", "bare_newline_command",
    "nul_removed", "starttls_injection", "response_injection", "pregreet",
    "backend_garbage", "limit", "line_too_long", "timeout",
    "transparent_loop", "transparent_denied", "transparent_unknown"
};
static const char *const stats_dir_names[STATS_DIR_N] = {
    "from_client", "from_backend"
};

/* seconds: from a fast local backend to a slow session */
static const double stats_bounds[STATS_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60
};

static const struct {
    const char *name, *help;
} stats_hist_names[STATS_H_N] = {
    { "starttls_proxy_backend_setup_seconds",
      "Time from accepting a client to the backend leg being ready "
      "(connect, greeting, EHLO, STARTTLS, handshake)." },
    { "starttls_proxy_client_handshake_seconds",
      "Duration of successful client-leg TLS handshakes." },
    { "starttls_proxy_session_seconds",
      "Duration of sessions, accept to close." },
};

/* stats_init - see stats.h. */
int stats_init(struct stats *st, size_t nslots)
{
    memset(st, 0, sizeof *st);
    return stats_reserve(st, nslots);
}

/* stats_reserve - see stats.h.  The chunks are in place before nslots
 * says so (release): a reader that sees a slot sees its counters. */
int stats_reserve(struct stats *st, size_t nslots)
{
    size_t have = __atomic_load_n(&st->nslots, __ATOMIC_RELAXED);
    size_t need = (nslots + STATS_CHUNK - 1) / STATS_CHUNK;

    if (nslots <= have)
        return 0;
    if (need > STATS_MAX_CHUNKS)
        return -1;
    for (size_t c = 0; c < need; c++)
        if (st->chunk[c] == NULL &&
            (st->chunk[c] = calloc(STATS_CHUNK, sizeof *st->chunk[c])) == NULL)
            return -1;
    __atomic_store_n(&st->nslots, nslots, __ATOMIC_RELEASE);
    return 0;
}

void stats_free(struct stats *st)
{
    for (size_t c = 0; c < STATS_MAX_CHUNKS; c++) {
        free(st->chunk[c]);
        st->chunk[c] = NULL;
    }
    st->nslots = 0;
}

/* stats_slot - slot's counters, or NULL (read from any thread). */
static struct stats_service *stats_slot(const struct stats *st, size_t slot)
{
    if (st == NULL || slot >= __atomic_load_n(&st->nslots, __ATOMIC_ACQUIRE))
        return NULL;
    return &st->chunk[slot / STATS_CHUNK][slot % STATS_CHUNK];
}

/* stats_of - see stats.h. */
struct stats_service *stats_of(struct stats *st, size_t slot)
{
    return stats_slot(st, slot);
}

/* stats_observe - see stats.h. */
void stats_observe(struct stats_service *s, enum stats_hist h, uint64_t us)
{
    struct stats_histogram *hg;
    size_t i = 0;

    if (s == NULL)
        return;
    hg = &s->hist[h];
    while (i < STATS_BUCKETS && (double)us > stats_bounds[i] * 1e6)
        i++;
    stats_add(&hg->counts[i], 1);
    stats_add(&hg->sum_us, us);
}

/* stats_rule - see stats.h. */
enum stats_rule stats_rule(const char *name)
{
    for (size_t i = 0; i < STATS_RULE_OTHER; i++)
        if (strcmp(name, stats_rule_names[i]) == 0)
            return (enum stats_rule)i;
    return STATS_RULE_OTHER;
}

/* stats_tls_of - see stats.h. */
enum stats_tls stats_tls_of(bool encrypted, const char *verify)
{
    if (!encrypted)
        return STATS_TLS_PLAINTEXT;
    if (strcmp(verify, "verified") == 0)
        return STATS_TLS_VERIFIED;
    if (strcmp(verify, "dane") == 0)
        return STATS_TLS_DANE;
    if (strncmp(verify, "fingerprint:", 12) == 0)
        return STATS_TLS_FINGERPRINT;
    return STATS_TLS_TLS;
}

/* stats_get - one word read from another thread. */
static uint64_t stats_get(const uint64_t *w)
{
    return __atomic_load_n(w, __ATOMIC_RELAXED);
}

/* stats_sum - word at byte offset off of slot's counters, summed over
 * the workers. */
static uint64_t stats_sum(const struct stats *const *w, size_t n, size_t slot,
                          size_t off)
{
    uint64_t t = 0;

    for (size_t k = 0; k < n; k++) {
        const struct stats_service *s = stats_slot(w[k], slot);

        if (s != NULL)
            t += stats_get((const uint64_t *)((const char *)s + off));
    }
    return t;
}

#define SUM(field) stats_sum(w, n, slots != NULL ? slots[i] : i,            \
                             offsetof(struct stats_service, field))

/* stats_render - see stats.h. */
void stats_render(struct promtext_buf *b, const struct stats *const *w,
                  size_t n, const struct config *cfg, const size_t *slots)
{
    size_t ns = cfg->nservices, i;

    promtext_family(b, "starttls_proxy_sessions_total", "counter",
                    "Sessions ended, by the TLS outcome of each leg.");
    for (i = 0; i < ns; i++)
        for (size_t c = STATS_TLS_PLAINTEXT; c <= STATS_TLS_VERIFIED; c++)
            for (size_t k = 0; k < STATS_TLS_N; k++) {
                const char *l[] = { "service", cfg->services[i].name,
                                    "client_tls", stats_tls_names[c],
                                    "backend_tls", stats_tls_names[k],
                                    NULL };
                promtext_sample(b, "starttls_proxy_sessions_total", l,
                                (double)SUM(sessions[c][k]));
            }
    promtext_family(b, "starttls_proxy_sessions_active", "gauge",
                    "Sessions open now.");
    for (i = 0; i < ns; i++) {
        const char *l[] = { "service", cfg->services[i].name, NULL };
        uint64_t s = SUM(started), e = SUM(ended);

        promtext_sample(b, "starttls_proxy_sessions_active", l,
                        s > e ? (double)(s - e) : 0);
    }
    promtext_family(b, "starttls_proxy_messages_total", "counter",
                    "Messages, by the backend's answer to their end of "
                    "data (client_vanished: the client left first).");
    for (i = 0; i < ns; i++)
        for (size_t k = 0; k < STATS_MSG_N; k++) {
            const char *l[] = { "service", cfg->services[i].name,
                                "result", stats_msg_names[k], NULL };
            promtext_sample(b, "starttls_proxy_messages_total", l,
                            (double)SUM(messages[k]));
        }
    promtext_family(b, "starttls_proxy_handshake_failures_total", "counter",
                    "Failed TLS handshakes and certificate checks, by leg "
                    "and reason.");
    for (i = 0; i < ns; i++)
        for (size_t g = 0; g < STATS_LEG_N; g++)
            for (size_t k = 0; k < STATS_HS_N; k++) {
                const char *l[] = { "service", cfg->services[i].name,
                                    "leg", stats_leg_names[g],
                                    "reason", stats_hs_names[k], NULL };
                if (g == STATS_LEG_CLIENT && k > STATS_HS_CLOSED)
                    continue;        /* the client leg checks no names */
                promtext_sample(b, "starttls_proxy_handshake_failures_total",
                                l, (double)SUM(handshake[g][k]));
            }
    promtext_family(b, "starttls_proxy_policy_refusals_total", "counter",
                    "Policy rules that refused (enforced=\"yes\") or would "
                    "have refused under enforce = no (enforced=\"no\").");
    for (i = 0; i < ns; i++)
        for (size_t k = 0; k < STATS_RULE_N; k++)
            for (size_t e = 0; e < 2; e++) {
                const char *l[] = { "service", cfg->services[i].name,
                                    "rule", stats_rule_names[k],
                                    "enforced", e ? "yes" : "no", NULL };
                promtext_sample(b, "starttls_proxy_policy_refusals_total", l,
                                (double)SUM(policy[k][e]));
            }
    promtext_family(b, "starttls_proxy_protection_events_total", "counter",
                    "Protections that fired (smuggling, injection, "
                    "pregreeting, backend garbage, limits).");
    for (i = 0; i < ns; i++)
        for (size_t k = 0; k < STATS_EV_N; k++) {
            const char *l[] = { "service", cfg->services[i].name,
                                "kind", stats_event_names[k], NULL };
            promtext_sample(b, "starttls_proxy_protection_events_total", l,
                            (double)SUM(events[k]));
        }
    promtext_family(b, "starttls_proxy_bytes_total", "counter",
                    "Plaintext bytes received from each peer.");
    for (i = 0; i < ns; i++)
        for (size_t k = 0; k < STATS_DIR_N; k++) {
            const char *l[] = { "service", cfg->services[i].name,
                                "direction", stats_dir_names[k], NULL };
            promtext_sample(b, "starttls_proxy_bytes_total", l,
                            (double)SUM(bytes[k]));
        }
    for (size_t h = 0; h < STATS_H_N; h++) {
        promtext_family(b, stats_hist_names[h].name, "histogram",
                        stats_hist_names[h].help);
        for (i = 0; i < ns; i++) {
            const char *l[] = { "service", cfg->services[i].name, NULL };
            uint64_t counts[STATS_BUCKETS + 1];

            for (size_t k = 0; k <= STATS_BUCKETS; k++)
                counts[k] = SUM(hist[h].counts[k]);
            promtext_histogram(b, stats_hist_names[h].name, l, stats_bounds,
                               STATS_BUCKETS, counts,
                               (double)SUM(hist[h].sum_us) / 1e6);
        }
    }
}
