"""
Real SMTP clients through the proxy: swaks, openssl s_client, smtplib,
posttls-finger, and an implicit-TLS listener.
"""

import re
import smtplib
import subprocess

from harness import (PROXY_CN, TIMEOUT, SMTPClient, log_fields, peer_cn,
                     require_program, unique_token, wait_for)


def run(args, **kw):
    p = subprocess.run(args, stdin=kw.pop("stdin", subprocess.DEVNULL),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=kw.pop("timeout", 60), **kw)
    return p.returncode, p.stdout.decode("utf-8", "replace"), \
        p.stderr.decode("utf-8", "replace")


def test_swaks_starttls_delivers_through_proxy_to_postfix(
        proxy, postfix_backend, certs):
    swaks = require_program("swaks")
    p = proxy(postfix_backend.port, backend_tls="verify",
              backend_ca_file=certs.ca, backend_verify_name="localhost")
    token = unique_token("swaks")
    rc, out, err = run([swaks, "--server", "127.0.0.1", "--port", str(p.port),
                        "--tls", "--tls-verify", "--tls-ca-path", certs.ca,
                        "--ehlo", "client.test", "--from", "s@client.test",
                        "--to", "swaks@test.example",
                        "--header", "Subject: " + token])
    assert rc == 0, out + err
    assert re.search(r"=== TLS started with cipher TLSv1\.[23]", out), out
    assert '=== TLS peer DN="/CN=%s"' % PROXY_CN in out, out
    assert re.search(r"<~  250 2\.0\.0 Ok: queued as \w+", out), out
    # The greeting is Postfix's own, relayed
    assert "<-  220 backend.test ESMTP postfix-backend" in out, out
    wait_for(lambda: token in postfix_backend.mbox_text(),
             what="swaks message in the Postfix mailbox")


def test_swaks_plaintext_delivers_through_proxy_to_aiosmtpd(
        proxy, aiosmtpd_backend):
    swaks = require_program("swaks")
    b = aiosmtpd_backend()
    p = proxy(b.port)
    token = unique_token("swaks-plain")
    rc, out, err = run([swaks, "--server", "127.0.0.1", "--port", str(p.port),
                        "--ehlo", "client.test", "--from", "s@client.test",
                        "--to", "plain@test.example",
                        "--header", "Subject: " + token])
    assert rc == 0, out + err
    assert "<-  250 2.0.0 Ok: recorded by aiosmtpd" in out, out
    env = b.wait_messages(1)[0]
    assert token.encode() in env.content
    assert env.rcpt_tos == ["plain@test.example"]


def test_openssl_s_client_starttls_verifies_proxy_certificate(
        proxy, smtp_sink, certs):
    openssl = require_program("openssl")
    sink = smtp_sink()
    p = proxy(sink.port)
    rc, out, err = run([openssl, "s_client", "-starttls", "smtp",
                        "-connect", "127.0.0.1:%d" % p.port,
                        "-name", "client.test", "-CAfile", certs.ca,
                        "-verify_hostname", "localhost",
                        "-verify_return_error", "-crlf", "-ign_eof"],
                       stdin=None, input=b"EHLO client.test\nQUIT\n")
    assert rc == 0, out + err
    assert "Verify return code: 0 (ok)" in out, out
    assert "Verified peername: localhost" in out, out
    assert re.search(r"^subject=CN ?= ?%s$" % re.escape(PROXY_CN), out,
                     re.M), out
    assert re.search(r"New, TLSv1\.[23], Cipher is \S+", out), out
    # after the handshake: the backend's EHLO reply, without STARTTLS
    after = out.split("Verify return code: 0 (ok)", 1)[1]
    assert "250-smtp-sink" in after, out
    assert "STARTTLS" not in after, out
    assert re.search(r"^221\b", after, re.M), out


