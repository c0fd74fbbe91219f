/*
 * smtp.h - pure SMTP parsers and writers.
 *
 * Nothing here does I/O or allocates: every function works on bytes handed
 * in and writes its outputs only on success.  The streaming scanners keep
 * their state in a caller-owned struct so input may arrive in chunks of any
 * size (one byte at a time included).
 */
#ifndef STARTTLS_PROXY_SMTP_H
#define STARTTLS_PROXY_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- lines ------------------------------------------------------------ */

enum smtp_line_result {
    SMTP_LINE_OK,        /* a whole line was found */
    SMTP_LINE_MORE,      /* no line terminator yet, and under the cap */
    SMTP_LINE_TOO_LONG   /* no terminator within max bytes */
};

/*
 * smtp_line_find - find the first line in buf[0..len).
 * A line ends with LF (the CR before it, if any, is part of the terminator).
 * On SMTP_LINE_OK, *line_len is the length without the terminator and
 * *total is the length including it.  max caps the total line length
 * including CRLF: a line whose LF is not within the first max bytes is
 * SMTP_LINE_TOO_LONG.
 */
enum smtp_line_result smtp_line_find(const char *buf, size_t len, size_t max,
                                     size_t *line_len, size_t *total);

/* ---- commands --------------------------------------------------------- */

enum smtp_verb {
    SMTP_VERB_UNKNOWN = 0,
    SMTP_VERB_EHLO,
    SMTP_VERB_HELO,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_BDAT,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_QUIT,
    SMTP_VERB_VRFY,
    SMTP_VERB_EXPN,
    SMTP_VERB_HELP,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH,
    SMTP_VERB_XCLIENT,
    SMTP_VERB_XFORWARD,
    SMTP_VERB_ETRN,
    SMTP_VERB_COUNT
};

struct smtp_cmd {
    enum smtp_verb verb;
    const char *arg;     /* points into the line: text after the verb and
                            the spaces that follow it; NULL when none */
    size_t arg_len;      /* 0 when arg is NULL; trailing spaces removed */
};

/*
 * smtp_cmd_parse - split one command line (terminator already removed).
 * The verb is matched case-insensitively and must be followed by a space or
 * the end of the line ("MAIL FROM:<a>" -> MAIL, arg "FROM:<a>"; "MAILX" ->
 * UNKNOWN).  Only SP separates (a TAB does not).  Never fails: an
 * unrecognised verb is SMTP_VERB_UNKNOWN (arg is still the text after the
 * first word).
 */
void smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *out);

/* smtp_verb_name - upper-case name of a verb ("UNKNOWN" for unknown). */
const char *smtp_verb_name(enum smtp_verb verb);

/*
 * smtp_bdat_parse - parse the argument of BDAT: "<size> [LAST]" (RFC 3030).
 * size is decimal digits only, at most 18 of them; LAST is
 * case-insensitive and follows one or more spaces; nothing may follow it.  Returns 0 and writes *size and *last, or -1 on a syntax
 * error.
 */
int smtp_bdat_parse(const char *arg, size_t len, uint64_t *size, bool *last);

/* ---- replies ---------------------------------------------------------- */

struct smtp_reply {
    int code;        /* 100..599 */
    size_t len;      /* bytes of the whole reply, all lines and terminators */
    unsigned nlines; /* number of lines */
};

enum smtp_reply_result {
    SMTP_REPLY_OK,     /* a whole reply starts at buf[0]; see *out */
    SMTP_REPLY_MORE,   /* incomplete so far, nothing wrong yet */
    SMTP_REPLY_BAD     /* not an SMTP reply: garbage, mixed codes, a line
                          over max, or more than max_lines lines */
};

/*
 * smtp_reply_scan - find one complete (possibly multi-line) reply at the
 * start of buf.  Lines are "DDD-text" (continuation) or "DDD text" / "DDD"
 * (last), terminated by CRLF (a bare LF is tolerated); the first digit is
 * 2..5 (1 is accepted too), every line carries the same code.
 * max_line caps one line including its terminator; max_lines caps the
 * number of lines.  Pure: calling it again on a longer buffer re-scans.
 * Partial lines are checked too, so garbage is BAD as soon as the first
 * wrong byte is in buf (a longer buffer never turns BAD into MORE/OK).
 */
