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
    const char *word;    /* the first word of the line, as written */
    size_t word_len;
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
    SMTP_CAP_ENHANCEDSTATUSCODES = 1u << 10,
    SMTP_CAP_HELP         = 1u << 11,
    SMTP_CAP_VRFY         = 1u << 12,
    SMTP_CAP_EXPN         = 1u << 13,
    SMTP_CAP_ETRN         = 1u << 14,
    SMTP_CAP_LIMITS       = 1u << 15,   /* RFC 9422 */
    SMTP_CAP_REQUIRETLS   = 1u << 16,   /* RFC 8689 */
    SMTP_CAP_ALL          = (1u << 17) - 1
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

/*
 * smtp_ehlo_auth_mech - does a complete 250 EHLO reply offer the SASL
 * mechanism mech (e.g. "PLAIN") on an AUTH line (RFC 4954 3: "AUTH"
 * SP mechanism list; the old "AUTH=" form counts too)?  Names compare
 * case-insensitively and whole: "PLAINX" is not PLAIN.
 */
bool smtp_ehlo_auth_mech(const char *reply, size_t len, const char *mech);

struct smtp_ehlo_rewrite {
    bool offer_starttls;  /* make sure STARTTLS is advertised exactly once;
                             otherwise every STARTTLS line is removed */
    unsigned keep;        /* SMTP_CAP_* bits whose keyword lines are kept
                             (SMTP_CAP_STARTTLS: see offer_starttls) */
    const char *const *extra; /* further keywords kept, matched by name in
                             any case (nextra of them; may be NULL) */
    size_t nextra;
    char *dropped;        /* out, may be NULL: the keywords removed, as
                             "NAME,NAME" (as the reply wrote them, cut to
                             dropped_cap - 1 bytes), "" when none */
    size_t dropped_cap;
};

/*
 * smtp_ehlo_rewrite - rewrite a complete 250 EHLO reply into out.
 * Keeps the first line (the domain) and the keyword lines whose keyword is
 * in opts->keep or opts->extra, removes every other one (an allowlist:
 * keywords the proxy does not know are removed), then appends
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

/*
 * smtp_ehlo_keyword_valid - is s[0..len) an ehlo-keyword (RFC 5321
 * 4.1.1.1: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")), at most 64 bytes?
 */
bool smtp_ehlo_keyword_valid(const char *s, size_t len);


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

/* ---- line hygiene (SMTP smuggling) ------------------------------------ */

/*
 * smtp_line_has_bare_cr_lf - is a command line that smtp_line_find
 * returned (line, line_len, total) ended by a bare LF or does it hold a
 * CR that is not part of its CRLF?  Such a line must not reach the
 * backend, which could read it differently (answer 500 5.5.2).  Only
 * line[0..len) is read; total is the length with the terminator, so
 * total == len + 2 means CRLF.  A LF inside the line counts too.
 */
bool smtp_line_has_bare_cr_lf(const char *line, size_t len, size_t total);

/*
 * The message content filter: the end-of-data scanner that also rewrites
 * the content so that the backend can only read it one way (the defence
 * against SMTP smuggling: SEC Consult 2023, CVE-2023-51764/51765/51766).
 *
 * - Only CR LF "." CR LF ends the message (RFC 5321 4.1.1.4), exactly as
 *   smtp_data_scan finds it; the DATA command's CRLF counts as the first
 *   CR LF.  The output ends with the same terminator, so the backend sees
 *   exactly one end, the real one.
 * - A bare LF, or a bare CR (one not followed at once by LF; a CR at the
 *   end of a chunk waits for the next byte), is written as CR LF: the
 *   output never holds a bare CR or LF.
 * - A line of the output that starts after such a rewritten line end and
 *   begins with "." gets a second "." (RFC 5321 4.5.2 transparency), and a
 *   line that follows a real CRLF and is just "." ended by a bare CR or LF
 *   is written "..": so no end-of-data appears in the output that was not
 *   in the input.  "a\n.\nMAIL FROM:<x>" becomes "a\r\n..\r\nMAIL FROM:<x>".
 *   Lines that follow a real CRLF are otherwise untouched (".." stays "..").
 * - NUL bytes are removed (RFC 5321 2.3.8 text holds none, and a backend
 *   that drops them while reading would read "\r\n\0.\r\n" as an end).
 *   A line that then starts with "." is stuffed as after a bare line end:
 *   "\r\n\0.\r\n" becomes "\r\n..\r\n", "\r\n.\0\r\n" too.  A NUL
 *   never ends anything and never turns a bare CR or LF into CRLF ("\r\0\n"
 *   is a bare CR and a bare LF).  They are counted
 *   (smtp_data_filter_nul_count) for a caller that refuses them instead.
 *
 * The output is the same in both modes; the mode is kept for the caller
 * (smtp_data_filter_mode).  With SMTP_BARE_REJECT the caller reads the
 * message to its real end, then refuses it (550 5.5.2) when
 * smtp_data_filter_bare_seen says so, and must not let the backend accept
 * what it was sent of it.  bare_seen and the NUL count are recorded in
 * both modes.
 */
