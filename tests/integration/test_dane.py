"""
test_dane.py - DNS next hops (backend = mx:DOMAIN) and DANE toward the
backend (backend_tls = dane | dane-only), against a real DNSSEC-signed
zone: nsd on loopback serving zones signed with ldns-signzone
(dnszone.py), the proxy's libunbound forwarding to it with the zone's DS
as its only trust anchor.  The private Postfix with the test CA's
certificate is the backend in the positive cases.

Every test starts and stops its own DNS server.  The mail domains are
names under the signed zone "dane.example." (and its unsigned child
"insecure.dane.example."), one per case.
"""

import os
import re
import subprocess
import time

import pytest

from dnszone import DnsZones, tlsa_rdata
from harness import (SMTPClient, expect, log_fields, require_program,
                     server_tls_context, unique_token)
from test_backends import deliver

ZONE = "dane.example."
INSECURE = "insecure.dane.example."


@pytest.fixture
def dns(tmp_path):
    require_program("nsd")
    require_program("ldns-signzone")
    z = DnsZones(str(tmp_path / "dns"))
    yield z
    z.stop()


def dns_keys(z):
    """The [proxy] keys that point the proxy's resolver at z."""
    return {"dns_resolver": "127.0.0.1@%d" % z.port,
            "dns_trust_anchor": z.trust_anchor, "dns_timeout": "5"}


def mx_domain(z, label, hosts, signed=True, zone=ZONE):
    """label.ZONE gets an MX for each (pref, host label, address)."""
    zn = z.zones.get(zone) or z.zone(zone, signed=signed)
    for pref, host, addr in hosts:
        zn.add("%s.%s" % (host, label), "A", addr)
        zn.add(label, "MX", "%d %s.%s.%s" % (pref, host, label, zone))
    return "%s.%s" % (label, zone.rstrip("."))


def start_proxy(proxy, z, domain, port, policy, proxy_keys=None, **keys):
    pk = dns_keys(z)
    pk.update(proxy_keys or {})
    return proxy(backend="mx:%s:%d" % (domain, port), backend_tls=policy,
                 backend_ca_file=keys.pop("ca", None), proxy_keys=pk, **keys)


def esc(text):
    """text as the log writes it in a quoted value: blanks as \\x20."""
    return re.escape(text).replace("\\ ", " ").replace(" ", r"\\x20")


def send_one(p, client_ctx, token):
    """One message over STARTTLS through proxy p (test_backends.deliver)."""
    return deliver(SMTPClient(p.port), client_ctx, token)


def refused_at_greeting(p, code="421", enhanced=None):
    """A client is refused before it may send anything: no 220, and the
    backend never sees it."""
    c = SMTPClient(p.port)
    r = c.read_reply()
    assert str(r.code) == code, r
    if enhanced is not None:
        assert r.text.startswith(enhanced), r
    assert b"220 " not in bytes(c.received)
    return r


# ---- DANE-EE (3 1 1), matching: delivered, and the log says why ----------

def test_dane_only_usage_3_matching_delivers_through_postfix(
        proxy, dns, postfix_backend, certs, client_ctx):
    pf = postfix_backend
    domain = mx_domain(dns, "ee", [(10, "mx1", "127.0.0.1")])
    dns.zone(ZONE).add("_%d._tcp.mx1.ee" % pf.port, "TLSA",
                       tlsa_rdata(3, certs.backend_cert))
    dns.start()
    p = start_proxy(proxy, dns, domain, pf.port, "dane-only",
                    trace_header="yes")
    since = pf.log_offset()
    token = unique_token("dane-ee")
    expect(send_one(p, client_ctx, token), 250, "2.0.0")
    pf.wait_log(r"TLS connection established from localhost", since)
    wait = time.time() + 10
    while token not in pf.mbox_text() and time.time() < wait:
        time.sleep(0.1)
    mbox = pf.mbox_text()
    assert token in mbox
    # the trace header names the MX host and DANE's verdict
    assert re.search(r"backend mx1\.ee\.dane\.example:%d policy dane-only "
                     r"using TLSv1\.[23]" % pf.port, mbox), mbox[-3000:]
    assert "dane verified usage=3 selector=1 mtype=1" in mbox, mbox[-3000:]
    p.wait_log(r"event=backend_nexthop host=mx1\.ee\.dane\.example "
               r"addr=127\.0\.0\.1:%d mx=secure address=secure dane=usable"
               % pf.port)
    p.wait_log(r"event=backend_tls .*verify=dane resumed=no "
               r"dane=verified usage=3 selector=1 mtype=1")
    f = log_fields(p.summaries()[0])
    assert f["backend_verify"] == "dane", f


