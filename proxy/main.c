/*
 * main.c - command line, signals, the loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <pwd.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "config.h"
#include "connlimit.h"
#include "dns.h"
#include "health.h"
#include "listener.h"
#include "log.h"
#include "log_syslog.h"
#include "metrics.h"
#include "netaddr.h"
#include "pidfile.h"
#include "promtext.h"
#include "sdnotify.h"
#include "stats.h"
#include "sts.h"
#include "tls.h"
#include "tlsrpt.h"
#include "transparent.h"
#include "worker.h"

struct runtime {
    const char *path;                /* the configuration file */
    struct generation *gen;          /* the current configuration */
    struct config *cfg;              /* gen's */
    struct tls_service *tls;         /* gen's */
    struct worker *workers;
    struct connlimit *limits;
    unsigned nworkers;
    struct logger log;
    uv_signal_t sigterm;
    uv_signal_t sigquit;
    uv_signal_t sigint;
    uv_signal_t ignored[3];          /* SIGHUP (reload), SIGUSR1, SIGUSR2 */
    uv_async_t worker_done;          /* a worker thread has ended */
    uv_timer_t status_timer;         /* STATUS= for the service manager */
    struct pidfile pf;               /* [proxy] pid_file */
    struct dns_setup dns;            /* read at start when dns_needed */
    bool have_dns;
    struct sts_cache *sts;           /* opened at start when sts is used */
    struct tlsrpt_store *tlsrpt;     /* opened at start when tlsrpt = yes
                                        and a service reports */
    unsigned long reloads;           /* SIGHUPs handled */
    unsigned long reloads_ok, reloads_failed;
    size_t next_slot;                /* the next unused service slot (the
                                        connection limits, the counters) */
    struct metrics_server *metrics;  /* [proxy] metrics_listen; NULL */
    struct health *health;           /* backend_health probes; NULL */
    bool status_on;
    bool draining;                   /* a graceful stop is under way */
};

/* signals that must never end the proxy (their default action would) */
static const int main_ignored_signals[3] = { SIGHUP, SIGUSR1, SIGUSR2 };

static void usage(FILE *out)
{
    fprintf(out,
            "usage: starttls-proxy [-t] [-c FILE]\n"
            "       starttls-proxy -s reload [-c FILE]\n"
            "       starttls-proxy -V | -h\n"
            "  -c FILE  configuration file (default %s)\n"
            "  -t       check the configuration, load every certificate and key, exit\n"
            "  -s reload  make the running proxy (its pid_file) reload, wait, say how it went\n"
            "  -V       print the version\n"
            "  -h       print this help\n",
            CONFIG_DEFAULT_PATH);
}

/*
 * main_signal_reload - "-s reload": SIGHUP to the proxy named by the pid
 * file of the configuration at path, then wait (30 s at most) until it
 * records the outcome there.  Exit status 0 when it reloaded.
 */
static int main_signal_reload(const char *path)
{
    char err[8192], before[128], after[128];
    struct config *cfg;
    pid_t pid;
    int rc = 1;

    if (config_load(path, &cfg, err, sizeof err) != 0) {
        fputs(err, stderr);
        return 1;
    }
    if (strcmp(cfg->pid_file, "none") == 0) {
        fprintf(stderr, "%s: pid_file = none: no running proxy to find\n",
                path);
    } else if (pidfile_read(cfg->pid_file, &pid, before, sizeof before) != 0) {
        fprintf(stderr, "%s: %s\n", cfg->pid_file, strerror(errno));
    } else if (kill(pid, SIGHUP) != 0) {
        fprintf(stderr, "starttls-proxy: pid %ld (%s): %s\n", (long)pid,
                cfg->pid_file, strerror(errno));
    } else {
        for (int i = 0; i < 600; i++) {
            pid_t now;

            usleep(50 * 1000);
            if (pidfile_read(cfg->pid_file, &now, after, sizeof after) == 0 &&
                now == pid && strcmp(after, before) != 0) {
                bool ok = strstr(after, "result=ok") != NULL;

                printf("starttls-proxy: reload %s (%s)\n",
                       ok ? "done" : "failed, the old configuration stays; "
                                     "see the log", after);
                rc = ok ? 0 : 1;
                break;
            }
            if (i == 599)
                fprintf(stderr, "starttls-proxy: pid %ld did not answer "
                        "the reload within 30 s\n", (long)pid);
        }
    }
    config_free(cfg);
    return rc;
}

/* main_free_loaded - what main_load_into made. */
static void main_free_loaded(struct config *cfg, struct tls_service *tls)
{
    if (tls != NULL && cfg != NULL)
        for (size_t i = 0; i < cfg->nservices; i++)
            tls_service_free(&tls[i]);
    free(tls);
    config_free(cfg);
}

/*
 * main_load_into - the configuration plus every service's TLS contexts:
 * everything -t checks.  On failure returns -1 with every problem, one
 * "FILE:LINE: message" line each, in err, and *cfg and *tls freed.
 */
static int main_load_into(const char *path, struct config **cfg,
                          struct tls_service **tls, char *err,
                          size_t err_len)
{
    size_t used = 0;
    int bad = 0;

    *tls = NULL;
    err[0] = '\0';
    if (config_load(path, cfg, err, err_len) != 0) {
        *cfg = NULL;
        return -1;
    }
    *tls = calloc((*cfg)->nservices, sizeof **tls);
    if (*tls == NULL) {
        snprintf(err, err_len, "%s: out of memory\n", path);
        main_free_loaded(*cfg, NULL);
        *cfg = NULL;
        return -1;
    }
    for (size_t i = 0; i < (*cfg)->nservices; i++) {
        if (tls_service_init(*cfg, &(*cfg)->services[i], &(*tls)[i],
                             err + used, err_len - used) != 0)
            bad = 1;
        used += strlen(err + used);
    }
    if (bad) {
        main_free_loaded(*cfg, *tls);
        *cfg = NULL;
        *tls = NULL;
        return -1;
    }
    return 0;
}

