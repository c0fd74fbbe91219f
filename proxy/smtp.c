/*
 * smtp.c - pure SMTP parsers and writers (see include/smtp.h).
 *
 * No I/O, no allocation, no global mutable state.  Every function reads
 * only buf[0..len) and writes its outputs only on success.
 */
#include "smtp.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#if defined(__SSE2__) && !defined(SMTP_PORTABLE_SCAN)
#define SMTP_SSE2_SCAN 1
#include <emmintrin.h>
/* the 64-byte blocks of smtp_data_filter_pass also with AVX2, chosen when
 * the CPU has it (SMTP_NO_AVX2 keeps SSE2 only, for a test) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SMTP_NO_AVX2)
#define SMTP_AVX2_BLOCKS 1
#include <immintrin.h>
#endif
#endif

/* ---- small helpers ----------------------------------------------------- */

/* smtp_upper - ASCII upper case, independent of the locale. */
static char smtp_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

/* smtp_is_digit - ASCII decimal digit. */
static bool smtp_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* smtp_ieq - buf[0..len) equals the upper-case word, ignoring case. */
static bool smtp_ieq(const char *buf, size_t len, const char *word)
{
    size_t wlen = strlen(word);

    if (len != wlen)
        return false;
    for (size_t i = 0; i < len; i++)
        if (smtp_upper(buf[i]) != word[i])
            return false;
    return true;
}

/* ---- lines ------------------------------------------------------------- */

/*
 * smtp_line_find - find the first LF-terminated line in buf[0..len).
 * Only the first max bytes are searched, so a line is at most max bytes
 * long including its terminator.
 */
enum smtp_line_result smtp_line_find(const char *buf, size_t len, size_t max,
                                     size_t *line_len, size_t *total)
{
    size_t n = len < max ? len : max;
    const char *lf = n > 0 ? memchr(buf, '\n', n) : NULL;

    if (lf == NULL)
        return len >= max ? SMTP_LINE_TOO_LONG : SMTP_LINE_MORE;

    size_t t = (size_t)(lf - buf) + 1;
    size_t l = t - 1;
    if (l > 0 && buf[l - 1] == '\r')
        l--;
    *line_len = l;
    *total = t;
    return SMTP_LINE_OK;
}

/* ---- commands ---------------------------------------------------------- */

/* indexed by enum smtp_verb */
static const char *const smtp_verb_names[SMTP_VERB_COUNT] = {
    [SMTP_VERB_UNKNOWN]  = "UNKNOWN",
    [SMTP_VERB_EHLO]     = "EHLO",
    [SMTP_VERB_HELO]     = "HELO",
    [SMTP_VERB_MAIL]     = "MAIL",
    [SMTP_VERB_RCPT]     = "RCPT",
    [SMTP_VERB_DATA]     = "DATA",
    [SMTP_VERB_BDAT]     = "BDAT",
    [SMTP_VERB_RSET]     = "RSET",
    [SMTP_VERB_NOOP]     = "NOOP",
    [SMTP_VERB_QUIT]     = "QUIT",
    [SMTP_VERB_VRFY]     = "VRFY",
    [SMTP_VERB_EXPN]     = "EXPN",
    [SMTP_VERB_HELP]     = "HELP",
    [SMTP_VERB_STARTTLS] = "STARTTLS",
    [SMTP_VERB_AUTH]     = "AUTH",
    [SMTP_VERB_XCLIENT]  = "XCLIENT",
    [SMTP_VERB_XFORWARD] = "XFORWARD",
    [SMTP_VERB_ETRN]     = "ETRN",
};

/* smtp_verb_name - upper-case name of a verb ("UNKNOWN" for unknown). */
const char *smtp_verb_name(enum smtp_verb verb)
{
    if ((unsigned)verb >= SMTP_VERB_COUNT)
        return smtp_verb_names[SMTP_VERB_UNKNOWN];
    return smtp_verb_names[verb];
}

/*
 * smtp_cmd_parse - split one command line into verb and argument.
 * RFC 5321 4.1.1: the verb is followed by SP and the parameters.  Only SP
 * separates (a TAB makes the first word an unknown verb); several spaces
 * after the verb and trailing spaces are tolerated.  The argument is
 * filled in for unknown verbs too (useful for logging).
 */
void smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *out)
{
    size_t wlen = 0;
    while (wlen < len && line[wlen] != ' ')
        wlen++;

    enum smtp_verb verb = SMTP_VERB_UNKNOWN;
    for (unsigned v = SMTP_VERB_UNKNOWN + 1; v < SMTP_VERB_COUNT; v++) {
        if (smtp_ieq(line, wlen, smtp_verb_names[v])) {
            verb = (enum smtp_verb)v;
            break;
        }
    }

    size_t start = wlen;
    while (start < len && line[start] == ' ')
        start++;
    size_t end = len;
    while (end > start && line[end - 1] == ' ')
        end--;

    out->verb = verb;
    out->word = line;
    out->word_len = wlen;
    out->arg = end > start ? line + start : NULL;
    out->arg_len = end - start;
}

