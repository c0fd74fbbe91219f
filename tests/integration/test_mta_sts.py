"""
test_mta_sts.py - MTA-STS (RFC 8461) toward mx: backends
(backend_tls = sts), without the internet: the mail domains live in the
signed test zone (dnszone.py: nsd on loopback, the proxy's libunbound
forwarding to it), their policy hosts mta-sts.DOMAIN are served over
HTTPS by nginx on loopback with certificates of the test CA
(httpsd.py), found through the same test DNS, and the MX hosts are
aiosmtpd with certificates of the test CA for their names.

sts_policy_port points the proxy at nginx's port (RFC 8461 fixes 443).
"""

import os
import re
import subprocess
import time

import pytest

from dnszone import tlsa_rdata
from harness import (SMTPClient, expect, log_fields, run_check,
                     server_tls_context, unique_token, write_ini)
from httpsd import PolicyHosts
from test_dane import (ZONE, dns, dns_keys, esc, issue_cert,  # noqa: F401
                       refused_at_greeting, send_one)

# the changed records have a TTL of 1 s; the resolver counts TTLs in
# whole seconds, so a record may live up to 2 s in its cache
TTL_WAIT = 2.5

POLICY = ("version: STSv1\nmode: %s\n%smax_age: 86400\n")


@pytest.fixture
def hosts(tmp_path):
    h = PolicyHosts(str(tmp_path / "https"))
    yield h
    h.stop()


def policy(mode, *mx):
    return POLICY % (mode, "".join("mx: %s\n" % m for m in mx))


class Domain:
    """label.ZONE: an MX host (mx1 unless told) at 127.0.0.1, its
    _mta-sts TXT record with id, and its policy host on nginx."""

    def __init__(self, dns, hosts, certs, tmp_path, label, text, txt_id="1",
                 mx="mx1", host_cert=None):
        self.dns, self.hosts = dns, hosts
        self.label = label
        self.name = "%s.%s" % (label, ZONE.rstrip("."))
        self.zone = dns.zones.get(ZONE) or dns.zone(ZONE)
        self.set_mx(mx)
        self.set_id(txt_id)
        self.zone.add("mta-sts." + label, "A", "127.0.0.1")
        self.policy_host = "mta-sts." + self.name
        cert, key = host_cert or issue_cert(certs, tmp_path, self.policy_host)
        hosts.site(self.policy_host, cert, key)
        hosts.policy(self.policy_host, text)

    def host(self, mx="mx1"):
        return "%s.%s" % (mx, self.name)

    def set_mx(self, mx):
        self.zone.remove(self.label, "MX")
        self.zone.add("%s.%s" % (mx, self.label), "A", "127.0.0.1", ttl=1)
        self.zone.add(self.label, "MX", "10 %s.%s.%s" % (mx, self.label, ZONE),
                      ttl=1)

    def set_id(self, txt_id):
        self.zone.remove("_mta-sts." + self.label, "TXT")
        self.zone.add("_mta-sts." + self.label, "TXT",
                      '"v=STSv1; id=%s;"' % txt_id, ttl=1)

    def fetches(self):
        return [r for r in self.hosts.requests(self.policy_host)
                if r["path"] == "/.well-known/mta-sts.txt"]


