#!/usr/bin/env python3
"""mk_session_corpus.py - write the seed inputs of fuzz_session.

Usage: python3 tests/fuzz/mk_session_corpus.py [DIR]
       python3 tests/fuzz/mk_session_corpus.py --findings DIR
(default DIR: tests/fuzz/corpus/fuzz_session next to this script)

--findings writes only the reproducers of open findings (FINDINGS below),
which fail until the proxy is fixed; once fixed, move them into SEEDS so
that ctest replays them.

Each seed is a 4-byte header (see the comment at the top of fuzz_session.c)
followed by what the client writes.  Files are named after what they
drive, so that a failing replay names the path it took.
"""
import os
import sys

# config variants (fuzz_session.c, fz_variants[])
(PLAIN, MAY, ENCRYPT, XCLIENT, PROXY_V2, STRICT, PROXY_IN, PROFILE,
 IMPLICIT, BACKEND_IMPLICIT, VERIFY, XCLIENT_TLS, BIG_LINES, CLIENT_CERT,
 IMPLICIT_PROXY_V1, PROXY_PROFILE) = range(16)
# chunking
WHOLE, LINES, RANDOM, SEPARATED = range(4)
# backend faults
(NONE, CLOSE, GARBAGE, UNSOLICITED, F421, MIXED, HUGE,
 REFUSE) = range(8)
# EHLO flavours
EHLO_FULL, EHLO_STARTTLS, EHLO_REFUSED, EHLO_BARE = range(4)


def header(variant=PLAIN, chunking=LINES, wait=True, tls=False,
           full_close=False, fault=NONE, ehlo=EHLO_FULL, starttls_454=True,
           auth_334=True, eod_554=False, fault_at=0, seed=0,
           backend_tls=False, stop=False):
    b0 = (variant & 7) | chunking << 3 | wait << 5 | tls << 6 | \
        full_close << 7
    b1 = fault | ehlo << 3 | starttls_454 << 5 | auth_334 << 6 | eod_554 << 7
    b3 = (seed & 15) | (variant >> 3) << 4 | backend_tls << 5 | stop << 6
    return bytes([b0, b1, fault_at, b3])


def crlf(*lines):
    return b"".join(l + b"\r\n" for l in lines)


MAIL = crlf(b"EHLO client.test", b"MAIL FROM:<a@example.org>",
            b"RCPT TO:<b@example.com>", b"DATA",
            b"Subject: hi", b"", b"body", b".", b"QUIT")

