"""
NUL bytes (issue 8, section 1).  A backend that drops NUL bytes while it
reads finds "CRLF NUL . CRLF" to be an end of data, so a client could end
a message there for the backend but not for the proxy and smuggle the rest
in as commands.  The proxy removes every NUL from message content under
"bare_newline = normalize" (a line that then starts with "." is stuffed),
refuses the message with 550 5.6.0 under "reject", answers a command line
with a NUL with 500 5.5.2, and passes BDAT chunks untouched.

The backend here is a scripted one that drops NULs before it parses, as a
vulnerable server does; the first test shows that it falls for the attack
when nothing stands in front of it.
"""

import socket
import time

import pytest

from harness import (ConnectionClosed, SMTPClient, default_backend_handler,
                     expect, log_fields,
                     unique_token, wait_for)
from hardening_util import (bare_newlines, connect, eod_id,
                            normalize_content, smuggling_content)

# NUL variants of the end-of-data look-alikes: none holds a real CRLF . CRLF
NUL_EODS = [
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n\x00.\x00\r\n",
    b"\r\n\x00\x00.\r\n",
    b"\r\n.\r\x00\n",
    b"\r\x00\n.\r\n",
    b"\r\x00\n.\r\x00\n",
    b"\r\n\x00.\r",
    b"\r\n\x00.\n",
    b"\n\x00.\n",
    b"\n\x00.\r\n",
    b"\x00\r\n.\r\x00\n",
]


def nul_dropping_handler(conn, b):
    """nul_dropping_handler - the default backend behaviour, but every NUL
    is dropped from what it reads before it parses (conn.raw still records
    what really arrived)."""
    recv = conn._recv

    def _recv():
        return recv().replace(b"\x00", b"")
    conn._recv = _recv
    default_backend_handler(conn, b)


@pytest.fixture
def nul_backend(scripted_backend):
    return scripted_backend(handler=nul_dropping_handler)


def open_data(c):
    c.ehlo()
    expect(c.cmd("MAIL FROM:<sender@client.test>"), 250)
    expect(c.cmd("RCPT TO:<rcpt@test.example>"), 250)
    expect(c.cmd("DATA"), 354)


def replies_after_data(c, wait=1.0):
    """replies_after_data - every reply that arrives within wait seconds."""
    out = []
    c.sock.settimeout(wait)
    try:
        while True:
            out.append(c.read_reply())
    except (AssertionError, OSError, ConnectionClosed):
        pass
    c.sock.settimeout(30)
    return out


@pytest.mark.parametrize("eod", NUL_EODS[:4], ids=eod_id)
def test_the_backend_falls_for_it_without_the_proxy(nul_backend, eod):
    """The test's backend is really vulnerable: straight to it, the NUL
    variant ends the first message and smuggles a second one."""
    s = socket.create_connection(("127.0.0.1", nul_backend.port), timeout=10)
    s.sendall(b"EHLO client.test\r\nMAIL FROM:<sender@client.test>\r\n"
              b"RCPT TO:<rcpt@test.example>\r\nDATA\r\n")
    time.sleep(0.3)
    s.sendall(smuggling_content(eod) + b".\r\nQUIT\r\n")
    got = b""
    while True:
        data = s.recv(4096)
        if not data:
            break
        got += data
    s.close()
    conn = nul_backend.conns[0]
    conn.done.wait(10)
    assert len(conn.messages) == 2, conn.messages
    assert b"MAIL FROM:<evil@x>" in conn.lines, conn.lines
    assert got.count(b"queued as") == 2, got


@pytest.mark.parametrize("eod", NUL_EODS, ids=eod_id)
def test_nul_variant_normalized_one_message(proxy, nul_backend, eod):
    p = proxy(nul_backend.port)            # bare_newline = normalize
    c = connect(p)
    open_data(c)
    content = smuggling_content(eod)
    c.send(content + b".\r\n")
    replies = replies_after_data(c)
    assert [r.code for r in replies] == [250], replies
    assert "SCRIPT1" in replies[0].text
    expect(c.cmd("NOOP"), 250)
    c.quit()
    assert len(nul_backend.conns) == 1
    conn = nul_backend.conns[0]
    conn.done.wait(10)
    raw = bytes(conn.raw)
    assert b"\x00" not in raw, raw
    assert not bare_newlines(raw), raw
    assert conn.messages == [normalize_content(content)], conn.messages
    assert conn.commands().count("MAIL") == 1, conn.lines
    assert b"MAIL FROM:<evil@x>" not in conn.lines
    s = log_fields(p.summaries()[0])
    assert s["nul_bytes"] == str(eod.count(b"\x00")), s
    p.wait_log(r"event=nul_message action=normalize")


@pytest.mark.parametrize("eod", NUL_EODS, ids=eod_id)
def test_nul_variant_rejected_550_and_session_goes_on(proxy, nul_backend, eod):
    p = proxy(nul_backend.port, bare_newline="reject", idle_timeout=10)
    c = connect(p)
    open_data(c)
    c.send(smuggling_content(eod) + b".\r\n")
    replies = replies_after_data(c)
    assert len(replies) == 1, replies
    # a variant with a bare CR or LF names that first; a NUL-only one 5.6.0
    if bare_newlines(eod):
        expect(replies[0], 550, "5.5.2")
    else:
        expect(replies[0], 550, "5.6.0")
    token = unique_token("after-nul")
    expect(c.mail(rcpts=["clean@test.example"],
                  body=("Subject: %s\r\n\r\nclean\r\n" % token).encode()), 250)
    c.quit()
    assert len(nul_backend.conns) == 2, [x.lines for x in nul_backend.conns]
    first, fresh = nul_backend.conns
    first.wait_eof()
    first.done.wait(10)
    fresh.done.wait(10)
    assert first.messages == [], "the refused message reached the backend"
    assert b"\x00" not in nul_backend.all_raw()
    assert b"evil@x" not in nul_backend.all_raw()
    assert len(fresh.messages) == 1 and token.encode() in fresh.messages[0]
    assert b"EHLO client.test" in fresh.lines


