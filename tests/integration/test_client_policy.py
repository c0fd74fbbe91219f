"""
The client leg's STARTTLS policy and the proxy's own STARTTLS replies.
"""

import re
import socket

from harness import SMTPClient, expect


def connect(p):
    c = SMTPClient(p.port)
    c.greeting()
    return c


def test_client_tls_encrypt_refuses_transaction_before_starttls_530(
        proxy, scripted_backend, client_ctx):
    b = scripted_backend(keywords=("PIPELINING", "AUTH PLAIN", "CHUNKING",
                                   "8BITMIME"))
    p = proxy(b.port, client_tls="encrypt")
    c = connect(p)
    e = c.ehlo()
    assert e.has("STARTTLS"), e
    for line in ("MAIL FROM:<early@client.test>", "RCPT TO:<x@test.example>",
                 "DATA", "AUTH PLAIN", "VRFY postmaster",
                 "EXPN staff", "mail from:<lower@client.test>"):
        expect(c.cmd(line), 530, "5.7.0")
    expect(c.cmd("NOOP"), 250)
    expect(c.cmd("RSET"), 250)
    c.starttls(client_ctx)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<late@client.test>"), 250)
    c.quit()
    raw = b.all_raw()
    for word in (b"early@", b"lower@", b"VRFY", b"EXPN", b"BDAT", b"AUTH",
                 b"x@test.example"):
        assert word not in raw, (word, raw)
    assert b"late@client.test" in raw


def test_client_tls_encrypt_refuses_bdat_530_and_discards_its_chunk(
        proxy, scripted_backend):
    """A refused BDAT's chunk follows the command without waiting: it is
    data, never commands (Postfix skips it too)."""
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING"))
    p = proxy(b.port, client_tls="encrypt")
    c = connect(p)
    c.ehlo()
    c.send(b"BDAT 14 LAST\r\nXYZZY1\r\nQUIT\r\n")
    expect(c.read_reply(), 530, "5.7.0")
    r = c.cmd("NOOP")
    expect(r, 250)
    c.quit()
    conn = b.conns[-1]
    conn.done.wait(10)
    assert "BDAT" not in conn.commands() and "XYZZY1" not in conn.commands(), \
        conn.lines


def test_client_tls_none_offers_no_starttls_and_answers_502(
        proxy, aiosmtpd_backend):
    b = aiosmtpd_backend()
    p = proxy(b.port, client_tls="none", cert=None, key=None)
    c = connect(p)
    e = c.ehlo()
    assert not e.has("STARTTLS"), e
    expect(c.cmd("STARTTLS"), 502, "5.5.1")
    expect(c.mail(rcpts=["none@test.example"]), 250)
    c.quit()
    assert len(b.wait_messages(1)) == 1


def test_starttls_with_argument_501_then_plain_starttls_works(
        proxy, smtp_sink, client_ctx):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("STARTTLS now"), 501, "5.5.4")
    c.starttls(client_ctx)
    c.ehlo()
    c.quit()


def test_second_starttls_after_tls_554(proxy, smtp_sink, client_ctx):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = connect(p)
    c.ehlo()
    c.starttls(client_ctx)
    c.ehlo()
    expect(c.cmd("STARTTLS"), 554, "5.5.1")
    expect(c.cmd("NOOP"), 250)
    c.quit()


def test_transaction_after_starttls_before_new_ehlo_503(
        proxy, scripted_backend, client_ctx):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.starttls(client_ctx)
    expect(c.cmd("MAIL FROM:<noehlo@client.test>"), 503, "5.5.1")
    c.ehlo()
    expect(c.cmd("MAIL FROM:<after@client.test>"), 250)
    c.quit()
    raw = b.all_raw()
    assert b"noehlo@" not in raw
    assert b"after@client.test" in raw


def test_failed_client_handshake_closes_connection_and_is_logged(
        proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("STARTTLS"), 220, "2.0.0")
    # not a ClientHello
    c.send(b"MAIL FROM:<plain@client.test>\r\nRCPT TO:<x@test.example>\r\n"
           + b"\x16\x03\x01\x00\x05garbage" * 4)
    rest = c.expect_closed()
    assert not re.search(rb"^250", rest, re.M), rest
    p.wait_log(r"(?i)event=\S*(tls|handshake)\S*.*(fail|error)|"
               r"handshake\S*fail")
    assert b"plain@client.test" not in b.all_raw()


def test_client_closing_during_handshake_leaves_proxy_working(
        proxy, smtp_sink, client_ctx):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("STARTTLS"), 220)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    c = connect(p)
    c.ehlo()
    c.starttls(client_ctx)
    c.ehlo()
    c.quit()
