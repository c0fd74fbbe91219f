"""
test_requiretls.py - REQUIRETLS (RFC 8689) end to end: shown to a client
only when its leg is TLS, the backend leg is authenticated TLS, and the
backend itself offers it; then "MAIL FROM:<...> REQUIRETLS" is relayed.
Elsewhere the keyword stays hidden and the parameter gets 555 5.5.4.

The backend is aiosmtpd taught REQUIRETLS: it offers the keyword and
records the parameter (stock aiosmtpd answers 555 to any parameter it
does not know, before a handler sees it); the client is Python's smtplib.
"""

import smtplib

from dnszone import DnsZones, tlsa_rdata
from harness import (TIMEOUT, SMTPClient, expect, free_port, require_program,
                     server_tls_context, unique_token, wait_for,
                     wait_listening)


class RequireTlsBackend:
    """aiosmtpd with STARTTLS (the test CA's backend certificate) that
    offers REQUIRETLS when offer is true and records MAIL parameters."""

    def __init__(self, certs, offer=True):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP

        backend = self
        self.mail_params = []            # upper-case parameter lists
        self.messages = []

        class Server(SMTP):
            def _getparams(self, params):
                got = super()._getparams(params)
                if got is not None and offer:
                    got.pop("REQUIRETLS", None)
                return got

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname,
                                  responses):
                session.host_name = hostname
                if offer and session.ssl is not None:
                    responses.insert(1, "250-REQUIRETLS")
                return responses

            async def handle_MAIL(self, server, session, envelope, address,
                                  mail_options):
                backend.mail_params.append(list(mail_options))
                envelope.mail_from = address
                envelope.mail_options.extend(mail_options)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                backend.messages.append(envelope.content)
                return "250 2.0.0 Ok: recorded"

        class Ctl(Controller):
            def factory(self):
                return Server(self.handler, **self.SMTP_kwargs)

        self.port = free_port()
        self.controller = Ctl(
            Handler(), hostname="127.0.0.1", port=self.port,
            server_hostname="aiosmtpd.test", decode_data=False,
            tls_context=server_tls_context(certs.backend_cert,
                                           certs.backend_key),
            require_starttls=False)
        self.controller.start()
        wait_listening(self.port, what="aiosmtpd")

    def stop(self):
        self.controller.stop()


def start(proxy, certs, request, offer=True, **keys):
    b = RequireTlsBackend(certs, offer=offer)
    request.addfinalizer(b.stop)
    if not keys:
        keys = {"backend_tls": "verify", "backend_ca_file": certs.ca}
    return b, proxy(b.port, **keys)


def test_offered_and_relayed_when_both_legs_are_authenticated(
        proxy, certs, client_ctx, request):
    b, p = start(proxy, certs, request)
    token = unique_token("requiretls")
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="client.test",
                      timeout=TIMEOUT) as c:
        c.ehlo()
        assert not c.has_extn("requiretls")     # plaintext client leg
        c.starttls(context=client_ctx)
        c.ehlo()
        assert c.has_extn("requiretls"), c.esmtp_features
        assert c.sendmail("s@client.test", ["r@test.example"],
                          "Subject: %s\r\n\r\nx\r\n" % token,
                          mail_options=["REQUIRETLS"]) == {}
    wait_for(lambda: b.messages, what="message at the backend")
    assert len(b.mail_params) == 1 and "REQUIRETLS" in b.mail_params[0], \
        b.mail_params


def test_hidden_and_refused_over_an_unauthenticated_backend_leg(
        proxy, certs, client_ctx, request):
    """backend_tls = encrypt: TLS, but nobody checked who is at the other
    end, so the promise cannot be kept."""
    b, p = start(proxy, certs, request, backend_tls="encrypt")
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="client.test",
                      timeout=TIMEOUT) as c:
        c.starttls(context=client_ctx)
        c.ehlo()
        assert not c.has_extn("requiretls"), c.esmtp_features
        code, msg = c.docmd("MAIL FROM:<s@client.test> REQUIRETLS")
        assert code == 555 and msg.startswith(b"5.5.4"), (code, msg)
        code, _ = c.docmd("MAIL FROM:<s@client.test>")
        assert code == 250
    assert b.mail_params == [[]], b.mail_params


def test_refused_to_a_plaintext_client(proxy, certs, request):
    b, p = start(proxy, certs, request)
    c = SMTPClient(p.port)
    expect(c.read_reply(), 220)
    e = c.ehlo()
    assert not e.has("REQUIRETLS"), e
    c.send(b"MAIL FROM:<s@client.test> requiretls\r\n")
    expect(c.read_reply(), 555, "5.5.4")
    c.quit()
    assert b.mail_params == []


def test_hidden_when_the_backend_does_not_offer_it(
        proxy, certs, client_ctx, request):
    b, p = start(proxy, certs, request, offer=False)
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="client.test",
                      timeout=TIMEOUT) as c:
        c.starttls(context=client_ctx)
        c.ehlo()
        assert not c.has_extn("requiretls"), c.esmtp_features
        code, _ = c.docmd("MAIL FROM:<s@client.test> REQUIRETLS")
        assert code == 555
    assert b.mail_params == []


def test_a_parameter_value_that_only_looks_like_it_is_not_refused(
        proxy, certs, client_ctx, request):
    """Only the REQUIRETLS keyword counts: an address or another
    parameter's value that contains the word passes as before."""
    b, p = start(proxy, certs, request, backend_tls="encrypt")
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="client.test",
                      timeout=TIMEOUT) as c:
        c.starttls(context=client_ctx)
        c.ehlo()
        code, _ = c.docmd("MAIL FROM:<requiretls@client.test>")
        assert code == 250


def test_offered_over_dane_and_not_over_dane_without_tlsa(
        proxy, certs, client_ctx, request, tmp_path):
    """A DANE match authenticates the backend leg; the same policy on a
    host without TLSA (opportunistic, as may) does not."""
    require_program("nsd")
    b = RequireTlsBackend(certs)
    request.addfinalizer(b.stop)
    z = DnsZones(str(tmp_path / "dns"))
    request.addfinalizer(z.stop)
    zn = z.zone("rt.example.")
    zn.add("mx1", "A", "127.0.0.1")
    zn.add("_%d._tcp.mx1" % b.port, "TLSA", tlsa_rdata(3, certs.backend_cert))
    zn.add("mx2", "A", "127.0.0.1")            # no TLSA
    z.start()
    keys = {"dns_resolver": "127.0.0.1@%d" % z.port,
            "dns_trust_anchor": z.trust_anchor}
    for host, shown in (("mx1", True), ("mx2", False)):
        p = proxy(backend="%s.rt.example:%d" % (host, b.port),
                  backend_tls="dane", proxy_keys=keys)
        with smtplib.SMTP("127.0.0.1", p.port, local_hostname="client.test",
                          timeout=TIMEOUT) as c:
            c.starttls(context=client_ctx)
            c.ehlo()
            assert c.has_extn("requiretls") == shown, (host, c.esmtp_features)

