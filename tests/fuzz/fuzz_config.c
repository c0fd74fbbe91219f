/*
 * fuzz_config.c - libFuzzer target for config_load_stream().
 *
 * The input is the INI file.  Whatever it holds, the loader must return
 * 0 with a config that keeps the promises of config.h, or -1 with at
 * least one "fuzz.ini:LINE: " error line; nothing may leak.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

/* check_config - the promises of a loaded config. */
static void check_config(const struct config *cfg)
{
    size_t i, j;

    FUZZ_CHECK(cfg->hostname != NULL && cfg->nservices > 0);
    FUZZ_CHECK(strcmp(cfg->path, "fuzz.ini") == 0);
    for (i = 0; i < cfg->nservices; i++) {
        const struct service *s = &cfg->services[i];

        FUZZ_CHECK(s->name != NULL && s->line > 0);
        FUZZ_CHECK(s->nlisten > 0 && s->listen != NULL);
        for (j = 0; j < s->nlisten; j++)
            FUZZ_CHECK(s->listen[j].addr_len > 0 &&
                       s->listen[j].text[0] != '\0');
        FUZZ_CHECK(s->backend_host != NULL && s->backend_port != NULL);
        FUZZ_CHECK(s->backend_verify_name != NULL);
        FUZZ_CHECK(s->idle_timeout >= 1 && s->idle_timeout <= 86400);
        FUZZ_CHECK(s->max_line_length >= 512 &&
                   s->max_line_length <= 65536);
        FUZZ_CHECK((s->client_tls == CLIENT_TLS_NONE &&
                    !s->client_implicit_tls) ||
                   (s->cert != NULL && s->key != NULL));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[2048];
    struct config *cfg = NULL;
    FILE *f;
    int r;

    if (size == 0 || size > 64 * 1024)
        return 0;  /* fmemopen() needs a size; empty files: unit tests */
    f = fmemopen((void *)data, size, "r");
    if (f == NULL)
        return 0;
    r = config_load_stream(f, "fuzz.ini", &cfg, err, sizeof err);
    fclose(f);
    if (r == 0) {
        check_config(cfg);
        config_free(cfg);
    } else {
        FUZZ_CHECK(r == -1 && cfg == NULL);
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
        FUZZ_CHECK(strncmp(err, "fuzz.ini:", 9) == 0);
    }
    return 0;
}
