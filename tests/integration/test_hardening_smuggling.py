"""
SMTP smuggling (issue 3, section 1): only CRLF "." CRLF ends a message,
the backend never receives a bare CR or LF, "bare_newline = normalize"
repairs them, "bare_newline = reject" refuses the message after reading
it to its end, and command lines with a bare CR or LF get 500 5.5.2.
BDAT is refused unless the backend offered CHUNKING (a chunk read as
commands by the backend), its line reaches the backend rebuilt, and a
refused message that reaches max_errors opens no new backend connection.
"""

import re
import time

import pytest

from harness import TERM, expect, log_fields, unique_token, wait_for
from hardening_util import (SMUGGLING_EODS, bare_newlines, connect, eod_id,
                            normalize_content, nothing_readable,
                            replies_until_close, smuggling_content, unstuff)


def open_data(c):
    c.ehlo()
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    expect(c.cmd("DATA"), 354)


def test_reference_normalizer_never_makes_an_end_of_data():
    """The expected forms used below: none may contain CRLF.CRLF."""
    for eod in SMUGGLING_EODS:
        assert TERM not in b"\r\n" + smuggling_content(eod), eod
        norm = normalize_content(smuggling_content(eod))
        assert TERM not in b"\r\n" + norm, (eod, norm)
        assert not bare_newlines(norm), (eod, norm)


@pytest.mark.parametrize("eod", SMUGGLING_EODS, ids=eod_id)
def test_smuggling_variant_normalized_scripted(proxy, scripted_backend, eod):
    b = scripted_backend()
    p = proxy(b.port)                      # bare_newline = normalize (default)
    c = connect(p)
    open_data(c)
    content = smuggling_content(eod)
    c.send(content + b".\r\n")
    r = expect(c.read_reply(), 250)
    assert "SCRIPT1" in r.text, r          # the one message, nothing else
    r = expect(c.cmd("NOOP"), 250)
    assert "SCRIPT" not in r.text, r
    c.quit()                               # nothing after the 221 either
    assert len(b.conns) == 1, [x.lines for x in b.conns]
    conn = b.conns[0]
    conn.done.wait(10)
    raw = bytes(conn.raw)
    assert not bare_newlines(raw), (
        "bare CR/LF at %r reached the backend: %r" % (bare_newlines(raw), raw))
    assert conn.messages == [normalize_content(content)], (
        "sent %r\n got %r\nwant %r" % (content, conn.messages,
                                       normalize_content(content)))
    cmds = conn.commands()
    assert cmds.count("MAIL") == 1 and cmds.count("RCPT") == 1 and \
        cmds.count("DATA") == 1, conn.lines
    assert not any(b"evil@x" in l or b"victim@y" in l for l in conn.lines), \
        conn.lines


@pytest.mark.parametrize("eod", SMUGGLING_EODS, ids=eod_id)
def test_smuggling_variant_normalized_aiosmtpd(proxy, aiosmtpd_backend, eod):
    b = aiosmtpd_backend()
    p = proxy(b.port)
    c = connect(p)
    open_data(c)
    content = smuggling_content(eod)
    c.send(content + b".\r\n")
    expect(c.read_reply(), 250)
    expect(c.cmd("NOOP"), 250)
    c.quit()
    b.wait_messages(1)
    assert len(b.envelopes) == 1, [e.rcpt_tos for e in b.envelopes]
    env = b.envelopes[0]
    assert env.mail_from == "sender@client.test", env.mail_from
    assert env.rcpt_tos == ["rcpt@test.example"], env.rcpt_tos
    want = unstuff(normalize_content(content))
    got = env.original_content
    assert got.rstrip(b"\r\n") == want.rstrip(b"\r\n"), (got, want)


@pytest.mark.parametrize("eod", [b"\n.\n", b"\r.\r", b"\r\n.\n",
                                 b"\r\n.\r", b"\n"], ids=eod_id)
def test_bare_newline_reject_550_and_session_goes_on(
        proxy, scripted_backend, eod):
    """Message and its end in one write."""
    b = scripted_backend()
    # idle_timeout: a proxy that stalls fails this test in 10 s, not 30
    p = proxy(b.port, bare_newline="reject", idle_timeout=10)
    c = connect(p)
    open_data(c)
    content = smuggling_content(eod)
    c.send(content + b".\r\n")
    expect(c.read_reply(), 550, "5.5.2")
    check_session_goes_on_after_reject(p, b, c)


