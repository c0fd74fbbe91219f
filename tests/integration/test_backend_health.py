"""test_backend_health.py - [service] backend_health: the main thread probes
each backend on its own and reports the result as
starttls_proxy_backend_up{service} and in /healthz's body.

Against Postfix's smtp-sink (a real SMTP server) and, where the exact bytes
or a misbehaviour matter, a scripted backend: the probe reads the greeting
and sends only QUIT (never EHLO, MAIL or any session), a connect probe
sends nothing, a 554 greeting or a silent backend is down, a backend that
comes back is up again, and a reload keeps the last result.
"""
import re
import signal
import time

from harness import ScriptedBackend, free_port, wait_for
from test_metrics import get, metrics_proxy, promtool_metrics, scrape


def up_value(p, service="smtp"):
    samples, _ = scrape(p.mport)
    return samples.get(("starttls_proxy_backend_up",
                        frozenset({("service", service)})))


def healthz(p):
    status, _, body = get(p.mport, "/healthz")
    return status, body.decode()


def quiet_handler(conn, b):
    """greets and records whatever the probe sends until it closes."""
    conn.send(b"220 scripted.test ESMTP ready\r\n")
    while True:
        line = conn.read_line()
        if line is None:
            return
        if line.upper().startswith(b"QUIT"):
            conn.send(b"221 2.0.0 Bye\r\n")
            return
        conn.send(b"502 5.5.2 not here\r\n")


def test_smtp_probe_up_down_and_back(proxy, smtp_sink):
    sink = smtp_sink()
    p = metrics_proxy(proxy, sink.port, backend_health="smtp",
                      backend_health_interval=1)
    wait_for(lambda: up_value(p) == 1, what="backend_up 1")
    status, body = healthz(p)
    assert status == 200 and "backend smtp up" in body, body
    p.wait_log(r"event=backend_health service=smtp state=up "
               r"previous=unknown probe=smtp")
    samples, text = scrape(p.mport)
    rc, out = promtool_metrics(text)
    assert rc == 0, out

    port = sink.port
    sink.stop()
    wait_for(lambda: up_value(p) == 0, what="backend_up 0")
    status, body = healthz(p)
    # the proxy itself still takes sessions: 200, the backend named down
    assert status == 200, body
    assert re.search(r"^backend smtp down \(connection refused\)$", body,
                     re.M), body
    p.wait_log(r"event=backend_health service=smtp state=down previous=up "
               r"probe=smtp backend=127.0.0.1:%d .*reason=\"connection "
               r"refused\"" % port)

    # smtp-sink again on the same port: up again at the next probe
    smtp_sink(port=port)
    wait_for(lambda: up_value(p) == 1, what="backend_up 1 again")
    p.wait_log(r"event=backend_health service=smtp state=up previous=down")


def test_the_smtp_probe_reads_the_greeting_and_sends_only_quit(proxy):
    b = ScriptedBackend(handler=quiet_handler)
    try:
        p = metrics_proxy(proxy, b.port, backend_health="smtp",
                          backend_health_interval=1)
        wait_for(lambda: up_value(p) == 1, what="backend_up 1")
        conn = b.wait_conns(2)       # two probes, a second apart
        conn.done.wait(10)
        for c in b.conns[:2]:
            c.done.wait(10)
            assert bytes(c.raw) == b"QUIT\r\n", bytes(c.raw)
        # no session was opened by the probe: nothing counted as one
        samples, _ = scrape(p.mport)
        assert not any(k[0] == "starttls_proxy_sessions_total" and v > 0
                       for k, v in samples.items()), samples
    finally:
        b.stop()


def test_the_connect_probe_sends_nothing(proxy):
    b = ScriptedBackend(greeting=None)
    try:
        p = metrics_proxy(proxy, b.port, backend_health="connect",
                          backend_health_interval=1)
        wait_for(lambda: up_value(p) == 1, what="backend_up 1")
        c = b.wait_conns(1)
        c.done.wait(10)
        assert bytes(c.raw) == b"", bytes(c.raw)
        p.wait_log(r"event=backend_health service=smtp state=up "
                   r"previous=unknown probe=connect")
    finally:
        b.stop()


def test_a_refusing_greeting_is_down(proxy):
    b = ScriptedBackend(greeting=b"554 5.3.2 not accepting mail\r\n")
    try:
        p = metrics_proxy(proxy, b.port, backend_health="smtp",
                          backend_health_interval=1)
        wait_for(lambda: up_value(p) == 0, what="backend_up 0")
        status, body = healthz(p)
        assert "backend smtp down (greeting 554)" in body, body
    finally:
        b.stop()


def test_a_silent_backend_times_out(proxy):
    b = ScriptedBackend(greeting=None)
    try:
        p = metrics_proxy(proxy, b.port, backend_health="smtp",
                          backend_health_interval=2)
        wait_for(lambda: up_value(p) == 0, timeout=15,
                 what="backend_up 0 after the probe's deadline")
        assert "backend smtp down (timed out)" in healthz(p)[1]
    finally:
        b.stop()


def test_a_reload_keeps_the_last_result(proxy):
    """The new configuration's probe starts at once, but this backend takes
    1.5 s to greet: until it has, the result from before the reload is
    what /metrics and /healthz show, not an unknown backend."""
    def slow(conn, b):
        time.sleep(1.5)
        quiet_handler(conn, b)
    b = ScriptedBackend(handler=slow)
    try:
        p = metrics_proxy(proxy, b.port, backend_health="smtp",
                          backend_health_interval=30)
        wait_for(lambda: up_value(p) == 1, what="backend_up 1")
        n = len(b.conns)
        p.proc.send_signal(signal.SIGHUP)
        p.wait_log(r"event=reload result=ok")
        b.wait_conns(n + 1)      # the new probe is under way
        assert up_value(p) == 1
        assert "backend smtp up" in healthz(p)[1]
    finally:
        b.stop()


def test_no_probe_no_metric(proxy, smtp_sink):
    sink = smtp_sink()
    p = metrics_proxy(proxy, sink.port)
    time.sleep(0.3)
    samples, text = scrape(p.mport)
    assert not any(k[0] == "starttls_proxy_backend_up" for k in samples)
    assert healthz(p) == (200, "ok\n")


def test_config_errors(proxy_check, certs):
    base = {"proxy": {"pid_file": "none"},
            "smtp": {"listen": "127.0.0.1:%d" % free_port(),
                     "cert": certs.proxy_cert, "key": certs.proxy_key}}

    def check(**keys):
        secs = {k: dict(v) for k, v in base.items()}
        secs["smtp"].update(keys)
        rc, out, _ = proxy_check(secs)
        return rc, out

    rc, out = check(backend="mx:example.com", backend_health="smtp")
    assert rc != 0 and "backend_health needs a host:port backend" in out, out
    rc, out = check(backend="127.0.0.1:465", backend_implicit_tls="yes",
                    backend_tls="encrypt", backend_health="smtp")
    assert rc != 0 and "use backend_health = connect" in out, out
    rc, out = check(backend="127.0.0.1:465", backend_implicit_tls="yes",
                    backend_tls="encrypt", backend_health="connect")
    assert rc == 0, out
    rc, out = check(backend="127.0.0.1:25", backend_health="ping")
    assert rc != 0 and "backend_health" in out, out
    rc, out = check(backend="127.0.0.1:25", backend_health="connect",
                    backend_health_interval="0")
    assert rc != 0 and "backend_health_interval" in out, out
