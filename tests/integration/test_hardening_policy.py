"""
Per-source profiles (issue 3, section 6) and "enforce = no" (section 7):
strict rules evaluated and logged as would_refuse=... while the session
goes on.
"""

import re

from harness import SMTPClient, expect, log_fields
from hardening_util import (connect, delayed_greeting_handler,
                            proxy_profiles,  # noqa: F401 (fixture)
                            replies_until_close)

AUTH_KW = ("PIPELINING", "AUTH PLAIN LOGIN", "8BITMIME")


def summary_of(p):
    lines = p.summaries()
    assert len(lines) >= 1, lines
    return log_fields(lines[-1])


# ---- profiles ----------------------------------------------------------------------

def test_matching_profile_shows_auth_before_tls(
        proxy_profiles, scripted_backend):
    b = scripted_backend(keywords=AUTH_KW)
    p = proxy_profiles(b.port, profile_sections={
        "lan": {"sources": "127.0.0.0/8", "client_plaintext_auth": "yes"}},
        profiles="lan")
    c = connect(p)
    e = c.ehlo()
    assert e.has("AUTH"), e
    assert e.has("STARTTLS"), e
    c.quit()
    assert summary_of(p)["profile"] == "lan"
    p.wait_log(r"event=profile name=lan\b")


def test_non_matching_profile_leaves_service_default(
        proxy_profiles, scripted_backend):
    b = scripted_backend(keywords=AUTH_KW)
    p = proxy_profiles(b.port, profile_sections={
        "printers": {"sources": "10.0.0.0/8",
                     "client_plaintext_auth": "yes"}},
        profiles="printers")
    c = connect(p)
    e = c.ehlo()
    assert not e.has("AUTH"), e
    expect(c.cmd("AUTH PLAIN AGFsaWNlAHB3"), 538, "5.7.11")
    c.quit()
    assert summary_of(p)["profile"] == "none"
    assert b"AUTH" not in b.all_raw()


def test_first_matching_profile_applies(
        proxy_profiles, scripted_backend):
    b = scripted_backend(keywords=AUTH_KW)
    p = proxy_profiles(b.port, profile_sections={
        "far": {"sources": "10.0.0.0/8, 192.0.2.0/24",
                "client_plaintext_auth": "no"},
        "near": {"sources": "127.0.0.1", "client_plaintext_auth": "yes"},
        "wide": {"sources": "0.0.0.0/0", "client_plaintext_auth": "no"}},
        profiles="far, near, wide")
    c = connect(p)
    assert c.ehlo().has("AUTH")
    c.quit()
    assert summary_of(p)["profile"] == "near"


def test_profile_client_tls_encrypt_530(proxy_profiles, scripted_backend,
                                       client_ctx):
    b = scripted_backend()
    p = proxy_profiles(b.port, profile_sections={  # service: may
        "strict": {"sources": "127.0.0.0/8", "client_tls": "encrypt"}},
        profiles="strict")
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<early@client.test>"), 530, "5.7.0")
    c.starttls(client_ctx)
    c.ehlo()
    expect(c.mail(), 250)
    c.quit()
    assert b"early@client.test" not in b.all_raw()


def test_profile_client_tls_encrypt_not_applied_elsewhere(
        proxy_profiles, scripted_backend):
    b = scripted_backend()
    p = proxy_profiles(b.port, profile_sections={
        "strict": {"sources": "10.0.0.0/8", "client_tls": "encrypt"}},
        profiles="strict")
    c = connect(p)
    c.ehlo()
    expect(c.mail(), 250)
    c.quit()


# ---- enforce = no ------------------------------------------------------------------

def test_enforce_no_client_tls_encrypt_relays_and_logs(
        proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, client_tls="encrypt", enforce="no")
    c = connect(p)
    c.ehlo()
    r = expect(c.cmd("MAIL FROM:<trial@client.test>"), 250)
    assert r.text.startswith("2.1.0 Ok"), r       # the backend's own reply
    expect(c.cmd("RCPT TO:<trial@test.example>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: trial\r\n\r\nx\r\n.\r\n")
    expect(c.read_reply(), 250)
    c.quit()
    assert b"MAIL FROM:<trial@client.test>" in b.all_raw()
    p.wait_log(r"would_refuse=client_tls_encrypt\b")


def test_enforce_yes_client_tls_encrypt_still_refuses(proxy,
                                                      scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, client_tls="encrypt")
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<trial@client.test>"), 530, "5.7.0")
    c.quit()
    assert "would_refuse" not in p.log_text()


def test_enforce_no_backend_tls_encrypt_goes_plaintext(proxy, smtp_sink):
    sink = smtp_sink()                     # no STARTTLS
    p = proxy(sink.port, backend_tls="encrypt", enforce="no")
    c = connect(p)
    c.ehlo()
    expect(c.mail(), 250)
    c.quit()
    f = summary_of(p)
    assert f["backend_tls"] == "plaintext", f
    assert f["messages"] == "1", f
    p.wait_log(r"would_refuse=backend_tls\b")


def test_enforce_yes_backend_tls_encrypt_refuses(proxy, smtp_sink):
    sink = smtp_sink()
    p = proxy(sink.port, backend_tls="encrypt")
    c = SMTPClient(p.port)
    replies = replies_until_close(c)
    assert [r.code for r in replies] == [421], replies
    expect(replies[0], 421, "4.7.0")


def test_enforce_no_pregreet_continues(proxy, scripted_backend):
    b = scripted_backend(handler=delayed_greeting_handler(2.5))
    p = proxy(b.port, enforce="no")
    c = SMTPClient(p.port)
    c.send(b"EHLO early.test\r\n")
    c.greeting()
    e = c.read_reply()                     # the answer to the early EHLO
    expect(e, 250)
    assert len(e.lines) > 1, e
    expect(c.mail(), 250)
    c.quit()
    p.wait_log(r"event=pregreet\b")
    p.wait_log(r"would_refuse=pregreet\b")


def test_enforce_no_max_connections_both_served(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, max_connections=1, enforce="no")
    c1 = connect(p)
    c2 = connect(p)
    c1.ehlo("one.test")
    c2.ehlo("two.test")
    expect(c1.mail(), 250)
    expect(c2.mail(), 250)
    c1.quit()
    c2.quit()
    p.wait_log(r"would_refuse=max_connections\b")


def test_enforce_no_max_errors_continues(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port, max_errors=1, enforce="no")
    c = connect(p)
    c.ehlo()
    assert c.cmd("FOO").code == 502
    assert c.cmd("BAR").code == 502
    expect(c.mail(), 250)
    c.quit()
    p.wait_log(r"would_refuse=max_errors\b")
    assert not re.search(r"421 4\.7\.0", bytes(c.received).decode())
