"""
backend_auth (issue 14, 2): the proxy logs in to the backend itself, over
TLS only, before the client is greeted; clients never see or send AUTH;
only the service's sources may use it.

The provider is a private Postfix with SASL through a private Dovecot
(passwd-file): its 587-style service requires STARTTLS and offers AUTH
only over TLS, its 465-style one is implicit TLS; both relay for nobody
but an authenticated client and write "Authenticated sender: NAME" into
the Received: header.  aiosmtpd plays the two backends Postfix cannot: one
that does not offer the configured mechanism, one that refuses a second
EHLO.  And the -t rules.
"""

import base64
import os
import pwd
import re
import signal
import socket

import pytest

from harness import DovecotAuth, PostfixInstance, SMTPClient, expect, \
    free_port, unique_token, wait_for, wait_listening
from test_metrics import scrape

USER = "printer@example.org"
SECRET = "Pr1nt-s3cret-%s" % os.urandom(3).hex()
WRONG = "Wr0ng-%s" % os.urandom(3).hex()


@pytest.fixture(scope="module")
def provider(certs):
    """provider - Postfix with SASL (Dovecot), 587 and 465 style."""
    dv = DovecotAuth({USER: SECRET})
    try:
        pf = PostfixInstance(certs, sasl_path=dv.socket)
    except BaseException:
        dv.stop()
        raise
    pf.dovecot = dv
    yield pf
    pf.stop()
    dv.stop()


def cred_file(tmp_path, mode=0o600, text=None, name="auth"):
    path = str(tmp_path / name)
    with open(path, "w") as f:
        f.write(text if text is not None else
                "# the provider account\nuser %s\npassword %s\n"
                % (USER, SECRET))
    os.chmod(path, mode)
    return path


def auth_keys(certs, cred, mech="plain", **extra):
    keys = dict(backend_tls="verify", backend_ca_file=certs.ca,
                backend_verify_name="localhost", backend_auth=mech,
                backend_auth_file=cred, sources="127.0.0.0/8")
    keys.update(extra)
    return keys


def send_one(c, client_ctx, token):
    """send_one - greeting, EHLO, STARTTLS, EHLO, a message; returns the
    last EHLO reply and the end-of-data reply."""
    expect(c.read_reply(), 220)
    e1 = c.ehlo()
    c.starttls(client_ctx)
    e2 = c.ehlo()
    r = c.mail(sender="printer@example.org",
               body=("Subject: %s\r\n\r\nscan\r\n" % token).encode())
    return e1, e2, r


def secrets_absent(text):
    """secrets_absent - neither password, nor any base64 form of them that
    PLAIN or LOGIN would send, appears in text."""
    for pw in (SECRET, WRONG):
        assert pw not in text
        for raw in (pw.encode(), b"\0" + USER.encode() + b"\0" + pw.encode()):
            assert base64.b64encode(raw).decode() not in text


def to_provider(provider, certs, cred, port, mech="plain", **extra):
    keys = auth_keys(certs, cred, mech, **extra)
    keys["backend"] = "127.0.0.1:%d" % port
    return keys


def appliance_sends(c, token, client_ctx=None):
    """appliance_sends - what a printer does: greeting, EHLO, (STARTTLS,
    EHLO), one message to the provider's domain; the EHLO replies and
    the end-of-data reply."""
    expect(c.read_reply(), 220)
    ehlos = [c.ehlo()]
    if client_ctx is not None:
        c.starttls(client_ctx)
        ehlos.append(c.ehlo())
    r = c.mail(sender="scanner@example.org", rcpts=("box@test.example",),
               body=("Subject: %s\r\n\r\nscan\r\n" % token).encode())
    return ehlos, r


def refusals(mport, rule):
    """refusals - starttls_proxy_policy_refusals_total{rule=RULE,
    enforced="yes"} from the metrics port (0 when absent)."""
    samples, _ = scrape(mport)
    return sum(v for (name, labels), v in samples.items()
               if name == "starttls_proxy_policy_refusals_total" and
               ("rule", rule) in labels and ("enforced", "yes") in labels)


def delivered(provider, token):
    """delivered - the message with token, as it landed in the mbox."""
    def find():
        box = provider.mbox_text()
        i = box.find("Subject: %s" % token)
        if i < 0:
            return None
        return box[box.rfind("\nFrom ", 0, i) + 1:i]
    return wait_for(find, what="message %s in the mbox" % token)