def test_dane_usage_3_not_matching_is_refused_before_the_greeting(
        proxy, dns, postfix_backend, certs):
    pf = postfix_backend
    domain = mx_domain(dns, "wrong", [(10, "mx1", "127.0.0.1")])
    dns.zone(ZONE).add("_%d._tcp.mx1.wrong" % pf.port, "TLSA",
                       "3 1 1 " + "ab" * 32)
    dns.start()
    since = pf.log_offset()
    # "dane" (not only dane-only) refuses: a usable record demands a match
    p = start_proxy(proxy, dns, domain, pf.port, "dane")
    refused_at_greeting(p, "421", "4.7.0")
    p.wait_log(r"event=backend_dane host=mx1\.wrong\.dane\.example "
               r"tlsa_set=[0-9a-f]{16} dane=failed "
               r"error=\"no matching DANE TLSA records\"")
    p.wait_log(r"event=backend_tls_required")
    # never a plaintext retry toward the backend
    assert "action=retry_plaintext" not in p.log_text()
    time.sleep(0.3)
    assert "MAIL FROM" not in pf.log_since(since)


def test_dane_ta_usage_2_matching_with_the_test_ca(
        proxy, dns, aiosmtpd_backend, certs, client_ctx, tmp_path):
    """DANE-TA: the chain must end at the CA in the record and the
    certificate must name the MX host (RFC 7672 3.2.2)."""
    host = "mx1.ta.dane.example"
    cert, key = issue_cert(certs, tmp_path, host)
    b = aiosmtpd_backend(tls_ctx=server_tls_context(cert, key))
    domain = mx_domain(dns, "ta", [(10, "mx1", "127.0.0.1")])
    dns.zone(ZONE).add("_%d._tcp.mx1.ta" % b.port, "TLSA",
                       tlsa_rdata(2, certs.ca, selector=0, mtype=1))
    dns.start()
    p = start_proxy(proxy, dns, domain, b.port, "dane-only")
    token = unique_token("dane-ta")
    expect(send_one(p, client_ctx, token), 250)
    envs = b.wait_messages(1)
    assert token.encode() in envs[0].content
    assert b.sessions_tls == [True]
    p.wait_log(r"event=backend_tls .*verify=dane .*dane=verified usage=2 "
               r"selector=0 mtype=1")


def test_dane_ta_refuses_a_certificate_for_another_name(
        proxy, dns, aiosmtpd_backend, certs, tmp_path):
    cert, key = issue_cert(certs, tmp_path, "elsewhere.dane.example")
    b = aiosmtpd_backend(tls_ctx=server_tls_context(cert, key))
    domain = mx_domain(dns, "taname", [(10, "mx1", "127.0.0.1")])
    dns.zone(ZONE).add("_%d._tcp.mx1.taname" % b.port, "TLSA",
                       tlsa_rdata(2, certs.ca, selector=0, mtype=1))
    dns.start()
    p = start_proxy(proxy, dns, domain, b.port, "dane-only")
    refused_at_greeting(p, "421", "4.7.0")
    assert b.envelopes == []


def issue_cert(certs, tmp_path, name):
    """A leaf for name signed by the test CA."""
    openssl = require_program("openssl")
    d = str(tmp_path)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:%s\n" % name)
    key = os.path.join(d, name + ".key")
    csr = os.path.join(d, name + ".csr")
    cert = os.path.join(d, name + ".pem")
    for argv in (
            [openssl, "req", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
             "-subj", "/CN=" + name],
            [openssl, "x509", "-req", "-in", csr, "-CA", certs.ca, "-CAkey",
             os.path.join(certs.dir, "ca.key"), "-CAcreateserial",
             "-CAserial", os.path.join(d, "ca.srl"), "-days", "2",
             "-extfile", ext, "-out", cert]):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    with open(cert, "a") as out, open(certs.ca) as ca:
        out.write(ca.read())           # the chain up to the TA
    return cert, key


