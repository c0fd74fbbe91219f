"""
Limits and slow clients (issue 3, section 3): connection limits, error
limit, per-command, TLS handshake and data-rate deadlines, running out
of file descriptors.
"""

import socket
import threading
import time

import pytest

from harness import SMTPClient, ConnectionClosed, expect, free_port, wait_for
from hardening_util import (closed_within, connect, cpu_seconds,
                            limited_proxy, open_fds,  # noqa: F401 (fixture)
                            replies_until_close, try_session)


# ---- connection limits -------------------------------------------------------

def test_max_connections_third_client_421(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, max_connections=2)
    c1 = connect(p)
    c2 = connect(p)
    c3 = SMTPClient(p.port)
    replies = replies_until_close(c3)
    assert [r.code for r in replies] == [421], replies
    expect(replies[0], 421, "4.7.0")
    assert "too many connections" in replies[0].text.lower(), replies
    # the two admitted sessions still work
    expect(c1.cmd("EHLO one.test"), 250)
    expect(c2.cmd("EHLO two.test"), 250)
    c1.quit()
    # a slot is free again once the first session is gone
    wait_for(lambda: try_session(p.port), 30, interval=0.3,
             what="a session after one of two slots was freed")
    c2.quit()
    p.wait_log(r"event=limit limit=max_connections\b")


def test_max_connections_per_ip_second_client_421(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, max_connections_per_ip=1)
    c1 = connect(p)
    c2 = SMTPClient(p.port)
    replies = replies_until_close(c2)
    assert [r.code for r in replies] == [421], replies
    expect(replies[0], 421, "4.7.0")
    assert "address" in replies[0].text.lower(), replies
    expect(c1.cmd("NOOP"), 250)
    c1.quit()
    wait_for(lambda: try_session(p.port), 30, interval=0.3,
             what="a session after the first client left")
    p.wait_log(r"event=limit limit=max_connections_per_ip\b")


@pytest.mark.parametrize("errors", [
    [b"VRFY one\r\n", b"EXPN two\r\n", b"HELP three\r\n"],
    [b"NOOP bare\n", b"FOO backend\r\n", b"STARTTLS extra\r\n"],
], ids=["backend-errors", "mixed-local-and-backend"])
def test_max_errors_421_after_third_error(proxy, scripted_backend, errors):
    b = scripted_backend()
    p = proxy(b.port, max_errors=3)
    c = connect(p)
    c.ehlo()
    for line in errors[:2]:
        c.send(line)
        r = c.read_reply()
        assert 500 <= r.code < 600, (line, r)
    expect(c.cmd("NOOP"), 250)             # still served after two errors
    c.send(errors[2])
    replies = replies_until_close(c)
    assert len(replies) == 2, replies
    assert 500 <= replies[0].code < 600, replies
    expect(replies[1], 421, "4.7.0")
    b.conns[0].wait_eof()


def test_errors_below_limit_do_not_cut(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, max_errors=3)
    c = connect(p)
    c.ehlo()
    for i in range(2):
        assert c.cmd("FOO %d" % i).code == 502
    expect(c.mail(), 250)
    c.quit()


# ---- deadlines ---------------------------------------------------------------

def trickle(sock, data, interval, stop):
    for i in range(len(data)):
        if stop.is_set():
            return
        try:
            sock.sendall(data[i:i + 1])
        except OSError:
            return
        time.sleep(interval)


def test_command_timeout_cuts_off_trickling_client(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, command_timeout=2, idle_timeout=60)
    c = connect(p)
    c.ehlo()
    # a silent pause between complete commands is the idle timer's business
    time.sleep(3)
    expect(c.cmd("NOOP"), 250)
    stop = threading.Event()
    t = threading.Thread(target=trickle, daemon=True,
                         args=(c.sock, b"NOOP " + b"x" * 80 + b"\r\n", 0.5,
                               stop))
    start = time.monotonic()
    t.start()
    try:
        c.sock.settimeout(60)
        r = c.read_reply()
        elapsed = time.monotonic() - start
        expect(r, 421, "4.4.2")
        assert elapsed < 20, (
            "cut off after %.1fs: want well before the 60 s idle timeout"
            % elapsed)
        c.expect_closed(timeout=20)
    finally:
        stop.set()
        t.join(5)
    assert b"xxxx" not in b.all_raw()
    p.wait_log(r"event=timeout waiting_for=command\b")