@pytest.mark.parametrize("mech", ["plain", "login"])
def test_587_starttls_delivers_with_the_account(proxy, provider, certs,
                                                tmp_path, mech):
    """A plaintext appliance; the proxy does STARTTLS and AUTH on 587."""
    since = provider.log_offset()
    p = proxy(**to_provider(provider, certs, cred_file(tmp_path),
                            provider.submission_port, mech,
                            client_tls="none"))
    c = SMTPClient(p.port)
    token = unique_token("auth587" + mech)
    ehlos, r = appliance_sends(c, token)
    expect(r, 250)
    c.quit()
    assert not any(e.has("AUTH") for e in ehlos), ehlos
    headers = delivered(provider, token)
    assert "(Authenticated sender: %s)" % USER in headers, headers
    assert "with ESMTPSA" in headers, headers
    provider.wait_log(r"postfix-submission/smtpd\[\d+\]: \w+: client=.*"
                      r"sasl_method=%s, sasl_username=%s"
                      % (mech.upper(), re.escape(USER)), since=since)
    p.wait_log(r"event=backend_auth user=%s mechanism=%s$"
               % (re.escape(USER), mech.upper()))
    secrets_absent(p.log_text())


def test_465_implicit_tls_delivers_with_the_account(proxy, provider, certs,
                                                    client_ctx, tmp_path):
    """A client that does STARTTLS to the proxy; implicit TLS on 465."""
    since = provider.log_offset()
    p = proxy(**to_provider(provider, certs, cred_file(tmp_path),
                            provider.smtps_port, backend_implicit_tls="yes"))
    c = SMTPClient(p.port)
    token = unique_token("auth465")
    ehlos, r = appliance_sends(c, token, client_ctx)
    expect(r, 250)
    c.quit()
    assert not any(e.has("AUTH") for e in ehlos), ehlos
    headers = delivered(provider, token)
    assert "(Authenticated sender: %s)" % USER in headers, headers
    provider.wait_log(r"postfix-smtps/smtpd\[\d+\]: \w+: client=.*"
                      r"sasl_method=PLAIN, sasl_username=%s"
                      % re.escape(USER), since=since)
    secrets_absent(p.log_text())


@pytest.mark.parametrize("mech", ["plain", "login"])
@pytest.mark.parametrize("port", ["submission", "smtps"])
def test_wrong_password_refuses_the_client(proxy, provider, certs, tmp_path,
                                           mech, port):
    since = provider.log_offset()
    cred = cred_file(tmp_path, text="user %s\npassword %s\n" % (USER, WRONG))
    extra = {"backend_implicit_tls": "yes"} if port == "smtps" else {}
    mport = free_port()
    p = proxy(proxy_keys={"metrics_listen": "127.0.0.1:%d" % mport},
              **to_provider(provider, certs, cred,
                            getattr(provider, port + "_port"), mech,
                            client_tls="none", **extra))
    c = SMTPClient(p.port)
    r = c.read_reply()
    expect(r, 421, "4.7.0")          # instead of a greeting: no 250 ever
    c.expect_closed()
    assert b"250" not in bytes(c.received)
    p.wait_log(r"event=backend_auth_failed user=%s mechanism=%s code=535 "
               r'reply="535\\x205\.7\.8\\x20Error:\\x20authentication'
               r'\\x20failed' % (re.escape(USER), mech.upper()))
    provider.wait_log(r"postfix-%s/smtpd.*SASL %s authentication failed"
                      % (port, mech.upper()), since=since)
    provider.wait_log(r"postfix-%s/smtpd.*disconnect from" % port,
                      since=since)
    log = provider.log_since(since)
    # nothing was queued: no MAIL, no message reached the backend
    assert "client=" not in log and "cleanup" not in log, log
    assert not re.search(r"mail=\d", log), log
    secrets_absent(p.log_text())
    secrets_absent(provider.log_since(since))
    assert refusals(mport, "backend_auth") == 1


