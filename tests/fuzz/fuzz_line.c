/*
 * fuzz_line.c - smtp_line_find.  The first two bytes give max (0..1023),
 * the rest is the buffer; the result is checked against its definition.
 */
#include <string.h>

#include "fuzz.h"
#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max = (size_t)(data[0] | (data[1] & 3) << 8);
    const char *buf = (const char *)data + 2;
    size_t len = size - 2;
    size_t line_len = 0, total = 0;
    size_t lim = len < max ? len : max;
    const char *lf = lim > 0 ? memchr(buf, '\n', lim) : NULL;

    switch (smtp_line_find(buf, len, max, &line_len, &total)) {
    case SMTP_LINE_OK:
        FUZZ_CHECK(lf != NULL);
        FUZZ_CHECK(total == (size_t)(lf - buf) + 1);
        FUZZ_CHECK(total <= len && total <= max);
        FUZZ_CHECK(line_len == total - 1 ||
                   (line_len == total - 2 && buf[total - 2] == '\r'));
        FUZZ_CHECK(line_len == 0 || line_len == total - 2 ||
                   buf[line_len - 1] != '\r');
        break;
    case SMTP_LINE_MORE:
        FUZZ_CHECK(lf == NULL && len < max);
        break;
    case SMTP_LINE_TOO_LONG:
        FUZZ_CHECK(lf == NULL && len >= max);
        break;
    default:
        FUZZ_CHECK(0);
    }
    return 0;
}