def test_nul_split_across_reads_at_every_offset(proxy, nul_backend):
    """The NUL variant arrives in two writes, split at every offset around
    it: always exactly one message, answered once."""
    p = proxy(nul_backend.port)
    head = b"Subject: split\r\n\r\nhello"
    for eod in (b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\x00\n.\r\x00\n"):
        content = smuggling_content(eod, head=head)
        for cut in range(len(head) - 1, len(head) + len(eod) + 2):
            before = len(nul_backend.conns)
            c = connect(p)
            open_data(c)
            c.send(content[:cut])
            time.sleep(0.05)
            c.send(content[cut:] + b".\r\n")
            replies = replies_after_data(c, 0.5)
            assert [r.code for r in replies] == [250], (eod, cut, replies)
            c.quit()
            conn = nul_backend.conns[before]
            conn.done.wait(10)
            assert conn.messages == [normalize_content(content)], (eod, cut)
            assert b"\x00" not in bytes(conn.raw), (eod, cut)


def test_nul_removed_with_real_servers(proxy, postfix_backend, aiosmtpd_backend):
    """Postfix and aiosmtpd behind the proxy store the message without its
    NULs, and the smuggled part as content of it."""
    token = unique_token("nul-real")
    head = ("Subject: %s\r\n\r\nhello" % token).encode()
    content = smuggling_content(b"\r\n\x00.\r\n", head=head)
    b = aiosmtpd_backend()
    for port in (postfix_backend.port, b.port):
        p = proxy(port)
        c = connect(p)
        open_data(c)
        c.send(content + b".\r\n")
        expect(c.read_reply(), 250)
        c.quit()
    env = b.wait_messages(1)[0]
    assert b"\x00" not in env.original_content
    assert b"MAIL FROM:<evil@x>" in env.original_content
    assert len(b.envelopes) == 1

    wait_for(lambda: token in postfix_backend.mbox_text(),
             what="the message in Postfix's mailbox")
    mbox = postfix_backend.mbox_text()
    assert mbox.count("Subject: " + token) == 1
    assert "MAIL FROM:<evil@x>" in mbox


def test_nul_in_command_line_500_not_relayed(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd(b"MAIL FROM:<a@client.test>\x00 SIZE=1"), 500, "5.5.2")
    expect(c.cmd(b"\x00RSET"), 500, "5.5.2")
    expect(c.cmd(b"NOOP\x00"), 500, "5.5.2")
    expect(c.cmd("MAIL FROM:<a@client.test>"), 250)
    c.quit()
    b.conns[0].done.wait(10)
    assert b"\x00" not in b.all_raw()
    assert b.conns[0].commands().count("MAIL") == 1
    assert p.log_text().count("event=nul_command") == 3


def test_bdat_chunk_with_nul_passes_untouched(proxy, scripted_backend):
    """BDAT is length-delimited: a NUL there ends nothing and is kept."""
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING", "8BITMIME"))
    p = proxy(b.port, bare_newline="reject")
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<a@client.test>"), 250)
    expect(c.cmd("RCPT TO:<b@test.example>"), 250)
    chunk = b"Subject: bdat\r\n\r\nx\r\n\x00.\r\nMAIL FROM:<evil@x>\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    expect(c.read_reply(), 250)
    c.quit()
    b.conns[0].done.wait(10)
    assert b.conns[0].chunks == [chunk]
    assert b.conns[0].commands().count("MAIL") == 1


# ---- an AUTH response line the proxy refuses ------------------------------

@pytest.mark.parametrize("bad,code", [
    (b"AGE\x00AYg==\r\n", 500),             # NUL
    (b"AGEA\rYg==\r\n", 500),               # a bare CR
    (b"A" * 3000 + b"\r\n", 500),           # longer than max_line_length
], ids=["nul", "bare-cr", "too-long"])
def test_refused_auth_response_cancels_the_exchange(proxy, scripted_backend,
                                                    bad, code):
    """The backend waits for the response to its 334: the proxy cancels
    the exchange there ("*", RFC 4954) when it refuses the line itself, so
    both read what follows as commands."""
    b = scripted_backend()
    p = proxy(b.port, client_plaintext_auth=True)
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    expect(c.cmd("AUTH PLAIN"), 334)
    c.send(bad)
    assert c.read_reply().code == code
    expect(c.cmd("NOOP"), 250)            # in step: not taken as a response
    c.quit()
    conn = b.wait_conns(1)
    conn.done.wait(10)
    lines = [l for l in conn.lines if l != b"EHLO proxy.test"]
    assert lines[-4:] == [b"AUTH PLAIN", b"*", b"NOOP", b"QUIT"], lines
    assert "event=auth_cancelled" in p.log_text()