SEEDS = {
    "normal_lines": header() + MAIL,
    "normal_whole": header(chunking=WHOLE) + MAIL,
    "normal_random": header(chunking=RANDOM, seed=7) + MAIL,
    "normal_separated": header(chunking=SEPARATED) +
        b"EH\xffLO c\r\nMAIL FROM:<a>\r\n\xffRCPT TO:<b>\r\nDA\xffTA\r\n"
        b"x\r\n.\xff\r\nQUIT\r\n",
    "helo_session": header() + crlf(b"HELO client.test", b"MAIL FROM:<a>",
                                    b"RCPT TO:<b>", b"RSET", b"NOOP",
                                    b"VRFY x", b"HELP", b"QUIT"),
    "pipelined": header(chunking=WHOLE) + crlf(
        b"EHLO client.test") + crlf(
        b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.com>",
        b"RCPT TO:<c@example.com>", b"DATA") + crlf(b"x", b".", b"QUIT"),
    "pipelined_70_noops": header(chunking=WHOLE) +
        crlf(b"EHLO c") + b"NOOP\r\n" * 70 + crlf(b"QUIT"),
    "bdat": header(variant=MAY) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>") +
        b"BDAT 10\r\n0123456789BDAT 5 LAST\r\nabcdeQUIT\r\n",
    "bdat_whole_trace": header(variant=PROFILE, chunking=WHOLE) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>") +
        b"BDAT 3\r\nabcBDAT 0 LAST\r\nQUIT\r\n",
    "bdat_syntax": header() + crlf(b"EHLO c", b"BDAT", b"BDAT x",
                                   b"BDAT 1 LASTX", b"BDAT 1234567890123456789",
                                   b"QUIT"),
    "bdat_huge_then_eof": header() + crlf(b"EHLO c", b"MAIL FROM:<a>",
                                          b"BDAT 999999999999") + b"abc",
    "bdat_refused_encrypt": header(variant=ENCRYPT, chunking=WHOLE) +
        crlf(b"EHLO c") + b"BDAT 4 LAST\r\nabcdNOOP\r\nQUIT\r\n",
    "auth_plaintext_334": header(variant=XCLIENT, auth_334=True) + crlf(
        b"EHLO c", b"AUTH PLAIN", b"AGEAYg==", b"AUTH PLAIN AGEAYg==",
        b"AUTH LOGIN", b"*", b"QUIT"),
    "auth_refused_535": header(variant=XCLIENT, auth_334=False) + crlf(
        b"EHLO c", b"AUTH PLAIN AGEAYg==", b"QUIT"),
    "auth_needs_tls": header(variant=MAY) + crlf(b"EHLO c",
                                                 b"AUTH PLAIN AGEAYg==",
                                                 b"QUIT"),
    "starttls_tls_session": header(variant=MAY, tls=True) + crlf(
        b"EHLO c", b"STARTTLS", b"EHLO c", b"AUTH PLAIN",
        b"AGEAYg==", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA", b"x",
        b".", b"STARTTLS", b"QUIT"),
    "starttls_after_mail_refresh": header(variant=MAY, tls=True) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"STARTTLS", b"MAIL FROM:<a>",
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"QUIT"),
    "starttls_injection": header(variant=MAY, chunking=WHOLE) +
        crlf(b"EHLO c") + crlf(b"STARTTLS", b"MAIL FROM:<evil>",
                               b"RCPT TO:<evil>"),
    "starttls_injection_tls": header(variant=MAY, chunking=SEPARATED,
                                     tls=True) +
        b"EHLO c\r\n\xffSTARTTLS\r\nRSET\r\n\xffEHLO c\r\n\xffQUIT\r\n",
    "starttls_syntax_and_none": header() + crlf(
        b"EHLO c", b"STARTTLS now", b"STARTTLS", b"QUIT"),
    "starttls_plain_into_handshake": header(variant=MAY, tls=False) + crlf(
        b"EHLO c", b"STARTTLS", b"EHLO c", b"QUIT"),
    "encrypt_policy": header(variant=ENCRYPT, tls=True) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"VRFY x", b"STARTTLS", b"EHLO c",
        b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA", b"a") +
        b"b\n.\nc\r\n.\r\n" + crlf(b"QUIT"),
    "encrypt_enforce_no_proxy_v2": header(variant=PROXY_V2) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA", b"x", b".",
        b"QUIT"),
    "smuggle_data_bare_lf": header(chunking=WHOLE) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA") +
        b"a\n.\nMAIL FROM:<x>\r\nRCPT TO:<y>\r\nDATA\r\nz\r\n.\r\nQUIT\r\n",
    "smuggle_data_bare_cr": header() + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA") +
        b"a\r.\rMAIL FROM:<x>\r\n\r\n.\n\r\n..\r\n.\r\nQUIT\r\n",
    "smuggle_reject": header(variant=PROXY_IN, wait=True) +
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 25\r\n" + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA") +
        b"a\n.\nb\r\n.\r\n" + crlf(b"MAIL FROM:<a>", b"QUIT"),
    "smuggle_commands": header(chunking=WHOLE) +
        b"EHLO c\r\nMAIL FROM:<a>\nRCPT TO:<b>\r\nNOOP\rRSET\r\n"
        b"NOOP\r\r\nQUIT\r\n",
    "nul_in_data": header() + crlf(b"EHLO c", b"MAIL FROM:<a>",
                                   b"RCPT TO:<b>", b"DATA") +
        b"a\r\n\x00.\r\nb\r\n.\r\nQUIT\r\n",
    "long_line": header() + b"EHLO " + b"x" * 3000 + b"\r\n" +
        crlf(b"NOOP", b"QUIT"),
    "long_line_512": header(variant=PROXY_V2) + b"NOOP " + b"y" * 600 +
        b"\r\n" + crlf(b"EHLO " + b"h" * 300, b"QUIT"),
    "long_line_unterminated": header(full_close=True) + b"EHLO " + b"z" * 5000,
    "pregreet": header(wait=False) + crlf(b"EHLO c", b"QUIT"),
    "pregreet_enforce_no": header(variant=PROXY_V2, wait=False) +
        crlf(b"EHLO c", b"QUIT"),
    "garbage": header(chunking=RANDOM, seed=3) +
        bytes((i * 37 + 11) % 256 for i in range(300)),
    "garbage_no_wait": header(wait=False, full_close=True) +
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
    "proxy_header_v2": header(variant=PROXY_IN, chunking=SEPARATED) +
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
        b"\xc0\x00\x02\x01\xc0\x00\x02\x02\x04\xd2\x00\x19\xff" +
        b"EHLO c\r\n\xffQUIT\r\n",
    "proxy_header_v2_pregreet": header(variant=PROXY_IN, chunking=WHOLE) +
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
        b"\xc0\x00\x02\x01\xc0\x00\x02\x02\x04\xd2\x00\x19" +
        crlf(b"EHLO c", b"QUIT"),
    "proxy_header_bad": header(variant=PROXY_IN) +
        crlf(b"PROXY TCP4 1.2.3.4", b"EHLO c"),
    "xclient_offered": header(variant=XCLIENT, ehlo=EHLO_STARTTLS) + crlf(
        b"EHLO my.name", b"MAIL FROM:<a>", b"HELO again", b"QUIT"),
    "xclient_bare_backend": header(variant=PROFILE, ehlo=EHLO_BARE,
                                   tls=True) + crlf(
        b"EHLO c", b"STARTTLS", b"EHLO c", b"QUIT"),
    "helo_only_backend": header(ehlo=EHLO_REFUSED) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"EHLO again", b"HELO c", b"QUIT"),
    "backend_starttls_454": header(variant=MAY, ehlo=EHLO_STARTTLS,
                                   starttls_454=True) + MAIL,
    "backend_starttls_no_tls": header(variant=MAY, ehlo=EHLO_STARTTLS,
                                      starttls_454=False) + MAIL,
    "backend_strict_enforce_no": header(variant=STRICT, ehlo=EHLO_STARTTLS,
                                        starttls_454=False) + MAIL,
    "backend_strict_no_starttls": header(variant=STRICT) + MAIL,
    "max_errors": header(variant=XCLIENT, chunking=WHOLE) + crlf(
        b"EHLO c", b"XCLIENT ADDR=1.2.3.4", b"XFORWARD NAME=x", b"BOGUS",
        b"STARTTLS", b"NOOP", b"QUIT"),
    "eod_554": header(eod_554=True) + MAIL,
    "full_close_mid_data": header(full_close=True) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA", b"partial"),
    "half_close_mid_data": header() + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA", b"partial"),
    "no_quit_lines": header() + crlf(b"EHLO c", b"NOOP"),
    # TLS on the client leg from the first byte
    "implicit_tls": header(variant=IMPLICIT, tls=True) + MAIL,
    "implicit_tls_plaintext_client": header(variant=IMPLICIT) + MAIL,
    "implicit_tls_pregreet": header(variant=IMPLICIT, tls=True, wait=False,
                                    chunking=WHOLE) + MAIL,
    # TLS on the backend leg
    "backend_starttls_tls": header(variant=MAY, ehlo=EHLO_STARTTLS,
                                   starttls_454=False, backend_tls=True) + MAIL,
    "backend_starttls_tls_refresh": header(
        variant=MAY, ehlo=EHLO_STARTTLS, starttls_454=False,
        backend_tls=True, tls=True) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"STARTTLS", b"EHLO c", b"MAIL FROM:<a>",
        b"RCPT TO:<b>", b"DATA", b"x", b".", b"QUIT"),
    "backend_implicit_tls": header(variant=BACKEND_IMPLICIT, backend_tls=True,
                                   tls=True) + crlf(
        b"EHLO c", b"STARTTLS", b"EHLO c", b"AUTH PLAIN AGEAYg==",
        b"MAIL FROM:<a>", b"QUIT"),
    "backend_implicit_no_tls": header(variant=BACKEND_IMPLICIT) + MAIL,
    "backend_verify_trace": header(variant=VERIFY, ehlo=EHLO_STARTTLS,
                                   starttls_454=False, backend_tls=True,
                                   tls=True) + crlf(
        b"EHLO c", b"STARTTLS", b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>",
        b"DATA", b"x", b".", b"MAIL FROM:<a>", b"RCPT TO:<b>") +
        b"BDAT 3 LAST\r\nabcQUIT\r\n",
    "backend_verify_refused": header(variant=VERIFY, ehlo=EHLO_STARTTLS,
                                     starttls_454=False) + MAIL,
    "backend_verify_no_starttls": header(variant=VERIFY) + MAIL,
    "xclient_tls_backend": header(variant=XCLIENT_TLS, ehlo=EHLO_STARTTLS,
                                  starttls_454=False, backend_tls=True,
                                  tls=True) + crlf(
        b"EHLO c", b"STARTTLS", b"EHLO c2", b"AUTH PLAIN", b"AGEAYg==",
        b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA") +
        b"a\n.\nb\r\n.\r\n" + crlf(b"MAIL FROM:<a>", b"QUIT"),
    "big_lines": header(variant=BIG_LINES) + b"EHLO " + b"q" * 60000 +
        b"\r\n" + crlf(b"QUIT"),
    "client_cert_ask": header(variant=CLIENT_CERT, tls=True) + crlf(
        b"EHLO c", b"STARTTLS", b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>",
        b"DATA", b"x", b".", b"QUIT"),
    "implicit_proxy_v1_backend_tls": header(
        variant=IMPLICIT_PROXY_V1, tls=True, ehlo=EHLO_STARTTLS,
        starttls_454=False, backend_tls=True) + MAIL,
    "proxy_profile_tcp4": header(variant=PROXY_PROFILE) +
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 25\r\n" + MAIL,
    "proxy_profile_tcp6": header(variant=PROXY_PROFILE) +
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 25\r\n" + MAIL,
    "proxy_profile_outside": header(variant=PROXY_PROFILE, tls=True) +
        b"PROXY TCP4 198.51.100.1 192.0.2.2 1234 25\r\n" + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"STARTTLS", b"EHLO c",
        b"MAIL FROM:<a>", b"QUIT"),
    "proxy_unknown": header(variant=PROXY_PROFILE) +
        b"PROXY UNKNOWN\r\n" + crlf(b"EHLO c", b"QUIT"),
    # the proxy shuts down (worker_stop) with the session live
    "stop_idle": header(stop=True) + crlf(b"EHLO c"),
    "stop_in_data": header(stop=True) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA", b"partial"),
    "stop_in_bdat": header(stop=True) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"BDAT 100") + b"abc",
    "stop_in_tls": header(variant=MAY, tls=True, stop=True) + crlf(
        b"EHLO c", b"STARTTLS", b"EHLO c", b"MAIL FROM:<a>"),
    "stop_in_handshake": header(variant=MAY, stop=True) + crlf(
        b"EHLO c", b"STARTTLS") + b"\x16\x03\x01",
    "stop_before_greeting": header(variant=PROXY_IN, stop=True),
}

