"""
The EHLO reply rewrite: STARTTLS injected / removed, AUTH hidden before
TLS, XCLIENT and XFORWARD never visible nor usable.
"""

import base64

from harness import SMTPClient, expect

AUTH_KEYWORDS = ("PIPELINING", "8BITMIME", "AUTH PLAIN LOGIN",
                 "XCLIENT NAME ADDR PROTO HELO", "XFORWARD NAME ADDR PROTO",
                 "ENHANCEDSTATUSCODES", "CHUNKING")


def connect(p):
    c = SMTPClient(p.port)
    c.greeting()
    return c


def test_starttls_injected_when_backend_has_none(proxy, smtp_sink):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = connect(p)
    e = c.ehlo()
    assert e.texts[0].startswith("smtp-sink"), e
    assert e.has("STARTTLS"), e
    # the backend's other keywords are still there
    for kw in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"):
        assert e.has(kw), e
    assert "STARTTLS" not in sink.log_text()
    c.quit()


def test_starttls_removed_after_client_tls(proxy, smtp_sink, client_ctx):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = connect(p)
    c.ehlo()
    c.starttls(client_ctx)
    e = c.ehlo()
    assert not e.has("STARTTLS"), e
    assert e.has("PIPELINING"), e
    c.quit()


def test_backend_starttls_not_shown_when_client_tls_none(
        proxy, scripted_backend, backend_tls_ctx):
    b = scripted_backend(tls_ctx=backend_tls_ctx)
    p = proxy(b.port, client_tls="none", backend_tls="none")
    c = connect(p)
    e = c.ehlo()
    assert not e.has("STARTTLS"), e   # the backend does offer it
    c.quit()


def test_auth_hidden_before_tls_and_shown_after(proxy, smtp_sink,
                                                client_ctx):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = connect(p)
    e = c.ehlo()
    assert not e.has("AUTH"), e
    c.starttls(client_ctx)
    e = c.ehlo()
    assert e.has("AUTH"), e
    assert "AUTH PLAIN LOGIN" in e.texts
    c.quit()


def test_auth_refused_538_before_tls_never_reaches_backend(
        proxy, scripted_backend):
    b = scripted_backend(keywords=AUTH_KEYWORDS)
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    secret = base64.b64encode(b"\0user\0plaintext-secret").decode()
    expect(c.cmd("AUTH PLAIN"), 538, "5.7.11")
    expect(c.cmd("AUTH PLAIN " + secret), 538, "5.7.11")
    expect(c.cmd("auth login"), 538, "5.7.11")
    expect(c.cmd("NOOP"), 250)
    c.quit()
    conn = b.conns[-1]
    conn.done.wait(10)
    assert "AUTH" not in conn.commands(), conn.lines
    assert secret.encode() not in b.all_raw()
    assert secret not in p.log_text()


def test_auth_relayed_after_tls_with_334_continuation(
        proxy, scripted_backend, client_ctx):
    b = scripted_backend(keywords=AUTH_KEYWORDS)
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.starttls(client_ctx)
    c.ehlo()
    r = c.cmd("AUTH PLAIN")
    expect(r, 334)
    assert r.lines == [b"334 "], r
    payload = base64.b64encode(b"\0user\0continuation-secret-4711").decode()
    expect(c.cmd(payload), 235, "2.7.0")
    expect(c.cmd("NOOP"), 250)
    c.quit()
    conn = b.conns[-1]
    conn.done.wait(10)
    assert b"AUTH PLAIN" in conn.lines
    i = conn.lines.index(b"AUTH PLAIN")
    assert conn.lines[i + 1] == payload.encode()
    assert payload not in p.log_text()
    assert "continuation-secret" not in p.log_text()


def test_client_plaintext_auth_yes_shows_and_relays_auth(
        proxy, scripted_backend):
    b = scripted_backend(keywords=AUTH_KEYWORDS)
    p = proxy(b.port, client_plaintext_auth=True)
    c = connect(p)
    e = c.ehlo()
    assert e.has("AUTH") and e.has("STARTTLS"), e
    secret = base64.b64encode(b"\0appliance\0lan-secret").decode()
    expect(c.cmd("AUTH PLAIN " + secret), 235)
    c.quit()
    conn = b.conns[-1]
    conn.done.wait(10)
    assert ("AUTH PLAIN " + secret).encode() in conn.lines
    assert secret not in p.log_text()


def test_xclient_xforward_removed_and_refused_502_never_forwarded(
        proxy, scripted_backend, client_ctx):
    b = scripted_backend(keywords=AUTH_KEYWORDS)
    p = proxy(b.port)
    c = connect(p)
    for tls in (False, True):
        e = c.ehlo()
        assert not e.has("XCLIENT") and not e.has("XFORWARD"), e
        assert e.has("CHUNKING"), e
        expect(c.cmd("XCLIENT ADDR=10.9.8.7 NAME=spoofed.test"), 502, "5.5.1")
        expect(c.cmd("xclient addr=10.9.8.7"), 502, "5.5.1")
        expect(c.cmd("XFORWARD ADDR=10.9.8.6 NAME=spoofed.test"), 502,
               "5.5.1")
        expect(c.cmd("XFORWARD"), 502, "5.5.1")
        expect(c.cmd("NOOP"), 250)
        if not tls:
            c.starttls(client_ctx)
    c.quit()
    raw = b.all_raw().upper()
    assert b"XCLIENT" not in raw and b"XFORWARD" not in raw, raw
    assert b"10.9.8." not in raw


def test_xclient_refused_in_front_of_smtp_sink(proxy, smtp_sink):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = connect(p)
    e = c.ehlo()
    assert not e.has("XCLIENT") and not e.has("XFORWARD"), e
    expect(c.cmd("XCLIENT ADDR=10.9.8.7"), 502, "5.5.1")
    c.quit()
    assert "XCLIENT" not in sink.log_text()
