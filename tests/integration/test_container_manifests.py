"""test_container_manifests.py - docker/compose.yaml and docker/k8s/ parse
as YAML and say what the proxy needs: the ports, the mounted
configuration, a stop grace period above drain_timeout, probes on
/healthz, a preStop that starts the drain, a reload path, and INI files
the proxy accepts.

No schema checker (kubeconform, kubeval) is packaged in Debian 12, so the
keys that matter are checked here; the INI files are checked by the proxy
itself (-t), with the certificate paths pointed at the test certificates.
"""
import os
import re

import pytest

from harness import run_check

yaml = pytest.importorskip("yaml")

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKER = os.path.join(SRC, "docker")
K8S = os.path.join(DOCKER, "k8s")


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def ini_value(text, section, key):
    cur = None
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            cur = m.group(1)
        elif cur == section and re.match(r"^%s\s*=" % re.escape(key), line):
            return line.split("=", 1)[1].split(" ;")[0].strip()
    return None


def check_ini(proxy_bin, tmp_path, text, certs, paths):
    """The proxy's -t on text, its certificate paths replaced by the test
    certificates."""
    for container_path, host_path in paths.items():
        text = text.replace(container_path, host_path)
    text = re.sub(r"(?m)^(\s*pid_file\s*=).*$", r"\1 none", text)
    ini = tmp_path / "check.ini"
    ini.write_text(text)
    rc, out = run_check(proxy_bin, str(ini))
    assert rc == 0 and "syntax is ok" in out, out


# ---------------------------------------------------------------------------
# compose

def test_compose_proxy_in_front_of_postfix(proxy_bin, tmp_path, certs):
    (doc,) = load_all(os.path.join(DOCKER, "compose.yaml"))
    svc = doc["services"]
    proxy, postfix = svc["starttls-proxy"], svc["postfix"]
    assert proxy["build"]["dockerfile"] == "docker/Dockerfile"
    assert os.path.exists(os.path.join(DOCKER, proxy["build"]["context"],
                                       proxy["build"]["dockerfile"]))
    assert os.path.exists(os.path.join(DOCKER, postfix["build"]["context"],
                                       postfix["build"]["dockerfile"]))
    ports = {p.split(":")[-1] for p in proxy["ports"]}
    assert {"25", "465", "9325"} <= ports, proxy["ports"]
    assert "ports" not in postfix, "the backend must not be published"
    assert "postfix" in proxy["depends_on"]
    mounts = [v.split(":") for v in proxy["volumes"]]
    assert ["./compose", "/etc/starttls-proxy", "ro"] in mounts, mounts
    assert str(proxy["sysctls"]["net.ipv4.ip_unprivileged_port_start"]) \
        == "0"
    assert proxy["stop_signal"] == "SIGTERM"
    ini = open(os.path.join(DOCKER, "compose", "starttls-proxy.ini")).read()
    grace = int(re.match(r"^(\d+)s$", proxy["stop_grace_period"]).group(1))
    assert grace > int(ini_value(ini, "proxy", "drain_timeout"))
    assert ini_value(ini, "smtp", "backend") == "postfix:25"
    check_ini(proxy_bin, tmp_path, ini, certs, {
        "/etc/starttls-proxy/cert.pem": certs.proxy_cert,
        "/etc/starttls-proxy/key.pem": certs.proxy_key})


# ---------------------------------------------------------------------------
# kubernetes

@pytest.fixture(scope="module")
def k8s():
    docs = {}
    for name in sorted(os.listdir(K8S)):
        if name.endswith(".yaml"):
            for d in load_all(os.path.join(K8S, name)):
                docs[(d["kind"], d["metadata"]["name"]
                      if "metadata" in d else name)] = d
    return docs


