"""
Real backends behind the proxy: Postfix smtpd with STARTTLS (backend_tls
policies, verification), smtp-sink without STARTTLS, aiosmtpd (message
bytes), and the backend-side strict policies.
"""

import re

from harness import (SMTPClient, expect, log_fields, unique_token, wait_for)


def deliver(c, client_ctx, token, rcpt="pf@test.example"):
    """deliver - greeting, EHLO, STARTTLS, EHLO, one message; returns the
    end-of-data reply."""
    c.greeting()
    c.ehlo()
    c.starttls(client_ctx)
    c.ehlo()
    r = c.mail(rcpts=[rcpt],
               body=("Subject: %s\r\n\r\nhello\r\n" % token).encode())
    c.quit()
    return r


def verify_keys(certs, name="localhost"):
    return dict(backend_tls="verify", backend_ca_file=certs.ca,
                backend_verify_name=name)


def postfix_sessions(pf, since, service="postfix/smtpd", count=1):
    """postfix_sessions - the 'disconnect from' lines of smtpd sessions
    logged after offset since."""
    pf.wait_log(re.escape(service) + r"\[\d+\]: disconnect from", since,
                count=count)
    return [l for l in pf.log_since(since).splitlines()
            if service + "[" in l and "disconnect from" in l]


def test_postfix_backend_verify_delivers_over_tls_both_legs(
        proxy, postfix_backend, certs, client_ctx):
    pf = postfix_backend
    since = pf.log_offset()
    p = proxy(pf.port, **verify_keys(certs))
    token = unique_token("pf-verify")
    c = SMTPClient(p.port)
    r = c.read_reply()
    expect(r, 220)
    assert "backend.test ESMTP postfix-backend" in r.text  # Postfix's own
    c.ehlo()
    c.starttls(client_ctx)
    e = c.ehlo()
    assert e.texts[0].startswith("backend.test")
    r = c.mail(rcpts=["pf@test.example"],
               body=("Subject: %s\r\n\r\nhello\r\n" % token).encode())
    expect(r, 250, "2.0.0")
    m = re.search(r"queued as (\w+)", r.text)
    assert m, r
    qid = m.group(1)
    c.quit()
    # Postfix saw a TLS session and accepted the message
    pf.wait_log(r"postfix/smtpd\[\d+\]: .*TLS connection established from "
                r"localhost\[127\.0\.0\.1\]: TLSv1\.[23]", since)
    pf.wait_log(r"%s: to=<pf@test\.example>.*status=sent" % qid, since)
    mbox = pf.mbox_text()
    assert token in mbox
    assert re.search(r"with ESMTPS id %s" % qid, mbox), mbox[-2000:]
    # the proxy's summary names both legs' TLS
    f = log_fields(p.summaries()[0])
    assert re.match(r"TLSv1\.[23]", f["client_tls"]), f
    assert re.match(r"TLSv1\.[23]", f["backend_tls"]), f
    v = f.get("backend_verify", "")
    assert v and v not in ("none", "plaintext", "no_cert"), f
    assert not re.search(r"(?i)fail|error|unable|mismatch", v), f
    assert f["messages"] == "1", f


def test_postfix_backend_verify_untrusted_cert_refuses_client_421_470(
        proxy, postfix_backend, certs):
    pf = postfix_backend
    since = pf.log_offset()
    p = proxy(pf.untrusted_port, **verify_keys(certs))
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    c.expect_closed()
    lines = postfix_sessions(pf, since, "postfix-untrusted/smtpd")
    for line in lines:
        assert not re.search(r"\b(mail|rcpt|data|bdat)=", line), line
    assert "client.test" not in pf.log_since(since)
    assert not re.search(r"postfix-untrusted/smtpd\[\d+\]: \w+: client=",
                         pf.log_since(since))
    p.wait_log(r"event=summary\b")


def test_postfix_backend_verify_wrong_name_refuses_client_421_470(
        proxy, postfix_backend, certs):
    pf = postfix_backend
    since = pf.log_offset()
    p = proxy(pf.port, **verify_keys(certs, name="wrong.test"))
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    c.expect_closed()
    for line in postfix_sessions(pf, since):
        assert not re.search(r"\b(mail|rcpt|data)=", line), line
    assert "client.test" not in pf.log_since(since)