def test_client_auth_refused_and_hidden(proxy, provider, certs, client_ctx,
                                        tmp_path):
    """The client gets no AUTH in EHLO, even with client_plaintext_auth,
    and its AUTH is refused: the proxy is logged in for it."""
    p = proxy(**to_provider(provider, certs, cred_file(tmp_path),
                            provider.submission_port,
                            client_plaintext_auth="yes"))
    c = SMTPClient(p.port)
    expect(c.read_reply(), 220)
    assert not c.ehlo().has("AUTH")
    # the proxy's answer: Postfix's own would be 503 5.5.1 too, but the
    # AUTH must not even reach it
    for line in ("AUTH PLAIN AGZvbwBiYXI=", "AUTH LOGIN"):
        r = c.cmd(line)
        expect(r, 503, "5.5.1")
        assert "the proxy logs in to the backend" in r.text, r
        if line.endswith("="):
            c.starttls(client_ctx)
            assert not c.ehlo().has("AUTH")
    token = unique_token("after503")
    r = c.mail(sender="scanner@example.org", rcpts=("box@test.example",),
               body=("Subject: %s\r\n\r\nscan\r\n" % token).encode())
    expect(r, 250)
    c.quit()
    assert "(Authenticated sender: %s)" % USER in delivered(provider, token)


def test_fresh_backend_session_logs_in_again(proxy, provider, certs,
                                            client_ctx, tmp_path):
    """A transaction in plaintext, then the client's STARTTLS: the
    backend session is replaced (README, the verb table) and the new one
    must log in too, or the provider refuses the message."""
    since = provider.log_offset()
    p = proxy(**to_provider(provider, certs, cred_file(tmp_path),
                            provider.submission_port))
    c = SMTPClient(p.port)
    expect(c.read_reply(), 220)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<scanner@example.org>"), 250)
    expect(c.cmd("RSET"), 250)
    c.starttls(client_ctx)
    c.ehlo()
    token = unique_token("fresh")
    r = c.mail(sender="scanner@example.org", rcpts=("box@test.example",),
               body=("Subject: %s\r\n\r\nscan\r\n" % token).encode())
    expect(r, 250)
    c.quit()
    assert "(Authenticated sender: %s)" % USER in delivered(provider, token)
    p.wait_log(r"event=backend_auth user=", count=2)
    provider.wait_log(r"postfix-submission/smtpd.*disconnect from .* auth=1 ",
                      since=since, count=2)
    secrets_absent(p.log_text())


def test_reload_reads_the_new_password(proxy, provider, certs, tmp_path):
    """The file is read again on a reload (SIGHUP): a password changed at
    the provider is fixed without a restart; a file made readable by
    others is refused by the reload, which keeps the running one."""
    cred = cred_file(tmp_path, text="user %s\npassword %s\n" % (USER, WRONG))
    p = proxy(**to_provider(provider, certs, cred, provider.submission_port,
                            client_tls="none"))
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    c.expect_closed()
    cred_file(tmp_path)                  # the right password, same path
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log(r"event=reload result=ok generation=2")
    c = SMTPClient(p.port)
    token = unique_token("reloaded")
    _, r = appliance_sends(c, token)
    expect(r, 250)
    c.quit()
    assert "(Authenticated sender: %s)" % USER in delivered(provider, token)
    os.chmod(cred, 0o640)
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log(r"event=reload result=failed generation=2")
    p.wait_log(r"event=reload_error .*lets\\x20group\\x20or\\x20others")
    c = SMTPClient(p.port)
    _, r = appliance_sends(c, unique_token("kept"))
    expect(r, 250)
    c.quit()
    secrets_absent(p.log_text())


def test_source_outside_sources_refused_without_backend(proxy, provider,
                                                        certs, tmp_path):
    mport = free_port()
    p = proxy(proxy_keys={"metrics_listen": "127.0.0.1:%d" % mport},
              **to_provider(provider, certs, cred_file(tmp_path),
                            provider.submission_port, client_tls="none",
                            sources="127.0.0.2/32, 10.0.0.0/8"))
    since = provider.log_offset()
    c = SMTPClient(p.port)           # from 127.0.0.1
    expect(c.read_reply(), 554, "5.7.1")
    c.expect_closed()
    p.wait_log(r"event=source_refused client=127\.0\.0\.1")
    p.wait_log(r"event=summary .*backend_connections=0")
    assert "event=backend_state" not in p.log_text()
    assert refusals(mport, "sources") == 1
    # an allowed address is served, with a backend connection of its own
    s = socket.create_connection(("127.0.0.1", p.port), timeout=30,
                                 source_address=("127.0.0.2", 0))
    s.settimeout(30)
    assert s.recv(512).startswith(b"220 ")
    s.close()
    # its connection, and only that one ("disconnect from" is no other)
    m = provider.wait_log(r"postfix-submission/smtpd\[(\d+)\]: connect from",
                          since=since)[0]
    provider.wait_log(r"postfix-submission/smtpd\[%s\]: disconnect from"
                      % m.group(1), since=since)
    log = provider.log_since(since)
    assert len(re.findall(r"postfix-submission/smtpd\[\d+\]: connect from",
                          log)) == 1, log