enum smtp_reply_result smtp_reply_scan(const char *buf, size_t len,
                                       size_t max_line, unsigned max_lines,
                                       struct smtp_reply *out);

/* ---- EHLO reply ------------------------------------------------------- */

/* capability bits found in (or removed from) an EHLO reply */
enum {
    SMTP_CAP_STARTTLS     = 1u << 0,
    SMTP_CAP_PIPELINING   = 1u << 1,
    SMTP_CAP_CHUNKING     = 1u << 2,
    SMTP_CAP_AUTH         = 1u << 3,
    SMTP_CAP_XCLIENT      = 1u << 4,
    SMTP_CAP_XFORWARD     = 1u << 5,
    SMTP_CAP_SIZE         = 1u << 6,
    SMTP_CAP_8BITMIME     = 1u << 7,
    SMTP_CAP_SMTPUTF8     = 1u << 8,
    SMTP_CAP_DSN          = 1u << 9,
    SMTP_CAP_ENHANCEDSTATUSCODES = 1u << 10
};

/*
 * smtp_ehlo_caps - the capability bits advertised by a complete EHLO reply
 * (as found by smtp_reply_scan).  Keywords are case-insensitive; the first
 * line (the domain) is never a keyword.  A keyword is the whole first
 * word of its line (ended by SP, TAB or the line end): "AUTHX" and
 * "STARTTLSX" are not AUTH or STARTTLS.  "AUTH=LOGIN" (old form) counts as
 * AUTH.  A non-2xx reply has no capabilities (returns 0).
 */
unsigned smtp_ehlo_caps(const char *reply, size_t len);

struct smtp_ehlo_rewrite {
    bool offer_starttls;  /* make sure STARTTLS is advertised exactly once */
    unsigned remove;      /* SMTP_CAP_* bits whose keyword lines are removed
                             (STARTTLS is removed when !offer_starttls and
                             its bit is set here) */
};

/*
 * smtp_ehlo_rewrite - rewrite a complete 250 EHLO reply into out.
 * Removes the keyword lines named in opts->remove, then appends
 * "250-STARTTLS"/"250 STARTTLS" if opts->offer_starttls and the reply had
 * none (it keeps an existing one), and fixes the continuation marks so that
 * every line but the last has '-' and the last has ' ', even when it has
 * no text ("250 " CRLF: some clients wait for the space).  A single-line
 * reply ("250 host") grows a second line when STARTTLS is added.  Lines are
 * written with CRLF even if the input used bare LF.  A reply that is not
 * 250 is copied unchanged.
 * Returns 0 and sets *out_len, or -1 when out is too small or the input is
 * not a well-formed reply (outputs untouched then).
 */
int smtp_ehlo_rewrite(const char *reply, size_t len,
                      const struct smtp_ehlo_rewrite *opts,
                      char *out, size_t out_cap, size_t *out_len);

/* ---- message content (DATA) ------------------------------------------ */

/*
 * The end-of-data scanner.  Message content after a 354 ends with
 * CRLF "." CRLF (RFC 5321 4.1.1.4); the CRLF of the DATA command counts as
 * the first CRLF, so a message that is just ".\r\n" is empty.  Only CRLF .
 * CRLF ends it: LF.LF, CR.CR, LF.CRLF and friends do not.  ".." at a line
 * start is content and is not touched.
 */
struct smtp_data_scanner {
    int state;  /* private */
};

/* smtp_data_scanner_init - start scanning at the beginning of content. */
void smtp_data_scanner_init(struct smtp_data_scanner *s);

/*
 * smtp_data_scan - scan buf[0..len) of content.
 * Returns the number of bytes that belong to the message; when the
 * terminating CRLF.CRLF ends inside buf, *done is set to true and the
 * return value counts up to and including its final LF (the bytes after it
 * are the next command).  Otherwise *done is false and the return value
 * is len.  Once done, further calls return 0 with *done true until the
 * scanner is initialised again.
 */
size_t smtp_data_scan(struct smtp_data_scanner *s, const char *buf,
                      size_t len, bool *done);

#endif