def check_session_goes_on_after_reject(p, b, c):
    # the same client connection goes on: a clean message is delivered
    token = unique_token("after-reject")
    r = c.mail(rcpts=["clean@test.example"],
               body=("Subject: %s\r\n\r\nclean\r\n" % token).encode())
    expect(r, 250)
    c.quit()
    assert len(b.conns) == 2, [x.lines for x in b.conns]
    first, fresh = b.conns
    first.wait_eof()
    first.done.wait(10)
    fresh.done.wait(10)
    assert first.messages == [], "the refused message reached the backend"
    assert TERM not in bytes(first.raw).split(b"DATA\r\n", 1)[-1]
    assert b"evil@x" not in b.all_raw()
    assert not bare_newlines(b.all_raw()), b.all_raw()
    # the fresh backend session was greeted with the client's name again
    assert b"EHLO client.test" in fresh.lines, fresh.lines
    assert len(fresh.messages) == 1 and token.encode() in fresh.messages[0]
    p.wait_log(r"event=bare_newline_message action=reject")


def test_bare_newline_reject_waits_for_the_real_end(proxy, scripted_backend):
    """The end of the message comes in later writes than the bare LF: the
    550 comes only after the real end, and the session goes on."""
    b = scripted_backend()
    p = proxy(b.port, bare_newline="reject", idle_timeout=10)
    c = connect(p)
    open_data(c)
    c.send(smuggling_content(b"\n.\n"))
    assert nothing_readable(c.sock, 1.5), (
        "reply before the end of the message: %r" % c.sock.recv(4096))
    c.send(b".\r\n")
    expect(c.read_reply(), 550, "5.5.2")
    check_session_goes_on_after_reject(p, b, c)


def test_bare_newline_reject_split_across_writes(proxy, scripted_backend):
    """The bare LF arrives in a write of its own, after clean content the
    proxy may already have passed on: still no message at the backend."""
    b = scripted_backend()
    p = proxy(b.port, bare_newline="reject", idle_timeout=10)
    c = connect(p)
    open_data(c)
    c.send(b"Subject: split\r\n\r\n" + b"clean line\r\n" * 200)
    assert nothing_readable(c.sock, 0.5)
    c.send(b"bad\n.\nMAIL FROM:<evil@x>\r\n")
    assert nothing_readable(c.sock, 0.5)
    c.send(b"more\r\n.\r\n")
    expect(c.read_reply(), 550, "5.5.2")
    expect(c.cmd("NOOP"), 250)
    c.quit()
    assert all(x.messages == [] for x in b.conns), \
        [x.messages for x in b.conns]
    assert b"evil@x" not in b.all_raw()


@pytest.mark.parametrize("mode", ["normalize", "reject"])
@pytest.mark.parametrize("line", [
    b"NOOP marker-lf\n",
    b"MAIL FROM:<a@b>\rRCPT TO:<c@d>\r\n",
    b"NOOP marker\rcr\r\n",
    b"RSET marker\r\r\n",
], ids=["lf", "cr-inside", "cr-inside-noop", "cr-cr-lf"])
def test_bare_newline_in_command_line_500(proxy, scripted_backend, mode,
                                          line):
    b = scripted_backend()
    p = proxy(b.port, bare_newline=mode)
    c = connect(p)
    c.ehlo()
    c.send(line)
    expect(c.read_reply(), 500, "5.5.2")
    expect(c.cmd("NOOP clean"), 250)
    expect(c.cmd("MAIL FROM:<good@client.test>"), 250)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    raw = bytes(conn.raw)
    assert b"marker" not in raw and b"<a@b>" not in raw and \
        b"<c@d>" not in raw, raw
    assert b"NOOP clean\r\n" in raw
    assert not bare_newlines(raw), raw


# ---- BDAT only where the backend offered CHUNKING -------------------------
#
# A BDAT chunk is length-delimited: the proxy passes exactly n bytes and then
# reads commands again.  A backend that never offered CHUNKING (RFC 3030)
# does not know BDAT: it would answer the command line with an error and
# read the chunk that follows as commands of its own, past every check of
# the proxy.  So BDAT gets "502 5.5.1" unless the backend's reply to the
# client's EHLO offered CHUNKING, and the chunk is read and thrown away.

# 23 bytes of chunk that a backend reading it as commands would act on
CHUNK_COMMANDS = b"MAIL FROM:<x@y>\r\nRSET\r\n"
NOT_IMPLEMENTED = "Error: command not implemented"    # proxy/reply.c
PAUSE = 0.1     # lets separate writes arrive as separate reads


