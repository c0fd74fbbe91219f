/*
 * fuzz_cmd.c - smtp_cmd_parse and smtp_bdat_parse on one command line
 * (the whole input, terminator already removed).
 */
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "smtp.h"

/* fuzz_bdat - smtp_bdat_parse on arg, checked against the grammar */
static void fuzz_bdat(const char *arg, size_t len)
{
    uint64_t size = 7;
    bool last = true;

    if (smtp_bdat_parse(arg, len, &size, &last) != 0) {
        FUZZ_CHECK(size == 7 && last);   /* untouched */
        return;
    }
    size_t digits = 0;
    uint64_t v = 0;
    while (digits < len && arg[digits] >= '0' && arg[digits] <= '9')
        v = v * 10 + (uint64_t)(arg[digits++] - '0');
    FUZZ_CHECK(digits >= 1 && digits <= 18);
    FUZZ_CHECK(v == size);
    FUZZ_CHECK(last == (digits < len));
    if (last)
        FUZZ_CHECK(arg[digits] == ' ' && len - digits >= 5 &&
                   strncasecmp(arg + len - 4, "LAST", 4) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    struct smtp_cmd cmd;

    smtp_cmd_parse(line, size, &cmd);
    FUZZ_CHECK((unsigned)cmd.verb < SMTP_VERB_COUNT);
    if (cmd.arg == NULL) {
        FUZZ_CHECK(cmd.arg_len == 0);
    } else {
        FUZZ_CHECK(cmd.arg > line && cmd.arg_len > 0);
        FUZZ_CHECK(cmd.arg + cmd.arg_len <= line + size);
        FUZZ_CHECK(cmd.arg[-1] == ' ');
        FUZZ_CHECK(cmd.arg[0] != ' ' && cmd.arg[cmd.arg_len - 1] != ' ');
    }
    if (cmd.verb != SMTP_VERB_UNKNOWN) {
        const char *name = smtp_verb_name(cmd.verb);
        size_t n = strlen(name);
        FUZZ_CHECK(size >= n && strncasecmp(line, name, n) == 0);
        FUZZ_CHECK(size == n || line[n] == ' ');
    }
    fuzz_bdat(cmd.arg, cmd.arg_len);
    fuzz_bdat(line, size);
    return 0;
}