# ---- bogus, insecure, and DNS failures ----------------------------------

def test_bogus_tlsa_is_refused_never_plaintext(
        proxy, dns, postfix_backend, certs):
    pf = postfix_backend
    domain = mx_domain(dns, "bogus", [(10, "mx1", "127.0.0.1")])
    owner = "_%d._tcp.mx1.bogus" % pf.port
    dns.zone(ZONE).add(owner, "TLSA", tlsa_rdata(3, certs.backend_cert))
    dns.tamper(ZONE, owner, "TLSA", "3 1 1 " + "00" * 32)
    dns.start()
    since = pf.log_offset()
    p = start_proxy(proxy, dns, domain, pf.port, "dane")
    refused_at_greeting(p, "421")
    p.wait_log(r"event=nexthop_skipped host=mx1\.bogus\.dane\.example "
               r"reason=\"TLSA lookup failed for mx1\.bogus\.dane\.example")
    assert "event=backend_connected" not in p.log_text()
    assert "connect from" not in pf.log_since(since)


@pytest.mark.parametrize("policy", ["dane", "dane-only"])
def test_insecure_zone_dane_is_may_and_dane_only_refuses(
        proxy, dns, postfix_backend, certs, client_ctx, policy):
    pf = postfix_backend
    dns.zone(ZONE)
    ins = dns.zone(INSECURE, signed=False)
    ins.add("mx1", "A", "127.0.0.1")
    ins.add("@", "MX", "10 mx1." + INSECURE)
    dns.start()
    domain = INSECURE.rstrip(".")
    p = start_proxy(proxy, dns, domain, pf.port, policy)
    if policy == "dane":
        token = unique_token("dane-insecure")
        expect(send_one(p, client_ctx, token), 250)
        p.wait_log(r"event=backend_nexthop host=mx1\.insecure\.dane\.example "
                   r".*mx=insecure address=insecure dane=insecure")
        p.wait_log(r"event=backend_tls .*dane=no_secure_tlsa")
    else:
        refused_at_greeting(p, "421", "4.7.0")
        p.wait_log(r"event=backend_tls_required .*" +
                   esc("no secure TLSA records"))
        assert "event=backend_connected" not in p.log_text()


def test_dane_only_with_enforce_no_logs_would_refuse_and_goes_on(
        proxy, dns, postfix_backend, certs, client_ctx):
    pf = postfix_backend
    dns.zone(ZONE)
    ins = dns.zone(INSECURE, signed=False)
    ins.add("@", "A", "127.0.0.1")       # no MX: the domain itself
    dns.start()
    p = start_proxy(proxy, dns, INSECURE.rstrip("."), pf.port, "dane-only",
                    enforce="no")
    expect(send_one(p, client_ctx, unique_token("would")), 250)
    p.wait_log(r"would_refuse=dane")


def test_nxdomain_is_a_temporary_refusal(proxy, dns, postfix_backend):
    dns.zone(ZONE).add("other", "A", "127.0.0.1")
    dns.start()
    p = start_proxy(proxy, dns, "missing.dane.example",
                    postfix_backend.port, "dane")
    refused_at_greeting(p, "421", "4.4.3")
    p.wait_log(r"event=backend_dns_failed reason=\"" +
               esc("the mail domain does not exist"))


def test_null_mx_refuses_permanently(proxy, dns, postfix_backend):
    dns.zone(ZONE).add("nomail", "MX", "0 .")
    dns.start()
    p = start_proxy(proxy, dns, "nomail.dane.example", postfix_backend.port,
                    "may")
    refused_at_greeting(p, "554", "5.1.10")