/* main_load - at start-up: main_load_into, problems on standard error. */
static int main_load(const char *path, struct runtime *rt)
{
    static char err[16384];

    if (main_load_into(path, &rt->cfg, &rt->tls, err, sizeof err) != 0) {
        fputs(err, stderr);
        return -1;
    }
    /* the resolver's files are read now, before any chroot */
    if (dns_needed(rt->cfg)) {
        if (dns_setup_load(&rt->dns, rt->cfg, err, sizeof err) != 0) {
            fprintf(stderr, "%s: %s\n", path, err);
            return -1;
        }
        rt->have_dns = true;
    }
    /* so is the MTA-STS cache: its directory is kept open for writing */
    if (config_sts_needed(rt->cfg) || config_tlsrpt_needed(rt->cfg)) {
        char warn[300];

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            fprintf(stderr, "%s: cannot initialise libcurl\n", path);
            return -1;
        }
        /* reports are sent by the fetcher, which needs a cache (kept in
         * memory when no service uses MTA-STS) */
        rt->sts = sts_cache_open(config_sts_needed(rt->cfg)
                                     ? rt->cfg->state_dir : NULL,
                                 err, sizeof err, warn, sizeof warn);
        if (rt->sts == NULL) {
            fprintf(stderr, "%s: %s\n", path, err);
            return -1;
        }
        if (warn[0] != '\0')
            fprintf(stderr, "%s: warning: %s\n", path, warn);
    }
    /* and the TLS reporting counts, with their directory */
    if (config_tlsrpt_needed(rt->cfg)) {
        char warn[300];

        rt->tlsrpt = tlsrpt_open(rt->cfg->tlsrpt_dir,
                                 rt->cfg->tlsrpt_interval, err, sizeof err,
                                 warn, sizeof warn);
        if (rt->tlsrpt == NULL) {
            fprintf(stderr, "%s: %s\n", path, err);
            return -1;
        }
        if (warn[0] != '\0')
            fprintf(stderr, "%s: warning: %s\n", path, warn);
    }
    return 0;
}

static void main_free(struct runtime *rt)
{
    if (rt->have_dns)
        dns_setup_free(&rt->dns);
    rt->have_dns = false;
    sts_cache_close(rt->sts);
    rt->sts = NULL;
    if (rt->tlsrpt != NULL) {
        char why[300];

        /* what the other workers counted after the sender's last save */
        if (tlsrpt_save(rt->tlsrpt, why, sizeof why) != 0)
            log_event(&rt->log, LOG_ERROR, 0, "event=tlsrpt_error "
                      "error=\"%s\"", why);
        tlsrpt_close(rt->tlsrpt);
        rt->tlsrpt = NULL;
    }
    if (rt->gen != NULL)
        generation_release(rt->gen);     /* the cfg and tls are its */
    else
        main_free_loaded(rt->cfg, rt->tls);
    rt->gen = NULL;
    rt->cfg = NULL;
    rt->tls = NULL;
}

/*
 * main_reload_refusal - what a reload cannot change: workers (each has
 * its own listening sockets and loop), log, user, group, chroot, and
 * what is set up once at start (the resolver, the MTA-STS cache, TLS
 * reporting, the metrics endpoint).  Services and listen addresses may
 * change (main_reload).
 * NULL when cfg can replace old.
 */
static const char *main_reload_refusal(const struct config *old,
                                       const struct config *cfg)
{
    if (cfg->workers != old->workers)
        return "workers cannot change by reload (restart to change it)";
    if (cfg->log_target != old->log_target)
        return "log cannot change by reload";
    if ((cfg->user == NULL) != (old->user == NULL) ||
        (cfg->user != NULL && strcmp(cfg->user, old->user) != 0) ||
        (cfg->group == NULL) != (old->group == NULL) ||
        (cfg->group != NULL && strcmp(cfg->group, old->group) != 0) ||
        (cfg->chroot_dir == NULL) != (old->chroot_dir == NULL) ||
        (cfg->chroot_dir != NULL &&
         strcmp(cfg->chroot_dir, old->chroot_dir) != 0))
        return "user, group and chroot cannot change by reload";
    if (strcmp(cfg->dns_resolver, old->dns_resolver) != 0 ||
        strcmp(cfg->dns_trust_anchor, old->dns_trust_anchor) != 0 ||
        cfg->dns_timeout != old->dns_timeout)
        return "dns_resolver, dns_trust_anchor and dns_timeout cannot "
               "change by reload";
    if (dns_needed(cfg) && !dns_needed(old))
        return "the DNS resolver is set up at start: mx: backends and "
               "DANE need a restart when none was in use";
    if (strcmp(cfg->state_dir, old->state_dir) != 0 ||
        cfg->sts_timeout != old->sts_timeout ||
        cfg->sts_policy_port != old->sts_policy_port)
        return "state_dir, sts_timeout and sts_policy_port cannot change "
               "by reload";
    if (cfg->tlsrpt != old->tlsrpt ||
        strcmp(cfg->tlsrpt_dir, old->tlsrpt_dir) != 0 ||
        cfg->tlsrpt_interval != old->tlsrpt_interval ||
        strcmp(cfg->tlsrpt ? cfg->tlsrpt_organization : "",
               old->tlsrpt ? old->tlsrpt_organization : "") != 0 ||
        strcmp(cfg->tlsrpt ? cfg->tlsrpt_contact : "",
               old->tlsrpt ? old->tlsrpt_contact : "") != 0)
        return "the tlsrpt keys cannot change by reload";
    if (config_tlsrpt_needed(cfg) && !config_tlsrpt_needed(old))
        return "TLS reporting is set up at start: the first service that "
               "reports needs a restart";
    if (config_sts_needed(cfg) && !config_sts_needed(old))
        return "the MTA-STS cache is opened at start: backend_tls = sts "
               "needs a restart when no service used it";
    if (cfg->nmetrics_listen != old->nmetrics_listen)
        return "metrics_listen cannot change by reload";
    for (size_t i = 0; i < cfg->nmetrics_listen; i++)
        if (strcmp(cfg->metrics_listen[i].text,
                   old->metrics_listen[i].text) != 0)
            return "metrics_listen cannot change by reload";
    return NULL;
}

/* main_old_service - the service of the current generation named name,
 * or -1 (at start, or when the reload adds it). */
static long main_old_service(const struct runtime *rt, const char *name)
{
    for (size_t i = 0; rt->gen != NULL && i < rt->cfg->nservices; i++)
        if (strcmp(rt->cfg->services[i].name, name) == 0)
            return (long)i;
    return -1;
}

/* main_generation_discard - a generation main_generation could not
 * finish, without its cfg and tls (the caller frees those). */
static void main_generation_discard(struct generation *g)
{
    g->cfg = NULL;
    g->tls = NULL;
    free(g->slots);
    free(g->backend_sess);
    free(g);
}

/*
 * main_generation - a generation of cfg and tls, with the resolver's
 * settings read at start, room for each worker's backend TLS sessions,
 * and each service's slot in the connection limits and the workers'
 * counters (stats.h): a service the current generation has by name
 * keeps its slot (and so its counts), any other gets a fresh one, even
 * one that an earlier reload removed.  The workers' counters grow here,
 * before the generation is handed to them (at start they are made with
 * the workers).
 */
