"""
test_tlsrpt.py - TLS reports (RFC 8460) for mx: backends, without the
internet: the mail domains, their _mta-sts and _smtp._tls records and
the report host live in the signed test zone (dnszone.py), the policy
host and the report receiver are nginx on loopback with certificates of
the test CA (httpsd.py), found through the same test DNS, and the MX
hosts are aiosmtpd.

tlsrpt_interval is 10 or 20 s here (a day by default); a report is sent
at the first tick (a tenth of the interval) after its window ended.
Each report is checked against a JSON schema written from RFC 8460 4.4.
"""

import gzip
import json
import os
import time

import pytest

from harness import expect, run_check, unique_token, write_ini
from test_dane import dns, dns_keys  # noqa: F401
from test_mta_sts import (Domain, hosts, mx_backend, policy,  # noqa: F401
                          refused_at_greeting, self_signed, send_one)

jsonschema = pytest.importorskip("jsonschema")

# RFC 8460 4.4 (fields) and 4.3 (result types), as a JSON Schema
RESULT_TYPES = [
    "starttls-not-supported", "certificate-host-mismatch",
    "certificate-expired", "certificate-not-trusted", "validation-failure",
    "tlsa-invalid", "dnssec-invalid", "dane-required",
    "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"]
DATETIME = {"type": "string",
            "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"}
COUNT = {"type": "integer", "minimum": 0}
STRINGS = {"type": "array", "items": {"type": "string"}}
SCHEMA = {
    "type": "object",
    "required": ["organization-name", "date-range", "contact-info",
                 "report-id", "policies"],
    "additionalProperties": False,
    "properties": {
        "organization-name": {"type": "string", "minLength": 1},
        "date-range": {
            "type": "object", "additionalProperties": False,
            "required": ["start-datetime", "end-datetime"],
            "properties": {"start-datetime": DATETIME,
                           "end-datetime": DATETIME}},
        "contact-info": {"type": "string", "minLength": 1},
        "report-id": {"type": "string", "minLength": 1},
        "policies": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["policy", "summary"],
            "properties": {
                "policy": {
                    "type": "object", "additionalProperties": False,
                    "required": ["policy-type", "policy-domain"],
                    "properties": {
                        "policy-type": {"enum": ["tlsa", "sts",
                                                 "no-policy-found"]},
                        "policy-string": STRINGS,
                        "policy-domain": {"type": "string"},
                        "mx-host": STRINGS}},
                "summary": {
                    "type": "object", "additionalProperties": False,
                    "required": ["total-successful-session-count",
                                 "total-failure-session-count"],
                    "properties": {
                        "total-successful-session-count": COUNT,
                        "total-failure-session-count": COUNT}},
                "failure-details": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["result-type", "failed-session-count"],
                    "properties": {
                        "result-type": {"enum": RESULT_TYPES},
                        "sending-mta-ip": {"type": "string"},
                        "receiving-mx-hostname": {"type": "string"},
                        "receiving-mx-helo": {"type": "string"},
                        "receiving-ip": {"type": "string"},
                        "failed-session-count": COUNT,
                        "additional-information": {"type": "string"},
                        "failure-reason-code": {"type": "string"}}}}}}}}}


def report_domain(d, hosts, rua_mailto=False, receiver_status=201):
    """d publishes _smtp._tls with an https: rua on reports.DOMAIN (and a
    mailto: one when asked)."""
    name = "reports." + d.name
    d.zone.add("reports." + d.label, "A", "127.0.0.1")
    cert, key = d.report_cert
    hosts.site(name, cert, key)
    hosts.receiver(name, status=receiver_status)
    rua = "https://%s:%d/tlsrpt" % (name, hosts.port)
    if rua_mailto:
        rua = "mailto:tlsrpt@%s,%s" % (d.name, rua)
    d.zone.add("_smtp._tls." + d.label, "TXT",
               '"v=TLSRPTv1; rua=%s"' % rua)
    return name


def make_domain(dns, hosts, certs, tmp_path, label, text, **kw):
    from test_dane import issue_cert
    d = Domain(dns, hosts, certs, tmp_path, label, text, **kw)
    d.report_cert = issue_cert(certs, tmp_path, "reports." + d.name)
    return d