@pytest.mark.parametrize("partial", [b"", b"\x16\x03\x01\x02\x00\x01"],
                         ids=["nothing", "partial-client-hello"])
def test_tls_handshake_timeout(proxy, scripted_backend, partial):
    b = scripted_backend()
    p = proxy(b.port, tls_handshake_timeout=2, idle_timeout=60)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("STARTTLS"), 220)
    if partial:
        c.send(partial)
    closed, elapsed, _ = closed_within(c, 40)
    assert closed, "still open after %.0fs" % elapsed
    assert elapsed < 20, (
        "closed after %.1fs: want well before the 60 s idle timeout"
        % elapsed)
    b.conns[0].wait_eof()
    p.wait_log(r"event=timeout waiting_for=tls_handshake\b")


def test_min_data_rate_421_after_grace(proxy, scripted_backend):
    """~35 s: after the 30 s grace a message slower than min_data_rate is
    cut off with 421 4.4.2 and the backend gets no end-of-data."""
    b = scripted_backend()
    p = proxy(b.port, min_data_rate=1000, idle_timeout=120,
              command_timeout=120)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<slow@client.test>"), 250)
    expect(c.cmd("RCPT TO:<slow@test.example>"), 250)
    expect(c.cmd("DATA"), 354)
    stop = threading.Event()

    def slow():
        line = b"y" * 48 + b"\r\n"          # 50 bytes/s, 1000 required
        while not stop.is_set():
            try:
                c.sock.sendall(line)
            except OSError:
                return
            time.sleep(1.0)
    t = threading.Thread(target=slow, daemon=True)
    start = time.monotonic()
    t.start()
    try:
        c.sock.settimeout(90)
        r = c.read_reply()
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        t.join(5)
    expect(r, 421, "4.4.2")
    assert elapsed > 25, "cut off after %.1fs, inside the 30 s grace" % elapsed
    assert elapsed < 60, "cut off only after %.1fs" % elapsed
    c.expect_closed(timeout=20)
    conn = b.conns[0]
    conn.wait_eof()
    conn.done.wait(10)
    assert conn.messages == [], "the backend saw an end-of-data"
    p.wait_log(r"event=timeout waiting_for=data_rate\b")


# ---- out of file descriptors ------------------------------------------------------

def test_out_of_descriptors_no_spin_no_crash_recovers(
        limited_proxy, scripted_backend, certs):
    b = scripted_backend()
    port = free_port()
    sections = {
        "proxy": {"hostname": "proxy.test", "log_level": "info",
                  "workers": 1},
        "smtp": {"listen": "127.0.0.1:%d" % port,
                 "backend": "127.0.0.1:%d" % b.port,
                 "cert": certs.proxy_cert, "key": certs.proxy_key},
    }
    p = limited_proxy(sections, nofile=48)
    assert try_session(p.port), p.log_text()[-3000:]
    clients = []
    try:
        for _ in range(80):
            try:
                s = socket.create_connection(("127.0.0.1", p.port),
                                             timeout=10)
            except OSError:
                continue
            clients.append(s)
        assert len(clients) >= 60, "only %d connections" % len(clients)
        time.sleep(1.5)                    # let the proxy hit the limit
        assert p.proc.poll() is None, p.log_text()[-3000:]
        # it really ran out: far fewer sessions than connections
        sessions = p.log_text().count("event=connect ")
        assert sessions < len(clients), (sessions, len(clients))
        fds = open_fds(p.pid)
        cpu0 = cpu_seconds(p.pid)
        time.sleep(3.0)
        cpu1 = cpu_seconds(p.pid)
        assert p.proc.poll() is None, "proxy died:\n" + p.log_text()[-3000:]
        assert cpu1 - cpu0 < 1.0, (
            "proxy used %.2fs of CPU in 3 s while out of descriptors "
            "(%d open): it spins\n%s" % (cpu1 - cpu0, fds,
                                         p.log_text()[-3000:]))
    finally:
        for s in clients:
            s.close()
    assert p.proc.poll() is None, p.log_text()[-3000:]
    wait_for(lambda: try_session(p.port), 30, interval=0.5,
             what="a normal session after the descriptors were freed")
    assert p.proc.poll() is None
