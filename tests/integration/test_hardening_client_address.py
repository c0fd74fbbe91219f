"""
Who the backend sees (issue 3, section 5): PROXY v1/v2 headers and
XCLIENT towards the backend, and a PROXY header from a trusted load
balancer in front.
"""

import re

import pytest

from harness import SMTPClient, expect, log_fields, unique_token
from hardening_util import (build_proxy_v2, closed_within, connect,
                            parse_proxy_v2, proxy_header_handler,
                            replies_until_close, start_postfix_haproxy)

PP1_LB = b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 25\r\n"


@pytest.fixture(scope="module")
def postfix_haproxy(certs):
    pf = start_postfix_haproxy(certs)
    yield pf
    pf.stop()


def summary_of(p):
    lines = p.summaries()
    assert len(lines) == 1, lines
    return log_fields(lines[0])


# ---- PROXY header to the backend ------------------------------------------------

@pytest.mark.parametrize("version", ["proxy-v1", "proxy-v2"])
def test_backend_gets_proxy_header_first(proxy, scripted_backend, version):
    b = scripted_backend(handler=proxy_header_handler)
    p = proxy(b.port, backend_client_address=version)
    c = connect(p)
    cport = c.sock.getsockname()[1]
    c.ehlo()
    expect(c.mail(), 250)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    h = conn.proxy_header
    assert h is not None, "no PROXY header: %r" % bytes(conn.raw[:100])
    assert bytes(conn.raw).startswith(h)
    if version == "proxy-v1":
        assert h == b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (
            cport, p.port), h
    else:
        assert parse_proxy_v2(h) == (0x21, 0x11, "127.0.0.1", cport,
                                     "127.0.0.1", p.port), h
    assert len(conn.messages) == 1


def test_proxy_header_on_every_backend_connection(
        proxy, scripted_backend, client_ctx):
    """The fresh backend session after the client's STARTTLS is told too."""
    b = scripted_backend(handler=proxy_header_handler)
    p = proxy(b.port, backend_client_address="proxy-v1")
    c = connect(p)
    cport = c.sock.getsockname()[1]
    c.ehlo()
    expect(c.cmd("MAIL FROM:<plain@client.test>"), 250)
    expect(c.cmd("RSET"), 250)
    c.starttls(client_ctx)
    c.ehlo()
    expect(c.mail(), 250)
    c.quit()
    assert len(b.conns) == 2, [x.lines for x in b.conns]
    want = b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (cport, p.port)
    for conn in b.conns:
        conn.done.wait(10)
        assert conn.proxy_header == want, conn.proxy_header


