"""
Faults on either leg: nothing lost, timeouts, unreachable or misbehaving
backends, over-long lines, and bounded memory under a slow backend.
"""

import threading
import time

import pytest

from harness import (SMTPClient, ConnectionClosed, TERM, expect, free_port,
                     proxy_bin, sanitized, wait_for)


def connect(p):
    c = SMTPClient(p.port)
    c.greeting()
    return c


def start_data(c, client_ctx=None):
    c.ehlo()
    if client_ctx is not None:
        c.starttls(client_ctx)
        c.ehlo()
    expect(c.cmd("MAIL FROM:<fault@client.test>"), 250)
    expect(c.cmd("RCPT TO:<fault@test.example>"), 250)
    expect(c.cmd("DATA"), 354)


def replies_until_close(c):
    """replies_until_close - every reply the server sends until it closes."""
    out = []
    while True:
        try:
            out.append(c.read_reply())
        except ConnectionClosed:
            return out


def test_backend_closing_after_body_gives_421_never_250(
        proxy, scripted_backend):
    b = scripted_backend(on_data="close")
    p = proxy(b.port)
    c = connect(p)
    start_data(c)
    c.send(b"Subject: lost?\r\n\r\nbody\r\n.\r\n")
    replies = replies_until_close(c)
    assert replies, "connection closed without a reply to end-of-data"
    assert all(r.code != 250 for r in replies), replies
    assert replies[0].code in (421, 451), replies
    if replies[0].code == 421:
        assert replies[0].enhanced == "4.4.2", replies
    assert b.conns[0].messages == [b"Subject: lost?\r\n\r\nbody\r\n"]


@pytest.mark.parametrize("reply", [
    b"451 4.3.0 scripted: try again later\r\n",
    b"554-5.7.1 scripted: rejected\r\n554 5.7.1 second line\r\n",
])
def test_backend_reply_to_end_of_data_reaches_client_verbatim(
        proxy, scripted_backend, reply):
    b = scripted_backend(on_data=reply)
    p = proxy(b.port)
    c = connect(p)
    start_data(c)
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    r = c.read_reply()
    assert b"".join(l + b"\r\n" for l in r.lines) == reply
    expect(c.cmd("RSET"), 250)
    c.quit()


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_client_vanishing_mid_data_backend_never_sees_end_of_data(
        proxy, scripted_backend, client_ctx, tls):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    start_data(c, client_ctx if tls else None)
    c.send(b"Subject: half\r\n\r\nfirst line\r\nsecond line\r\n"
           b"third line without end")
    conn = b.conns[-1]
    wait_for(lambda: b"third line" in bytes(conn.raw),
             what="partial body at the backend")
    c.sock.close()
    conn.wait_eof()
    conn.done.wait(10)
    assert conn.messages == []
    assert TERM not in bytes(conn.raw)
    assert conn.raw.endswith(b"third line without end"), bytes(conn.raw[-80:])
    p.wait_log(r"event=summary\b")


def test_backend_unreachable_421_441(proxy):
    port = free_port()
    p = proxy(backend="127.0.0.1:%d" % port)
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.4.1")
    c.expect_closed()


def test_idle_client_timeout_421_442_both_closed(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, idle_timeout=2)
    c = connect(p)
    c.ehlo()
    expect(c.read_reply(), 421, "4.4.2")   # after ~2 s of silence
    c.expect_closed()
    b.conns[-1].wait_eof()


def test_backend_never_greeting_times_out_421(proxy, scripted_backend):
    b = scripted_backend(greeting=None)
    p = proxy(b.port, idle_timeout=2)
    c = SMTPClient(p.port)
    r = c.read_reply()
    assert r.code == 421 and r.enhanced and r.enhanced.startswith("4.4."), r
    c.expect_closed()
    b.conns[0].wait_eof()
    assert bytes(b.conns[0].raw) == b""