def self_signed(tmp_path, name):
    """A certificate for name that chains to nothing."""
    cert, key = str(tmp_path / (name + ".self.pem")), \
        str(tmp_path / (name + ".self.key"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=" + name,
                    "-addext", "subjectAltName=DNS:" + name], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def mx_backend(aiosmtpd_backend, certs, tmp_path, host):
    cert, key = issue_cert(certs, tmp_path, host)
    return aiosmtpd_backend(tls_ctx=server_tls_context(cert, key))


def sts_proxy(proxy, dns, hosts, domain, port, tmp_path, **keys):
    pk = dns_keys(dns)
    pk.update({"state_dir": str(tmp_path / "state"),
               "sts_policy_port": str(hosts.port), "sts_timeout": "5"})
    os.makedirs(str(tmp_path / "state"), exist_ok=True)
    return proxy(backend="mx:%s:%d" % (domain, port), backend_tls="sts",
                 backend_ca_file=keys.pop("ca"), proxy_keys=pk, **keys)


def delivered(p, client_ctx, b, tag):
    token = unique_token(tag)
    expect(send_one(p, client_ctx, token), 250)
    envs = b.wait_messages(1)
    assert token.encode() in envs[-1].content
    return envs[-1]


# ---- enforce --------------------------------------------------------------

def test_enforce_matching_mx_with_a_valid_certificate_delivers(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    d = Domain(dns, hosts, certs, tmp_path, "good",
               policy("enforce", "mx1.good.dane.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca,
                  trace_header="yes")
    env = delivered(p, client_ctx, b, "sts-enforce")
    assert b.sessions_tls == [True]
    p.wait_log(r"event=sts_policy_fetched domain=good\.dane\.example id=1 "
               r"mode=enforce max_age=86400 mx_patterns=1")
    p.wait_log(r"event=backend_sts host=mx1\.good\.dane\.example sts=enforce "
               r"id=1 matched=mx1\.good\.dane\.example source=fetched")
    p.wait_log(r"event=backend_tls .*verify=verified .*sts=enforce")
    # the trace header names the policy
    assert b"sts enforce id=1 matched=mx1.good.dane.example" in env.content, \
        env.content[:600]
    f = log_fields(p.summaries()[0])
    assert f["backend_verify"] == "verified", f
    assert len(d.fetches()) == 1


def test_enforce_refuses_an_mx_host_not_in_the_policy(
        proxy, dns, hosts, aiosmtpd_backend, certs, tmp_path):
    d = Domain(dns, hosts, certs, tmp_path, "nomatch",
               policy("enforce", "*.elsewhere.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    refused_at_greeting(p, "421", "4.7.0")
    p.wait_log(r"event=backend_sts host=mx1\.nomatch\.dane\.example "
               r"sts=enforce id=1 matched=none")
    p.wait_log(r"event=backend_tls_required .*" +
               esc("is not in the MTA-STS policy"))
    time.sleep(0.3)
    assert b.envelopes == [] and b.sessions_tls == []   # never connected


def test_enforce_refuses_an_mx_certificate_for_another_name(
        proxy, dns, hosts, aiosmtpd_backend, certs, tmp_path):
    d = Domain(dns, hosts, certs, tmp_path, "badcert",
               policy("enforce", "mx1.badcert.dane.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, "other.dane.example")
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    refused_at_greeting(p, "421", "4.7.0")
    p.wait_log(r"event=backend_sts_failure host=mx1\.badcert\.dane\.example "
               r"result=certificate-host-mismatch")
    assert "action=retry_plaintext" not in p.log_text()
    assert b.envelopes == []


def test_enforce_refuses_an_mx_that_does_not_offer_starttls(
        proxy, dns, hosts, aiosmtpd_backend, certs, tmp_path):
    d = Domain(dns, hosts, certs, tmp_path, "notls",
               policy("enforce", "mx1.notls.dane.example"))
    b = aiosmtpd_backend()                        # no STARTTLS
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    refused_at_greeting(p, "421", "4.7.0")
    p.wait_log(r"event=backend_tls_required")
    assert b.envelopes == []


# ---- testing, none, no policy ---------------------------------------------

def test_testing_mode_delivers_and_logs_what_enforce_would_refuse(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    d = Domain(dns, hosts, certs, tmp_path, "testing",
               policy("testing", "mx9.testing.dane.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, "other.dane.example")
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    delivered(p, client_ctx, b, "sts-testing")
    p.wait_log(r"event=backend_sts host=mx1\.testing\.dane\.example "
               r"sts=testing id=1 matched=none")
    p.wait_log(r"event=sts_testing_failure host=mx1\.testing\.dane\.example "
               r"result=validation-failure")
    p.wait_log(r"event=sts_testing_failure host=mx1\.testing\.dane\.example "
               r"result=certificate-host-mismatch")
    assert "backend_tls_required" not in p.log_text()


def test_a_domain_without_a_policy_is_delivered_as_may(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    zone = dns.zone(ZONE)
    zone.add("mx1.plain", "A", "127.0.0.1")
    zone.add("plain", "MX", "10 mx1.plain." + ZONE)
    b = aiosmtpd_backend()                        # no STARTTLS even
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, "plain.dane.example", b.port, tmp_path,
                  ca=certs.ca)
    delivered(p, client_ctx, b, "sts-none")
    p.wait_log(r"event=backend_sts_policy domain=plain\.dane\.example "
               r"sts=none id=none source=none")
    assert "event=backend_sts " not in p.log_text()
    assert hosts.requests() == []


# ---- the policy host ------------------------------------------------------

def test_a_policy_host_with_an_untrusted_certificate_gives_no_policy(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    # the right name, but no chain to the test CA
    d = Domain(dns, hosts, certs, tmp_path, "webpki",
               policy("enforce", "mx9.webpki.dane.example"),
               host_cert=self_signed(tmp_path, "mta-sts.webpki.dane.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    # without a policy the non-matching MX is fine: delivered as may
    delivered(p, client_ctx, b, "sts-webpki")
    p.wait_log(r"event=sts_policy_failed domain=webpki\.dane\.example id=1 "
               r"result=sts-webpki-invalid")
    p.wait_log(r"event=backend_sts_policy domain=webpki\.dane\.example "
               r"sts=none id=none source=fetch_failed "
               r"result=sts-webpki-invalid")


def test_a_redirect_is_not_followed(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    d = Domain(dns, hosts, certs, tmp_path, "redirect", "")
    target = "https://%s:%d/elsewhere.txt" % (d.policy_host, hosts.port)
    hosts.policy(d.policy_host, "", status=301, location=target)
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    delivered(p, client_ctx, b, "sts-redirect")
    p.wait_log(r"event=sts_policy_failed domain=redirect\.dane\.example id=1 "
               r"result=sts-policy-fetch-error error=\"HTTP" + r"\\x20status"
               r"\\x20301\"")
    assert [r["path"] for r in hosts.requests()] == \
        ["/.well-known/mta-sts.txt"]


@pytest.mark.parametrize("body,ctype,why", [
    ("version: STSv1\nmode: enforce\nmx: mx1.big.dane.example\n"
     "max_age: 86400\n" + "x-pad: " + "a" * 70000 + "\n", "text/plain",
     "larger than 65536"),
    (policy("enforce", "mx1.big.dane.example"), "text/html",
     "is not text/plain"),
    ("version: STSv1\nmode: enforce\nmx: mx1.big.dane.example\n"
     "max_age: 31557601\n", "text/plain", "max_age is more than"),
], ids=["oversized", "content-type", "max_age"])
def test_a_bad_policy_file_is_refused(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path,
        body, ctype, why):
    d = Domain(dns, hosts, certs, tmp_path, "big", "")
    hosts.policy(d.policy_host, body, content_type=ctype)
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    delivered(p, client_ctx, b, "sts-bad")
    kind = "sts-policy-invalid" if "max_age" in why else \
        "sts-policy-fetch-error"
    p.wait_log(r"event=sts_policy_failed domain=big\.dane\.example id=1 "
               r"result=%s error=\".*%s" % (kind, esc(why)))


# ---- the cache ------------------------------------------------------------

def test_same_id_is_served_from_the_cache_a_new_id_is_fetched(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    d = Domain(dns, hosts, certs, tmp_path, "ids",
               policy("enforce", "mx1.ids.dane.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    delivered(p, client_ctx, b, "sts-id-1")
    delivered(p, client_ctx, b, "sts-id-2")
    p.wait_log(r"source=cached")
    assert len(d.fetches()) == 1
    # a new id: fetched again, and the new policy applies at once
    d.set_id("2")
    hosts.policy(d.policy_host, policy("enforce", "mx7.ids.dane.example"))
    dns.reload()
    hosts.reload()
    time.sleep(TTL_WAIT)
    refused_at_greeting(p, "421", "4.7.0")
    p.wait_log(r"event=sts_policy_fetched domain=ids\.dane\.example id=2 ")
    assert len(d.fetches()) == 2


def test_a_failed_fetch_keeps_the_cached_policy_in_force(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    d = Domain(dns, hosts, certs, tmp_path, "keep",
               policy("enforce", "mx1.keep.dane.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    delivered(p, client_ctx, b, "sts-keep")
    # an attacker moves the MX and breaks the policy host: the new id
    # cannot be fetched, the cached enforce policy refuses the new MX
    d.set_mx("evil")
    d.set_id("2")
    hosts.policy(d.policy_host, "gone", status=404)
    dns.reload()
    hosts.reload()
    time.sleep(TTL_WAIT)
    refused_at_greeting(p, "421", "4.7.0")
    p.wait_log(r"event=backend_sts_policy domain=keep\.dane\.example "
               r"sts=enforce id=1 source=cached "
               r"result=sts-policy-fetch-error")
    p.wait_log(r"event=backend_sts host=evil\.keep\.dane\.example "
               r"sts=enforce id=1 matched=none")


def test_a_restart_keeps_the_cache(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    d = Domain(dns, hosts, certs, tmp_path, "restart",
               policy("enforce", "mx1.restart.dane.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    delivered(p, client_ctx, b, "sts-restart")
    assert p.stop() == 0
    cache = (tmp_path / "state" / "mta-sts.cache").read_text()
    assert "restart.dane.example\t1\t" in cache, cache
    # the policy host is gone, the MX moved: the persisted policy still
    # refuses the new MX after the restart
    hosts.stop()
    d.set_mx("evil")
    dns.reload()
    time.sleep(1.5)
    p2 = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    refused_at_greeting(p2, "421", "4.7.0")
    p2.wait_log(r"event=backend_sts_policy domain=restart\.dane\.example "
                r"sts=enforce id=1 source=cached")


# ---- DANE wins ------------------------------------------------------------

def test_dane_wins_over_the_policy_for_an_mx_with_tlsa(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    """RFC 8461 2: an MX host with secure TLSA records gets DANE, not
    MTA-STS, even when the policy would refuse it."""
    d = Domain(dns, hosts, certs, tmp_path, "danewins",
               policy("enforce", "mx9.danewins.dane.example"))
    cert, key = issue_cert(certs, tmp_path, "self.dane.example")
    b = aiosmtpd_backend(tls_ctx=server_tls_context(cert, key))
    d.zone.add("_%d._tcp.mx1.danewins" % b.port, "TLSA", tlsa_rdata(3, cert))
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    delivered(p, client_ctx, b, "sts-dane")
    p.wait_log(r"event=backend_tls .*verify=dane .*dane=verified usage=3")
    assert "event=backend_sts " not in p.log_text()


# ---- the configuration ----------------------------------------------------

def test_check_refuses_sts_without_an_mx_backend_and_a_missing_state_dir(
        proxy_bin, certs, tmp_path):
    from conftest import service_keys
    ini = str(tmp_path / "a.ini")
    write_ini(ini, {"proxy": {"hostname": "proxy.test"},
                    "smtp": service_keys(certs, "127.0.0.1:25",
                                         backend_tls="sts")})
    rc, out = run_check(proxy_bin, ini)
    assert rc != 0 and "backend_tls = sts needs backend = mx:DOMAIN" in out, \
        out
    missing = str(tmp_path / "no-such-dir")
    write_ini(ini, {"proxy": {"hostname": "proxy.test", "state_dir": missing},
                    "smtp": service_keys(certs, "mx:example.org",
                                         backend_tls="sts")})
    rc, out = run_check(proxy_bin, ini)
    assert rc != 0 and re.search(r"state_dir .*no-such-dir: No such file",
                                 out), out


def test_a_policy_past_half_its_max_age_is_refreshed_in_the_background(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    text = ("version: STSv1\nmode: enforce\nmx: mx1.refresh.dane.example\n"
            "max_age: 4\n")
    d = Domain(dns, hosts, certs, tmp_path, "refresh", text)
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p = sts_proxy(proxy, dns, hosts, d.name, b.port, tmp_path, ca=certs.ca)
    delivered(p, client_ctx, b, "sts-refresh-1")
    assert len(d.fetches()) == 1
    time.sleep(2.5)
    # the cached policy applies at once, and a fetch goes out behind it
    delivered(p, client_ctx, b, "sts-refresh-2")
    p.wait_log(r"event=backend_sts_policy domain=refresh\.dane\.example "
               r"sts=enforce id=1 source=cached")
    p.wait_log(r"event=sts_policy_fetched domain=refresh\.dane\.example",
               count=2)
    assert len(d.fetches()) == 2


def test_a_reload_cannot_add_the_first_sts_service(
        proxy, dns, hosts, aiosmtpd_backend, certs, tmp_path):
    import signal
    d = Domain(dns, hosts, certs, tmp_path, "reload",
               policy("enforce", "mx1.reload.dane.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    p = proxy(backend="mx:%s:%d" % (d.name, b.port), backend_tls="dane",
              proxy_keys=dns_keys(dns))
    text = open(p.ini).read()
    assert "backend_tls = dane\n" in text
    with open(p.ini, "w") as f:
        f.write(text.replace("backend_tls = dane\n", "backend_tls = sts\n"))
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log(r"event=reload result=failed generation=1 reason=.*"
               r"backend_tls.=.sts.needs.a.restart")


def test_a_silent_policy_host_times_out_and_a_stop_during_a_fetch_is_clean(
        proxy, dns, aiosmtpd_backend, certs, client_ctx, tmp_path):
    import socket
    from harness import free_port
    zone = dns.zone(ZONE)
    zone.add("mx1.silent", "A", "127.0.0.1")
    zone.add("silent", "MX", "10 mx1.silent." + ZONE)
    zone.add("_mta-sts.silent", "TXT", '"v=STSv1; id=1"')
    zone.add("mta-sts.silent", "A", "127.0.0.1")
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, "mx1.silent." +
                   ZONE.rstrip("."))
    silent = socket.socket()
    silent.bind(("127.0.0.1", free_port()))
    silent.listen(16)                    # accepts, never says a word
    dns.start()
    pk = dns_keys(dns)
    os.makedirs(str(tmp_path / "state"), exist_ok=True)
    pk.update({"state_dir": str(tmp_path / "state"), "sts_timeout": "2",
               "sts_policy_port": str(silent.getsockname()[1])})
    try:
        p = proxy(backend="mx:silent.dane.example:%d" % b.port,
                  backend_tls="sts", backend_ca_file=certs.ca,
                  proxy_keys=pk)
        delivered(p, client_ctx, b, "sts-silent")
        p.wait_log(r"event=sts_policy_failed domain=silent\.dane\.example "
                   r"id=1 result=sts-policy-fetch-error")
        # a session waits on a fetch that hangs; the proxy stops cleanly
        c = SMTPClient(p.port)
        time.sleep(0.5)
        assert p.stop() == 0
        c.sock.close()
    finally:
        silent.close()