def test_postfix_backend_verify_name_alternative_san_accepted(
        proxy, postfix_backend, certs, client_ctx):
    # backend.test is a second DNS SAN of the backend certificate
    p = proxy(postfix_backend.port, **verify_keys(certs, name="backend.test"))
    token = unique_token("pf-san")
    r = deliver(SMTPClient(p.port), client_ctx, token)
    expect(r, 250, "2.0.0")
    wait_for(lambda: token in postfix_backend.mbox_text(),
             what="message in mailbox")
    f = log_fields(p.summaries()[0])
    assert re.match(r"TLSv1\.[23]", f["backend_tls"]), f


def test_postfix_backend_session_resumed_and_still_verified(
        proxy, postfix_backend, certs, client_ctx):
    """The second backend connection resumes the first one's TLS session
    (one worker, so both use the same kept session); both messages are
    delivered and both legs report the verified certificate."""
    p = proxy(postfix_backend.port, proxy_keys={"workers": "1"},
              **verify_keys(certs))
    tokens = [unique_token("pf-resume-%d" % i) for i in range(2)]
    for token in tokens:
        expect(deliver(SMTPClient(p.port), client_ctx, token), 250, "2.0.0")
    p.wait_log(r"event=backend_tls .*resumed=", count=2)
    events = re.findall(r"event=backend_tls tls=\S+ verify=(\S+) "
                        r"resumed=(yes|no)", p.log_text())
    assert events == [("verified", "no"), ("verified", "yes")], events
    for token in tokens:
        wait_for(lambda: token in postfix_backend.mbox_text(),
                 what="message in mailbox")


def test_postfix_backend_may_untrusted_cert_uses_tls_unverified(
        proxy, postfix_backend, certs, client_ctx):
    pf = postfix_backend
    since = pf.log_offset()
    p = proxy(pf.untrusted_port, backend_tls="may", backend_ca_file=certs.ca)
    token = unique_token("pf-may")
    expect(deliver(SMTPClient(p.port), client_ctx, token), 250, "2.0.0")
    pf.wait_log(r"postfix-untrusted/smtpd\[\d+\]: .*TLS connection "
                r"established from localhost", since)
    wait_for(lambda: token in pf.mbox_text(), what="message in mailbox")
    f = log_fields(p.summaries()[0])
    assert re.match(r"TLSv1\.[23]", f["backend_tls"]), f


def test_postfix_backend_encrypt_untrusted_cert_delivers(
        proxy, postfix_backend, certs, client_ctx):
    p = proxy(postfix_backend.untrusted_port, backend_tls="encrypt")
    token = unique_token("pf-encrypt")
    expect(deliver(SMTPClient(p.port), client_ctx, token), 250, "2.0.0")
    f = log_fields(p.summaries()[0])
    assert re.match(r"TLSv1\.[23]", f["backend_tls"]), f


def test_postfix_backend_tls_none_stays_plaintext(
        proxy, postfix_backend, client_ctx):
    pf = postfix_backend
    since = pf.log_offset()
    p = proxy(pf.port, backend_tls="none")
    token = unique_token("pf-none")
    expect(deliver(SMTPClient(p.port), client_ctx, token), 250, "2.0.0")
    lines = postfix_sessions(pf, since)
    assert len(lines) == 1, lines
    assert "starttls=" not in lines[0], lines
    assert "TLS connection established" not in pf.log_since(since)
    f = log_fields(p.summaries()[0])
    assert f["backend_tls"] == "plaintext", f
    assert re.match(r"TLSv1\.[23]", f["client_tls"]), f


def test_postfix_esmtp_extensions_relayed(proxy, postfix_backend, certs,
                                          client_ctx):
    """SIZE, DSN, ENHANCEDSTATUSCODES, 8BITMIME, SMTPUTF8, PIPELINING,
    CHUNKING reach the client and their parameters reach Postfix."""
    p = proxy(postfix_backend.port, **verify_keys(certs))
    token = unique_token("pf-ext")
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    c.starttls(client_ctx)
    e = c.ehlo()
    for kw in ("SIZE", "DSN", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8",
               "PIPELINING", "CHUNKING"):
        assert e.has(kw), e
    assert "SIZE 10240000" in e.texts
    expect(c.cmd("MAIL FROM:<s@client.test> SIZE=200 BODY=8BITMIME "
                 "RET=HDRS ENVID=%s" % token), 250, "2.1.0")
    expect(c.cmd("RCPT TO:<dsn@test.example> NOTIFY=SUCCESS,FAILURE "
                 "ORCPT=rfc822;dsn@test.example"), 250, "2.1.5")
    expect(c.cmd("DATA"), 354)
    c.send(("Subject: %s\r\n\r\n8bit: \xe9t\xe9\r\n.\r\n" % token)
           .encode("utf-8"))
    expect(c.read_reply(), 250, "2.0.0")
    expect(c.cmd("MAIL FROM:<s@client.test> SIZE=99999999"), 552)
    c.quit()
    wait_for(lambda: token in postfix_backend.mbox_text(),
             what="message in mailbox")
    assert "8bit: \u00e9t\u00e9" in postfix_backend.mbox_text()