def test_backend_silent_mid_session_421_442(proxy, scripted_backend):
    b = scripted_backend(replies={"NOOP": "silent"})
    p = proxy(b.port, idle_timeout=2)
    c = connect(p)
    c.ehlo()
    c.send(b"NOOP\r\n")
    expect(c.read_reply(), 421, "4.4.2")
    c.expect_closed()
    b.conns[-1].wait_eof()


def test_backend_closing_mid_session_421_442(proxy, scripted_backend):
    b = scripted_backend(replies={"NOOP": "close"})
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.send(b"NOOP\r\n")
    expect(c.read_reply(), 421, "4.4.2")
    c.expect_closed()


def test_backend_garbage_reply_421_430(proxy, scripted_backend):
    b = scripted_backend(replies={"NOOP": b"this is not an SMTP reply\r\n"})
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.send(b"NOOP\r\n")
    expect(c.read_reply(), 421, "4.3.0")
    rest = c.expect_closed()
    assert b"not an SMTP reply" not in bytes(c.received) + rest
    b.conns[-1].wait_eof()


def test_backend_unsolicited_reply_421_430(proxy, scripted_backend):
    b = scripted_backend(replies={
        "NOOP": b"250 2.0.0 Ok\r\n250 2.0.0 unsolicited extra\r\n"})
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.send(b"NOOP\r\n")
    replies = replies_until_close(c)
    assert replies and replies[-1].code == 421, replies
    assert replies[-1].enhanced == "4.3.0", replies
    assert b"unsolicited" not in bytes(c.received)


def test_backend_garbage_greeting_refused_421(proxy, scripted_backend):
    b = scripted_backend(greeting=b"HTTP/1.0 200 OK\r\n\r\n")
    p = proxy(b.port)
    c = SMTPClient(p.port)
    r = c.read_reply()
    assert r.code == 421 and r.enhanced and r.enhanced.startswith("4."), r
    c.expect_closed()
    assert b"HTTP" not in bytes(c.received)


def test_line_too_long_500_and_session_continues(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, max_line_length=512)
    c = connect(p)
    c.ehlo()
    at_limit = b"NOOP " + b"a" * (512 - 7) + b"\r\n"
    assert len(at_limit) == 512
    c.send(at_limit)
    expect(c.read_reply(), 250)
    over = b"NOOP " + b"b" * (513 - 7) + b"\r\n"
    c.send(over)
    expect(c.read_reply(), 500, "5.5.2")
    # a much longer one, in pieces
    huge = b"MAIL FROM:<" + b"c" * 20000 + b"@client.test>\r\n"
    for i in range(0, len(huge), 4096):
        c.send(huge[i:i + 4096])
        time.sleep(0.02)
    expect(c.read_reply(), 500, "5.5.2")
    expect(c.cmd("NOOP"), 250)
    expect(c.mail(rcpts=["long@test.example"]), 250)
    c.quit()
    conn = b.conns[-1]
    conn.done.wait(10)
    raw = bytes(conn.raw)
    assert b"a" * 505 in raw
    assert b"bbbb" not in raw and b"cccc" not in raw


def test_line_too_long_default_limit_2048(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd(b"NOOP " + b"d" * 2100), 500, "5.5.2")
    expect(c.cmd(b"NOOP " + b"e" * 1900), 250)
    c.quit()
    assert b"dddd" not in b.all_raw()


