"""
Backends that refuse a second EHLO (issue 8, section 4).  After the
client's STARTTLS the proxy relays the client's new EHLO into the same
backend session.  RFC 5321 4.1.4 lets a server refuse a repeated EHLO, and
OpenSMTPD does ("503 5.5.1 Invalid command: Already identified", also
after RSET, and to HELO).  The proxy then answers the client from the
backend's own earlier EHLO reply, rewritten for the TLS leg: the backend
keeps the client's name from the first EHLO, the client gets the backend's
capabilities, and no backend connection is added.

The backend here refuses any second EHLO or HELO in a session exactly as
OpenSMTPD does (its own STARTTLS starts a new session); every real client
of the suite sends mail through the proxy to it.
"""

import os
import re
import smtplib
import socket
import subprocess

import pytest

from harness import (PROXY_CN, TIMEOUT, PostfixInstance, SMTPClient, expect,
                     peer_cn, require_program, smtp_code_in, unique_token)

ALREADY = b"503 5.5.1 Invalid command: Already identified\r\n"
KEYWORDS = ("PIPELINING", "SIZE 36700160", "DSN", "8BITMIME",
            "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN")


def already_identified(conn, line):
    """OpenSMTPD's rule: one EHLO/HELO per SMTP session; the server's own
    STARTTLS starts a new one."""
    if getattr(conn, "identified_in_tls", None) is conn.tls:
        return ALREADY
    conn.identified_in_tls = conn.tls
    return None


@pytest.fixture
def opensmtpd_like(scripted_backend, backend_tls_ctx):
    def start(tls=False):
        return scripted_backend(
            hostname="opensmtpd.test", keywords=KEYWORDS,
            tls_ctx=backend_tls_ctx if tls else None,
            replies={"EHLO": already_identified, "HELO": already_identified})
    return start


def run(args, **kw):
    p = subprocess.run(args, stdin=kw.pop("stdin", subprocess.DEVNULL),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=kw.pop("timeout", 60), **kw)
    return p.returncode, p.stdout.decode("utf-8", "replace") + \
        p.stderr.decode("utf-8", "replace")


def check_one_session(b, token, helo=b"EHLO client.test"):
    """The backend had one connection, was told the client's name (its
    refusal of the repeated EHLO never reached the client), and received
    the message."""
    assert len(b.conns) == 1, [c.lines for c in b.conns]
    conn = b.conns[0]
    conn.done.wait(10)
    client_greets = [l.upper() for l in conn.lines
                     if l.upper().startswith((b"EHLO", b"HELO")) and
                     not l.endswith(b"proxy.test")]
    assert client_greets and set(client_greets) == {helo.upper()}, conn.lines
    assert len(conn.messages) == 1 and token.encode() in conn.messages[0]


def test_the_backend_refuses_a_repeated_ehlo(opensmtpd_like):
    b = opensmtpd_like()
    s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
    f = s.makefile("rb")
    f.readline()
    replies = []
    for cmd in (b"EHLO a", b"EHLO a", b"RSET", b"EHLO a", b"HELO a"):
        s.sendall(cmd + b"\r\n")
        while True:
            line = f.readline()
            if line[3:4] != b"-":
                break
        replies.append(line[:3])
    s.close()
    assert replies == [b"250", b"503", b"250", b"503", b"503"], replies


@pytest.mark.parametrize("backend_tls", ["none", "may"])
def test_ehlo_after_starttls_answered_from_the_first(
        proxy, opensmtpd_like, client_ctx, backend_tls):
    b = opensmtpd_like(tls=backend_tls == "may")
    p = proxy(b.port, backend_tls=backend_tls)
    c = SMTPClient(p.port)
    c.greeting()
    first = c.ehlo()
    assert first.has("STARTTLS") and not first.has("AUTH"), first
    c.starttls(client_ctx)
    second = c.ehlo()
    # the backend's capabilities, for the TLS leg: AUTH shown, no STARTTLS
    assert second.texts[0].startswith("opensmtpd.test"), second
    assert second.has("AUTH") and second.has("DSN"), second
    assert not second.has("STARTTLS"), second
    token = unique_token("reehlo")
    expect(c.mail(body=("Subject: %s\r\n\r\nx\r\n" % token).encode()), 250)
    c.quit()
    check_one_session(b, token)
    assert not smtp_code_in(bytes(c.received), 503)
    if backend_tls == "may":
        assert b.conns[0].tls
    p.wait_log(r"event=backend_repeat_refused verb=EHLO code=503 "
               r"action=earlier_reply")
    assert "errors=0" in p.summaries()[0]