def test_backend_encrypt_without_starttls_refuses_421_470(
        proxy, smtp_sink):
    sink = smtp_sink()
    p = proxy(sink.port, backend_tls="encrypt")
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    c.expect_closed()
    p.wait_log(r"event=summary\b")
    log = sink.log_text()
    assert "MAIL FROM" not in log, log
    assert "client.test" not in log, log
    assert sink.dumps() == []


def test_backend_encrypt_starttls_refused_refuses_421_470(
        proxy, scripted_backend, backend_tls_ctx):
    b = scripted_backend(tls_ctx=backend_tls_ctx, starttls_mode="refuse")
    p = proxy(b.port, backend_tls="encrypt")
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    c.expect_closed()
    conn = b.wait_conns(1)
    conn.wait_eof()
    assert len(b.conns) == 1
    assert b"STARTTLS" in conn.lines
    raw = b.all_raw()
    assert b"client.test" not in raw and b"MAIL" not in raw.upper(), raw


def test_backend_verify_handshake_failure_refuses_421_470(
        proxy, scripted_backend, backend_tls_ctx, certs):
    b = scripted_backend(tls_ctx=backend_tls_ctx, starttls_mode="garbage")
    p = proxy(b.port, **verify_keys(certs))
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    c.expect_closed()
    assert b"client.test" not in b.all_raw()


def test_backend_may_without_starttls_relays_plaintext(
        proxy, smtp_sink, client_ctx):
    sink = smtp_sink()
    p = proxy(sink.port, backend_tls="may")
    token = unique_token("sink-may")
    expect(deliver(SMTPClient(p.port), client_ctx, token), 250, "2.0.0")
    wait_for(lambda: any(token.encode() in d for d in sink.dumps()),
             what="message dumped by smtp-sink")
    f = log_fields(p.summaries()[0])
    assert f["backend_tls"] == "plaintext", f


def test_backend_may_failed_handshake_retries_once_in_plaintext(
        proxy, scripted_backend, backend_tls_ctx, client_ctx):
    b = scripted_backend(tls_ctx=backend_tls_ctx, starttls_mode="garbage")
    p = proxy(b.port, backend_tls="may")
    token = unique_token("retry")
    expect(deliver(SMTPClient(p.port), client_ctx, token), 250, "2.0.0")
    assert len(b.conns) == 2, [c.lines for c in b.conns]
    first, second = b.conns
    assert b"STARTTLS" in first.lines
    assert b"STARTTLS" not in second.lines
    assert not second.tls
    assert len(second.messages) == 1 and token.encode() in second.messages[0]
    assert b"MAIL" not in bytes(first.raw)


def test_backend_implicit_tls_verify_to_aiosmtpd(
        proxy, aiosmtpd_backend, backend_tls_ctx, certs, client_ctx):
    b = aiosmtpd_backend(implicit_ctx=backend_tls_ctx)
    p = proxy(b.port, backend_implicit_tls=True, **verify_keys(certs))
    token = unique_token("implicit-backend")
    expect(deliver(SMTPClient(p.port), client_ctx, token), 250, "2.0.0")
    env = b.wait_messages(1)[0]
    assert token.encode() in env.content
    assert b.sessions_tls == [True]
    f = log_fields(p.summaries()[0])
    assert re.match(r"TLSv1\.[23]", f["backend_tls"]), f


