"""test_grafana_dashboard.py - docker/grafana-dashboard.json: valid JSON with
the panels the README promises, every query valid PromQL (promtool checks
each one as a recording rule, with Grafana's variables filled in), and
every metric it names served by a running proxy's /metrics."""
import json
import os
import re
import subprocess

from harness import require_program, wait_for
from test_metrics import metrics_proxy, scrape

DASHBOARD = os.path.join(os.path.dirname(__file__), "..", "..", "docker",
                         "grafana-dashboard.json")


def queries(dash):
    return [(p["title"], t["expr"]) for p in dash["panels"]
            for t in p["targets"]]


def test_panels_and_promql(tmp_path):
    dash = json.load(open(DASHBOARD))
    titles = {p["title"] for p in dash["panels"]}
    for want in ("Sessions by TLS outcome", "Policy refusals",
                 "TLS handshake failures", "Certificate expiry",
                 "Backend probe"):
        assert want in titles, titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (title, expr) in enumerate(queries(dash)):
        expr = expr.replace("$__rate_interval", "5m")
        expr = re.sub(r"\$(instance|service)", ".*", expr)
        assert "$" not in expr, (title, expr)
        rules += ["      - record: dashboard:q%d" % i,
                  "        expr: %s" % json.dumps(expr)]
    f = tmp_path / "rules.yml"
    f.write_text("\n".join(rules) + "\n")
    promtool = require_program("promtool")
    r = subprocess.run([promtool, "check", "rules", str(f)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    assert r.returncode == 0, r.stdout.decode()


def test_every_metric_it_names_is_served(proxy, smtp_sink):
    sink = smtp_sink()
    p = metrics_proxy(proxy, sink.port, backend_health="connect",
                      backend_health_interval=1)
    wait_for(lambda: "starttls_proxy_backend_up{" in scrape(p.mport)[1],
             what="a probe result")
    _, text = scrape(p.mport)
    served = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    named = set()
    for _, expr in queries(json.load(open(DASHBOARD))):
        for m in re.findall(r"\b(starttls_proxy_\w+)", expr):
            named.add(re.sub(r"_(bucket|sum|count)$", "", m))
    assert named, "no metric in the dashboard"
    assert named <= served, named - served