def test_helo_after_starttls_answered_from_the_first(
        proxy, opensmtpd_like, client_ctx):
    b = opensmtpd_like()
    p = proxy(b.port, backend_tls="none")
    c = SMTPClient(p.port)
    c.greeting()
    expect(c.cmd("HELO client.test"), 250)
    c.starttls(client_ctx)
    r = expect(c.cmd("HELO client.test"), 250)
    assert r.lines == [b"250 opensmtpd.test"], r
    token = unique_token("rehelo")
    expect(c.mail(body=("Subject: %s\r\n\r\nx\r\n" % token).encode()), 250)
    c.quit()
    check_one_session(b, token, helo=b"HELO client.test")


def test_a_backend_that_takes_a_repeated_ehlo_gets_it(
        proxy, scripted_backend, client_ctx):
    """No change for the backends that accept it: the second EHLO is
    relayed into the same session, no connection is added."""
    b = scripted_backend()
    p = proxy(b.port, backend_tls="none")
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    c.starttls(client_ctx)
    c.ehlo("after-tls.test")
    expect(c.mail(), 250)
    c.quit()
    assert len(b.conns) == 1
    b.conns[0].done.wait(10)
    assert [l for l in b.conns[0].lines if l.startswith(b"EHLO")] == \
        [b"EHLO client.test", b"EHLO after-tls.test"]
    assert "event=backend_repeat_refused" not in p.log_text()


def test_swaks_through_a_backend_that_refuses_a_second_ehlo(
        proxy, opensmtpd_like, certs):
    swaks = require_program("swaks")
    b = opensmtpd_like(tls=True)
    p = proxy(b.port)
    token = unique_token("swaks-reehlo")
    rc, out = run([swaks, "--server", "127.0.0.1", "--port", str(p.port),
                   "--tls", "--tls-verify", "--tls-ca-path", certs.ca,
                   "--ehlo", "client.test", "--from", "s@client.test",
                   "--to", "r@test.example", "--header", "Subject: " + token])
    assert rc == 0, out
    assert not smtp_code_in(out, 503), out
    check_one_session(b, token)


def test_smtplib_through_a_backend_that_refuses_a_second_ehlo(
        proxy, opensmtpd_like, client_ctx):
    b = opensmtpd_like(tls=True)
    p = proxy(b.port)
    token = unique_token("smtplib-reehlo")
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="client.test",
                      timeout=TIMEOUT) as s:
        s.starttls(context=client_ctx)
        assert peer_cn(s.sock) == PROXY_CN
        assert s.sendmail("s@client.test", ["r@test.example"],
                          "Subject: %s\r\n\r\nx\r\n" % token) == {}
    check_one_session(b, token)


def test_openssl_s_client_through_a_backend_that_refuses_a_second_ehlo(
        proxy, opensmtpd_like, certs):
    openssl = require_program("openssl")
    b = opensmtpd_like()
    p = proxy(b.port, backend_tls="none")
    token = unique_token("s-client-reehlo")
    # s_client sends its own EHLO before STARTTLS; this one is the second
    script = ("EHLO client.test\nMAIL FROM:<s@client.test>\n"
              "RCPT TO:<r@test.example>\nDATA\nSubject: %s\n\nx\n.\nQUIT\n"
              % token).encode()
    rc, out = run([openssl, "s_client", "-starttls", "smtp",
                   "-connect", "127.0.0.1:%d" % p.port, "-name", "client.test",
                   "-CAfile", certs.ca, "-verify_return_error", "-crlf",
                   "-ign_eof", "-quiet"],
                  stdin=None, input=script)
    assert rc == 0, out
    assert not smtp_code_in(out, 503), out
    assert re.search(r"^250 .*queued", out, re.M), out
    check_one_session(b, token)


