"""test_daemon_stop.py - stopping (README "Signals"): SIGTERM and SIGQUIT
stop gracefully, a message in flight is finished and answered, idle
sessions get 421 4.3.2 at once, drain_timeout bounds it all; SIGINT or a
second SIGTERM stops at once."""
import signal
import time

import pytest

from harness import SMTPClient, expect, is_listening, wait_for

BIG = 5 * 1024 * 1024


def body(size):
    line = b"x" * 998 + b"\r\n"
    out = b"Subject: drain\r\n\r\n" + line * (size // len(line))
    return out + b"\r\n"


def start_message(c):
    c.greeting()
    c.ehlo()
    expect(c.cmd("MAIL FROM:<a@client.test>"), 250)
    expect(c.cmd("RCPT TO:<b@backend.test>"), 250)
    expect(c.cmd("DATA"), 354)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT],
                         ids=["SIGTERM", "SIGQUIT"])
def test_message_in_flight_is_delivered_then_421(proxy, aiosmtpd_backend,
                                                  sig):
    b = aiosmtpd_backend()
    p = proxy(b.port, proxy_keys={"drain_timeout": 20})
    busy = SMTPClient(p.port)
    start_message(busy)
    data = body(BIG)
    busy.send(data[:len(data) // 2])
    idle = SMTPClient(p.port)
    idle.greeting()
    idle.ehlo()
    t0 = time.monotonic()
    p.proc.send_signal(sig)
    # the idle session is told at once, and nobody new gets in
    expect(idle.read_reply(), 421, "4.3.2")
    idle.expect_closed()
    assert time.monotonic() - t0 < 1.5
    wait_for(lambda: not is_listening(p.port), 5, what="listener closed")
    assert p.proc.poll() is None          # still finishing the message
    busy.send(data[len(data) // 2:] + b".\r\n")
    expect(busy.read_reply(), 250)         # the backend's own answer
    expect(busy.read_reply(), 421, "4.3.2")
    busy.expect_closed()
    assert p.proc.wait(10) == 0, p.log_text()
    p.expected_exit = True
    envs = b.wait_messages(1)
    assert len(envs) == 1 and envs[0].content.rstrip(b"\r\n") == \
        data.rstrip(b"\r\n"), len(envs)
    log = p.log_text()
    assert " mode=drain" in log and "event=draining in_message=1" in log, log


def test_drain_timeout_bounds_the_stop(proxy, aiosmtpd_backend):
    b = aiosmtpd_backend()
    p = proxy(b.port, proxy_keys={"drain_timeout": 2})
    c = SMTPClient(p.port)
    start_message(c)
    c.send(b"Subject: never finished\r\n\r\nhalf a message")
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    expect(c.read_reply(), 421, "4.3.2")
    elapsed = time.monotonic() - t0
    assert 1.5 < elapsed < 5, elapsed
    assert p.proc.wait(5) == 0, p.log_text()
    p.expected_exit = True
    assert b.envelopes == []              # nothing of it was delivered
    assert "event=drain_timeout" in p.log_text()


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT],
                         ids=["second-SIGTERM", "SIGINT"])
def test_a_second_signal_stops_at_once(proxy, aiosmtpd_backend, second):
    b = aiosmtpd_backend()
    p = proxy(b.port, proxy_keys={"drain_timeout": 60})
    c = SMTPClient(p.port)
    start_message(c)
    c.send(b"Subject: cut\r\n\r\npart")
    p.proc.send_signal(signal.SIGTERM)
    p.wait_log(r"event=draining in_message=1")
    t0 = time.monotonic()
    p.proc.send_signal(second)
    expect(c.read_reply(), 421, "4.3.2")
    assert p.proc.wait(5) == 0, p.log_text()
    assert time.monotonic() - t0 < 3
    p.expected_exit = True
    assert b.envelopes == []
    assert " mode=now" in p.log_text()


def test_sigint_stops_at_once(proxy, aiosmtpd_backend):
    b = aiosmtpd_backend()
    p = proxy(b.port, proxy_keys={"drain_timeout": 60})
    c = SMTPClient(p.port)
    start_message(c)
    c.send(b"Subject: cut\r\n\r\npart")
    p.proc.send_signal(signal.SIGINT)
    expect(c.read_reply(), 421, "4.3.2")
    assert p.proc.wait(5) == 0, p.log_text()
    p.expected_exit = True
    assert b.envelopes == []


def test_stop_without_sessions_is_prompt(proxy, smtp_sink):
    sink = smtp_sink()
    p = proxy(sink.port, proxy_keys={"drain_timeout": 60})
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(5) == 0, p.log_text()
    assert time.monotonic() - t0 < 2
    p.expected_exit = True


def test_bdat_message_in_flight_finishes(proxy, scripted_backend):
    """A chunked message: the chunks after the signal are still read."""
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING"))
    p = proxy(b.port, proxy_keys={"drain_timeout": 20})
    c = SMTPClient(p.port)
    c.greeting()
    assert c.ehlo().has("CHUNKING")
    expect(c.cmd("MAIL FROM:<a@client.test>"), 250)
    expect(c.cmd("RCPT TO:<b@backend.test>"), 250)
    chunk = b"Subject: chunks\r\n\r\n" + b"y" * 1000 + b"\r\n"
    c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
    expect(c.read_reply(), 250)
    p.proc.send_signal(signal.SIGTERM)
    p.wait_log(r"event=draining in_message=1")
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
    expect(c.read_reply(), 250)
    expect(c.read_reply(), 421, "4.3.2")
    assert p.proc.wait(10) == 0, p.log_text()
    p.expected_exit = True
    conn = b.conns[-1]
    conn.done.wait(10)
    assert conn.chunks == [chunk, chunk]