def send_bdat_then_noop(c, header, chunk, split):
    """send_bdat_then_noop - BDAT header, its chunk and a NOOP: in one write,
    or the header, then the chunk in two writes, then the NOOP.  Returns the
    two replies (to BDAT and to NOOP)."""
    if split:
        c.send(header)
        time.sleep(PAUSE)
        c.send(chunk[:9])
        time.sleep(PAUSE)
        c.send(chunk[9:] + b"NOOP after chunk\r\n")
    else:
        c.send(header + chunk + b"NOOP after chunk\r\n")
    return c.read_reply(), c.read_reply()


def expect_bdat_refused(replies):
    bdat, noop = replies
    r = expect(bdat, 502, "5.5.1")
    assert r.text == "5.5.1 " + NOT_IMPLEMENTED, r
    # exactly the 23 bytes were skipped: the NOOP behind them is a command
    expect(noop, 250)


def client_commands(conn):
    """client_commands - verbs the backend got, without the proxy's own
    EHLO of its backend leg setup (backend_tls = may)."""
    return [v for v, l in zip(conn.commands(), conn.lines)
            if l != b"EHLO proxy.test"]


def assert_chunk_not_parsed_by_proxy(p):
    """The proxy itself never read the chunk as commands either."""
    log = p.log_text()
    assert not re.search(r'event=command verb=MAIL arg="FROM:<x@y>"', log), \
        log
    assert not re.search(r"event=command verb=RSET\b", log), log


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "split"])
def test_bdat_without_backend_chunking_502_scripted(proxy, scripted_backend,
                                                    split):
    b = scripted_backend()                 # keywords without CHUNKING
    p = proxy(b.port)
    c = connect(p)
    assert not c.ehlo().has("CHUNKING")
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    assert len(CHUNK_COMMANDS) == 23
    expect_bdat_refused(send_bdat_then_noop(c, b"BDAT 23 LAST\r\n",
                                            CHUNK_COMMANDS, split))
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    # every byte the backend received: no BDAT, nothing of the chunk
    raw = bytes(conn.raw)
    assert b"BDAT" not in raw.upper(), raw
    assert b"x@y" not in raw and b"RSET" not in raw, raw
    assert client_commands(conn) == ["EHLO", "MAIL", "RCPT", "NOOP",
                                     "QUIT"], conn.lines
    assert conn.chunks == [] and conn.messages == []
    assert len(b.conns) == 1
    assert_chunk_not_parsed_by_proxy(p)


def test_bdat_without_backend_chunking_502_smtp_sink(proxy, smtp_sink):
    """Postfix's smtp-sink offers no CHUNKING (and has no option to):
    a real backend that would read the chunk as commands."""
    sink = smtp_sink()
    p = proxy(sink.port)
    c = connect(p)
    assert not c.ehlo().has("CHUNKING")
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    expect_bdat_refused(send_bdat_then_noop(c, b"BDAT 23 LAST\r\n",
                                            CHUNK_COMMANDS, False))
    # the transaction the client opened is intact: DATA delivers it
    expect(c.cmd("DATA"), 354)
    token = unique_token("sink-after-bdat")
    c.send(("Subject: %s\r\n\r\nbody\r\n.\r\n" % token).encode())
    expect(c.read_reply(), 250)
    c.quit()
    # smtp-sink -v logs every command line it reads
    wait_for(lambda: "QUIT" in sink.log_text(), what="QUIT in smtp-sink log")
    log = sink.log_text()
    assert "BDAT" not in log.upper(), log
    assert "x@y" not in log and "RSET" not in log, log
    assert log.count("MAIL FROM:") == 1, log
    dumps = wait_for(lambda: sink.dumps(), what="the message in a dump file")
    assert len(dumps) == 1 and token.encode() in dumps[0], dumps
    assert_chunk_not_parsed_by_proxy(p)


def test_bdat_without_backend_chunking_502_aiosmtpd(proxy, aiosmtpd_backend):
    """aiosmtpd offers no CHUNKING: a chunk read as commands there would
    open a transaction of its own, and the client's MAIL would then get
    503 (nested MAIL)."""
    b = aiosmtpd_backend()
    p = proxy(b.port)
    c = connect(p)
    assert not c.ehlo().has("CHUNKING")
    chunk = b"MAIL FROM:<x@yy.test>\r\n"
    assert len(chunk) == 23
    expect_bdat_refused(send_bdat_then_noop(c, b"BDAT 23 LAST\r\n", chunk,
                                            False))
    token = unique_token("aiosmtpd-after-bdat")
    expect(c.mail(sender="good@client.test",
                  body=("Subject: %s\r\n\r\nbody\r\n" % token).encode()), 250)
    c.quit()
    b.wait_messages(1)
    assert len(b.envelopes) == 1, [e.mail_from for e in b.envelopes]
    env = b.envelopes[0]
    assert env.mail_from == "good@client.test", env.mail_from
    assert token.encode() in env.original_content
    assert b"x@yy" not in env.original_content


