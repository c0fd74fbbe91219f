"""
Proof of TLS (issue 3, section 4): "trace_header = yes" puts one
Received: header recording both legs at the top of every message, DATA
and BDAT alike, in valid RFC 5322 form.
"""

import datetime
import email
import email.policy
import email.utils
import re

import pytest

from harness import expect, unique_token
from hardening_util import connect

HELO = "trace-client.test"


def split_trace(msg):
    """split_trace - (the first header with its folded lines, the rest)."""
    lines = msg.split(b"\r\n")
    n = 1
    while n < len(lines) and lines[n][:1] in (b"\t", b" "):
        n += 1
    return b"\r\n".join(lines[:n]) + b"\r\n", b"\r\n".join(lines[n:])


def check_received(msg, sent_body):
    """check_received - msg (as the backend received it, dot-stuffing
    aside) is one valid Received: header, then sent_body unchanged.
    Returns (header unfolded, client part, backend part)."""
    assert msg.startswith(b"Received:"), msg[:200]
    hdr, rest = split_trace(msg)
    assert rest == sent_body, (rest, sent_body)
    # RFC 5322 2.1.1, 2.2, 2.2.3: ASCII, lines < 998, folded with WSP
    for i, line in enumerate(hdr.split(b"\r\n")[:-1]):
        assert len(line) < 998, line
        assert re.fullmatch(rb"[\t\x20-\x7e]+", line), line
        if i > 0:
            assert line[:1] == b"\t", ("folded line must start with a tab",
                                       line)
            assert line.strip(), "whitespace-only folded line"
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", hdr), hdr
    text = hdr.decode("ascii")
    unfolded = re.sub(r"\r\n(?=[\t ])", "", text).rstrip("\r\n")
    # the whole message parses, with exactly one Received header
    parsed = email.message_from_bytes(msg, policy=email.policy.default)
    assert len(parsed.get_all("Received")) == 1, parsed.get_all("Received")
    assert not parsed.defects, parsed.defects
    # received = "Received:" *received-token ";" date-time
    m = re.fullmatch(r"Received:(.*);\s*([^;]+?)\s*", unfolded)
    assert m, unfolded
    date = email.utils.parsedate_to_datetime(m.group(2))
    assert date.tzinfo is not None, m.group(2)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - date).total_seconds()) < 600, (date, now)
    tokens = m.group(1)
    assert re.match(r"\s*from\s", tokens), tokens
    assert re.search(r"\sby\s+proxy\.test\b", tokens), tokens
    i = tokens.find("backend")
    assert i > 0, "backend leg not named: %r" % unfolded
    return unfolded, tokens[:i], tokens[i:]