def test_smtplib_starttls_sendmail_reaches_aiosmtpd(
        proxy, aiosmtpd_backend, client_ctx):
    b = aiosmtpd_backend()
    p = proxy(b.port)
    token = unique_token("smtplib")
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="client.test",
                      timeout=TIMEOUT) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        code, _ = s.starttls(context=client_ctx)
        assert code == 220
        assert peer_cn(s.sock) == PROXY_CN
        s.ehlo()
        assert not s.has_extn("starttls")
        refused = s.sendmail("s@client.test", ["lib@test.example"],
                             "Subject: %s\r\n\r\nbody\r\n" % token)
        assert refused == {}
    env = b.wait_messages(1)[0]
    assert env.content == ("Subject: %s\r\n\r\nbody\r\n" % token).encode()
    fields = log_fields(p.summaries()[0])
    assert re.match(r"TLSv1\.[23]", fields["client_tls"]), fields


def test_posttls_finger_reports_verified_tls_connection(
        proxy, smtp_sink, certs, posttls_finger_env):
    ptf = require_program("posttls-finger")
    sink = smtp_sink()
    p = proxy(sink.port)
    rc, out, err = run([ptf, "-c", "-l", "secure", "-F", certs.ca,
                        "[127.0.0.1]:%d" % p.port, "localhost"],
                       env=posttls_finger_env)
    text = out + err
    assert rc == 0, text
    assert re.search(r"Verified TLS connection established to "
                     r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: TLSv1\.[23]" % p.port,
                     text), text
    assert "subject_CN=%s," % PROXY_CN in text, text


def test_implicit_tls_listener_smtp_ssl_delivers_and_refuses_starttls(
        proxy, aiosmtpd_backend, client_ctx):
    b = aiosmtpd_backend()
    p = proxy(b.port, client_implicit_tls=True)
    token = unique_token("smtps")
    with smtplib.SMTP_SSL("127.0.0.1", p.port, local_hostname="client.test",
                          context=client_ctx, timeout=TIMEOUT) as s:
        assert peer_cn(s.sock) == PROXY_CN
        code, _ = s.ehlo()
        assert code == 250
        assert not s.has_extn("starttls")
        code, msg = s.docmd("STARTTLS")
        assert code == 502 and msg.startswith(b"5.5.1"), (code, msg)
        s.sendmail("s@client.test", ["smtps@test.example"],
                   "Subject: %s\r\n\r\nbody\r\n" % token)
    env = b.wait_messages(1)[0]
    assert token.encode() in env.content
    fields = log_fields(p.summaries()[0])
    assert re.match(r"TLSv1\.[23]", fields["client_tls"]), fields


def test_implicit_tls_listener_rejects_plaintext_client(
        proxy, aiosmtpd_backend):
    b = aiosmtpd_backend()
    p = proxy(b.port, client_implicit_tls=True)
    c = SMTPClient(p.port, timeout=TIMEOUT)
    c.send(b"EHLO client.test\r\n")
    rest = c.expect_closed()
    assert not re.search(rb"^250", rest, re.M), rest
    assert b.envelopes == []


def test_tls_sessions_resume_by_id_and_by_ticket(proxy, smtp_sink, certs):
    """Resumption saves a full handshake per reconnect: by session id
    (TLS 1.2 without tickets) and by ticket, even when the client drops
    the connection without a TLS close."""
    openssl = require_program("openssl")
    sink = smtp_sink()
    p = proxy(sink.port)
    for extra in (["-tls1_2", "-no_ticket"], ["-tls1_2"]):
        rc, out, err = run([openssl, "s_client", "-starttls", "smtp",
                            "-connect", "127.0.0.1:%d" % p.port,
                            "-CAfile", certs.ca, "-reconnect"] + extra,
                           stdin=None, input=b"")
        assert re.search(r"^New, TLSv1\.2", out, re.M), out + err
        reused = re.findall(r"^Reused, TLSv1\.2", out, re.M)
        assert len(reused) >= 5, (extra, out)