enum smtp_bare_newline {
    SMTP_BARE_NORMALIZE,  /* rewrite bare CR/LF to CRLF, dot-stuff */
    SMTP_BARE_REJECT      /* same output; the caller refuses the message */
};

/*
 * The smallest out_cap with which smtp_data_filter always makes progress
 * (one input byte can give up to 6 output bytes).
 */
#define SMTP_DATA_FILTER_MIN_OUT 8

struct smtp_data_filter {
    int state;                    /* private */
    enum smtp_bare_newline mode;  /* private: smtp_data_filter_mode */
    bool bare_seen;               /* private: smtp_data_filter_bare_seen */
    uint64_t nul_count;           /* private: smtp_data_filter_nul_count */
};

/* smtp_data_filter_init - start filtering at the beginning of content. */
void smtp_data_filter_init(struct smtp_data_filter *f,
                           enum smtp_bare_newline mode);

/*
 * smtp_data_filter - filter in[0..in_len) of message content into out.
 * Returns the number of input bytes consumed and sets *out_len to the
 * bytes written to out[0..out_cap) (never more than out_cap).  When the
 * terminating CR LF "." CR LF ends inside the consumed bytes, *done is set
 * and the return value counts up to and including its final LF: the bytes
 * after it are the next command.  Otherwise *done is false; the return
 * value is less than in_len only when out is full (call again with the
 * rest after sending out).  With out_cap >= SMTP_DATA_FILTER_MIN_OUT at
 * least one byte is consumed whenever in_len > 0.  A CR, or a "." at the
 * start of a line, may be held back until the byte after it decides what
 * it is: the output for any chunking of the input and any out_cap is the
 * same when concatenated.  out may be NULL: the output is then thrown
 * away (*out_len is 0) and all input up to the end is consumed, for a
 * caller that reads a refused message to its end.  Once done, further
 * calls return 0 with *done true until the filter is initialised again.
 */
size_t smtp_data_filter(struct smtp_data_filter *f, const char *in,
                        size_t in_len, char *out, size_t out_cap,
                        size_t *out_len, bool *done);

/*
 * smtp_data_filter_pass - the fast path for content that needs no
 * rewriting: consumes the longest prefix of in[0..in_len) that
 * smtp_data_filter would write out unchanged, and returns its length; the
 * caller sends those bytes straight from in, without a copy, and gives
 * the rest to smtp_data_filter.  Returns 0 when the filter holds bytes
 * back or the first byte needs rewriting.  It never consumes the end of
 * data: *done is true only if the filter was done already.  Mixing the
 * two calls in any way gives the output smtp_data_filter alone gives.
 */
size_t smtp_data_filter_pass(struct smtp_data_filter *f, const char *in,
                             size_t in_len, bool *done);

/* smtp_data_filter_bare_seen - was a bare CR or LF found so far? */
bool smtp_data_filter_bare_seen(const struct smtp_data_filter *f);

/* smtp_data_filter_nul_seen - was a NUL byte found (and removed) so far? */
bool smtp_data_filter_nul_seen(const struct smtp_data_filter *f);

/* smtp_data_filter_nul_count - how many NUL bytes were removed so far. */
uint64_t smtp_data_filter_nul_count(const struct smtp_data_filter *f);

/* smtp_data_filter_mode - the mode given to smtp_data_filter_init. */
enum smtp_bare_newline smtp_data_filter_mode(const struct smtp_data_filter *f);

#endif