/*
 * smtp_bdat_parse - parse "<size> [LAST]" (RFC 3030 2: bdat-cmd ::= "BDAT"
 * SP chunk-size [ SP end-marker ] CR LF; chunk-size ::= 1*DIGIT;
 * end-marker ::= "LAST").  At most 18 digits (fits in 63 bits); one or
 * more spaces before LAST; nothing else, not even a trailing space.
 */
int smtp_bdat_parse(const char *arg, size_t len, uint64_t *size, bool *last)
{
    enum { BDAT_MAX_DIGITS = 18 };
    uint64_t v = 0;
    size_t i = 0;

    if (arg == NULL)
        return -1;
    while (i < len && smtp_is_digit(arg[i])) {
        if (i == BDAT_MAX_DIGITS)
            return -1;
        v = v * 10 + (uint64_t)(arg[i] - '0');
        i++;
    }
    if (i == 0)
        return -1;
    if (i == len) {
        *size = v;
        *last = false;
        return 0;
    }
    if (arg[i] != ' ')
        return -1;
    while (i < len && arg[i] == ' ')
        i++;
    if (!smtp_ieq(arg + i, len - i, "LAST"))
        return -1;
    *size = v;
    *last = true;
    return 0;
}

/* ---- replies ----------------------------------------------------------- */

/*
 * smtp_reply_prefix_ok - can buf[0..n) (no LF in it) start a reply line
 * with the given code (-1: any)?  RFC 5321 4.2: Reply-line = *( Reply-code
 * "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF.  The first
 * digit must be 1..5; the other two are any digit.  After the code comes
 * '-', ' ' or the terminator (CR must then be followed by LF).  Checking
 * partial lines lets garbage be refused before its line is complete.
 */
static bool smtp_reply_prefix_ok(const char *buf, size_t n, int code)
{
    if (n > 0 && (buf[0] < '1' || buf[0] > '5'))
        return false;
    if (n > 1 && !smtp_is_digit(buf[1]))
        return false;
    if (n > 2 && !smtp_is_digit(buf[2]))
        return false;
    if (code >= 0) {   /* every line carries the first line's code */
        const char want[3] = { (char)('0' + code / 100),
                               (char)('0' + code / 10 % 10),
                               (char)('0' + code % 10) };
        for (size_t i = 0; i < n && i < 3; i++)
            if (buf[i] != want[i])
                return false;
    }
    if (n > 3 && buf[3] != '-' && buf[3] != ' ' && buf[3] != '\r')
        return false;
    if (n > 4 && buf[3] == '\r')
        return false;   /* "DDD\r" followed by anything but LF */
    return true;
}

/*
 * smtp_reply_scan - find one complete reply at the start of buf.
 * Lines are validated as they come (even before their terminator), so
 * garbage gives SMTP_REPLY_BAD as early as possible.  A continuation line
 * that is line number max_lines makes the reply BAD at once, since its
 * last line could only come after it.
 */
enum smtp_reply_result smtp_reply_scan(const char *buf, size_t len,
                                       size_t max_line, unsigned max_lines,
                                       struct smtp_reply *out)
{
    size_t pos = 0;
    unsigned nlines = 0;
    int code = -1;

    for (;;) {
        size_t line_len, total;
        const char *line = buf + pos;
        enum smtp_line_result r = smtp_line_find(line, len - pos, max_line,
                                                 &line_len, &total);
        if (r == SMTP_LINE_TOO_LONG)
            return SMTP_REPLY_BAD;
        if (r == SMTP_LINE_MORE) {
            if (!smtp_reply_prefix_ok(line, len - pos, code))
                return SMTP_REPLY_BAD;
            return SMTP_REPLY_MORE;
        }
        if (nlines >= max_lines)
            return SMTP_REPLY_BAD;
        if (line_len < 3 || !smtp_reply_prefix_ok(line, line_len, code))
            return SMTP_REPLY_BAD;
        if (line_len > 3 && line[3] == '\r')
            return SMTP_REPLY_BAD;   /* "DDD\r" + more text */
        if (code < 0)
            code = (line[0] - '0') * 100 + (line[1] - '0') * 10 +
                   (line[2] - '0');
        nlines++;
        pos += total;
        if (line_len == 3 || line[3] == ' ') {
            out->code = code;
            out->len = pos;
            out->nlines = nlines;
            return SMTP_REPLY_OK;
        }
        if (nlines >= max_lines)
            return SMTP_REPLY_BAD;
    }
}

/* ---- EHLO reply -------------------------------------------------------- */

/* keywords we know, RFC 5321 4.1.1.1 ehlo-keyword */
static const struct {
    const char *name;
    unsigned bit;
} smtp_caps[] = {
    { "STARTTLS",            SMTP_CAP_STARTTLS },
    { "PIPELINING",          SMTP_CAP_PIPELINING },
    { "CHUNKING",            SMTP_CAP_CHUNKING },
    { "AUTH",                SMTP_CAP_AUTH },
    { "XCLIENT",             SMTP_CAP_XCLIENT },
    { "XFORWARD",            SMTP_CAP_XFORWARD },
    { "SIZE",                SMTP_CAP_SIZE },
    { "8BITMIME",            SMTP_CAP_8BITMIME },
    { "SMTPUTF8",            SMTP_CAP_SMTPUTF8 },
    { "DSN",                 SMTP_CAP_DSN },
    { "ENHANCEDSTATUSCODES", SMTP_CAP_ENHANCEDSTATUSCODES },
    { "HELP",                SMTP_CAP_HELP },
    { "VRFY",                SMTP_CAP_VRFY },
    { "EXPN",                SMTP_CAP_EXPN },
    { "ETRN",                SMTP_CAP_ETRN },
    { "LIMITS",              SMTP_CAP_LIMITS },
    { "REQUIRETLS",          SMTP_CAP_REQUIRETLS },
};

