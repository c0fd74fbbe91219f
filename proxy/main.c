/*
 * main.c - command line, signals, the loop.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "tls.h"
#include "worker.h"

struct runtime {
    struct config *cfg;
    struct tls_service *tls;
    struct worker *worker;
    uv_signal_t sigterm;
    uv_signal_t sigint;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: starttls-proxy [-t] [-c FILE]\n"
            "       starttls-proxy -V | -h\n"
            "  -c FILE  configuration file (default %s)\n"
            "  -t       check the configuration, load every certificate and key, exit\n"
            "  -V       print the version\n"
            "  -h       print this help\n",
            CONFIG_DEFAULT_PATH);
}

/* main_load - config plus every service's TLS contexts. */
static int main_load(const char *path, struct runtime *rt)
{
    char err[8192];
    int bad = 0;

    if (config_load(path, &rt->cfg, err, sizeof err) != 0) {
        fputs(err, stderr);
        return -1;
    }
    rt->tls = calloc(rt->cfg->nservices, sizeof *rt->tls);
    if (rt->tls == NULL) {
        fprintf(stderr, "%s: out of memory\n", path);
        return -1;
    }
    for (size_t i = 0; i < rt->cfg->nservices; i++) {
        if (tls_service_init(rt->cfg, &rt->cfg->services[i], &rt->tls[i], err,
                             sizeof err) != 0) {
            fputs(err, stderr);
            bad = 1;
        }
    }
    return bad ? -1 : 0;
}

static void main_free(struct runtime *rt)
{
    if (rt->tls != NULL && rt->cfg != NULL)
        for (size_t i = 0; i < rt->cfg->nservices; i++)
            tls_service_free(&rt->tls[i]);
    free(rt->tls);
    config_free(rt->cfg);
}

static void main_on_signal(uv_signal_t *h, int signum)
{
    struct runtime *rt = h->data;

    log_event(&rt->worker->log, LOG_INFO, 0, "event=stopping signal=%s",
              signum == SIGTERM ? "TERM" : "INT");
    worker_stop(rt->worker);
    uv_close((uv_handle_t *)&rt->sigterm, NULL);
    uv_close((uv_handle_t *)&rt->sigint, NULL);
}

int main(int argc, char **argv)
{
    const char *path = CONFIG_DEFAULT_PATH;
    struct runtime rt;
    struct worker *w;
    uv_loop_t loop;
    char err[512];
    int check = 0, opt, rc;

    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check = 1; break;
        case 'V': printf("starttls-proxy %s\n", STARTTLS_PROXY_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 1;
    }
    memset(&rt, 0, sizeof rt);
    if (main_load(path, &rt) != 0) {
        main_free(&rt);
        return 1;
    }
    if (check) {
        fprintf(stderr, "%s: syntax is ok\n", path);
        main_free(&rt);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);

    w = malloc(sizeof *w);
    if (w == NULL || uv_loop_init(&loop) != 0) {
        fprintf(stderr, "starttls-proxy: cannot start the event loop\n");
        free(w);
        main_free(&rt);
        return 1;
    }
    worker_init(w, &loop, rt.cfg, rt.tls, 0);
    rt.worker = w;
    if (worker_listen(w, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", path, err);
        uv_run(&loop, UV_RUN_DEFAULT);   /* let the closed listeners go */
        uv_loop_close(&loop);
        free(w);
        main_free(&rt);
        return 1;
    }
    uv_signal_init(&loop, &rt.sigterm);
    uv_signal_init(&loop, &rt.sigint);
    rt.sigterm.data = rt.sigint.data = &rt;
    uv_signal_start(&rt.sigterm, main_on_signal, SIGTERM);
    uv_signal_start(&rt.sigint, main_on_signal, SIGINT);
    log_event(&w->log, LOG_INFO, 0, "event=start version=%s hostname=%s",
              STARTTLS_PROXY_VERSION, rt.cfg->hostname);

    uv_run(&loop, UV_RUN_DEFAULT);

    rc = uv_loop_close(&loop) == 0 ? 0 : 1;
    log_event(&w->log, LOG_INFO, 0, "event=stopped");
    free(w);
    main_free(&rt);
    return rc;
}