def tlsrpt_proxy(proxy, dns, hosts, d, port, tmp_path, certs, interval=10,
                 name="rpt", backend_tls="sts"):
    state = str(tmp_path / "state")
    rdir = str(tmp_path / name)
    os.makedirs(state, exist_ok=True)
    os.makedirs(rdir, exist_ok=True)
    pk = dns_keys(dns)
    pk.update({"state_dir": state, "sts_policy_port": str(hosts.port),
               "sts_timeout": "5", "tlsrpt": "yes", "tlsrpt_dir": rdir,
               "tlsrpt_organization": "Test Gateway",
               "tlsrpt_contact": "tls-reports@proxy.test",
               "tlsrpt_interval": str(interval)})
    return proxy(backend="mx:%s:%d" % (d.name, port), backend_tls=backend_tls,
                 backend_ca_file=certs.ca, proxy_keys=pk), rdir


def reports(hosts, host, want_sessions, timeout=40):
    """The reports POSTed to host (decoded, schema-checked) once they
    count want_sessions sessions in all (a window may cut the sessions
    in two reports)."""
    deadline = time.time() + timeout
    while True:
        posts = hosts.posts(host)
        docs = []
        for p in posts:
            assert p["content_type"] == "application/tlsrpt+gzip", p
            doc = json.loads(gzip.decompress(p["body"]))
            jsonschema.validate(doc, SCHEMA)
            docs.append(doc)
        total = sum(pol["summary"]["total-successful-session-count"] +
                    pol["summary"]["total-failure-session-count"]
                    for doc in docs for pol in doc["policies"])
        if total >= want_sessions or time.time() > deadline:
            assert total == want_sessions, docs
            return docs
        time.sleep(0.5)


def policies(docs):
    """Every policies[] entry of docs, with counts summed by policy."""
    out = {}
    for doc in docs:
        for pol in doc["policies"]:
            key = json.dumps(pol["policy"], sort_keys=True)
            e = out.setdefault(key, {"policy": pol["policy"], "ok": 0,
                                     "failed": 0, "details": []})
            e["ok"] += pol["summary"]["total-successful-session-count"]
            e["failed"] += pol["summary"]["total-failure-session-count"]
            e["details"] += pol.get("failure-details", [])
    return list(out.values())