def test_posttls_finger_through_a_backend_that_refuses_a_second_ehlo(
        proxy, opensmtpd_like, certs, posttls_finger_env):
    ptf = require_program("posttls-finger")
    b = opensmtpd_like()
    p = proxy(b.port, backend_tls="none")
    rc, out = run([ptf, "-c", "-l", "secure", "-F", certs.ca,
                   "[127.0.0.1]:%d" % p.port, "localhost"],
                  env=posttls_finger_env)
    assert rc == 0, out
    assert "Verified TLS connection established" in out, out
    assert not smtp_code_in(out, 503), out


def test_curl_through_a_backend_that_refuses_a_second_ehlo(
        proxy, opensmtpd_like, certs, tmp_path):
    curl = require_program("curl")
    b = opensmtpd_like(tls=True)
    p = proxy(b.port)
    token = unique_token("curl-reehlo")
    msg = tmp_path / "msg.txt"
    msg.write_text("Subject: %s\r\n\r\nx\r\n" % token)
    rc, out = run([curl, "-sS", "--ssl-reqd", "--cacert", certs.ca,
                   "--connect-to", "localhost:%d:127.0.0.1:%d"
                   % (p.port, p.port),
                   "--url", "smtp://localhost:%d/client.test" % p.port,
                   "--mail-from", "s@client.test", "--mail-rcpt",
                   "r@test.example", "--upload-file", str(msg)])
    assert rc == 0, out
    check_one_session(b, token)


class RelayingPostfix(PostfixInstance):
    """RelayingPostfix - the private Postfix, but mail for other domains
    goes out through its smtp client to relayhost (the proxy), with
    STARTTLS required and the proxy's certificate verified."""

    def __init__(self, certs, relay_port):
        self.relay_port = relay_port
        self.ca = certs.ca
        super().__init__(certs)

    def run(self, *args, check=True):
        if args and args[0] == "check" and not getattr(self, "_relay", False):
            with open(os.path.join(self.conf, "main.cf"), "a") as f:
                f.write("relayhost = [127.0.0.1]:%d\n"
                        "default_transport = smtp\nrelay_transport = smtp\n"
                        "smtp_tls_security_level = verify\n"
                        "smtp_tls_CAfile = %s\n"
                        "smtp_tls_verify_cert_match = localhost\n"
                        "smtp_tls_loglevel = 1\n"
                        "smtp_helo_name = postfix-client.test\n"
                        % (self.relay_port, self.ca))
            with open(os.path.join(self.conf, "master.cf"), "a") as f:
                f.write("smtp      unix  -       -       n       -       -"
                        "       smtp\n")
            self._relay = True
        return super().run(*args, check=check)


def test_postfix_smtp_client_through_a_backend_that_refuses_a_second_ehlo(
        proxy, opensmtpd_like, certs):
    """Postfix's smtp client as a relay (EHLO, STARTTLS, EHLO): it used to
    defer the mail with "503 5.5.1"."""
    b = opensmtpd_like(tls=True)
    p = proxy(b.port)
    pf = RelayingPostfix(certs, p.port)
    try:
        token = unique_token("postfix-reehlo")
        c = SMTPClient(pf.port, expect_cn=None)
        c.greeting()
        c.ehlo()
        expect(c.mail(rcpts=["someone@relay.example"],
                      body=("Subject: %s\r\n\r\nx\r\n" % token).encode()), 250)
        c.quit()
        pf.wait_log(r"to=<someone@relay\.example>, relay=127\.0\.0\.1\["
                    r"127\.0\.0\.1\]:%d, .*status=sent" % p.port)
        pf.wait_log(r"Verified TLS connection established to "
                    r"127\.0\.0\.1\[127\.0\.0\.1\]:%d" % p.port)
        assert not smtp_code_in(pf.log_text(), 503), pf.log_text()
        check_one_session(b, token, helo=b"EHLO postfix-client.test")
    finally:
        pf.stop()