def test_no_proxy_header_by_default(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.quit()
    b.conns[0].done.wait(10)
    assert bytes(b.conns[0].raw).startswith(b"EHLO "), bytes(b.conns[0].raw)


@pytest.mark.parametrize("version", ["proxy-v1", "proxy-v2"])
def test_postfix_sees_the_client_address(proxy, postfix_haproxy, version):
    pf = postfix_haproxy
    since = pf.log_offset()
    p = proxy(pf.port, backend_client_address=version)
    c = connect(p)
    cport = c.sock.getsockname()[1]
    c.ehlo()
    token = unique_token("haproxy")
    expect(c.mail(rcpts=["pp@test.example"],
                  body=("Subject: %s\r\n\r\nx\r\n" % token).encode()), 250)
    c.quit()
    pf.wait_log(r"postfix/smtpd\[\d+\]: connect from \S*\[127\.0\.0\.1\]:%d\b"
                % cport, since)


@pytest.mark.parametrize("version", ["proxy-v1", "proxy-v2"])
def test_postfix_sees_the_load_balancers_client(proxy, postfix_haproxy,
                                                version):
    pf = postfix_haproxy
    since = pf.log_offset()
    p = proxy(pf.port, backend_client_address=version,
              client_proxy_protocol="yes", trusted_proxies="127.0.0.1")
    c = SMTPClient(p.port)
    c.send(PP1_LB)
    c.greeting()
    c.ehlo()
    token = unique_token("lb")
    expect(c.mail(rcpts=["lb@test.example"],
                  body=("Subject: %s\r\n\r\nx\r\n" % token).encode()), 250)
    c.quit()
    pf.wait_log(r"postfix/smtpd\[\d+\]: connect from \S*\[192\.0\.2\.7\]:4242",
                since)
    assert not re.search(r"connect from \S*\[127\.0\.0\.1\]",
                         pf.log_since(since))


# ---- XCLIENT ------------------------------------------------------------------

XCLIENT_KW = ("PIPELINING", "8BITMIME", "XCLIENT ADDR PORT NAME HELO PROTO")


def xclient_backend(scripted_backend):
    return scripted_backend(
        keywords=XCLIENT_KW,
        replies={"XCLIENT": b"220 scripted.test ESMTP ready\r\n"})


@pytest.mark.parametrize("greet", ["EHLO", "HELO"])
def test_xclient_sent_when_offered(proxy, scripted_backend, greet):
    b = xclient_backend(scripted_backend)
    p = proxy(b.port, backend_client_address="xclient")
    c = connect(p)
    cport = c.sock.getsockname()[1]
    r = expect(c.cmd("%s client.test" % greet), 250)
    assert "XCLIENT" not in r.keywords, r
    expect(c.mail(), 250)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    lines = conn.lines
    addr = b"XCLIENT ADDR=127.0.0.1 PORT=%d NAME=[UNAVAILABLE]" % cport
    helo = b"XCLIENT HELO=client.test PROTO=%s" % (
        b"ESMTP" if greet == "EHLO" else b"SMTP")
    assert addr in lines, lines
    assert helo in lines, lines
    i, j = lines.index(addr), lines.index(helo)
    assert lines[0].upper().startswith(b"EHLO ") and 0 < i < j, lines
    # the client's own greeting right after the XCLIENT that names it
    assert lines[j + 1] == ("%s client.test" % greet).encode(), lines
    assert [l for l in lines if l.startswith(b"XCLIENT")] == [addr, helo]
    assert len(conn.messages) == 1


def test_xclient_not_sent_when_not_offered(proxy, scripted_backend):
    b = scripted_backend(
        replies={"XCLIENT": b"220 scripted.test ESMTP ready\r\n"})
    p = proxy(b.port, backend_client_address="xclient")
    c = connect(p)
    c.ehlo()
    expect(c.mail(), 250)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    assert not any(l.upper().startswith(b"XCLIENT") for l in conn.lines), \
        conn.lines
    assert len(conn.messages) == 1
    p.wait_log(r"event=xclient_unavailable\b")


def test_xclient_names_the_load_balancers_client(proxy, scripted_backend):
    b = xclient_backend(scripted_backend)
    p = proxy(b.port, backend_client_address="xclient",
              client_proxy_protocol="yes", trusted_proxies="127.0.0.1")
    c = SMTPClient(p.port)
    c.send(PP1_LB)
    c.greeting()
    c.ehlo()
    c.quit()
    b.conns[0].done.wait(10)
    assert b"XCLIENT ADDR=192.0.2.7 PORT=4242 NAME=[UNAVAILABLE]" in \
        b.conns[0].lines, b.conns[0].lines


# ---- PROXY header from a load balancer in front ----------------------------------------

def test_client_proxy_v1_trusted(proxy, scripted_backend):
    b = scripted_backend(handler=proxy_header_handler)
    p = proxy(b.port, client_proxy_protocol="yes",
              trusted_proxies="127.0.0.1", backend_client_address="proxy-v1")
    c = SMTPClient(p.port)
    c.send(PP1_LB)
    c.greeting()
    c.ehlo()
    expect(c.mail(), 250)
    c.quit()
    f = summary_of(p)
    assert f["client"] == "192.0.2.7:4242", f
    conn = b.conns[0]
    conn.done.wait(10)
    h = conn.proxy_header or b""
    m = re.fullmatch(rb"PROXY TCP4 (\S+) (\S+) (\d+) (\d+)\r\n", h)
    assert m, h
    assert m.group(1) == b"192.0.2.7" and m.group(3) == b"4242", h
    assert b"PROXY TCP4 192.0.2.7" not in bytes(conn.raw)[len(h):]


def test_client_proxy_v2_trusted_used_in_trace_header(
        proxy, scripted_backend):
    b = scripted_backend(handler=proxy_header_handler)
    p = proxy(b.port, client_proxy_protocol="yes",
              trusted_proxies="127.0.0.0/8", backend_client_address="proxy-v2",
              trace_header="yes")
    c = SMTPClient(p.port)
    c.send(build_proxy_v2("192.0.2.8", 4343, "198.51.100.1", 25))
    c.greeting()
    c.ehlo()
    expect(c.mail(), 250)
    c.quit()
    f = summary_of(p)
    assert f["client"] == "192.0.2.8:4343", f
    conn = b.conns[0]
    conn.done.wait(10)
    ver_cmd, fam, src, sport, dst, dport = parse_proxy_v2(conn.proxy_header)
    assert (src, sport) == ("192.0.2.8", 4343), conn.proxy_header
    trace = conn.messages[0].split(b"\r\nSubject:")[0]
    assert b"[192.0.2.8]" in trace and b"127.0.0.1" not in \
        trace.split(b"(backend")[0], trace


def test_client_proxy_address_counts_for_limits(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, client_proxy_protocol="yes",
              trusted_proxies="127.0.0.1", max_connections_per_ip=1)
    c1 = SMTPClient(p.port)
    c1.send(PP1_LB)
    c1.greeting()
    c2 = SMTPClient(p.port)                # another client, same balancer
    c2.send(b"PROXY TCP4 192.0.2.9 127.0.0.1 5000 25\r\n")
    c2.greeting()
    c3 = SMTPClient(p.port)                # 192.0.2.7 again: over its limit
    c3.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 4243 25\r\n")
    replies = replies_until_close(c3)
    assert [r.code for r in replies] == [421], replies
    expect(replies[0], 421, "4.7.0")
    c1.quit()
    c2.quit()


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 nonsense\r\n",
    b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 25\r\n",
    b"EHLO no-header.test\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x03abc",
], ids=["garbled", "bad-port", "missing", "v2-short"])
def test_client_proxy_malformed_421(proxy, scripted_backend, header):
    b = scripted_backend()
    p = proxy(b.port, client_proxy_protocol="yes",
              trusted_proxies="127.0.0.1")
    c = SMTPClient(p.port)
    c.send(header)
    replies = replies_until_close(c)
    assert [r.code for r in replies] == [421], replies
    expect(replies[0], 421, "4.7.0")
    assert not b.conns or b"EHLO no-header" not in b.all_raw()


def test_client_proxy_untrusted_peer_closed_without_greeting(
        proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, client_proxy_protocol="yes",
              trusted_proxies="10.9.9.9/32")
    c = SMTPClient(p.port)
    try:
        c.send(PP1_LB)
    except OSError:
        pass
    closed, elapsed, got = closed_within(c, 20)
    assert closed, "still open after %.0fs" % elapsed
    assert got == b"", got
    p.wait_log(r"event=proxy_header_refused reason=untrusted_peer")