def send_message(c, body):
    expect(c.cmd("MAIL FROM:<trace@client.test>"), 250)
    expect(c.cmd("RCPT TO:<trace@test.example>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(body + b".\r\n")
    return expect(c.read_reply(), 250)


def body_for(token):
    return ("Subject: %s\r\nFrom: <trace@client.test>\r\n\r\nhello\r\n"
            % token).encode()


def test_trace_header_plaintext_both_legs(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, trace_header="yes")
    c = connect(p)
    c.ehlo(HELO)
    body = body_for(unique_token("trace-plain"))
    send_message(c, body)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    assert len(conn.messages) == 1
    unfolded, client, backend = check_received(conn.messages[0], body)
    assert HELO in client and "127.0.0.1" in client, client
    assert re.search(r"(?i)no TLS", client), client
    assert re.search(r"\bwith\s+ESMTP\b", unfolded), unfolded
    assert "ESMTPS" not in unfolded, unfolded
    assert re.search(r"\bmay\b", backend), backend         # the policy
    assert re.search(r"(?i)no TLS", backend), backend


def test_trace_header_tls_both_legs_verified(
        proxy, scripted_backend, backend_tls_ctx, certs, client_ctx):
    b = scripted_backend(tls_ctx=backend_tls_ctx)
    p = proxy(b.port, trace_header="yes", backend_tls="verify",
              backend_ca_file=certs.ca, backend_verify_name="localhost")
    c = connect(p)
    c.ehlo(HELO)
    c.starttls(client_ctx)
    c.ehlo(HELO)
    client_version, client_cipher = c.sock.version(), c.sock.cipher()[0]
    body = body_for(unique_token("trace-tls"))
    send_message(c, body)
    conn = b.conns[0]
    backend_version, backend_cipher = conn.sock.version(), \
        conn.sock.cipher()[0]
    c.quit()
    conn.done.wait(10)
    assert conn.tls
    unfolded, client, backend = check_received(conn.messages[0], body)
    assert HELO in client and "127.0.0.1" in client, client
    assert re.search(r"\bwith\s+ESMTPS\b", unfolded), unfolded
    assert client_version in client and client_cipher in client, (
        client_version, client_cipher, client)
    assert "no TLS" not in client, client
    assert re.search(r"\bverify\b", backend), backend
    assert backend_version in backend and backend_cipher in backend, (
        backend_version, backend_cipher, backend)
    assert re.search(r"(?i)\bverified\b", backend), backend


def test_trace_header_client_tls_backend_plaintext(
        proxy, scripted_backend, client_ctx):
    b = scripted_backend()
    p = proxy(b.port, trace_header="yes", backend_tls="none")
    c = connect(p)
    c.ehlo(HELO)
    c.starttls(client_ctx)
    c.ehlo(HELO)
    cipher = c.sock.cipher()[0]
    body = body_for(unique_token("trace-mixed"))
    send_message(c, body)
    c.quit()
    b.conns[0].done.wait(10)
    unfolded, client, backend = check_received(b.conns[0].messages[0], body)
    assert cipher in client, client
    assert "ESMTPS" in unfolded
    assert re.search(r"\bnone\b", backend) and "no TLS" in backend, backend


def test_trace_header_every_message_of_a_session(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, trace_header="yes")
    c = connect(p)
    c.ehlo(HELO)
    bodies = [body_for(unique_token("trace-n")) for _ in range(2)]
    for body in bodies:
        send_message(c, body)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    assert len(conn.messages) == 2
    for msg, body in zip(conn.messages, bodies):
        check_received(msg, body)


def test_trace_header_helo_client_says_smtp(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, trace_header="yes")
    c = connect(p)
    expect(c.cmd("HELO " + HELO), 250)
    body = body_for(unique_token("trace-helo"))
    send_message(c, body)
    c.quit()
    b.conns[0].done.wait(10)
    unfolded, client, _ = check_received(b.conns[0].messages[0], body)
    assert HELO in client
    assert re.search(r"\bwith\s+SMTP\b", unfolded), unfolded


def test_no_trace_header_by_default(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo(HELO)
    body = body_for(unique_token("no-trace"))
    send_message(c, body)
    c.quit()
    b.conns[0].done.wait(10)
    assert b.conns[0].messages == [body]


def bdat_line(conn, i):
    ls = [l for l in conn.lines if l.upper().startswith(b"BDAT")]
    return ls[i]


@pytest.mark.parametrize("chunks", [[b"LAST"], [b"", b"LAST"],
                                    [b"", b"", b"LAST"]],
                         ids=["one-chunk", "two-chunks", "three-chunks"])
def test_trace_header_through_bdat(proxy, scripted_backend, chunks):
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING", "8BITMIME"))
    p = proxy(b.port, trace_header="yes")
    c = connect(p)
    assert c.ehlo(HELO).has("CHUNKING")
    expect(c.cmd("MAIL FROM:<bdat@client.test>"), 250)
    expect(c.cmd("RCPT TO:<bdat@test.example>"), 250)
    body = body_for(unique_token("trace-bdat")) + b"second line\r\n" * 3
    n = len(chunks)
    cut = [len(body) * k // n for k in range(n + 1)]
    parts = [body[cut[k]:cut[k + 1]] for k in range(n)]
    for k, part in enumerate(parts):
        last = k == n - 1
        c.send(b"BDAT %d%s\r\n" % (len(part), b" LAST" if last else b"")
               + part)
        expect(c.read_reply(), 250)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    assert len(conn.chunks) == n, conn.lines
    # every BDAT size says exactly what followed
    for k, chunk in enumerate(conn.chunks):
        m = re.fullmatch(rb"BDAT (\d+)( LAST)?", bdat_line(conn, k))
        assert m and int(m.group(1)) == len(chunk), (bdat_line(conn, k),
                                                     len(chunk))
        assert bool(m.group(2)) == (k == n - 1)
    # the header is in the first chunk only; the rest is as sent
    assert conn.chunks[0].startswith(b"Received:")
    hdr, _ = split_trace(conn.chunks[0])
    assert conn.chunks[0][len(hdr):] == parts[0]
    assert conn.chunks[1:] == parts[1:]
    unfolded, client, backend = check_received(b"".join(conn.chunks), body)
    assert HELO in client and "127.0.0.1" in client, client