def test_bdat_after_helo_502_even_if_backend_has_chunking(
        proxy, scripted_backend):
    """CHUNKING is learnt from the reply to the client's EHLO; a client
    that only said HELO was never offered it (RFC 3030 2)."""
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING"))
    p = proxy(b.port)
    c = connect(p)
    expect(c.cmd("HELO client.test"), 250)
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    expect_bdat_refused(send_bdat_then_noop(c, b"BDAT 23 LAST\r\n",
                                            CHUNK_COMMANDS, False))
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    assert b"BDAT" not in bytes(conn.raw) and b"x@y" not in bytes(conn.raw)
    assert client_commands(conn) == ["HELO", "MAIL", "RCPT", "NOOP",
                                     "QUIT"], conn.lines


def test_bdat_with_backend_chunking_passes(proxy, scripted_backend):
    """The positive case: the backend offered CHUNKING, the same BDAT and
    chunk are relayed and the message is accepted; the chunk is content.
    (test_relay.py covers BDAT through Postfix.)"""
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING", "8BITMIME"))
    p = proxy(b.port)
    c = connect(p)
    assert c.ehlo().has("CHUNKING")
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    c.send(b"BDAT 23 LAST\r\n" + CHUNK_COMMANDS + b"NOOP after chunk\r\n")
    r = expect(c.read_reply(), 250)
    assert "23 octets, queued as SCRIPT1" in r.text, r
    expect(c.read_reply(), 250)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    assert conn.chunks == [CHUNK_COMMANDS]
    assert client_commands(conn) == ["EHLO", "MAIL", "RCPT", "BDAT", "NOOP",
                                     "QUIT"], conn.lines
    assert b"BDAT 23 LAST" in conn.lines, conn.lines


def test_bdat_after_reject_follows_the_fresh_backend(proxy, scripted_backend):
    """After a bare_newline = reject refusal a fresh backend session serves
    the client.  What it offers is learnt from its own reply to the
    replayed EHLO: here the first backend session offers CHUNKING and the
    fresh one does not, so BDAT is refused (and the chunk is not read as
    commands) instead of being relayed on the first one's word."""
    def ehlo(conn, line):
        if conn.index == 0 or line == b"EHLO proxy.test":
            return None                    # the default reply, CHUNKING
        return b"250-scripted.test\r\n250 PIPELINING\r\n"
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING", "8BITMIME"),
                         replies={"EHLO": ehlo})
    p = proxy(b.port, bare_newline="reject", idle_timeout=10)
    c = connect(p)
    assert c.ehlo().has("CHUNKING")
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: bare\n\nbody\r\n.\r\n")
    expect(c.read_reply(), 550, "5.5.2")
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    expect_bdat_refused(send_bdat_then_noop(c, b"BDAT 23 LAST\r\n",
                                            CHUNK_COMMANDS, False))
    c.quit()
    assert len(b.conns) == 2, [x.lines for x in b.conns]
    fresh = b.conns[1]
    fresh.done.wait(10)
    assert b"EHLO client.test" in fresh.lines, fresh.lines
    raw = bytes(fresh.raw)
    assert b"BDAT" not in raw.upper() and b"x@y" not in raw, raw


@pytest.mark.parametrize("line", [
    b"BDAT  23 LAST",
    b"bdat 23 last",
    b"BDAT 23  LAST",
    b"BDAT 023 LAST",
    b"Bdat  0023   Last",
], ids=["two-spaces", "lower-case", "two-spaces-before-last",
        "leading-zero", "all-of-them"])
def test_bdat_line_rebuilt_for_the_backend(proxy, scripted_backend, line):
    """The backend reads the BDAT line the proxy rebuilt from what it
    counted, never the client's own spelling: a strict backend could
    refuse "BDAT  23" and then read the chunk as commands."""
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING"))
    p = proxy(b.port)
    c = connect(p)
    assert c.ehlo().has("CHUNKING")
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    c.send(line + b"\r\n" + CHUNK_COMMANDS + b"NOOP after chunk\r\n")
    expect(c.read_reply(), 250)
    expect(c.read_reply(), 250)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    bdat = [l for l in conn.lines if l.upper().startswith(b"BDAT")]
    assert bdat == [b"BDAT 23 LAST"], conn.lines
    assert b"BDAT 23 LAST\r\n" + CHUNK_COMMANDS + b"NOOP after chunk\r\n" \
        in bytes(conn.raw), bytes(conn.raw)
    assert conn.chunks == [CHUNK_COMMANDS]
    assert conn.commands().count("MAIL") == 1 and \
        "RSET" not in conn.commands(), conn.lines