def test_successful_sessions_are_reported_by_post(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    d = make_domain(dns, hosts, certs, tmp_path, "rpt",
                    policy("enforce", "mx1.rpt.dane.example"))
    rhost = report_domain(d, hosts)
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p, rdir = tlsrpt_proxy(proxy, dns, hosts, d, b.port, tmp_path, certs)
    for i in range(2):
        expect(send_one(p, client_ctx, unique_token("rpt%d" % i)), 250)
    docs = reports(hosts, rhost, 2)
    doc = docs[0]
    assert doc["organization-name"] == "Test Gateway"
    assert doc["contact-info"] == "tls-reports@proxy.test"
    assert doc["report-id"].endswith(".rpt.dane.example@proxy.test"), doc
    pols = policies(docs)
    assert len(pols) == 1, pols
    pol = pols[0]
    assert pol["policy"] == {
        "policy-type": "sts",
        "policy-string": ["version: STSv1", "mode: enforce",
                          "mx: mx1.rpt.dane.example", "max_age: 86400"],
        "policy-domain": "rpt.dane.example",
        "mx-host": ["mx1.rpt.dane.example"]}, pol
    assert (pol["ok"], pol["failed"], pol["details"]) == (2, 0, [])
    p.wait_log(r"event=tlsrpt_report domain=rpt\.dane\.example "
               r"report_id=\S+ successful=\d+ failed=0 file=proxy\.test!"
               r"rpt\.dane\.example!\d+!\d+!\w+\.json\.gz")
    p.wait_log(r"event=tlsrpt_sent domain=rpt\.dane\.example status=201")
    # every https: address took it and no mailto: wants it: removed
    p.wait_log(r"event=tlsrpt_removed")
    assert [f for f in os.listdir(rdir) if f.endswith(".json.gz")] == []


def test_failures_are_reported_with_their_details(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    """enforce, and the MX host's certificate chains to nothing: refused,
    and reported as certificate-not-trusted with the MX's name and
    address; the report also goes to a mailto: address, so its file
    stays for the local MTA."""
    d = make_domain(dns, hosts, certs, tmp_path, "bad",
                    policy("enforce", "mx1.bad.dane.example"))
    rhost = report_domain(d, hosts, rua_mailto=True)
    from harness import server_tls_context
    cert, key = self_signed(tmp_path, d.host())
    b = aiosmtpd_backend(tls_ctx=server_tls_context(cert, key))
    dns.start()
    hosts.start()
    p, rdir = tlsrpt_proxy(proxy, dns, hosts, d, b.port, tmp_path, certs)
    refused_at_greeting(p, "421")
    docs = reports(hosts, rhost, 1)
    (pol,) = policies(docs)
    assert pol["policy"]["policy-type"] == "sts"
    assert (pol["ok"], pol["failed"]) == (0, 1)
    (det,) = pol["details"]
    assert det["result-type"] == "certificate-not-trusted", det
    assert det["receiving-mx-hostname"] == "mx1.bad.dane.example"
    assert det["receiving-ip"] == "127.0.0.1"
    assert det["sending-mta-ip"] == "127.0.0.1"
    assert det["failed-session-count"] == 1
    m = p.wait_log(r"event=tlsrpt_mailto domain=bad\.dane\.example "
                   r"to=tlsrpt@bad\.dane\.example file=(\S+)")
    name = m[0].group(1)
    with gzip.open(os.path.join(rdir, name)) as f:
        kept = json.load(f)
    jsonschema.validate(kept, SCHEMA)
    assert kept["policies"][0]["failure-details"][0]["result-type"] == \
        "certificate-not-trusted"


def test_bogus_and_unusable_tlsa_are_reported(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    """backend_tls = dane: mx1's TLSA answer is bogus, so mx1 is skipped
    (dnssec-invalid); mx2's records are signed but none is usable, so
    the message goes over unauthenticated TLS (tlsa-invalid).  Both are
    failures of a tlsa policy, each under its own MX host."""
    from dnszone import tlsa_rdata
    d = make_domain(dns, hosts, certs, tmp_path, "tlsa",
                    policy("enforce", "*.tlsa.dane.example"))
    rhost = report_domain(d, hosts)
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host("mx2"))
    d.zone.add("mx2.tlsa", "A", "127.0.0.1")
    d.zone.add("tlsa", "MX", "20 mx2.tlsa." + d.zone.origin)
    owner1 = "_%d._tcp.mx1.tlsa" % b.port
    d.zone.add(owner1, "TLSA", tlsa_rdata(3, certs.backend_cert))
    dns.tamper(d.zone.origin, owner1, "TLSA", "3 1 1 " + "00" * 32)
    # matching type 3 does not exist: signed, but unusable
    d.zone.add("_%d._tcp.mx2.tlsa" % b.port, "TLSA", "3 1 3 " + "11" * 32)
    dns.start()
    hosts.start()
    p, rdir = tlsrpt_proxy(proxy, dns, hosts, d, b.port, tmp_path, certs,
                           backend_tls="dane")
    expect(send_one(p, client_ctx, unique_token("tlsa")), 250)
    b.wait_messages(1)
    docs = reports(hosts, rhost, 2)
    by_mx = {pol["policy"]["mx-host"][0]: pol for pol in policies(docs)}
    assert sorted(by_mx) == [d.host("mx1"), d.host("mx2")], by_mx
    bogus, unusable = by_mx[d.host("mx1")], by_mx[d.host("mx2")]
    assert bogus["policy"] == {"policy-type": "tlsa",
                               "policy-domain": d.name,
                               "mx-host": [d.host("mx1")]}, bogus
    assert (bogus["ok"], bogus["failed"]) == (0, 1)
    (det,) = bogus["details"]
    assert det["result-type"] == "dnssec-invalid", det
    assert det["receiving-mx-hostname"] == d.host("mx1")
    assert det["receiving-ip"] == "127.0.0.1"
    assert unusable["policy"]["policy-type"] == "tlsa"
    assert unusable["policy"]["policy-string"] == ["3 1 3 " + "11" * 32]
    assert (unusable["ok"], unusable["failed"]) == (0, 1)
    (det,) = unusable["details"]
    assert det["result-type"] == "tlsa-invalid", det
    assert det["receiving-mx-hostname"] == d.host("mx2")


def test_policy_fetch_error_and_a_refusing_receiver(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    """No policy can be fetched (404): delivered as may would, reported
    as sts-policy-fetch-error under no-policy-found; the receiver answers
    500, so the report's file stays and the failure is logged."""
    d = make_domain(dns, hosts, certs, tmp_path, "nopol",
                    policy("enforce", "mx1.nopol.dane.example"))
    hosts.policy(d.policy_host, "gone", status=404)
    rhost = report_domain(d, hosts, receiver_status=500)
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p, rdir = tlsrpt_proxy(proxy, dns, hosts, d, b.port, tmp_path, certs)
    expect(send_one(p, client_ctx, unique_token("nopol")), 250)
    b.wait_messages(1)
    docs = reports(hosts, rhost, 1)
    (pol,) = policies(docs)
    assert pol["policy"] == {"policy-type": "no-policy-found",
                             "policy-domain": "nopol.dane.example"}, pol
    (det,) = pol["details"]
    assert det["result-type"] == "sts-policy-fetch-error", det
    m = p.wait_log(r"event=tlsrpt_failed domain=nopol\.dane\.example "
                   r"status=500 file=(\S+) error=\"HTTP\\x20status\\x20500\"")
    assert os.path.exists(os.path.join(rdir, m[0].group(1)))


def test_no_tlsrpt_record_no_report(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    d = make_domain(dns, hosts, certs, tmp_path, "quiet",
                    policy("enforce", "mx1.quiet.dane.example"))
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    p, rdir = tlsrpt_proxy(proxy, dns, hosts, d, b.port, tmp_path, certs)
    expect(send_one(p, client_ctx, unique_token("quiet")), 250)
    p.wait_log(r"event=tlsrpt_skipped domain=quiet\.dane\.example "
               r"reason=\"TXT nxdomain\"", timeout=40)
    assert [f for f in os.listdir(rdir) if f.endswith(".json.gz")] == []


def test_counts_survive_a_restart(
        proxy, dns, hosts, aiosmtpd_backend, certs, client_ctx, tmp_path):
    """A session counted by one run of the proxy is in the report the next
    run sends: the counts are saved at a clean stop."""
    interval = 20
    d = make_domain(dns, hosts, certs, tmp_path, "again",
                    policy("enforce", "mx1.again.dane.example"))
    rhost = report_domain(d, hosts)
    b = mx_backend(aiosmtpd_backend, certs, tmp_path, d.host())
    dns.start()
    hosts.start()
    # start just after a window began, so both runs fall in it
    while time.time() % interval > 1.0:
        time.sleep(0.2)
    p, rdir = tlsrpt_proxy(proxy, dns, hosts, d, b.port, tmp_path, certs,
                           interval=interval)
    expect(send_one(p, client_ctx, unique_token("again1")), 250)
    assert p.stop() == 0
    assert os.path.exists(os.path.join(rdir, "tlsrpt.state"))
    p2, _ = tlsrpt_proxy(proxy, dns, hosts, d, b.port, tmp_path, certs,
                         interval=interval)
    expect(send_one(p2, client_ctx, unique_token("again2")), 250)
    docs = reports(hosts, rhost, 2, timeout=60)
    (pol,) = policies(docs)
    assert (pol["ok"], pol["failed"]) == (2, 0)
    # both runs fell in one window: one report holds both sessions
    assert len(docs) == 1, docs


@pytest.mark.parametrize("keys, line_key, message", [
    ({"tlsrpt": "yes", "tlsrpt_contact": "a@example.net"}, "tlsrpt",
     "tlsrpt = yes needs tlsrpt_organization"),
    ({"tlsrpt": "yes", "tlsrpt_organization": "X"}, "tlsrpt",
     "tlsrpt = yes needs tlsrpt_contact"),
    ({"tlsrpt": "yes", "tlsrpt_organization": "X",
      "tlsrpt_contact": "nobody"}, "tlsrpt_contact",
     "tlsrpt_contact: an address user@domain is expected"),
    ({"tlsrpt_interval": "5"}, "tlsrpt_interval", "tlsrpt_interval"),
])
def test_configuration_errors(proxy_bin, certs, tmp_path, keys, line_key,
                              message):
    from conftest import service_keys
    ini = str(tmp_path / "c.ini")
    proxy = {"hostname": "proxy.test"}
    proxy.update(keys)
    where = write_ini(ini, {"proxy": proxy,
                            "smtp": service_keys(certs, "127.0.0.1:2525")})
    rc, out = run_check(proxy_bin, ini)
    assert rc != 0, out
    assert message in out, out
    assert "%s:%d:" % (ini, where[("proxy", line_key)]) in out, out