/*
 * smtp_ehlo_keyword - the SMTP_CAP_* bit of one EHLO line's text (after
 * "250-"), or 0.  The keyword is the whole first word: it ends at the end
 * of the text, a SP or a TAB; "AUTH=" (the old form some clients still
 * look for) also ends at '='.  "AUTHX" and "STARTTLSX" are not keywords
 * we know.
 */
static unsigned smtp_ehlo_keyword(const char *text, size_t len)
{
    size_t k = 0;
    while (k < len && text[k] != ' ' && text[k] != '\t')
        k++;
    for (size_t i = 0; i < sizeof smtp_caps / sizeof smtp_caps[0]; i++)
        if (smtp_ieq(text, k, smtp_caps[i].name))
            return smtp_caps[i].bit;
    if (k > 4 && smtp_ieq(text, 5, "AUTH="))
        return SMTP_CAP_AUTH;
    return 0;
}

/*
 * smtp_reply_next_line - split the next line of a reply at buf[*pos].
 * Sets *text and *text_len to what follows the code and its mark, and
 * advances *pos past the terminator (or to len if there is none).
 * Returns false at the end of the buffer.
 */
static bool smtp_reply_next_line(const char *buf, size_t len, size_t *pos,
                                 const char **text, size_t *text_len)
{
    if (*pos >= len)
        return false;
    const char *line = buf + *pos;
    size_t rest = len - *pos;
    const char *lf = memchr(line, '\n', rest);
    size_t total = lf != NULL ? (size_t)(lf - line) + 1 : rest;
    size_t l = lf != NULL ? total - 1 : rest;
    if (l > 0 && line[l - 1] == '\r')
        l--;
    *text = l > 4 ? line + 4 : line + l;
    *text_len = l > 4 ? l - 4 : 0;
    *pos += total;
    return true;
}

/*
 * smtp_ehlo_caps - capability bits of a complete EHLO reply.
 * RFC 5321 4.1.1.1: ehlo-ok-rsp = ( "250" SP Domain [ SP ehlo-greet ] CRLF )
 * / ( "250" "-" Domain [ SP ehlo-greet ] CRLF *( "250" "-" ehlo-line CRLF )
 * "250" SP ehlo-line CRLF ): the first line is never a keyword.
 */
unsigned smtp_ehlo_caps(const char *reply, size_t len)
{
    unsigned caps = 0;
    size_t pos = 0;
    const char *text;
    size_t text_len;

    if (len < 3 || reply[0] != '2')
        return 0;
    if (!smtp_reply_next_line(reply, len, &pos, &text, &text_len))
        return 0;
    while (smtp_reply_next_line(reply, len, &pos, &text, &text_len))
        caps |= smtp_ehlo_keyword(text, text_len);
    return caps;
}

/* smtp_ehlo_auth_mech - see smtp.h. */
bool smtp_ehlo_auth_mech(const char *reply, size_t len, const char *mech)
{
    size_t pos = 0, mlen = strlen(mech), i, w;
    const char *text;
    size_t text_len;

    if (len < 3 || reply[0] != '2' ||
        !smtp_reply_next_line(reply, len, &pos, &text, &text_len))
        return false;
    while (smtp_reply_next_line(reply, len, &pos, &text, &text_len)) {
        if (text_len < 5 || strncasecmp(text, "AUTH", 4) != 0 ||
            (text[4] != ' ' && text[4] != '=' && text[4] != '\t'))
            continue;
        for (i = 5; i < text_len; i += w) {
            while (i < text_len && (text[i] == ' ' || text[i] == '\t'))
                i++;
            for (w = 0; i + w < text_len && text[i + w] != ' ' &&
                        text[i + w] != '\t'; w++)
                ;
            if (w == mlen && strncasecmp(text + i, mech, mlen) == 0)
                return true;
            if (w == 0)
                break;
        }
    }
    return false;
}

/* smtp_put - append n bytes to out at *pos (out may be NULL: count only). */
static void smtp_put(char *out, size_t *pos, const char *s, size_t n)
{
    if (out != NULL && n > 0)
        memcpy(out + *pos, s, n);
    *pos += n;
}

/*
 * smtp_ehlo_line - write one line "250" mark text CRLF.  A continuation
 * line has '-', the last line ' ', also before empty text: clients such as
 * swaks wait for "250 " and take a bare "250" CRLF for an unfinished reply.
 */
static void smtp_ehlo_line(char *out, size_t *pos, const char *text,
                           size_t text_len, bool last)
{
    smtp_put(out, pos, "250", 3);
    smtp_put(out, pos, last ? " " : "-", 1);
    smtp_put(out, pos, text, text_len);
    smtp_put(out, pos, "\r\n", 2);
}