def test_backend_starttls_verify_to_aiosmtpd(
        proxy, aiosmtpd_backend, backend_tls_ctx, certs, client_ctx):
    b = aiosmtpd_backend(tls_ctx=backend_tls_ctx)
    p = proxy(b.port, **verify_keys(certs))
    token = unique_token("aiosmtpd-starttls")
    expect(deliver(SMTPClient(p.port), client_ctx, token), 250, "2.0.0")
    b.wait_messages(1)
    assert b.sessions_tls == [True]
    f = log_fields(p.summaries()[0])
    assert re.match(r"TLSv1\.[23]", f["backend_tls"]), f


DOTTY_BODY = (
    b"Subject: dots\r\n"
    b"\r\n"
    b"..leading dot (stuffed)\r\n"
    b"..\r\n"
    b"...three\r\n"
    b"middle . dot\r\n"
    b" .space dot\r\n"
    b"\r\n"
    b"trailing spaces   \r\n"
    b"tab\there\r\n"
    + b"x" * 990 + b"\r\n"
    b"last line\r\n"
)


def unstuff(body):
    return b"\r\n".join(l[1:] if l.startswith(b".") else l
                        for l in body.split(b"\r\n"))


def test_aiosmtpd_message_bytes_arrive_intact_with_dot_stuffing(
        proxy, aiosmtpd_backend, client_ctx):
    b = aiosmtpd_backend()
    p = proxy(b.port)
    for tls in (False, True):
        c = SMTPClient(p.port)
        c.greeting()
        c.ehlo()
        if tls:
            c.starttls(client_ctx)
            c.ehlo()
        expect(c.mail(rcpts=["dots@test.example"], body=DOTTY_BODY), 250)
        c.quit()
    envs = b.wait_messages(2)
    for env in envs:
        assert env.content == unstuff(DOTTY_BODY)
    assert envs[0].content.splitlines()[2] == b".leading dot (stuffed)"


def test_8bitmime_and_smtputf8_pass_through_to_aiosmtpd(
        proxy, aiosmtpd_backend, client_ctx):
    b = aiosmtpd_backend()
    p = proxy(b.port)
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    c.starttls(client_ctx)
    e = c.ehlo()
    assert e.has("8BITMIME") and e.has("SMTPUTF8"), e
    sender = "j\u00fcrgen@ex\u00e4mple.test"
    rcpt = "\u00fc\u00f1\u00ee@test.example"
    body = "Subject: \u00fcnicode\r\n\r\n\u65e5\u672c\u8a9e \xe9\r\n" \
        .encode("utf-8") + b"raw 8bit \xff\xfe\r\n"
    expect(c.cmd(("MAIL FROM:<%s> BODY=8BITMIME SMTPUTF8" % sender)
                 .encode("utf-8")), 250)
    expect(c.cmd(("RCPT TO:<%s>" % rcpt).encode("utf-8")), 250)
    expect(c.cmd("DATA"), 354)
    c.send(body + b".\r\n")
    expect(c.read_reply(), 250)
    c.quit()
    env = b.wait_messages(1)[0]
    assert env.mail_from == sender
    assert env.rcpt_tos == [rcpt]
    assert "BODY=8BITMIME" in env.mail_options
    assert "SMTPUTF8" in env.mail_options
    assert env.content == body


def test_postfix_backend_verify_untrusted_with_enforce_no_logs_and_delivers(
        proxy, postfix_backend, certs, client_ctx):
    """enforce = no: the unverified backend would be refused; instead the
    refusal is logged as would_refuse and the message goes through TLS."""
    pf = postfix_backend
    since = pf.log_offset()
    p = proxy(pf.untrusted_port, enforce="no", **verify_keys(certs))
    token = unique_token("pf-trial")
    c = SMTPClient(p.port)
    expect(c.read_reply(), 220)
    c.ehlo()
    c.starttls(client_ctx)
    c.ehlo()
    r = c.mail(rcpts=["pf@test.example"],
               body=("Subject: %s\r\n\r\nhello\r\n" % token).encode())
    expect(r, 250)
    c.quit()
    p.wait_log(r"event=policy would_refuse=backend_tls\b")
    f = log_fields(p.summaries()[0])
    assert re.match(r"TLSv1\.[23]", f["backend_tls"]), f
    assert f["backend_verify"] not in ("verified", "none"), f
    pf.wait_log(r"postfix-untrusted/smtpd\[\d+\]: .*TLS connection "
                r"established", since)
    wait_for(lambda: token in pf.mbox_text(), what="message delivered")