static struct generation *main_generation(struct runtime *rt,
                                          struct config *cfg,
                                          struct tls_service *tls,
                                          unsigned long id)
{
    struct generation *g = generation_new(cfg, tls, id);
    size_t next = rt->next_slot;

    if (g == NULL)
        return NULL;
    g->dns = rt->have_dns ? &rt->dns : NULL;
    g->sts = rt->sts;
    g->tlsrpt = rt->tlsrpt;
    g->slots = calloc(cfg->nservices ? cfg->nservices : 1,
                      sizeof *g->slots);
    if (g->slots == NULL ||
        generation_keep_sessions(g, rt->nworkers) != 0) {
        main_generation_discard(g);
        return NULL;
    }
    for (size_t i = 0; i < cfg->nservices; i++) {
        long o = main_old_service(rt, cfg->services[i].name);

        g->slots[i] = o >= 0 ? rt->gen->slots[o] : next++;
    }
    if (next > STATS_CHUNK * STATS_MAX_CHUNKS) {
        main_generation_discard(g);
        errno = ENOSPC;          /* every slot this process had is used */
        return NULL;
    }
    if (rt->limits != NULL && connlimit_reserve(rt->limits, next) != 0) {
        main_generation_discard(g);
        return NULL;
    }
    for (unsigned w = 0; rt->workers != NULL && w < rt->nworkers; w++)
        if (stats_reserve(&rt->workers[w].ctx.stats, next) != 0) {
            main_generation_discard(g);
            return NULL;
        }
    rt->next_slot = next;
    return g;
}

/* main_log_lines - each line of text as event=reload_error. */
static void main_log_lines(const struct logger *log, const char *text)
{
    char esc[600];

    while (*text != '\0') {
        const char *nl = strchr(text, '\n');
        size_t n = nl ? (size_t)(nl - text) : strlen(text);

        log_escape(esc, sizeof esc, text, n);
        log_event(log, LOG_ERROR, 0, "event=reload_error error=\"%s\"", esc);
        text += n + (nl ? 1 : 0);
    }
}

/* main_sessions - live sessions, all workers (each counts its own). */
static unsigned long main_sessions(const struct runtime *rt)
{
    unsigned long n = 0;

    for (unsigned i = 0; i < rt->nworkers; i++)
        n += __atomic_load_n(&rt->workers[i].ctx.nsessions, __ATOMIC_RELAXED);
    return n;
}

/* main_notify - tell the service manager state, with our status line
 * (a no-op without $NOTIFY_SOCKET). */
static void main_notify(const struct runtime *rt, const char *state)
{
    char msg[256];

    if (!sdnotify_enabled())
        return;
    snprintf(msg, sizeof msg, "%s%sSTATUS=%s, %lu sessions\nMAINPID=%ld",
             state, state[0] ? "\n" : "",
             rt->draining ? "stopping" : "accepting", main_sessions(rt),
             (long)getpid());
    if (sdnotify_send(msg) != 0)
        log_event(&rt->log, LOG_WARN, 0, "event=notify_failed error=\"%s\"",
                  strerror(errno));
}

/* main_health - /healthz: 200 "ok" while every worker runs and accepts,
 * 503 with the reason otherwise (a graceful stop, a worker gone). */
static int main_health(const struct runtime *rt, struct promtext_buf *body)
{
    if (rt->draining) {
        promtext_printf(body, "draining\n");
        return 503;
    }
    for (unsigned i = 0; i < rt->nworkers; i++)
        if (worker_finished(&rt->workers[i])) {
            promtext_printf(body, "worker %u stopped\n", i + 1);
            return 503;
        }
    promtext_printf(body, "ok\n");
    for (size_t i = 0; i < rt->cfg->nservices; i++) {
        const char *name = rt->cfg->services[i].name, *why;
        int st = health_state(rt->health, name, &why);

        if (rt->cfg->services[i].backend_health == BACKEND_HEALTH_NONE)
            continue;
        promtext_printf(body, "backend %s %s%s%s%s\n", name,
                        st == HEALTH_UP ? "up" : st == HEALTH_DOWN ? "down"
                                                                   : "unknown",
                        why[0] ? " (" : "", why, why[0] ? ")" : "");
    }
    return 200;
}

/*
 * main_metrics_render - a scrape (metrics.h), on the main loop: the
 * workers' counters summed (stats.h, no lock), then what the main thread
 * itself knows: reloads, the current generation's certificates, the
 * build.
 */
static int main_metrics_render(void *ud, enum promtext_req what,
                               struct promtext_buf *body,
                               const char **content_type)
{
    struct runtime *rt = ud;
    const struct stats *w[256];
    size_t n = 0;

    if (what == PROMTEXT_HEALTHZ)
        return main_health(rt, body);
    *content_type = PROMTEXT_CONTENT_TYPE;
    for (unsigned i = 0; i < rt->nworkers && n < 256; i++)
        w[n++] = &rt->workers[i].ctx.stats;
    stats_render(body, w, n, rt->cfg, rt->gen->slots);
    promtext_family(body, "starttls_proxy_reloads_total", "counter",
                    "Configuration reloads (SIGHUP), by result.");
    promtext_sample(body, "starttls_proxy_reloads_total",
                    (const char *const[]){ "result", "ok", NULL },
                    (double)rt->reloads_ok);
    promtext_sample(body, "starttls_proxy_reloads_total",
                    (const char *const[]){ "result", "failed", NULL },
                    (double)rt->reloads_failed);
    promtext_family(body, "starttls_proxy_certificate_expiry_timestamp_seconds",
                    "gauge", "End of validity (notAfter) of each certificate "
                    "a service serves, in seconds since the epoch.");
    for (size_t i = 0; i < rt->cfg->nservices; i++) {
        char subject[256];
        long long until;

        for (size_t k = 0; tls_service_cert_expiry(&rt->tls[i], k, subject,
                                                    sizeof subject, &until);
             k++) {
            const char *l[] = { "service", rt->cfg->services[i].name,
                                "name", subject, NULL };

            if (until >= 0)
                promtext_sample(body,
                    "starttls_proxy_certificate_expiry_timestamp_seconds", l,
                    (double)until);
        }
    }
    promtext_family(body, "starttls_proxy_backend_up", "gauge",
                    "The last backend_health probe of each service that "
                    "has one: 1 up, 0 down.");
    for (size_t i = 0; i < rt->cfg->nservices; i++) {
        int st = health_state(rt->health, rt->cfg->services[i].name, NULL);

        if (st != HEALTH_UNKNOWN)
            promtext_sample(body, "starttls_proxy_backend_up",
                            (const char *const[]){
                                "service", rt->cfg->services[i].name, NULL },
                            st == HEALTH_UP ? 1 : 0);
    }
    promtext_family(body, "starttls_proxy_build_info", "gauge",
                    "Versions of the proxy and the libraries it runs on.");
    promtext_sample(body, "starttls_proxy_build_info",
                    (const char *const[]){ "version", STARTTLS_PROXY_VERSION,
                                           "openssl",
                                           OpenSSL_version(OPENSSL_VERSION_STRING),
                                           "libuv", uv_version_string(),
                                           NULL }, 1);
    return 200;
}

