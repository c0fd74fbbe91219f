"""
STARTTLS injection on both legs, and the fresh backend session after the
client's STARTTLS.
"""

import re

from harness import SMTPClient, expect, unique_token


def connect(p):
    c = SMTPClient(p.port)
    c.greeting()
    return c


def test_command_injection_behind_starttls_is_dropped(
        proxy, scripted_backend, client_ctx):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\n"
           b"RCPT TO:<victim@test.example>\r\n")
    expect(c.read_reply(), 220, "2.0.0")
    c.start_tls(client_ctx)
    # the first reply over TLS must be the one to our EHLO: nothing was
    # answered for the injected MAIL/RCPT
    e = c.cmd("EHLO client.test")
    expect(e, 250)
    assert len(e.lines) > 1 and e.texts[0].startswith("scripted.test"), e
    expect(c.cmd("MAIL FROM:<good@client.test>"), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<good@test.example>"), 250, "2.1.5")
    expect(c.cmd("NOOP"), 250)
    c.quit()
    raw = b.all_raw()
    assert b"evil@" not in raw and b"victim@" not in raw, raw
    assert b"good@client.test" in raw
    p.wait_log(r"(?i)event=\S*(inject|drop|discard)")


def test_command_injection_with_implicit_pipelined_ehlo_is_dropped(
        proxy, scripted_backend, client_ctx):
    """Even an EHLO pipelined behind STARTTLS (harmless-looking) is not
    answered over TLS."""
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.send(b"STARTTLS\r\nEHLO injected.test\r\n")
    expect(c.read_reply(), 220)
    c.start_tls(client_ctx)
    expect(c.cmd("NOOP"), 250)
    e = c.ehlo("after.test")
    assert len(e.lines) > 1, e
    c.quit()
    assert b"injected.test" not in b.all_raw()


def test_response_injection_after_backend_starttls_220_is_discarded(
        proxy, scripted_backend, backend_tls_ctx, client_ctx):
    b = scripted_backend(
        tls_ctx=backend_tls_ctx,
        starttls_reply=b"220 2.0.0 go ahead\r\n250 injected-by-backend\r\n"
                       b"250-X-INJECTED\r\n250 X-INJECTED-2\r\n",
        keywords=("PIPELINING", "X-PRE-TLS"),
        tls_keywords=("PIPELINING", "X-POST-TLS", "8BITMIME"))
    # the X- keywords are not on the proxy's list: pass them to see which
    # of them (before or after the backend's TLS) reach the client
    p = proxy(b.port, backend_tls="encrypt",
              ehlo_pass="X-PRE-TLS, X-POST-TLS, X-INJECTED, X-INJECTED-2")
    token = unique_token("resp-inj")
    c = connect(p)
    e = c.ehlo()
    assert e.has("X-POST-TLS") and not e.has("X-PRE-TLS"), e
    assert not e.has("X-INJECTED") and not e.has("X-INJECTED-2"), e
    c.starttls(client_ctx)
    e = c.ehlo()
    assert e.has("X-POST-TLS"), e
    expect(c.mail(rcpts=["inj@test.example"],
                  body=("Subject: %s\r\n\r\nx\r\n" % token).encode()), 250)
    c.quit()
    assert b"injected" not in bytes(c.received).lower()
    conn = b.conns[0]
    assert conn.tls
    assert len(b.conns) == 1
    assert token.encode() in conn.messages[0]


def test_fresh_backend_session_when_transaction_started_before_starttls(
        proxy, scripted_backend, client_ctx):
    b = scripted_backend()
    p = proxy(b.port, client_tls="may")
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<plain-state@client.test>"), 250)
    expect(c.cmd("RSET"), 250)
    c.starttls(client_ctx)
    c.ehlo()
    expect(c.mail(rcpts=["fresh@test.example"]), 250)
    c.quit()
    assert len(b.conns) == 2, [x.lines for x in b.conns]
    first, second = b.conns
    first.wait_eof()
    assert b"MAIL FROM:<plain-state@client.test>" in first.lines
    assert "MAIL" not in first.commands()[first.commands().index("RSET"):]
    assert all(b"plain-state" not in l for l in second.lines)
    assert second.commands().count("MAIL") == 1
    assert b"EHLO client.test" in second.lines
    p.wait_log(r"event=summary\b")


def test_fresh_backend_session_seen_by_postfix(
        proxy, postfix_backend, client_ctx):
    pf = postfix_backend
    since = pf.log_offset()
    p = proxy(pf.port, backend_tls="none")
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<plain-state@client.test>"), 250)
    expect(c.cmd("RCPT TO:<state@test.example>"), 250)
    c.starttls(client_ctx)
    c.ehlo()
    expect(c.mail(rcpts=["fresh@test.example"]), 250)
    c.quit()
    pf.wait_log(r"postfix/smtpd\[\d+\]: disconnect from", since, count=2)
    log = pf.log_since(since)
    assert len(re.findall(r"postfix/smtpd\[\d+\]: connect from", log)) == 2
    disc = [l for l in log.splitlines()
            if re.search(r"postfix/smtpd\[\d+\]: disconnect from", l)]
    # the plaintext session never got DATA, the fresh one got the message
    assert [bool(re.search(r"\bdata=", l)) for l in disc].count(True) == 1, \
        disc


def test_same_backend_session_when_only_ehlo_before_starttls(
        proxy, scripted_backend, client_ctx):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("NOOP"), 250)
    c.starttls(client_ctx)
    c.ehlo()
    expect(c.mail(rcpts=["same@test.example"]), 250)
    c.quit()
    assert len(b.conns) == 1, [x.lines for x in b.conns]
    assert b.conns[0].lines.count(b"EHLO client.test") == 2
