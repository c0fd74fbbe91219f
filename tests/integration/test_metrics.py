"""test_metrics.py - the metrics endpoint (README "Monitoring"): /metrics
in the Prometheus text format (parsed with prometheus_client, checked by
promtool), every counter moving as a scripted scenario expects, /healthz
through a drain, and an HTTP side that refuses what it should without
ever holding up a worker."""
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import (SMTPClient, expect, free_port, require_program,
                     server_tls_context, wait_for, write_ini)

HERE = os.path.dirname(os.path.abspath(__file__))
ALERTS = os.path.join(HERE, "..", "..", "docker", "prometheus-alerts.yml")


def http(port, raw, timeout=10):
    """http - send raw bytes to the metrics port, read until it closes:
    (status, headers {lower name: value}, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(raw)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    assert int(headers["content-length"]) == len(body), (headers, body)
    return status, headers, body


def get(port, path):
    return http(port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())


def scrape(port):
    """scrape - GET /metrics: {(sample name, frozenset(labels)): value}
    and the text itself."""
    status, headers, body = get(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode("utf-8")
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, text


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def metrics_proxy(proxy, backend_port, **keys):
    mport = free_port()
    proxy_keys = keys.pop("proxy_keys", {})
    proxy_keys["metrics_listen"] = "127.0.0.1:%d" % mport
    p = proxy(backend_port, proxy_keys=proxy_keys, **keys)
    wait_for(lambda: _up(mport), what="metrics port")
    p.mport = mport
    return p


def _up(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def promtool_metrics(text):
    promtool = require_program("promtool")
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    return r.returncode, r.stdout.decode()


def one_message(port, ctx=None, body=b"Subject: m\r\n\r\nhello\r\n"):
    c = SMTPClient(port)
    c.greeting()
    c.ehlo()
    if ctx is not None:
        c.starttls(ctx)
        c.ehlo()
    r = c.mail(body=body)
    c.quit()
    return r


def test_session_over_tls_on_both_legs(proxy, scripted_backend, certs,
                                       client_ctx, backend_tls_ctx):
    b = scripted_backend(tls_ctx=backend_tls_ctx)
    p = metrics_proxy(proxy, b.port, backend_tls="verify",
                      backend_ca_file=certs.ca)
    before, text = scrape(p.mport)
    rc, out = promtool_metrics(text)
    assert rc == 0, out
    assert value(before, "starttls_proxy_sessions_total", service="smtp",
                 client_tls="tls", backend_tls="verified") == 0
    expect(one_message(p.port, client_ctx), 250)
    p.summaries(1)
    after, text = scrape(p.mport)
    rc, out = promtool_metrics(text)
    assert rc == 0, out
    assert value(after, "starttls_proxy_sessions_total", service="smtp",
                 client_tls="tls", backend_tls="verified") == 1
    assert sum(v for (n, _), v in after.items()
               if n == "starttls_proxy_sessions_total") == 1
    assert value(after, "starttls_proxy_sessions_active", service="smtp") == 0
    assert value(after, "starttls_proxy_messages_total", service="smtp",
                 result="accepted") == 1
    assert value(after, "starttls_proxy_messages_total", service="smtp",
                 result="refused") == 0
    assert value(after, "starttls_proxy_bytes_total", service="smtp",
                 direction="from_client") > 40
    assert value(after, "starttls_proxy_bytes_total", service="smtp",
                 direction="from_backend") > 40
    for h in ("backend_setup", "client_handshake", "session"):
        name = "starttls_proxy_%s_seconds" % h
        assert value(after, name + "_count", service="smtp") == 1, h
        assert value(after, name + "_bucket", service="smtp",
                     le="+Inf") == 1, h
    assert value(after, "starttls_proxy_handshake_failures_total",
                 service="smtp", leg="backend", reason="verify") == 0
    info = [k for k in after if k[0] == "starttls_proxy_build_info"]
    assert len(info) == 1 and dict(info[0][1])["version"], info


def test_sessions_active_while_open(proxy, scripted_backend):
    b = scripted_backend()
    p = metrics_proxy(proxy, b.port)
    c = SMTPClient(p.port)
    c.greeting()
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_sessions_active", service="smtp") == 1
    c.quit()
    p.summaries(1)
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_sessions_active", service="smtp") == 0
    assert value(s, "starttls_proxy_sessions_total", service="smtp",
                 client_tls="plaintext", backend_tls="plaintext") == 1


def test_backend_certificate_refused(proxy, scripted_backend, certs):
    bad = server_tls_context(certs.untrusted_cert, certs.untrusted_key)
    b = scripted_backend(tls_ctx=bad)
    p = metrics_proxy(proxy, b.port, backend_tls="verify",
                      backend_ca_file=certs.ca)
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    p.summaries(1)
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_handshake_failures_total",
                 service="smtp", leg="backend", reason="verify") == 1
    assert value(s, "starttls_proxy_policy_refusals_total", service="smtp",
                 rule="backend_tls", enforced="yes") == 1
    assert value(s, "starttls_proxy_sessions_total", service="smtp",
                 client_tls="plaintext", backend_tls="none") == 1


def test_backend_handshake_alert(proxy, scripted_backend, certs,
                                 backend_tls_ctx):
    b = scripted_backend(tls_ctx=backend_tls_ctx, starttls_mode="alert")
    p = metrics_proxy(proxy, b.port, backend_tls="encrypt")
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421)
    p.summaries(1)
    s, _ = scrape(p.mport)
    failed = sum(value(s, "starttls_proxy_handshake_failures_total",
                       service="smtp", leg="backend", reason=r)
                 for r in ("handshake", "closed"))
    assert failed == 1, s


def test_enforce_no_counts_would_refuse(proxy, scripted_backend, certs):
    bad = server_tls_context(certs.untrusted_cert, certs.untrusted_key)
    b = scripted_backend(tls_ctx=bad)
    p = metrics_proxy(proxy, b.port, backend_tls="verify",
                      backend_ca_file=certs.ca, enforce=False)
    expect(one_message(p.port), 250)
    p.summaries(1)
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_policy_refusals_total", service="smtp",
                 rule="backend_tls", enforced="no") == 1
    assert value(s, "starttls_proxy_policy_refusals_total", service="smtp",
                 rule="backend_tls", enforced="yes") == 0
    assert value(s, "starttls_proxy_sessions_total", service="smtp",
                 client_tls="plaintext", backend_tls="tls") == 1


SMUGGLE = b"Subject: s\r\n\r\nhello\n.\nMAIL FROM:<evil@x>\r\n"


def test_smuggling_normalized(proxy, scripted_backend):
    b = scripted_backend()
    p = metrics_proxy(proxy, b.port, bare_newline="normalize")
    expect(one_message(p.port, body=SMUGGLE), 250)
    p.summaries(1)
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_protection_events_total", service="smtp",
                 kind="smuggling_normalized") == 1
    assert value(s, "starttls_proxy_protection_events_total", service="smtp",
                 kind="smuggling_refused") == 0


def test_smuggling_refused(proxy, scripted_backend):
    b = scripted_backend()
    p = metrics_proxy(proxy, b.port, bare_newline="reject")
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    expect(c.cmd("MAIL FROM:<a@client.test>"), 250)
    expect(c.cmd("RCPT TO:<b@backend.test>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(SMUGGLE + b".\r\n")
    expect(c.read_reply(), 550)
    c.quit()
    p.summaries(1)
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_protection_events_total", service="smtp",
                 kind="smuggling_refused") == 1
    assert value(s, "starttls_proxy_policy_refusals_total", service="smtp",
                 rule="bare_newline", enforced="yes") == 1
    assert value(s, "starttls_proxy_messages_total", service="smtp",
                 result="accepted") == 0


def test_backend_refuses_and_tempfails(proxy, scripted_backend):
    b = scripted_backend(on_data=b"554 5.7.1 no\r\n")
    p = metrics_proxy(proxy, b.port)
    expect(one_message(p.port), 554)
    p.summaries(1)
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_messages_total", service="smtp",
                 result="refused") == 1
    assert value(s, "starttls_proxy_messages_total", service="smtp",
                 result="accepted") == 0


def test_reload_counts_and_keeps_counters(proxy, scripted_backend):
    b = scripted_backend()
    p = metrics_proxy(proxy, b.port)
    expect(one_message(p.port), 250)
    p.summaries(1)
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log(r"event=reload result=ok generation=2")
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_reloads_total", result="ok") == 1
    assert value(s, "starttls_proxy_reloads_total", result="failed") == 0
    assert value(s, "starttls_proxy_messages_total", service="smtp",
                 result="accepted") == 1
    expect(one_message(p.port), 250)
    p.summaries(2)
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_messages_total", service="smtp",
                 result="accepted") == 2
    assert value(s, "starttls_proxy_sessions_total", service="smtp",
                 client_tls="plaintext", backend_tls="plaintext") == 2
    # a broken edit: failed, and nothing lost
    with open(p.ini, "a") as f:
        f.write("\n[smtp2]\nnonsense_key = 1\n")
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log(r"event=reload result=failed generation=2")
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_reloads_total", result="failed") == 1
    assert value(s, "starttls_proxy_messages_total", service="smtp",
                 result="accepted") == 2


def test_counters_follow_services_a_reload_adds_and_removes(
        proxy, scripted_backend):
    """A reload that removes smtp, keeps sub (moved to the end) and adds
    new: sub keeps its counts, new starts at zero with a certificate
    gauge of its own, smtp's series are gone."""
    b = scripted_backend()
    sub_port, new_port = free_port(), free_port()
    p = metrics_proxy(proxy, b.port)
    secs = {name: dict(keys) for name, keys in p.sections.items()}
    secs["sub"] = dict(secs["smtp"], listen="127.0.0.1:%d" % sub_port)
    write_ini(p.ini, secs)
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log(r"event=reload result=ok generation=2")
    expect(one_message(p.port), 250)
    expect(one_message(sub_port), 250)
    expect(one_message(sub_port), 250)
    p.summaries(3)
    edited = {"proxy": secs["proxy"],
              "new": dict(secs["smtp"], listen="127.0.0.1:%d" % new_port),
              "sub": secs["sub"]}
    write_ini(p.ini, edited)
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log(r"event=reload result=ok generation=3")
    s, text = scrape(p.mport)
    rc, out = promtool_metrics(text)
    assert rc == 0, out
    assert value(s, "starttls_proxy_reloads_total", result="ok") == 2
    assert value(s, "starttls_proxy_messages_total", service="sub",
                 result="accepted") == 2
    assert value(s, "starttls_proxy_messages_total", service="new",
                 result="accepted") == 0
    assert 'service="smtp"' not in text
    gauges = sorted(dict(k[1])["service"] for k in s
                    if k[0] == "starttls_proxy_certificate_expiry_"
                               "timestamp_seconds")
    assert gauges == ["new", "sub"]
    expect(one_message(new_port), 250)
    expect(one_message(sub_port), 250)
    p.summaries(5)
    s, _ = scrape(p.mport)
    assert value(s, "starttls_proxy_messages_total", service="new",
                 result="accepted") == 1
    assert value(s, "starttls_proxy_messages_total", service="sub",
                 result="accepted") == 3
    assert value(s, "starttls_proxy_sessions_total", service="new",
                 client_tls="plaintext", backend_tls="plaintext") == 1
    assert value(s, "starttls_proxy_sessions_active", service="sub") == 0