/* main_metrics_sockets - a listening socket per metrics_listen address,
 * bound with the others (before the privilege drop); NULL with a message
 * in err.  None configured: an empty array. */
static int *main_metrics_sockets(const struct config *cfg, char *err,
                                 size_t err_len)
{
    int *fds = calloc(cfg->nmetrics_listen + 1, sizeof *fds);

    if (fds == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cfg->nmetrics_listen; i++) {
        const struct listen_addr *a = &cfg->metrics_listen[i];

        if (listener_check_free(a, err, err_len) != 0 ||
            (fds[i] = listener_socket(a, err, err_len)) < 0) {
            while (i-- > 0)
                close(fds[i]);
            free(fds);
            return NULL;
        }
    }
    return fds;
}

static void main_on_status(uv_timer_t *t)
{
    main_notify(t->data, "");
}

/* main_find_listen - the service of cfg that listens on addr, or -1. */
static long main_find_listen(const struct config *cfg,
                             const struct sockaddr_storage *addr)
{
    for (size_t i = 0; i < cfg->nservices; i++)
        for (size_t j = 0; j < cfg->services[i].nlisten; j++)
            if (netaddr_same(&cfg->services[i].listen[j].addr, addr))
                return (long)i;
    return -1;
}

/*
 * main_reload_sockets - a reload's new listening sockets: for each
 * address of cfg the current configuration does not listen on, one per
 * worker, checked and bound as at start (main_sockets).  Returns
 * nworkers rows of *per_worker entries (cfg's addresses in service
 * order; -1: kept, the worker has it), or NULL with the reason in err,
 * nothing left open.  Ports below 1024 need a privilege the proxy gave
 * up when it dropped root (setuid clears every capability): err says so.
 */
static int *main_reload_sockets(const struct runtime *rt,
                                const struct config *cfg, size_t *per_worker,
                                char *err, size_t err_len)
{
    size_t total = 0, k = 0;
    int *fds;

    for (size_t i = 0; i < cfg->nservices; i++)
        total += cfg->services[i].nlisten;
    fds = malloc((total ? total : 1) * rt->nworkers * sizeof *fds);
    if (fds == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    for (size_t n = 0; n < total * rt->nworkers; n++)
        fds[n] = -1;
    for (size_t i = 0; i < cfg->nservices; i++)
        for (size_t j = 0; j < cfg->services[i].nlisten; j++, k++) {
            const struct listen_addr *a = &cfg->services[i].listen[j];
            int fail = 0;

            if (main_find_listen(rt->cfg, &a->addr) >= 0)
                continue;                 /* kept: the workers have it */
            if (listener_check_free(a, err, err_len) != 0)
                fail = 1;
            for (unsigned w = 0; !fail && w < rt->nworkers; w++)
                if ((fds[w * total + k] = listener_socket(a, err,
                                                          err_len)) < 0)
                    fail = 1;
            if (!fail)
                continue;
            if (errno == EACCES && netaddr_port(&a->addr) < 1024) {
                size_t used = strlen(err);

                snprintf(err + used, err_len - used, "\nports below 1024 "
                         "need CAP_NET_BIND_SERVICE, which a proxy started "
                         "as root gives up with root: run it as its user "
                         "with the capability (systemd: User= and "
                         "AmbientCapabilities=CAP_NET_BIND_SERVICE), or "
                         "restart it");
            }
            for (size_t n = 0; n < total * rt->nworkers; n++)
                if (fds[n] >= 0)
                    close(fds[n]);
            free(fds);
            return NULL;
        }
    *per_worker = total;
    return fds;
}

/* main_log_changes - what a reload from old to cfg added and removed:
 * services (by name) and listen addresses (by address). */
static void main_log_changes(const struct logger *log, unsigned long gen,
                             const struct config *old,
                             const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct service *svc = &cfg->services[i];
        bool known = false;

        for (size_t o = 0; o < old->nservices && !known; o++)
            known = strcmp(old->services[o].name, svc->name) == 0;
        if (!known)
            log_event(log, LOG_INFO, 0, "event=reload_change generation=%lu "
                      "change=service_added service=%s", gen, svc->name);
        for (size_t j = 0; j < svc->nlisten; j++) {
            long o = main_find_listen(old, &svc->listen[j].addr);

            if (o < 0)
                log_event(log, LOG_INFO, 0, "event=reload_change "
                          "generation=%lu change=listen_added service=%s "
                          "listen=%s", gen, svc->name, svc->listen[j].text);
            else if (strcmp(old->services[o].name, svc->name) != 0)
                log_event(log, LOG_INFO, 0, "event=reload_change "
                          "generation=%lu change=listen_moved service=%s "
                          "from=%s listen=%s", gen, svc->name,
                          old->services[o].name, svc->listen[j].text);
        }
    }
    for (size_t o = 0; o < old->nservices; o++) {
        const struct service *svc = &old->services[o];
        bool kept = false;

        for (size_t i = 0; i < cfg->nservices && !kept; i++)
            kept = strcmp(cfg->services[i].name, svc->name) == 0;
        if (!kept)
            log_event(log, LOG_INFO, 0, "event=reload_change generation=%lu "
                      "change=service_removed service=%s", gen, svc->name);
        for (size_t j = 0; j < svc->nlisten; j++)
            if (main_find_listen(cfg, &svc->listen[j].addr) < 0)
                log_event(log, LOG_INFO, 0, "event=reload_change "
                          "generation=%lu change=listen_removed service=%s "
                          "listen=%s", gen, svc->name, svc->listen[j].text);
    }
}

/* main_cert_known - did ts (NULL: no such service) serve a certificate
 * with this SHA-256? */
static bool main_cert_known(const struct tls_service *ts,
                            const unsigned char sha256[32])
{
    char subject[8], until[8];
    unsigned char md[32];

    for (size_t n = 0; ts != NULL && tls_service_cert(ts, n, subject,
                                                       sizeof subject, until,
                                                       sizeof until, md);
         n++)
        if (memcmp(md, sha256, sizeof md) == 0)
            return true;
    return false;
}

/* main_log_certificates - each certificate of gen's services, with its
 * end of validity and whether the previous generation (old, oldtls)
 * served it: changed=no (the same), yes (the service had others), new
 * (an added service, or one that had none). */