# -- the backends Postfix cannot play (aiosmtpd)

class AuthBackend:
    """AuthBackend - aiosmtpd requiring AUTH over TLS (auth_required,
    auth_require_tls); records logins, connections and envelopes."""

    def __init__(self, tls_ctx=None, implicit_ctx=None, password=SECRET,
                 refuse_second_ehlo=False, exclude=()):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP, AuthResult

        backend = self
        self.logins = []         # (mechanism, user, ok)
        self.connections = 0
        self.envelopes = []
        self.auth_users = []     # session.login_data at DATA
        self.commands = []       # verbs seen (AUTH lines not recorded)

        def authenticator(server, session, envelope, mechanism, auth_data):
            user = auth_data.login.decode()
            ok = user == USER and auth_data.password.decode() == password
            backend.logins.append((mechanism, user, ok))
            # handled=False: aiosmtpd writes the 535 itself (with the
            # default, True, a failure would get no reply at all)
            return AuthResult(success=ok, handled=False,
                              auth_data=auth_data)

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                backend.envelopes.append(envelope)
                backend.auth_users.append(session.authenticated and
                                          session.auth_data.login.decode())
                return "250 2.0.0 Ok: recorded"

        class CountingSMTP(SMTP):
            def connection_made(self, transport):
                backend.connections += 1
                super().connection_made(transport)

            async def smtp_EHLO(self, hostname):
                backend.commands.append("EHLO")
                if refuse_second_ehlo and self.session.host_name and \
                        self.session.authenticated:
                    await self.push("503 5.5.1 Already identified")
                    return
                await super().smtp_EHLO(hostname)

        class AuthController(Controller):
            def factory(self):
                return CountingSMTP(self.handler, **self.SMTP_kwargs)

        self.port = free_port()
        kwargs = dict(hostname="127.0.0.1", port=self.port,
                      server_hostname="aiosmtpd.test", decode_data=False,
                      authenticator=authenticator, auth_required=True,
                      auth_require_tls=True, ident="aiosmtpd-auth",
                      auth_exclude_mechanism=list(exclude))
        if tls_ctx is not None:
            kwargs.update(tls_context=tls_ctx, require_starttls=True)
        if implicit_ctx is not None:
            # aiosmtpd's auth_require_tls only knows STARTTLS: under
            # implicit TLS it would never offer AUTH (the conn is TLS)
            kwargs.update(ssl_context=implicit_ctx, auth_require_tls=False)
        self.controller = AuthController(Handler(), **kwargs)
        self.controller.start()
        wait_listening(self.port, what="aiosmtpd")
        # Controller.start() connects once itself to see the server up
        self.connections = 0

    def stop(self):
        self.controller.stop()


@pytest.fixture
def auth_backend():
    started = []

    def start(**kw):
        b = AuthBackend(**kw)
        started.append(b)
        return b
    yield start
    for b in started:
        b.stop()


def test_mechanism_not_offered_refuses(proxy, auth_backend, certs,
                                       backend_tls_ctx, tmp_path):
    b = auth_backend(tls_ctx=backend_tls_ctx, exclude=["PLAIN"])
    p = proxy(b.port, **auth_keys(certs, cred_file(tmp_path)))
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    p.wait_log(r'event=backend_auth_failed .*reply="mechanism\\x20not\\x20offered"')
    assert b.logins == [] and b.envelopes == []


def test_no_auth_offered_refuses(proxy, provider, certs, tmp_path):
    """The provider's port 25 (TLS, no SASL): no AUTH after STARTTLS, so
    no login and no mail."""
    since = provider.log_offset()
    p = proxy(**to_provider(provider, certs, cred_file(tmp_path),
                            provider.port, client_tls="none"))
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    c.expect_closed()
    p.wait_log(r'event=backend_auth_failed .*reply="AUTH\\x20not\\x20offered"')
    provider.wait_log(r"postfix/smtpd.*disconnect from", since=since)
    assert "client=" not in provider.log_since(since)


def test_repeated_ehlo_refused_is_answered(proxy, auth_backend, certs,
                                           client_ctx, backend_tls_ctx,
                                           tmp_path):
    """The client's EHLO is the backend's second after the proxy's own:
    one that refuses it is answered from the proxy's EHLO reply."""
    b = auth_backend(tls_ctx=backend_tls_ctx, refuse_second_ehlo=True)
    p = proxy(b.port, **auth_keys(certs, cred_file(tmp_path)))
    c = SMTPClient(p.port)
    token = unique_token("again")
    e1, e2, r = send_one(c, client_ctx, token)
    expect(e1, 250)
    expect(e2, 250)
    assert e1.has("STARTTLS") and not e1.has("AUTH"), e1
    expect(r, 250, "2.0.0")
    c.quit()
    p.wait_log(r"event=backend_repeat_refused verb=EHLO code=503")
    assert b.auth_users == [USER]