# every backend fault on the greeting, the EHLO reply and later replies
for fault, name in ((CLOSE, "close"), (GARBAGE, "garbage"),
                    (UNSOLICITED, "unsolicited"), (F421, "421"),
                    (MIXED, "mixed"), (HUGE, "huge"), (REFUSE, "refuse")):
    for at in (0, 1, 4, 5):
        SEEDS["fault_%s_at%d" % (name, at)] = header(
            chunking=WHOLE if at == 4 else LINES, fault=fault,
            fault_at=at) + MAIL


# Findings of fuzz_session (2026-11-28), fixed in ced41bd: replayed by
# ctest so that they stay fixed.
_XFWD = b"XFORWARD ADDR=6.6.6.6\r\n"
_XCLI = b"XCLIENT ADDR=6.6.6.6 NAME=trusted.example\r\n"
SEEDS.update({
    # max_errors fires on the 550 of a bare-newline message (bare_newline =
    # reject): session_data_step() called backend_start() on the closed
    # session; the new backend connection lingered until the 5 s close
    # deadline.
    "fixed-linger-backend-after-close": header(variant=ENCRYPT, tls=True) +
        crlf(b"EHLO c") + crlf(*([b"MAIL FROM:<a>"] * 9)) +
        crlf(b"STARTTLS", b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>",
             b"DATA") + b"a\nb\r\n.\r\n",
    # BDAT relayed to a backend that did not offer CHUNKING: it answered
    # 502 and read the chunk, which the proxy never checked, as commands.
    "fixed-bdat-no-chunking-xforward": header(ehlo=EHLO_BARE) + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>") +
        b"BDAT %d\r\n" % len(_XFWD) + _XFWD + crlf(b"QUIT"),
    "fixed-bdat-no-chunking-xclient": header(variant=XCLIENT,
                                             ehlo=EHLO_BARE) +
        crlf(b"EHLO c", b"MAIL FROM:<a>") +
        b"BDAT %d\r\n" % len(_XCLI) + _XCLI + crlf(b"QUIT"),
    # "BDAT  23" (two spaces) was relayed as written; a backend that wants
    # "BDAT" SP size answered 501 and read the chunk as commands.
    "fixed-bdat-two-spaces": header() + crlf(
        b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>") +
        b"BDAT  %d\r\n" % len(_XFWD) + _XFWD + crlf(b"QUIT"),
})

# NUL bytes (issue 8): removed from content under normalize, the message
# refused under reject (variant 2), a command line with one refused.
_NUL_MAIL = crlf(b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>", b"DATA")
SEEDS.update({
    "nul_content_normalize": header(chunking=WHOLE) + _NUL_MAIL +
        b"x\r\n\x00.\r\nMAIL FROM:<e>\r\n.\x00\r\n\r\n.\r\nQUIT\r\n",
    "nul_content_reject": header(variant=ENCRYPT, tls=True) +
        crlf(b"STARTTLS", b"EHLO c", b"MAIL FROM:<a>", b"RCPT TO:<b>",
             b"DATA") + b"x\r\n\x00.\r\ny\r\n.\r\nNOOP\r\nQUIT\r\n",
    "nul_content_random_split": header(chunking=RANDOM, seed=3) + _NUL_MAIL +
        b"a\r\x00\n.\r\x00\nb\r\n\x00\x00.x\r\n.\r\nQUIT\r\n",
    "nul_command": header() + crlf(b"EHLO c", b"MAIL FROM:<a>\x00",
                                   b"\x00NOOP", b"NOOP", b"QUIT"),
})

# Open findings: reproducers that still abort the target (none now).
FINDINGS = {}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    seeds = SEEDS
    args = sys.argv[1:]
    if args[:1] == ["--findings"]:
        seeds = FINDINGS
        args = args[1:]
        if not args:
            sys.exit("usage: mk_session_corpus.py --findings DIR")
    out = args[0] if args else os.path.join(here, "corpus", "fuzz_session")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d inputs written to %s" % (len(seeds), out))


if __name__ == "__main__":
    main()