static void main_log_certificates(const struct logger *log,
                                  const struct generation *gen,
                                  const struct config *old,
                                  const struct tls_service *oldtls)
{
    for (size_t i = 0; i < gen->cfg->nservices; i++) {
        const struct tls_service *prev = NULL;
        char subject[256], esc[300], until[32];
        unsigned char md[32];

        for (size_t o = 0; o < old->nservices && prev == NULL; o++)
            if (strcmp(old->services[o].name, gen->cfg->services[i].name) == 0)
                prev = &oldtls[o];
        if (prev != NULL && prev->server == NULL)
            prev = NULL;
        for (size_t n = 0; tls_service_cert(&gen->tls[i], n, subject,
                                             sizeof subject, until,
                                             sizeof until, md); n++) {
            log_escape(esc, sizeof esc, subject, strlen(subject));
            log_event(log, LOG_INFO, 0, "event=reload_certificate "
                      "generation=%lu service=%s subject=\"%s\" "
                      "not_after=%s changed=%s", gen->id,
                      gen->cfg->services[i].name, esc, until,
                      prev == NULL ? "new"
                      : main_cert_known(prev, md) ? "no" : "yes");
        }
    }
}

/*
 * main_reload - SIGHUP: read the configuration and every certificate,
 * key and CA file again, checked as -t checks them; on success new
 * sessions use it (sessions in flight finish on theirs), on failure the
 * problems are logged and the old one stays.
 */
static void main_reload(struct runtime *rt)
{
    static char err[16384];
    struct config *cfg;
    struct tls_service *tls;
    struct generation *gen;
    const char *why;
    char state[96];
    size_t per_worker = 0, next_slot = rt->next_slot;
    int *fds;

    snprintf(state, sizeof state, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)(uv_hrtime() / 1000));
    main_notify(rt, state);
    rt->reloads++;
    if (main_load_into(rt->path, &cfg, &tls, err, sizeof err) != 0) {
        main_log_lines(&rt->log, err);
        rt->reloads_failed++;
        log_event(&rt->log, LOG_ERROR, 0, "event=reload result=failed "
                  "generation=%lu reason=\"configuration refused\"",
                  rt->gen->id);
        pidfile_state(&rt->pf, rt->reloads, rt->gen->id, "failed");
        main_notify(rt, "READY=1");
        return;
    }
    errno = 0;
    if ((why = main_reload_refusal(rt->cfg, cfg)) != NULL ||
        (gen = main_generation(rt, cfg, tls, rt->gen->id + 1)) == NULL) {
        if (why == NULL)
            why = errno == ENOSPC
                      ? "too many services added over the process's life "
                        "(their counters are kept): restart"
                      : "out of memory";
        log_event(&rt->log, LOG_ERROR, 0, "event=reload result=failed "
                  "generation=%lu reason=\"%s\"", rt->gen->id, why);
        main_free_loaded(cfg, tls);
        rt->reloads_failed++;
        pidfile_state(&rt->pf, rt->reloads, rt->gen->id, "failed");
        main_notify(rt, "READY=1");
        return;
    }
    /* every new address is bound before anything changes: one that
     * cannot be fails the whole reload */
    if ((fds = main_reload_sockets(rt, cfg, &per_worker, err,
                                   sizeof err)) == NULL) {
        main_log_lines(&rt->log, err);
        log_event(&rt->log, LOG_ERROR, 0, "event=reload result=failed "
                  "generation=%lu reason=\"a listen address cannot be "
                  "bound\"", rt->gen->id);
        generation_release(gen);          /* and cfg and tls with it */
        rt->next_slot = next_slot;  /* its new slots were never used */
        rt->reloads_failed++;
        pidfile_state(&rt->pf, rt->reloads, rt->gen->id, "failed");
        main_notify(rt, "READY=1");
        return;
    }
    /* by name: a service that moved keeps its ticket keys, an added one
     * has fresh ones */
    for (size_t i = 0; i < cfg->nservices; i++) {
        long o = main_old_service(rt, cfg->services[i].name);

        if (o >= 0)
            tls_service_keep_tickets(&tls[i], &rt->tls[o]);
    }
    for (unsigned i = 0; i < rt->nworkers; i++)
        worker_request_reload(&rt->workers[i], gen, fds + i * per_worker,
                              per_worker);
    free(fds);
    log_event(&rt->log, LOG_INFO, 0, "event=reload result=ok generation=%lu "
              "services=%zu", gen->id, cfg->nservices);
    main_log_changes(&rt->log, gen->id, rt->cfg, cfg);
    main_log_certificates(&rt->log, gen, rt->cfg, rt->tls);
    generation_release(rt->gen);
    rt->gen = gen;
    rt->cfg = cfg;
    rt->tls = tls;
    rt->log.level = cfg->log_level;
    rt->reloads_ok++;
    {
        struct health *old = rt->health;

        rt->health = health_start(uv_handle_get_loop((uv_handle_t *)
                                                     &rt->worker_done),
                                  cfg, &rt->log, old);
        health_close(old);
    }
    pidfile_state(&rt->pf, rt->reloads, gen->id, "ok");
    main_notify(rt, "READY=1");
}

static void main_on_hup(uv_signal_t *h, int signum)
{
    struct runtime *rt = h->data;

    (void)signum;
    if (rt->draining) {
        rt->reloads_failed++;
        log_event(&rt->log, LOG_WARN, 0,
                  "event=reload result=failed reason=\"stopping\"");
        return;
    }
    main_reload(rt);
}

/*
 * main_on_signal - SIGTERM and SIGQUIT stop gracefully (drain_timeout
 * bounds it); SIGINT, or a second SIGTERM or SIGQUIT, stops at once.
 */
static void main_on_signal(uv_signal_t *h, int signum)
{
    struct runtime *rt = h->data;
    bool now = signum == SIGINT || rt->draining;

    log_event(&rt->log, LOG_INFO, 0, "event=stopping signal=%s mode=%s",
              signum == SIGTERM ? "TERM" : signum == SIGQUIT ? "QUIT" : "INT",
              now ? "now" : "drain");
    if (!rt->draining)
        main_notify(rt, "STOPPING=1");
    rt->draining = true;
    for (unsigned i = 0; i < rt->nworkers; i++)
        worker_request_stop(&rt->workers[i], now ? WORKER_NOW : WORKER_DRAIN);
}

/* main_on_worker_done - when every worker thread has ended, the main
 * loop closes its handles and runs dry. */