def test_large_message_to_slow_backend_keeps_memory_bounded(
        proxy, scripted_backend):
    """A client pushes 50 MB at a backend that reads nothing for a while:
    the proxy must stop reading the client (its RSS must not grow with the
    message) and the message must still arrive complete."""
    size = 50 * 1024 * 1024
    release = threading.Event()
    b = scripted_backend(pause_data=release, store_data=False)
    p = proxy(b.port)
    c = connect(p)
    start_data(c)
    baseline = p.rss_kb()
    line = b"y" * 1022 + b"\r\n"
    block = line * 64
    sent = [0]
    failure = []

    def pump():
        try:
            while sent[0] < size:
                c.sock.sendall(block)
                sent[0] += len(block)
            c.sock.sendall(b".\r\n")
        except Exception as e:   # reported below
            failure.append(e)

    c.sock.settimeout(180)
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    peak = baseline
    last, still_since = -1, time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        peak = max(peak, p.rss_kb())
        now = time.monotonic()
        if sent[0] != last:
            last, still_since = sent[0], now
        elif now - still_since > 2:
            break
        time.sleep(0.05)
    stalled_at = sent[0]
    assert stalled_at < size, (
        "the client wrote all %d bytes while the backend read nothing: the "
        "proxy buffered the message" % size)
    release.set()
    # the backend reads again: the transfer must resume and finish
    last, moved_at = sent[0], time.monotonic()
    while t.is_alive():
        peak = max(peak, p.rss_kb())
        t.join(0.05)
        now = time.monotonic()
        if sent[0] != last:
            last, moved_at = sent[0], now
        assert now - moved_at < 20, (
            "transfer stalled at %d of %d bytes for 20 s after the backend "
            "resumed reading: the proxy never resumed reading the client"
            % (sent[0], size))
    assert not failure, failure
    r = c.read_reply()
    expect(r, 250)
    peak = max(peak, p.rss_kb())
    c.quit()
    conn = b.conns[-1]
    assert conn.message_digests[0][0] == sent[0]
    growth_mb = (peak - baseline) / 1024.0
    assert growth_mb < 24, (
        "proxy RSS grew by %.1f MB (baseline %d kB, peak %d kB) relaying a "
        "%d MB message to a slow backend" % (growth_mb, baseline, peak,
                                             size >> 20))


def test_idle_tls_sessions_hold_no_record_buffer(proxy, smtp_sink,
                                                 client_ctx):
    """Sessions held idle after STARTTLS and the second EHLO keep no TLS
    record buffer (16 KiB each), whether the session ticket left with a
    relayed reply or with one of the proxy's own.  OpenSSL 3.0 keeps the
    buffer the ticket was written through, although SSL_MODE_RELEASE_BUFFERS
    is on, unless the proxy frees it.  Measured with this client (workers = 1,
    300 sessions): 19.7 KiB of RSS per session, 24.6 with the buffer kept
    (the benchmark's S4, whose client differs, saw 20.7 and 34.5).  The
    bound sits between the two.  Not for a sanitizer build, whose
    allocator keeps redzones and freed memory."""
    if sanitized(proxy_bin()):
        pytest.skip("a sanitizer build's RSS says nothing of the proxy's")
    sink = smtp_sink("-m", "1000")
    p = proxy(sink.port, proxy_keys={"workers": 1, "log_level": "warn"},
              max_connections_per_ip=0)
    warm = SMTPClient(p.port)
    warm.greeting()
    warm.ehlo()
    warm.starttls(client_ctx)
    warm.ehlo()
    warm.quit()
    warm.close()
    time.sleep(0.3)
    baseline = p.rss_kb()
    n = 300
    held = []
    try:
        for i in range(n):
            c = SMTPClient(p.port)
            c.greeting()
            c.ehlo()
            c.starttls(client_ctx)
            if i % 2:
                r = c.ehlo()
            else:
                # the ticket leaves with a reply the proxy writes itself
                # (a second STARTTLS refused), not with a relayed one
                c.send(b"STARTTLS\r\n")
                c.send(b"EHLO client.test\r\n")
                expect(c.read_reply(), 554)
                r = c.read_reply()
            assert r.code == 250, r
            held.append(c)
        time.sleep(0.5)
        per_session = (p.rss_kb() - baseline) / float(n)
    finally:
        for c in held:
            c.close()
    assert per_session < 23, (
        "%d idle TLS sessions cost %.1f KiB of RSS each (baseline %d kB): "
        "a TLS record buffer is kept per idle session" %
        (n, per_session, baseline))