/* smtp_keyword_len - length of the keyword that starts an EHLO line's
 * text: up to SP, TAB or "=" (the old "AUTH=" form). */
static size_t smtp_keyword_len(const char *text, size_t len)
{
    size_t k = 0;

    while (k < len && text[k] != ' ' && text[k] != '\t' && text[k] != '=')
        k++;
    return k;
}

/* smtp_ehlo_extra - is the line's keyword one of opts->extra? */
static bool smtp_ehlo_extra(const char *text, size_t text_len,
                            const struct smtp_ehlo_rewrite *opts)
{
    size_t k = smtp_keyword_len(text, text_len);

    for (size_t i = 0; i < opts->nextra; i++) {
        const char *e = opts->extra[i];
        size_t j = 0;

        while (j < k && e[j] != '\0' && smtp_upper(text[j]) == smtp_upper(e[j]))
            j++;
        if (j == k && e[j] == '\0')
            return true;
    }
    return false;
}

/* smtp_ehlo_note_drop - add the line's keyword to opts->dropped (cut at
 * its capacity). */
static void smtp_ehlo_note_drop(const char *text, size_t text_len,
                                const struct smtp_ehlo_rewrite *opts)
{
    size_t k = smtp_keyword_len(text, text_len);
    size_t used = strlen(opts->dropped);

    if (used > 0 && used + 1 < opts->dropped_cap)
        opts->dropped[used++] = ',';
    for (size_t i = 0; i < k && used + 1 < opts->dropped_cap; i++)
        opts->dropped[used++] = text[i];
    opts->dropped[used] = '\0';
}

/*
 * smtp_ehlo_keep - is line number idx (text after the code and mark) kept?
 * The first line (the domain) always is; a keyword line only when its
 * keyword is in opts->keep or opts->extra.  With offer_starttls the first
 * STARTTLS line is kept and any later one dropped, so it appears once;
 * without, every STARTTLS line goes.  *have_starttls records that a
 * STARTTLS line was kept; with note, a dropped keyword is noted in
 * opts->dropped.
 */
static bool smtp_ehlo_keep(size_t idx, const char *text, size_t text_len,
                           const struct smtp_ehlo_rewrite *opts,
                           bool *have_starttls, bool note)
{
    if (idx == 0)
        return true;
    unsigned bit = smtp_ehlo_keyword(text, text_len);
    bool keep;
    if (bit == SMTP_CAP_STARTTLS) {
        keep = opts->offer_starttls && !*have_starttls;
        if (keep)
            *have_starttls = true;
        return keep;
    }
    keep = (bit != 0 && (opts->keep & bit) != 0) ||
           smtp_ehlo_extra(text, text_len, opts);
    if (!keep && note && opts->dropped != NULL && opts->dropped_cap > 0)
        smtp_ehlo_note_drop(text, text_len, opts);
    return keep;
}

/*
 * smtp_ehlo_plan - first pass: the index of the last line kept, and
 * whether a STARTTLS line has to be appended after it.
 */
static void smtp_ehlo_plan(const char *reply, size_t len,
                           const struct smtp_ehlo_rewrite *opts,
                           size_t *last_kept, bool *add_starttls)
{
    size_t pos = 0, last = 0;
    bool have = false;
    const char *text;
    size_t text_len;

    if (opts->dropped != NULL && opts->dropped_cap > 0)
        opts->dropped[0] = '\0';
    for (size_t idx = 0;
         smtp_reply_next_line(reply, len, &pos, &text, &text_len); idx++)
        if (smtp_ehlo_keep(idx, text, text_len, opts, &have, true))
            last = idx;
    *last_kept = last;
    *add_starttls = opts->offer_starttls && !have;
}

/*
 * smtp_ehlo_emit - second pass: write the kept lines (and "STARTTLS" if
 * add_starttls) to out, or only count them when out is NULL.  The line
 * number last_kept carries the final ' ' unless STARTTLS follows it.
 * Returns the number of bytes.
 */
static size_t smtp_ehlo_emit(const char *reply, size_t len,
                             const struct smtp_ehlo_rewrite *opts,
                             size_t last_kept, bool add_starttls, char *out)
{
    size_t pos = 0, w = 0;
    bool have = false;
    const char *text;
    size_t text_len;

    for (size_t idx = 0;
         smtp_reply_next_line(reply, len, &pos, &text, &text_len); idx++)
        if (smtp_ehlo_keep(idx, text, text_len, opts, &have, false))
            smtp_ehlo_line(out, &w, text, text_len,
                           !add_starttls && idx == last_kept);
    if (add_starttls)
        smtp_ehlo_line(out, &w, "STARTTLS", 8, true);
    return w;
}

/*
 * smtp_ehlo_rewrite - rewrite a complete 250 EHLO reply into out.
 * The input must be exactly one well-formed reply (smtp_reply_scan).
 * The size is computed first so that out is written only when it fits.
 */