static void main_on_worker_done(uv_async_t *a)
{
    struct runtime *rt = a->data;

    sigset_t late;

    for (unsigned i = 0; i < rt->nworkers; i++)
        if (!worker_finished(&rt->workers[i]))
            return;
    /* from now on a late SIGTERM (a second one from an impatient
     * manager) must not turn the clean exit into death by signal: it
     * stays pending, blocked, until the process is gone */
    sigemptyset(&late);
    sigaddset(&late, SIGTERM);
    sigaddset(&late, SIGQUIT);
    sigaddset(&late, SIGINT);
    sigaddset(&late, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &late, NULL);
    uv_close((uv_handle_t *)&rt->sigterm, NULL);
    uv_close((uv_handle_t *)&rt->sigquit, NULL);
    uv_close((uv_handle_t *)&rt->sigint, NULL);
    for (size_t i = 0; i < 3; i++)
        uv_close((uv_handle_t *)&rt->ignored[i], NULL);
    uv_close((uv_handle_t *)&rt->worker_done, NULL);
    metrics_close(rt->metrics);
    rt->metrics = NULL;
    health_close(rt->health);
    rt->health = NULL;
    if (rt->status_on)
        uv_close((uv_handle_t *)&rt->status_timer, NULL);
}

/*
 * main_on_ignored - SIGUSR1 and SIGUSR2 are logged and otherwise
 * ignored: by default each would end the process.
 */
static void main_on_ignored(uv_signal_t *h, int signum)
{
    struct runtime *rt = h->data;

    log_event(&rt->log, LOG_INFO, 0, "event=signal signal=%s "
              "action=ignored", signum == SIGUSR1 ? "USR1" : "USR2");
}

/*
 * main_raise_nofile - as many descriptors as the hard limit allows; each
 * session needs two.  Returns the resulting soft limit.
 */
static unsigned long main_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (unsigned long)rl.rlim_cur;
}

#define MAIN_DEFAULT_USER "starttls-proxy"

/* main_needs_net_admin - does a service set options on its backend
 * sockets that need CAP_NET_ADMIN (SO_MARK, IP_TRANSPARENT)? */
static bool main_needs_net_admin(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nservices; i++)
        if (cfg->services[i].backend_mark != 0 ||
            cfg->services[i].transparent_source == TRANSPARENT_SOURCE_CLIENT)
            return true;
    return false;
}

/*
 * main_keep_net_admin - after setuid with PR_SET_KEEPCAPS: CAP_NET_ADMIN
 * alone stays permitted and effective (no other capability, none
 * inheritable), for the backend sockets' SO_MARK and IP_TRANSPARENT.
 * Before any worker thread starts: capabilities are per thread, and
 * threads inherit them.
 */
static int main_keep_net_admin(void)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

    memset(d, 0, sizeof d);
    d[CAP_TO_INDEX(CAP_NET_ADMIN)].permitted = CAP_TO_MASK(CAP_NET_ADMIN);
    d[CAP_TO_INDEX(CAP_NET_ADMIN)].effective = CAP_TO_MASK(CAP_NET_ADMIN);
    if (syscall(SYS_capset, &h, d) != 0)
        return -1;
    (void)prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    return 0;
}

/*
 * main_drop_privileges - once every socket is bound and every certificate,
 * key and CA file read: chroot (if asked), then the user's group and
 * user, with no supplementary groups (setgid before setuid), and a check
 * that root cannot be regained.  Without "user", a proxy started as root
 * becomes the user starttls-proxy if it exists, and otherwise stays root
 * with a warning.  Returns -1 with a message in err.
 */
static int main_drop_privileges(const struct config *cfg,
                                const struct logger *log, char *err,
                                size_t err_len)
{
    const char *name = cfg->user ? cfg->user : MAIN_DEFAULT_USER;
    struct passwd *pw;
    struct group *gr;
    gid_t gid;
    bool keep;

    if (geteuid() != 0) {
        if (cfg->user != NULL || cfg->chroot_dir != NULL)
            log_event(log, LOG_WARN, 0, "event=privileges action=none "
                      "reason=\"not started as root\" uid=%lu",
                      (unsigned long)geteuid());
        return 0;
    }
    pw = getpwnam(name);
    if (pw == NULL) {
        if (cfg->user != NULL) {
            snprintf(err, err_len, "user %s does not exist", name);
            return -1;
        }
        log_event(log, LOG_WARN, 0, "event=privileges action=none "
                  "reason=\"running as root: set user in [proxy], or create "
                  "the user %s\"", MAIN_DEFAULT_USER);
        if (cfg->chroot_dir == NULL)
            return 0;
    }
    gid = pw != NULL ? pw->pw_gid : 0;
    if (cfg->group != NULL) {
        if ((gr = getgrnam(cfg->group)) == NULL) {
            snprintf(err, err_len, "group %s does not exist", cfg->group);
            return -1;
        }
        gid = gr->gr_gid;
    }
    if (cfg->chroot_dir != NULL &&
        (chroot(cfg->chroot_dir) != 0 || chdir("/") != 0)) {
        snprintf(err, err_len, "chroot %s: %s", cfg->chroot_dir,
                 strerror(errno));
        return -1;
    }
    if (pw == NULL)
        return 0;                /* chroot only, still root (warned) */
    keep = pw->pw_uid != 0 && main_needs_net_admin(cfg);
    if (keep && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) {
        snprintf(err, err_len, "PR_SET_KEEPCAPS: %s", strerror(errno));
        return -1;
    }
    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        snprintf(err, err_len, "cannot become user %s: %s", name,
                 strerror(errno));
        return -1;
    }
    /* backend_mark, transparent_source = client: CAP_NET_ADMIN alone */
    if (keep && main_keep_net_admin() != 0) {
        snprintf(err, err_len, "cannot keep CAP_NET_ADMIN as %s: %s", name,
                 strerror(errno));
        return -1;
    }
    if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        snprintf(err, err_len, "root could be regained after becoming %s",
                 name);
        return -1;
    }
#if defined(__SANITIZE_ADDRESS__)
    /* test builds only: LeakSanitizer stops the threads with ptrace at
     * exit, which a process that changed its credentials (not dumpable)
     * refuses; a production build never makes itself dumpable */
    (void)prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
#endif
    log_event(log, LOG_INFO, 0, "event=privileges user=%s uid=%lu gid=%lu "
              "chroot=%s capabilities=%s", name, (unsigned long)pw->pw_uid,
              (unsigned long)gid, cfg->chroot_dir ? cfg->chroot_dir : "none",
              keep ? "cap_net_admin" : "none");
    return 0;
}

/* Sockets handed over by the service manager (socket activation). */
struct activated {
    int n;                       /* fds 3 .. 3+n-1 */
    char **names;                /* $LISTEN_FDNAMES, or NULL */
    char *names_buf;
    bool *used;
};