def test_certificate_expiry_is_not_after(proxy, scripted_backend, certs):
    b = scripted_backend()
    p = metrics_proxy(proxy, b.port)
    s, _ = scrape(p.mport)
    got = [(dict(k[1]), v) for k, v in s.items()
           if k[0] == "starttls_proxy_certificate_expiry_timestamp_seconds"]
    want = ssl.cert_time_to_seconds(
        ssl._ssl._test_decode_cert(certs.proxy_cert)["notAfter"])
    assert len(got) == 1, got
    assert got[0][0]["service"] == "smtp"
    assert "proxy.localhost" in got[0][0]["name"]
    assert got[0][1] == want


@pytest.mark.parametrize("raw,status", [
    (b"GET /nope HTTP/1.1\r\n\r\n", 404),
    (b"GET / HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"HEAD /metrics HTTP/1.1\r\n\r\n", 405),
    (b"hello\r\n\r\n", 400),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
], ids=["path", "root", "post", "head", "garbage", "version", "oversized"])
def test_bad_requests(proxy, scripted_backend, raw, status):
    b = scripted_backend()
    p = metrics_proxy(proxy, b.port)
    got, _, _ = http(p.mport, raw)
    assert got == status
    # the endpoint is still there
    assert get(p.mport, "/healthz")[0] == 200


def test_slowloris_never_blocks_a_worker(proxy, scripted_backend):
    """Slow clients hold the metrics port: SMTP and other scrapes go on,
    and the slow ones are closed after METRICS_REQUEST_MS (5 s)."""
    b = scripted_backend()
    p = metrics_proxy(proxy, b.port, proxy_keys={"workers": 1})
    slow = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", p.mport), timeout=10)
        s.sendall(b"GET /metr")
        slow.append(s)
    t0 = time.monotonic()
    expect(one_message(p.port), 250)
    assert get(p.mport, "/metrics")[0] == 200
    assert time.monotonic() - t0 < 3
    for s in slow:
        s.settimeout(10)
        assert s.recv(100) == b""             # closed, no answer
    assert 4 < time.monotonic() - t0 < 9


def test_healthz_ok_then_draining(proxy, scripted_backend):
    pause = __import__("threading").Event()
    b = scripted_backend(pause_data=pause)
    p = metrics_proxy(proxy, b.port, proxy_keys={"drain_timeout": 20})
    status, _, body = get(p.mport, "/healthz")
    assert (status, body) == (200, b"ok\n")
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    expect(c.cmd("MAIL FROM:<a@client.test>"), 250)
    expect(c.cmd("RCPT TO:<b@backend.test>"), 250)
    expect(c.cmd("DATA"), 354)
    p.proc.send_signal(signal.SIGTERM)
    p.wait_log(r"event=draining")
    status, _, body = get(p.mport, "/healthz")
    assert (status, body) == (503, b"draining\n")
    pause.set()
    c.send(b"Subject: d\r\n\r\nx\r\n.\r\n")
    expect(c.read_reply(), 250)
    assert p.proc.wait(10) == 0, p.log_text()
    p.expected_exit = True
    assert not _up(p.mport)


def test_off_by_default(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port)
    assert "metrics" not in p.log_text().lower()


def test_metrics_listen_checked(proxy_check, certs):
    port = free_port()
    rc, out, ini = proxy_check({
        "proxy": {"metrics_listen": "127.0.0.1:%d" % port},
        "smtp": {"listen": "127.0.0.1:%d" % port, "backend": "127.0.0.1:25",
                 "cert": certs.proxy_cert, "key": certs.proxy_key}})
    assert rc != 0 and "already metrics_listen" in out, out
    rc, out, ini = proxy_check({
        "proxy": {"metrics_listen": "localhost:9325"},
        "smtp": {"listen": "127.0.0.1:%d" % port, "backend": "127.0.0.1:25",
                 "cert": certs.proxy_cert, "key": certs.proxy_key}})
    assert rc != 0 and "metrics_listen" in out, out


def test_alert_rules_check():
    promtool = require_program("promtool")
    r = subprocess.run([promtool, "check", "rules", ALERTS],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    assert r.returncode == 0, r.stdout.decode()
    text = open(ALERTS).read()
    for name in ("starttls_proxy_certificate_expiry_timestamp_seconds",
                 "starttls_proxy_handshake_failures_total"):
        assert name in text