int smtp_ehlo_rewrite(const char *reply, size_t len,
                      const struct smtp_ehlo_rewrite *opts,
                      char *out, size_t out_cap, size_t *out_len)
{
    struct smtp_reply r;

    if (smtp_reply_scan(reply, len, SIZE_MAX, UINT_MAX, &r) != SMTP_REPLY_OK ||
        r.len != len)
        return -1;
    if (r.code != 250) {
        if (len > out_cap)
            return -1;
        memcpy(out, reply, len);
        *out_len = len;
        return 0;
    }

    size_t last_kept;
    bool add_starttls;
    smtp_ehlo_plan(reply, len, opts, &last_kept, &add_starttls);
    size_t need = smtp_ehlo_emit(reply, len, opts, last_kept, add_starttls,
                                 NULL);
    if (need > out_cap)
        return -1;
    smtp_ehlo_emit(reply, len, opts, last_kept, add_starttls, out);
    *out_len = need;
    return 0;
}

/* smtp_ehlo_keyword_valid - see smtp.h. */
bool smtp_ehlo_keyword_valid(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = smtp_upper(s[i]);
        bool alnum = (c >= 'A' && c <= 'Z') || smtp_is_digit(c);

        if (!alnum && (i == 0 || c != '-'))
            return false;
    }
    return true;
}

/* ---- message content (DATA) ------------------------------------------- */

/*
 * The scanner is a matcher for the five bytes CR LF "." CR LF over the
 * content with the DATA command's CRLF in front of it; each state is the
 * length of the pattern prefix matched so far (RFC 5321 4.1.1.4: "the
 * character sequence <CRLF>.<CRLF> ends the mail text").  A lone LF or CR
 * never counts as a line end here.
 */
enum smtp_data_state {
    DATA_TEXT = 0,   /* inside a line */
    DATA_CR,         /* CR */
    DATA_BOL,        /* CR LF: at the start of a line */
    DATA_DOT,        /* CR LF . */
    DATA_DOT_CR,     /* CR LF . CR */
    DATA_END         /* CR LF . CR LF: done */
};

/* smtp_data_scanner_init - start scanning at the beginning of content. */
void smtp_data_scanner_init(struct smtp_data_scanner *s)
{
    s->state = DATA_BOL;
}

/*
 * smtp_data_step - the state after byte c in state st.  On a mismatch a
 * CR still starts a new CR LF, everything else falls back to DATA_TEXT.
 */
static int smtp_data_step(int st, char c)
{
    switch (st) {
    case DATA_CR:
        if (c == '\n')
            return DATA_BOL;
        break;
    case DATA_BOL:
        if (c == '.')
            return DATA_DOT;
        break;
    case DATA_DOT:
        if (c == '\r')
            return DATA_DOT_CR;
        break;
    case DATA_DOT_CR:
        if (c == '\n')
            return DATA_END;
        break;
    default:
        break;
    }
    return c == '\r' ? DATA_CR : DATA_TEXT;
}

/*
 * smtp_data_scan - scan buf[0..len) of content.  Once the end has been
 * seen, further calls return 0 with *done set until the scanner is
 * initialised again.
 */
size_t smtp_data_scan(struct smtp_data_scanner *s, const char *buf,
                      size_t len, bool *done)
{
    int st = s->state;

    if (st == DATA_END) {
        *done = true;
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        st = smtp_data_step(st, buf[i]);
        if (st == DATA_END) {
            s->state = st;
            *done = true;
            return i + 1;
        }
    }
    s->state = st;
    *done = false;
    return len;
}

/* ---- line hygiene (SMTP smuggling) ------------------------------------ */

/*
 * smtp_line_has_bare_cr_lf - a command line ended by a bare LF, or one
 * holding a CR (or LF) of its own.  RFC 5321 2.3.8: "SMTP client
 * implementations MUST NOT transmit [CR and LF] except when they are
 * intended as line terminators and then MUST transmit them only as a
 * <CRLF> sequence."  The backend might read such a line as two.
 */
bool smtp_line_has_bare_cr_lf(const char *line, size_t len, size_t total)
{
    if (total < len || total - len != 2)
        return true;   /* "...\n": no CR before the LF */
    if (len == 0)
        return false;
    return memchr(line, '\r', len) != NULL || memchr(line, '\n', len) != NULL;
}

/* ---- message content filter -------------------------------------------- */

/*
 * The filter reads the content as lines ended by CRLF, a bare LF or a
 * bare CR, and writes every line end as CRLF.  Its states (the bytes in
 * brackets are read but held back, not yet written):
 *
 *   FILT_BOL       at a line start after a real CRLF (or the DATA line)
 *   FILT_BOL_BARE  at a line start after a bare CR or LF (written as CRLF)
 *   FILT_TEXT      inside a line
 *   FILT_CR        [CR]: CRLF or a bare CR, the next byte tells
 *   FILT_DOT       after a real CRLF: ["."]
 *   FILT_DOT_CR    after a real CRLF: [". CR"]: the end if LF follows
 *   FILT_END       CRLF "." CRLF seen and written
 *
 * Every CRLF written is followed by a state at the line start, and a "."
 * there is written either as ".." (after a bare line end, or as a line "."
 * ended by a bare CR/LF) or as "." followed by a byte that is not CR or LF,
 * or it is the real end: so the output holds CRLF "." CRLF only at its end.
 *
 * NUL bytes are removed (a backend that drops them while reading would
 * otherwise find "CRLF NUL . CRLF" to be an end).  A NUL at a line start
 * makes it a tainted line start, as after a bare line end (FILT_BOL_BARE:
 * a "." that follows is stuffed), and a NUL right after a line's leading
 * "." writes that dot as "..": a line that starts with "." once its NULs
 * are gone can never read as the end.
 */