/* main_activated_fd - the passed socket that listens on a, or -1. */
static int main_activated_fd(struct activated *act,
                             const struct listen_addr *a)
{
    for (int i = 0; i < act->n; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = SD_LISTEN_FDS_START + i, type, listening;
        socklen_t olen = sizeof type;

        if (act->used[i] ||
            getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen) != 0 ||
            type != SOCK_STREAM)
            continue;
        olen = sizeof listening;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &olen) != 0 ||
            !listening)
            continue;
        if (netaddr_same_host(&ss, &a->addr) &&
            netaddr_port(&ss) == netaddr_port(&a->addr)) {
            act->used[i] = true;
            return fd;
        }
    }
    return -1;
}

/*
 * main_sockets - every listening socket, workers x addresses, bound before
 * any thread starts so that a bind error stops start-up cleanly.  An
 * address the service manager passed a socket for (act) uses that
 * socket, shared by every worker; a passed socket no address wants is
 * an error.
 */
static int *main_sockets(const struct config *cfg, unsigned nworkers,
                         struct activated *act, const struct logger *log,
                         size_t *per_worker, char *err, size_t err_len)
{
    size_t n = 0, k = 0;
    int *fds, passed;

    for (size_t i = 0; i < cfg->nservices; i++)
        n += cfg->services[i].nlisten;
    fds = calloc(n * nworkers, sizeof *fds);
    if (fds == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    for (unsigned wi = 0; wi < nworkers; wi++)
        for (size_t i = 0; i < cfg->nservices; i++)
            for (size_t j = 0; j < cfg->services[i].nlisten; j++) {
                const struct listen_addr *a = &cfg->services[i].listen[j];

                if (wi == 0 && (passed = main_activated_fd(act, a)) >= 0) {
                    (void)fcntl(passed, F_SETFL,
                                fcntl(passed, F_GETFL) | O_NONBLOCK);
                    log_event(log, LOG_INFO, 0, "event=socket_activation "
                              "listen=%s fd=%d name=%s", a->text, passed,
                              act->names && act->names[passed - 3]
                                  ? act->names[passed - 3] : "none");
                    fds[k++] = passed;
                    continue;
                }
                if (wi > 0 && fds[k - n] < SD_LISTEN_FDS_START + act->n &&
                    fds[k - n] >= SD_LISTEN_FDS_START) {
                    /* every worker polls the one passed socket */
                    fds[k] = fcntl(fds[k - n], F_DUPFD_CLOEXEC, 0);
                    if (fds[k] < 0)
                        snprintf(err, err_len, "%s: %s", a->text,
                                 strerror(errno));
                } else {
                    /* the address is ours alone: no other process (and no
                     * other service here) listens there */
                    fds[k] = wi == 0 &&
                                     listener_check_free(a, err, err_len) != 0
                                 ? -1
                                 : listener_socket(a, err, err_len);
                }
                /* tproxy: the TPROXY rule hands this socket connections
                 * to addresses that are not ours (checked per packet, so
                 * it may be set after bind, also on a passed socket) */
                if (fds[k] >= 0 &&
                    cfg->services[i].transparent == TRANSPARENT_TPROXY &&
                    transparent_listen_opts(fds[k], a->addr.ss_family) != 0) {
                    snprintf(err, err_len, "listen %s: IP_TRANSPARENT "
                             "(transparent = tproxy needs CAP_NET_ADMIN): %s",
                             a->text, strerror(errno));
                    close(fds[k]);
                    fds[k] = -1;
                }
                if (fds[k] < 0) {
                    while (k-- > 0)
                        close(fds[k]);
                    free(fds);
                    return NULL;
                }
                k++;
            }
    for (int i = 0; i < act->n; i++) {
        if (!act->used[i]) {
            snprintf(err, err_len, "socket activation: fd %d matches no "
                     "listen address", SD_LISTEN_FDS_START + i);
            while (k-- > 0)
                close(fds[k]);
            free(fds);
            return NULL;
        }
    }
    *per_worker = n;
    return fds;
}

int main(int argc, char **argv)
{
    const char *path = CONFIG_DEFAULT_PATH;
    struct runtime rt;
    uv_loop_t loop;
    char err[512];
    int check = 0, signal_reload = 0, opt, rc = 0;
    sigset_t handled_signals, old_mask;
    size_t per_worker = 0;
    unsigned started = 0;
    unsigned long max_files;
    struct activated act;
    int *fds, *mfds = NULL;

    while ((opt = getopt(argc, argv, "c:ts:Vh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check = 1; break;
        case 's':
            if (strcmp(optarg, "reload") != 0) {
                fprintf(stderr, "starttls-proxy: -s %s: only -s reload "
                        "is known\n", optarg);
                return 1;
            }
            signal_reload = 1;
            break;
        case 'V': printf("starttls-proxy %s\n", STARTTLS_PROXY_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }
    if (signal_reload)
        return main_signal_reload(path);
    memset(&rt, 0, sizeof rt);
    rt.pf.fd = -1;
    rt.path = path;
    if (main_load(path, &rt) != 0) {
        main_free(&rt);
        return 1;
    }
    rt.nworkers = rt.cfg->workers ? rt.cfg->workers
                                  : (unsigned)uv_available_parallelism();
    if (rt.nworkers == 0)
        rt.nworkers = 1;
    if ((rt.gen = main_generation(&rt, rt.cfg, rt.tls, 1)) == NULL) {
        fprintf(stderr, "%s: out of memory\n", path);
        main_free(&rt);
        return 1;
    }
    if (check) {
        fprintf(stderr, "%s: syntax is ok\n", path);
        main_free(&rt);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    /*
     * From the first listening socket on, SIGTERM and SIGINT must end in a
     * clean stop (exit 0), and SIGHUP, SIGUSR1 and SIGUSR2 must not end it
     * at all, but the loop handles them only from uv_signal_start on:
     * until then they stay pending.  The worker threads inherit the mask
     * and never take them.
     */
    sigemptyset(&handled_signals);
    sigaddset(&handled_signals, SIGTERM);
    sigaddset(&handled_signals, SIGQUIT);
    sigaddset(&handled_signals, SIGINT);
    for (size_t i = 0; i < 3; i++)
        sigaddset(&handled_signals, main_ignored_signals[i]);
    pthread_sigmask(SIG_BLOCK, &handled_signals, &old_mask);
    rt.log.level = rt.cfg->log_level;
    rt.log.out = stderr;
    if (rt.cfg->log_target == LOG_TO_SYSLOG) {
        log_syslog_open();          /* before any chroot */
        rt.log.to_syslog = true;
    }
    max_files = main_raise_nofile();
    memset(&act, 0, sizeof act);
    act.n = sdnotify_listen_fds(&act.names, &act.names_buf);
    if (act.n < 0) {
        snprintf(err, sizeof err, "socket activation: bad LISTEN_FDS");
        fds = NULL;
    } else if (act.n > 0 &&
               (act.used = calloc((size_t)act.n, sizeof *act.used)) == NULL) {
        snprintf(err, sizeof err, "out of memory");
        fds = NULL;
    } else {
        fds = main_sockets(rt.cfg, rt.nworkers, &act, &rt.log, &per_worker,
                           err, sizeof err);
    }
    free(act.used);
    free(act.names);
    free(act.names_buf);
    if (fds != NULL &&
        (mfds = main_metrics_sockets(rt.cfg, err, sizeof err)) == NULL) {
        for (size_t k = 0; k < rt.nworkers * per_worker; k++)
            close(fds[k]);
        free(fds);
        fds = NULL;
    }
    rt.workers = calloc(rt.nworkers, sizeof *rt.workers);
    rt.limits = connlimit_new(rt.cfg->nservices);
    if (fds != NULL && strcmp(rt.cfg->pid_file, "none") != 0 &&
        pidfile_create(&rt.pf, rt.cfg->pid_file) != 0)
        log_event(&rt.log, LOG_WARN, 0, "event=pid_file path=%s error=\"%s\"",
                  rt.cfg->pid_file, strerror(errno));
    if (fds != NULL &&
        main_drop_privileges(rt.cfg, &rt.log, err, sizeof err) != 0) {
        for (size_t k = 0; k < rt.nworkers * per_worker; k++)
            close(fds[k]);
        free(fds);
        fds = NULL;
    }
    if (fds == NULL && mfds != NULL) {
        for (size_t k = 0; k < rt.cfg->nmetrics_listen; k++)
            close(mfds[k]);
        free(mfds);
        mfds = NULL;
    }
    if (fds == NULL || rt.workers == NULL || rt.limits == NULL ||
        uv_loop_init(&loop) != 0 ||
        uv_async_init(&loop, &rt.worker_done, main_on_worker_done) != 0) {
        fprintf(stderr, "%s: %s\n", path, fds == NULL ? err : "out of memory");
        pidfile_remove(&rt.pf);
        free(rt.workers);
        free(fds);
        connlimit_free(rt.limits);
        main_free(&rt);
        return 1;
    }
    for (; started < rt.nworkers; started++) {
        if (worker_start(&rt.workers[started], rt.gen, rt.limits, started,
                         fds + started * per_worker, &rt.worker_done, err,
                         sizeof err) != 0) {
            fprintf(stderr, "%s: %s\n", path, err);
            for (size_t k = (started + 1) * per_worker;
                 k < rt.nworkers * per_worker; k++)
                close(fds[k]);
            rc = 1;
            break;
        }
    }
    free(fds);
    rt.worker_done.data = &rt;
    if (rc == 0 && rt.cfg->nmetrics_listen > 0) {
        rt.metrics = metrics_open(&loop, &rt.log, mfds, rt.cfg->metrics_listen,
                                  rt.cfg->nmetrics_listen, main_metrics_render,
                                  &rt, err, sizeof err);
        /* the sockets are the server's now (or closed), the array not */
        if (rt.metrics == NULL) {
            fprintf(stderr, "%s: %s\n", path, err);
            rc = 1;
        }
    } else if (mfds != NULL) {
        for (size_t k = 0; k < rt.cfg->nmetrics_listen; k++)
            close(mfds[k]);
    }
    free(mfds);
    if (rc == 0) {
        uv_signal_init(&loop, &rt.sigterm);
        uv_signal_init(&loop, &rt.sigquit);
        uv_signal_init(&loop, &rt.sigint);
        rt.sigterm.data = rt.sigquit.data = rt.sigint.data = &rt;
        uv_signal_start(&rt.sigterm, main_on_signal, SIGTERM);
        uv_signal_start(&rt.sigquit, main_on_signal, SIGQUIT);
        uv_signal_start(&rt.sigint, main_on_signal, SIGINT);
        for (size_t i = 0; i < 3; i++) {
            uv_signal_init(&loop, &rt.ignored[i]);
            rt.ignored[i].data = &rt;
            uv_signal_start(&rt.ignored[i],
                            main_ignored_signals[i] == SIGHUP ? main_on_hup
                                                              : main_on_ignored,
                            main_ignored_signals[i]);
        }
        /* a stop requested during start-up is handled now */
        pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
        for (size_t i = 0; i < rt.cfg->nservices; i++) {
            const struct service *svc = &rt.cfg->services[i];

            for (size_t j = 0; j < svc->nlisten; j++)
                log_event(&rt.log, LOG_INFO, 0,
                          "event=listening service=%s listen=%s backend=%s%s%s",
                          svc->name, svc->listen[j].text,
                          svc->backend_host ? svc->backend_host
                                            : "original-destination",
                          svc->backend_host ? ":" : "",
                          svc->backend_host ? svc->backend_port : "");
        }
        log_event(&rt.log, LOG_INFO, 0,
                  "event=start version=%s hostname=%s workers=%u "
                  "max_files=%lu max_sessions=%lu",
                  STARTTLS_PROXY_VERSION, rt.cfg->hostname, rt.nworkers,
                  max_files, max_files > 64 ? (max_files - 64) / 2 : 0);
        rt.health = health_start(&loop, rt.cfg, &rt.log, NULL);
        main_notify(&rt, "READY=1");
        if (sdnotify_enabled()) {
            uv_timer_init(&loop, &rt.status_timer);
            rt.status_timer.data = &rt;
            uv_timer_start(&rt.status_timer, main_on_status, 5000, 5000);
            rt.status_on = true;
        }
        uv_run(&loop, UV_RUN_DEFAULT);
    } else {
        rt.nworkers = started;
        for (unsigned i = 0; i < started; i++)
            worker_request_stop(&rt.workers[i], WORKER_NOW);
        uv_close((uv_handle_t *)&rt.worker_done, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    for (unsigned i = 0; i < rt.nworkers; i++)
        if (worker_join(&rt.workers[i]) != 0)
            rc = 1;
    for (unsigned i = 0; i < rt.nworkers; i++)
        stats_free(&rt.workers[i].ctx.stats);   /* read until now */
    if (uv_loop_close(&loop) != 0)
        rc = 1;
    log_event(&rt.log, LOG_INFO, 0, "event=stopped");
    pidfile_remove(&rt.pf);
    free(rt.workers);
    connlimit_free(rt.limits);
    main_free(&rt);
    return rc;
}