def test_check_rules(proxy_check, certs, tmp_path):
    good = cred_file(tmp_path)
    loose = cred_file(tmp_path, mode=0o644, name="loose")

    def svc(**keys):
        sec = {"listen": "127.0.0.1:%d" % free_port(),
               "backend": "127.0.0.1:587", "client_tls": "none"}
        sec.update(auth_keys(certs, good))
        sec.update(keys)
        return {"proxy": {"hostname": "proxy.test"},
                "relay": {k: v for k, v in sec.items() if v is not None}}

    rc, out, _ = proxy_check(svc())
    assert rc == 0, out
    rc, out, _ = proxy_check(svc(backend_auth_file=loose))
    assert rc != 0 and "mode 0644 lets group or others" in out, out
    rc, out, _ = proxy_check(svc(sources=None))
    assert rc != 0 and "backend_auth needs sources" in out, out
    for policy in ("may", "none"):
        rc, out, _ = proxy_check(svc(backend_tls=policy))
        assert rc != 0 and "never falls back to plaintext" in out, out
    for policy in ("dane", "sts"):       # they may go on in plaintext
        rc, out, _ = proxy_check(svc(backend_tls=policy))
        assert rc != 0 and "never falls back to plaintext" in out, out
    rc, out, _ = proxy_check(svc(enforce="no"))
    assert rc != 0 and "needs enforce = yes" in out, out
    rc, out, _ = proxy_check(svc(backend_client_address="xclient"))
    assert rc != 0 and "xclient do not go together" in out, out
    # transparent: the login would go to any server a client connects to
    rc, out, _ = proxy_check(svc(backend=None, transparent="redirect"))
    assert rc != 0 and "backend_auth cannot be used with transparent" in out, out
    # owned by someone who is neither root nor the proxy's user
    foreign = cred_file(tmp_path, name="foreign")
    nobody = pwd.getpwnam("nobody")
    os.chown(foreign, nobody.pw_uid, nobody.pw_gid)
    rc, out, _ = proxy_check(svc(backend_auth_file=foreign))
    assert rc != 0 and "owned by uid %d, neither root nor the proxy's " \
        "user" % nobody.pw_uid in out, out
    # the proxy's user may own it
    rc, out, _ = proxy_check({"proxy": {"hostname": "proxy.test",
                                        "user": "nobody"},
                              "relay": svc(backend_auth_file=foreign)
                              ["relay"]})
    assert rc == 0, out
    rc, out, _ = proxy_check(svc(backend_auth_file=str(tmp_path / "none")))
    assert rc != 0 and "No such file" in out, out
    rc, out, _ = proxy_check(svc(backend_auth_file=cred_file(
        tmp_path, name="nopw", text="user %s\n" % USER)))
    assert rc != 0 and "no password line" in out, out
    rc, out, _ = proxy_check(svc(backend_auth="cram-md5"))
    assert rc != 0 and "backend_auth" in out, out
    assert SECRET not in out


def test_shipped_appliance_relay_example_checks(proxy_check, certs, tmp_path):
    """config/appliance-relay.ini passes -t with its paths made real, and
    is refused without its sources (the open relay guard)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "config",
                           "appliance-relay.ini")) as f:
        text = f.read()
    for old, new in (("/etc/starttls-proxy/provider.auth",
                      cred_file(tmp_path)),
                     ("/etc/starttls-proxy/cert.pem", certs.proxy_cert),
                     ("/etc/starttls-proxy/key.pem", certs.proxy_key),
                     ("user = starttls-proxy", "user = nobody")):
        assert old in text, old
        text = text.replace(old, new)
    rc, out, _ = proxy_check(text)
    assert rc == 0, out
    assert re.search(r"^backend_auth = login$", text, re.M)
    assert re.search(r"^client_tls_min_protocol = TLSv1$", text, re.M)
    rc, out, _ = proxy_check(re.sub(r"^sources = 10\.1\.2\.0/24.*$", "",
                                    text, count=1, flags=re.M))
    assert rc != 0 and "backend_auth needs sources" in out, out