enum smtp_filter_state {
    FILT_BOL = 0,
    FILT_BOL_BARE,
    FILT_TEXT,
    FILT_CR,
    FILT_DOT,
    FILT_DOT_CR,
    FILT_END
};

/* the most output one input byte can give: ". CR" + "." -> "..\r\n" ".." */
enum { FILT_MAX_STEP = 6 };

_Static_assert(SMTP_DATA_FILTER_MIN_OUT >= FILT_MAX_STEP,
               "SMTP_DATA_FILTER_MIN_OUT too small");

/* smtp_data_filter_init - start filtering at the beginning of content. */
void smtp_data_filter_init(struct smtp_data_filter *f,
                           enum smtp_bare_newline mode)
{
    f->state = FILT_BOL;
    f->mode = mode;
    f->bare_seen = false;
    f->nul_count = 0;
}

/*
 * smtp_filter_step - one input byte c in state *st: write the output it
 * decides into o (at most FILT_MAX_STEP bytes), return its length, update
 * *st and set *bare when a bare CR or LF was found.  First the held bytes
 * are settled; when that does not use c up, c is read at a line start or
 * inside a line.  A NUL writes nothing of its own.
 */
static size_t smtp_filter_step(int *st, char c, char *o, bool *bare)
{
    size_t n = 0;

    switch (*st) {
    case FILT_CR:
        o[n++] = '\r';
        o[n++] = '\n';
        if (c == '\n') {
            *st = FILT_BOL;
            return n;
        }
        *bare = true;          /* bare CR: c starts the next line */
        *st = FILT_BOL_BARE;
        break;
    case FILT_DOT:
        if (c == '\r') {
            *st = FILT_DOT_CR;
            return 0;
        }
        if (c == '\0') {       /* ".\0": the dot is stuffed, the NUL goes */
            memcpy(o, "..", 2);
            *st = FILT_TEXT;
            return 2;
        }
        if (c == '\n') {       /* "." + bare LF: must not read as the end */
            *bare = true;
            memcpy(o, "..\r\n", 4);
            *st = FILT_BOL_BARE;
            return 4;
        }
        o[n++] = '.';          /* ".." or ".text": content as it came */
        *st = FILT_TEXT;
        break;
    case FILT_DOT_CR:
        if (c == '\n') {       /* RFC 5321 4.1.1.4: CRLF "." CRLF */
            memcpy(o, ".\r\n", 3);
            *st = FILT_END;
            return 3;
        }
        *bare = true;          /* "." + bare CR; c starts the next line */
        memcpy(o, "..\r\n", 4);
        n = 4;
        *st = FILT_BOL_BARE;
        break;
    default:                   /* FILT_BOL, FILT_BOL_BARE, FILT_TEXT */
        break;
    }

    switch (c) {
    case '\r':
        *st = FILT_CR;
        break;
    case '\n':
        *bare = true;
        o[n++] = '\r';
        o[n++] = '\n';
        *st = FILT_BOL_BARE;
        break;
    case '\0':                  /* removed; a "." after it is stuffed */
        if (*st == FILT_BOL)
            *st = FILT_BOL_BARE;
        break;
    case '.':
        if (*st == FILT_BOL) {
            *st = FILT_DOT;
            break;
        }
        if (*st == FILT_BOL_BARE)   /* RFC 5321 4.5.2: stuff the dot */
            o[n++] = '.';
        o[n++] = '.';
        *st = FILT_TEXT;
        break;
    default:
        o[n++] = c;
        *st = FILT_TEXT;
        break;
    }
    return n;
}

/* smtp_filter_plain - a byte that is copied as it is inside a line */
static bool smtp_filter_plain(char c)
{
    return c != '\r' && c != '\n' && c != '\0';
}

/*
 * smtp_plain_span - how many bytes at the start of p[0..n) are plain (not
 * CR, LF or NUL).  Sixteen bytes at a time with SSE2 (every x86-64 CPU has
 * it; SMTP_PORTABLE_SCAN turns it off for a test), else eight at a time: (x - 0x01..) & ~x & 0x80.. is non-zero
 * exactly when the word x has a zero byte, and x ^ 0x0d.. has one where x
 * has a CR.  The tail, and the word that holds a special byte in the
 * portable loop, are read a byte at a time, so the answer is exact.
 */
static size_t smtp_plain_span(const char *p, size_t n)
{
    size_t i = 0;
#if defined(SMTP_SSE2_SCAN)
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    const __m128i nul = _mm_setzero_si128();

    while (n - i >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        __m128i hit = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)),
            _mm_cmpeq_epi8(v, nul));
        unsigned mask = (unsigned)_mm_movemask_epi8(hit);

        if (mask != 0)
            return i + (size_t)__builtin_ctz(mask);
        i += 16;
    }