def test_no_mx_uses_the_domains_own_address(
        proxy, dns, postfix_backend, certs, client_ctx):
    pf = postfix_backend
    dns.zone(ZONE).add("plain", "A", "127.0.0.1")
    dns.start()
    p = start_proxy(proxy, dns, "plain.dane.example", pf.port, "verify",
                    ca=certs.ca, backend_verify_name="backend.test")
    expect(send_one(p, client_ctx, unique_token("nomx")), 250)
    p.wait_log(r"event=nexthop_no_mx domain=plain\.dane\.example "
               r"dnssec=secure")
    p.wait_log(r"event=backend_nexthop host=plain\.dane\.example "
               r"addr=127\.0\.0\.1:%d" % pf.port)


def test_several_mx_the_dead_one_is_skipped(
        proxy, dns, postfix_backend, certs, client_ctx):
    """The preferred MX refuses connections (nothing listens on 127.0.0.2):
    the next one takes the mail, before the client was greeted."""
    pf = postfix_backend
    domain = mx_domain(dns, "multi", [(10, "dead", "127.0.0.2"),
                                      (20, "live", "127.0.0.1")])
    dns.zone(ZONE).add("_%d._tcp.live.multi" % pf.port, "TLSA",
                       tlsa_rdata(3, certs.backend_cert))
    dns.zone(ZONE).add("_%d._tcp.dead.multi" % pf.port, "TLSA",
                       tlsa_rdata(3, certs.backend_cert))
    dns.start()
    p = start_proxy(proxy, dns, domain, pf.port, "dane-only")
    expect(send_one(p, client_ctx, unique_token("multi")), 250)
    p.wait_log(r"event=backend_next host=dead\.multi\.dane\.example "
               r"addr=127\.0\.0\.2:%d" % pf.port)
    p.wait_log(r"event=backend_tls .*dane=verified usage=3")


def test_tlsa_changed_between_sessions_is_checked_again(
        proxy, dns, postfix_backend, certs, client_ctx):
    """The first session verifies; the records then change to ones that do
    not match: the next session must not resume its way past them."""
    pf = postfix_backend
    domain = mx_domain(dns, "change", [(10, "mx1", "127.0.0.1")])
    owner = "_%d._tcp.mx1.change" % pf.port
    zn = dns.zone(ZONE)
    zn.add(owner, "TLSA", tlsa_rdata(3, certs.backend_cert), ttl=1)
    dns.start()
    p = start_proxy(proxy, dns, domain, pf.port, "dane-only",
                    proxy_keys={"workers": "1"})
    expect(send_one(p, client_ctx, unique_token("before")), 250)
    zn.remove(owner, "TLSA")
    zn.add(owner, "TLSA", "3 1 1 " + "cd" * 32, ttl=1)
    dns.reload()
    time.sleep(2.5)                      # past the old record's TTL
    refused_at_greeting(p, "421", "4.7.0")
    p.wait_log(r"event=backend_dane host=mx1\.change\.dane\.example "
               r".*error=\"no matching DANE TLSA records\"")


# ---- -t: the resolver's files -------------------------------------------

@pytest.mark.parametrize("content,message", [
    (None, "No such file or directory"),
    ("example. 3600 IN A 192.0.2.1\n", ":1: not a DS or DNSKEY record"),
    ("; only a comment\n", "no DS or DNSKEY record"),
])
def test_check_names_a_bad_trust_anchor(proxy_check, tmp_path, content,
                                        message):
    anchor = str(tmp_path / "anchor.ds")
    if content is not None:
        with open(anchor, "w") as f:
            f.write(content)
    rc, out, ini = proxy_check({
        "proxy": {"dns_trust_anchor": anchor, "pid_file": "none"},
        "s": {"listen": "127.0.0.1:2525", "backend": "mx:example.com",
              "client_tls": "none"}})
    assert rc == 1, out
    assert "%s: dns_trust_anchor %s" % (ini, anchor) in out, out
    assert message in out, out


def test_check_reads_no_trust_anchor_without_dns(proxy_check, tmp_path):
    """Services without mx: or DANE never touch the resolver's files."""
    rc, out, _ = proxy_check({
        "proxy": {"dns_trust_anchor": str(tmp_path / "missing"),
                  "pid_file": "none"},
        "s": {"listen": "127.0.0.1:2525", "backend": "127.0.0.1:25",
              "client_tls": "none"}})
    assert rc == 0, out
