/*
 * fuzz_config.c - libFuzzer target for config_load_stream().
 *
 * The input is the INI file.  Whatever it holds, the loader must return
 * 0 with a config that keeps the promises of config.h, or -1 with at
 * least one "fuzz.ini:LINE: " error line; nothing may leak.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* check_config - the promises of a loaded config; abort() if one fails. */
static void check_config(const struct config *cfg)
{
    size_t i;

    if (cfg->hostname == NULL || cfg->nservices == 0 ||
        strcmp(cfg->path, "fuzz.ini") != 0)
        abort();
    for (i = 0; i < cfg->nservices; i++) {
        const struct service *s = &cfg->services[i];

        if (s->name == NULL || s->nlisten == 0 || s->listen == NULL ||
            s->backend_host == NULL || s->backend_port == NULL ||
            s->backend_verify_name == NULL || s->line <= 0)
            abort();
        if (s->idle_timeout < 1 || s->idle_timeout > 86400 ||
            s->max_line_length < 512 || s->max_line_length > 65536)
            abort();
        if ((s->client_tls != CLIENT_TLS_NONE || s->client_implicit_tls) &&
            (s->cert == NULL || s->key == NULL))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[2048];
    struct config *cfg = NULL;
    FILE *f;
    int r;

    if (size == 0 || size > 64 * 1024)
        return 0;  /* fmemopen() wants a size; the empty file is a test */
    f = fmemopen((void *)data, size, "r");
    if (f == NULL)
        return 0;
    r = config_load_stream(f, "fuzz.ini", &cfg, err, sizeof err);
    fclose(f);
    if (r == 0) {
        check_config(cfg);
        config_free(cfg);
    } else if (r != -1 || cfg != NULL || strncmp(err, "fuzz.ini:", 9) != 0 ||
               memchr(err, '\0', sizeof err) == NULL) {
        abort();
    }
    return 0;
}