#else
    const uint64_t ones = 0x0101010101010101ULL;
    const uint64_t highs = 0x8080808080808080ULL;

    while (n - i >= 8) {
        uint64_t v, cr, lf;

        memcpy(&v, p + i, 8);
        cr = v ^ (ones * '\r');
        lf = v ^ (ones * '\n');
        if ((((v - ones) & ~v) | ((cr - ones) & ~cr) | ((lf - ones) & ~lf)) &
            highs)
            break;
        i += 8;
    }
#endif
    while (i < n && smtp_filter_plain(p[i]))
        i++;
    return i;
}

#if defined(SMTP_SSE2_SCAN)
/* smtp_mask16 - bit k set where p[k] is c, for k < 16 */
static uint64_t smtp_mask16(__m128i v, __m128i c)
{
    return (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, c));
}

/*
 * smtp_block_same_sse2 - do the 64 bytes at p come out of the filter exactly as
 * they are, from a state with nothing held (FILT_TEXT, or FILT_BOL when
 * bol)?  True when they hold no NUL, every CR is followed by an LF inside
 * the block, every LF follows a CR, and no dot starts a line.  The state
 * after them is then FILT_BOL if the last byte is an LF, else FILT_TEXT
 * (a CR is never last).  Lines are about 78 bytes in real mail: looking at
 * a whole block at once spares the per-line exit of smtp_plain_span.  A
 * false answer decides nothing: the byte-wise path looks again.
 */
static bool smtp_block_same_sse2(const char *p, bool bol)
{
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
    const __m128i dot = _mm_set1_epi8('.'), nul = _mm_setzero_si128();
    uint64_t mcr = 0, mlf = 0, mdot = 0, mnul = 0, start;
    int k;

    for (k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * k));

        mcr |= smtp_mask16(v, cr) << (16 * k);
        mlf |= smtp_mask16(v, lf) << (16 * k);
        mdot |= smtp_mask16(v, dot) << (16 * k);
        mnul |= smtp_mask16(v, nul) << (16 * k);
    }
    start = (mlf << 1) | (bol ? 1u : 0u);      /* bytes that start a line */
    return mnul == 0 && (mcr >> 63) == 0 && (mcr << 1) == mlf &&
           (mdot & start) == 0;
}

#if defined(SMTP_AVX2_BLOCKS)
/* smtp_mask32 - bit k set where byte k of v is c, for k < 32 */
__attribute__((target("avx2")))
static uint64_t smtp_mask32(__m256i v, __m256i c)
{
    return (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, c));
}

/* smtp_block_same_avx2 - smtp_block_same_sse2 on two 32-byte halves */
__attribute__((target("avx2")))
static bool smtp_block_same_avx2(const char *p, bool bol)
{
    const __m256i cr = _mm256_set1_epi8('\r'), lf = _mm256_set1_epi8('\n');
    const __m256i dot = _mm256_set1_epi8('.'), nul = _mm256_setzero_si256();
    __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)p);
    __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(p + 32));
    __m256i z = _mm256_or_si256(_mm256_cmpeq_epi8(a, nul),
                                _mm256_cmpeq_epi8(b, nul));
    uint64_t mcr, mlf, mdot, start;

    if (!_mm256_testz_si256(z, z))
        return false;
    mcr = smtp_mask32(a, cr) | smtp_mask32(b, cr) << 32;
    mlf = smtp_mask32(a, lf) | smtp_mask32(b, lf) << 32;
    if ((mcr >> 63) != 0 || (mcr << 1) != mlf)
        return false;
    mdot = smtp_mask32(a, dot) | smtp_mask32(b, dot) << 32;
    start = (mlf << 1) | (bol ? 1u : 0u);
    return (mdot & start) == 0;
}

/* smtp_blocks_avx2 - smtp_blocks_sse2 with smtp_block_same_avx2 */
__attribute__((target("avx2")))
static size_t smtp_blocks_avx2(const char *p, size_t n, int *st)
{
    size_t i = 0;

    while (n - i >= 64 && (*st == FILT_TEXT || *st == FILT_BOL) &&
           smtp_block_same_avx2(p + i, *st == FILT_BOL)) {
        *st = p[i + 63] == '\n' ? FILT_BOL : FILT_TEXT;
        i += 64;
    }
    return i;
}
#endif

/*
 * smtp_blocks_sse2 - how many bytes at the start of p[0..n), in whole
 * blocks of 64, come out as they are from state *st (which it updates).
 */
static size_t smtp_blocks_sse2(const char *p, size_t n, int *st)
{
    size_t i = 0;

    while (n - i >= 64 && (*st == FILT_TEXT || *st == FILT_BOL) &&
           smtp_block_same_sse2(p + i, *st == FILT_BOL)) {
        *st = p[i + 63] == '\n' ? FILT_BOL : FILT_TEXT;
        i += 64;
    }
    return i;
}
#endif

/*
 * smtp_filter_same - does byte c in state st (one with nothing held) give
 * exactly itself, and which state follows?  A CR is looked at together
 * with the byte after it (next, or -1 when it is not there yet): CR LF is
 * the same, a CR alone is not decided.
 */