def test_k8s_kustomization_lists_every_manifest(k8s):
    kust = k8s[("Kustomization", "kustomization.yaml")]
    files = {n for n in os.listdir(K8S)
             if n.endswith(".yaml") and n != "kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_k8s_deployment_probes_drain_and_reload(k8s, proxy_bin, tmp_path,
                                               certs):
    dep = k8s[("Deployment", "starttls-proxy")]
    assert dep["apiVersion"] == "apps/v1"
    spec = dep["spec"]
    assert spec["replicas"] >= 2
    labels = spec["selector"]["matchLabels"]
    pod = spec["template"]
    assert labels.items() <= pod["metadata"]["labels"].items()
    ps = pod["spec"]
    assert ps["securityContext"]["runAsUser"] == 2525
    assert ps["securityContext"]["runAsNonRoot"] is True
    containers = {c["name"]: c for c in ps["containers"]}
    proxy = containers["starttls-proxy"]
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports["metrics"] == 9325
    for probe in ("readinessProbe", "livenessProbe"):
        get = proxy[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert get["port"] in ("metrics", 9325), probe

    cm = k8s[("ConfigMap", "starttls-proxy")]
    ini = cm["data"]["starttls-proxy.ini"]
    drain = int(ini_value(ini, "proxy", "drain_timeout"))
    assert ps["terminationGracePeriodSeconds"] > drain
    assert ini_value(ini, "proxy", "metrics_listen").endswith(":9325")
    listen = ini_value(ini, "smtp", "listen")
    assert int(listen.rsplit(":", 1)[1]) == ports["smtp"]

    # preStop sends SIGTERM itself and waits for the exit (the kubelet's
    # SIGTERM after it must not be a second one)
    pre = " ".join(proxy["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM" in pre and "kill -0" in pre, pre
    pid_file = ini_value(ini, "proxy", "pid_file")
    assert pid_file in pre, pre

    # the configuration and the certificate come from the ConfigMap and
    # the Secret, mounted where the ini and the args say
    vols = {v["name"]: v for v in ps["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
    assert vols["conf"]["configMap"]["name"] == "starttls-proxy"
    assert vols["tls"]["secret"]["secretName"] == "starttls-proxy-tls"
    assert proxy["args"] == ["-c", mounts["conf"] + "/starttls-proxy.ini"]
    assert ini_value(ini, "smtp", "cert") == mounts["tls"] + "/tls.crt"
    assert ini_value(ini, "smtp", "key") == mounts["tls"] + "/tls.key"
    assert os.path.dirname(pid_file) == mounts["run"]
    assert "emptyDir" in vols["run"]

    # reload: a watcher in the same process namespace that runs
    # starttls-proxy -s reload (SIGHUP) with the shared pid file
    assert ps["shareProcessNamespace"] is True
    rel = containers["reloader"]
    script = " ".join(rel["command"])
    assert "starttls-proxy -s reload -c " + proxy["args"][1] in script
    rmounts = {m["name"]: m["mountPath"] for m in rel["volumeMounts"]}
    assert rmounts == mounts
    secret = k8s[("Secret", "starttls-proxy-tls")]
    assert secret["type"] == "kubernetes.io/tls"
    assert {"tls.crt", "tls.key"} <= set(secret["stringData"])

    check_ini(proxy_bin, tmp_path, ini, certs, {
        mounts["tls"] + "/tls.crt": certs.proxy_cert,
        mounts["tls"] + "/tls.key": certs.proxy_key})


def test_k8s_service_keeps_client_addresses(k8s):
    dep = k8s[("Deployment", "starttls-proxy")]
    svc = k8s[("Service", "starttls-proxy")]
    assert svc["spec"]["type"] == "LoadBalancer"
    cm = k8s[("ConfigMap", "starttls-proxy")]["data"]["starttls-proxy.ini"]
    proxy_protocol = (ini_value(cm, "smtp", "client_proxy_protocol") or
                      "no") in ("yes", "true", "on", "1")
    assert svc["spec"].get("externalTrafficPolicy") == "Local" or \
        proxy_protocol
    assert svc["spec"]["selector"].items() <= \
        dep["spec"]["template"]["metadata"]["labels"].items()
    (smtp,) = [p for p in svc["spec"]["ports"] if p["name"] == "smtp"]
    assert smtp["port"] == 25
    names = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}
    assert smtp["targetPort"] in names
