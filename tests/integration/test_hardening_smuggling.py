"""
SMTP smuggling (issue 3, section 1): only CRLF "." CRLF ends a message,
the backend never receives a bare CR or LF, "bare_newline = normalize"
repairs them, "bare_newline = reject" refuses the message after reading
it to its end, and command lines with a bare CR or LF get 500 5.5.2.
"""

import pytest

from harness import TERM, expect, unique_token
from hardening_util import (SMUGGLING_EODS, bare_newlines, connect, eod_id,
                            normalize_content, nothing_readable,
                            smuggling_content, unstuff)


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


def test_nul_is_not_a_line_end_reject_mode_delivers(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, bare_newline="reject", idle_timeout=10)
    c = connect(p)
    open_data(c)
    content = smuggling_content(b"\r\n\x00.\r\n")
    c.send(content + b".\r\n")
    expect(c.read_reply(), 250)
    c.quit()
    b.conns[0].done.wait(10)
    assert b.conns[0].messages == [content]


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