static bool smtp_filter_same(int *st, char c, int next, size_t *used)
{
    *used = 1;
    switch (c) {
    case '\r':
        if (next != '\n')
            return false;      /* held, or a bare CR to rewrite */
        *used = 2;
        *st = FILT_BOL;
        return true;
    case '\n':
        return false;          /* bare LF: rewritten */
    case '\0':
        return false;          /* removed */
    case '.':
        if (*st != FILT_TEXT)
            return false;      /* held, or stuffed */
        return true;
    default:                   /* plain bytes, any line position */
        *st = FILT_TEXT;
        return true;
    }
}

/*
 * smtp_data_filter_pass - consume the longest prefix of in[0..in_len) that
 * the filter writes out exactly as it came; the caller sends those bytes
 * straight from in.  Returns their number (0 when the filter holds bytes
 * or the first byte must be rewritten); smtp_data_filter takes the rest.
 * Never consumes the end of data itself: *done stays false unless the
 * filter was already done.
 */
size_t smtp_data_filter_pass(struct smtp_data_filter *f, const char *in,
                             size_t in_len, bool *done)
{
    int st = f->state;
    size_t i = 0, used;

    *done = st == FILT_END;
    if (st != FILT_BOL && st != FILT_BOL_BARE && st != FILT_TEXT)
        return 0;
#if defined(SMTP_AVX2_BLOCKS)
    bool avx2 = __builtin_cpu_supports("avx2");
#endif

    while (i < in_len) {
#if defined(SMTP_AVX2_BLOCKS)
        size_t b = avx2 ? smtp_blocks_avx2(in + i, in_len - i, &st)
                        : smtp_blocks_sse2(in + i, in_len - i, &st);
#elif defined(SMTP_SSE2_SCAN)
        size_t b = smtp_blocks_sse2(in + i, in_len - i, &st);
#else
        size_t b = 0;
#endif
        i += b;
        if (i == in_len)
            break;
        if (st == FILT_TEXT) {
            i += smtp_plain_span(in + i, in_len - i);
            if (i == in_len)
                break;
        }
        if (!smtp_filter_same(&st, in[i],
                              i + 1 < in_len ? (unsigned char)in[i + 1] : -1,
                              &used))
            break;
        i += used;
    }
    f->state = st;
    return i;
}

/*
 * smtp_data_filter - filter in[0..in_len) into out.  Bytes that come out
 * as they went in (runs of plain bytes, CR LF, a line's first byte) are
 * copied in runs; every other byte goes through smtp_filter_step into a
 * small buffer and is consumed only when its output fits, so that out
 * never overflows and nothing is lost.
 */
size_t smtp_data_filter(struct smtp_data_filter *f, const char *in,
                        size_t in_len, char *out, size_t out_cap,
                        size_t *out_len, bool *done)
{
    int st = f->state;
    bool bare = f->bare_seen;
    uint64_t nul = f->nul_count;
    size_t i = 0, o = 0;

    if (st == FILT_END) {
        *out_len = 0;
        *done = true;
        return 0;
    }
    while (i < in_len) {
        if (st == FILT_BOL || st == FILT_BOL_BARE || st == FILT_TEXT) {
            size_t room = out == NULL ? SIZE_MAX : out_cap - o;
            size_t n = 0, used;
            int nst = st;

            while (n < room && n < in_len - i) {
                if (nst == FILT_TEXT) {
                    size_t lim = in_len - i < room ? in_len - i : room;

                    n += smtp_plain_span(in + i + n, lim - n);
                    if (n == lim)
                        break;
                }
                if (!smtp_filter_same(&nst, in[i + n],
                                      i + n + 1 < in_len
                                          ? (unsigned char)in[i + n + 1]
                                          : -1,
                                      &used) ||
                    used > room - n)
                    break;
                st = nst;
                n += used;
            }
            if (n > 0) {
                if (out != NULL) {
                    memcpy(out + o, in + i, n);
                    o += n;
                }
                i += n;
                continue;
            }
        }
        char tmp[FILT_MAX_STEP];
        int nst = st;
        bool nbare = bare;
        size_t n = smtp_filter_step(&nst, in[i], tmp, &nbare);
        if (out != NULL) {
            if (n > out_cap - o)
                break;          /* out is full: this byte waits */
            memcpy(out + o, tmp, n);
            o += n;
        }
        if (in[i] == '\0')
            nul++;
        st = nst;
        bare = nbare;
        i++;
        if (st == FILT_END)
            break;
    }
    f->state = st;
    f->bare_seen = bare;
    f->nul_count = nul;
    *out_len = o;
    *done = st == FILT_END;
    return i;
}

/* smtp_data_filter_bare_seen - was a bare CR or LF found so far? */
bool smtp_data_filter_bare_seen(const struct smtp_data_filter *f)
{
    return f->bare_seen;
}

/* smtp_data_filter_nul_seen - was a NUL byte found so far? */
bool smtp_data_filter_nul_seen(const struct smtp_data_filter *f)
{
    return f->nul_count > 0;
}

/* smtp_data_filter_nul_count - NUL bytes removed so far. */
uint64_t smtp_data_filter_nul_count(const struct smtp_data_filter *f)
{
    return f->nul_count;
}

/* smtp_data_filter_mode - the mode given to smtp_data_filter_init. */
enum smtp_bare_newline smtp_data_filter_mode(const struct smtp_data_filter *f)
{
    return f->mode;
}