# ---- max_errors reached by the refusal of a bare-newline message ----------
#
# With "bare_newline = reject" the proxy cuts the backend connection off at
# the first bare CR or LF (session_reject_message), reads the message to its
# real end, answers 550 5.5.2 and, right after writing that 550, opens a
# fresh backend connection (session_data_step -> backend_start), to which it
# says the client's EHLO again.  The 550 counts as an error: when it is the
# one that reaches max_errors, the session ends with 421 4.7.0 and no fresh
# backend connection may be opened for the closed session.

# one event loop: the marker session below is accepted by the same loop
# that served the session under test, strictly after it
ONE_LOOP = {"workers": 1}


def assert_next_backend_conn_is(p, b, n):
    """assert_next_backend_conn_is - a new client session is served by
    backend connection number n (1-based), so exactly n - 1 were opened
    before it.  A connection opened for an already closed session is
    connected before this session is even accepted (the proxy calls
    connect() at once), so it would take number n and shift this one."""
    c = connect(p)                         # its backend has greeted
    c.ehlo("marker.test")
    c.quit()
    conn = b.wait_conns(n)
    conn.done.wait(10)
    assert b"EHLO marker.test" in conn.lines, (
        "backend connection %d is not the new session's: %r"
        % (n, [x.lines for x in b.conns]))
    assert len(b.conns) == n, [x.lines for x in b.conns]


def send_bare_lf_message(c):
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(smuggling_content(b"\n.\n") + b".\r\n")


@pytest.mark.parametrize("max_errors,before", [
    (1, []),
    (2, [b"EXPN first-error\r\n"]),
], ids=["550-is-the-only-error", "550-is-the-second-error"])
def test_max_errors_reached_by_bare_newline_550_opens_no_backend(
        proxy, scripted_backend, max_errors, before):
    b = scripted_backend()
    p = proxy(b.port, bare_newline="reject", max_errors=max_errors,
              idle_timeout=10, proxy_keys=ONE_LOOP)
    c = connect(p)
    c.ehlo()
    for line in before:
        c.send(line)
        expect(c.read_reply(), 502)        # the backend's own error reply
    send_bare_lf_message(c)
    replies = replies_until_close(c)
    assert [r.code for r in replies] == [550, 421], replies
    expect(replies[0], 550, "5.5.2")
    expect(replies[1], 421, "4.7.0")
    assert "too many errors" in replies[1].text, replies[1]
    # one backend connection: the one opened at accept, cut at the bare LF
    first = b.conns[0]
    first.wait_eof()
    first.done.wait(10)
    assert first.messages == [], "the refused message reached the backend"
    summary = log_fields(p.summaries(1)[0])
    assert summary["errors"] == str(max_errors), summary
    assert summary["backend_connections"] == "1", summary
    assert_next_backend_conn_is(p, b, 2)


def test_max_errors_after_bare_newline_550_counts_backends(
        proxy, scripted_backend):
    """The 550 is below the limit: the session goes on over a fresh backend
    connection, and the error that then reaches max_errors ends it there."""
    b = scripted_backend()
    p = proxy(b.port, bare_newline="reject", max_errors=2, idle_timeout=10,
              proxy_keys=ONE_LOOP)
    c = connect(p)
    c.ehlo()
    send_bare_lf_message(c)
    expect(c.read_reply(), 550, "5.5.2")     # error 1
    c.send(b"EXPN second-error\r\n")          # error 2, over the fresh backend
    replies = replies_until_close(c)
    assert [r.code for r in replies] == [502, 421], replies
    expect(replies[1], 421, "4.7.0")
    # connection 1: opened at accept, cut at the bare LF; connection 2:
    # opened right after the 550, greeted with the client's EHLO again,
    # then given EXPN; none after the 421
    first, fresh = b.wait_conns(1), b.wait_conns(2)
    first.done.wait(10)
    fresh.wait_eof()
    fresh.done.wait(10)
    assert first.messages == [] and fresh.messages == []
    assert fresh.lines == [b"EHLO proxy.test", b"EHLO client.test",
                           b"EXPN second-error"], fresh.lines
    summary = log_fields(p.summaries(1)[0])
    assert summary["errors"] == "2", summary
    assert summary["backend_connections"] == "2", summary
    assert_next_backend_conn_is(p, b, 3)
