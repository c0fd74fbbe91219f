"""test_haproxy_cluster.py - two proxy instances behind HAProxy, in front of
one Postfix, all on loopback (README "Running many instances").

HAProxy (mode tcp) sends the PROXY protocol v2 to each instance and checks
each one's GET /healthz on its metrics port. The client connects from
127.0.0.2 and HAProxy from 127.0.0.3, so the address every hop names tells
which one it saw: the instances trust only 127.0.0.3 and pass the client
on to Postfix with XCLIENT.

What holds: sessions spread over both instances; Postfix, the trace
header and the instances' logs name 127.0.0.2; when one instance is told
to stop (SIGTERM) with a message in flight, its /healthz turns 503,
HAProxy takes it out before it exits, new sessions all go to the other
instance, the message in flight is answered 250 and nothing is lost.
"""
import os
import re
import signal
import socket
import subprocess

import pytest

from harness import (PostfixInstance, SMTPClient, client_tls_context,
                     free_port, log_fields, require_program, unique_token,
                     wait_for, wait_listening)
from test_metrics import get

CLIENT_IP = "127.0.0.2"
HAPROXY_IP = "127.0.0.3"


@pytest.fixture
def xclient_postfix(certs):
    """A private Postfix that takes XCLIENT from loopback, so its log names
    the client the proxy passes on."""
    pf = PostfixInstance(certs)
    try:
        with open(os.path.join(pf.conf, "main.cf"), "a") as f:
            f.write("smtpd_authorized_xclient_hosts = 127.0.0.0/8\n")
        pf.run("reload")
        # the reload is done when the new smtpd processes take XCLIENT:
        # the next session shows it in its EHLO reply
        def offers_xclient():
            s = socket.create_connection(("127.0.0.1", pf.port), timeout=5)
            try:
                f = s.makefile("rwb")
                f.readline()
                f.write(b"EHLO probe.test\r\n")
                f.flush()
                lines = []
                while True:
                    line = f.readline()
                    lines.append(line)
                    if not line or line[3:4] != b"-":
                        break
                f.write(b"QUIT\r\n")
                f.flush()
                return any(b"XCLIENT" in ln for ln in lines)
            finally:
                s.close()
        wait_for(offers_xclient, what="Postfix offering XCLIENT after reload")
        yield pf
    finally:
        pf.stop()


class HAProxy:
    def __init__(self, workdir, servers):
        self.bin = require_program("haproxy")
        self.port = free_port()
        self.sock = os.path.join(workdir, "haproxy.sock")
        self.cfg = os.path.join(workdir, "haproxy.cfg")
        self.logfile = os.path.join(workdir, "haproxy.log")
        lines = [
            "global",
            "    log stderr format raw local0 info",
            "    stats socket %s mode 600 level admin" % self.sock,
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    timeout connect 5s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout check 2s",
            "    retries 2",
            "    option redispatch",
            "frontend smtp",
            "    bind 127.0.0.1:%d" % self.port,
            "    default_backend proxies",
            "backend proxies",
            "    balance roundrobin",
            "    option httpchk GET /healthz",
            "    http-check expect status 200",
        ]
        for name, port, metrics_port in servers:
            lines.append("    server %s 127.0.0.1:%d send-proxy-v2 source %s "
                         "check port %d inter 200ms fall 1 rise 1"
                         % (name, port, HAPROXY_IP, metrics_port))
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        rc = subprocess.run([self.bin, "-c", "-f", self.cfg],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert rc.returncode == 0, rc.stdout.decode()
        self.log_fd = open(self.logfile, "wb")
        self.proc = subprocess.Popen([self.bin, "-db", "-f", self.cfg],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.log_fd, stderr=self.log_fd)
        wait_listening(self.port, self.proc, what="haproxy",
                       log=self.log_text)

    def log_text(self):
        with open(self.logfile, "rb") as f:
            return f.read().decode(errors="replace")

    def command(self, line):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(self.sock)
        s.sendall(line.encode() + b"\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        s.close()
        return out.decode()

    def status(self):
        """{server name: status} from 'show stat' (UP, DOWN, ...)."""
        text = self.command("show stat")
        head = text.splitlines()[0].lstrip("# ").split(",")
        out = {}
        for line in text.splitlines()[1:]:
            row = dict(zip(head, line.split(",")))
            if row.get("pxname") == "proxies" and row["svname"] not in (
                    "BACKEND", "FRONTEND"):
                out[row["svname"]] = row["status"].split()[0]
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_fd.close()


@pytest.fixture
def cluster(proxy, xclient_postfix, tmp_path):
    instances = []
    for _ in range(2):
        metrics_port = free_port()
        p = proxy(xclient_postfix.port,
                  proxy_keys={"metrics_listen": "127.0.0.1:%d" % metrics_port,
                              "drain_timeout": 30, "workers": 1},
                  client_proxy_protocol="yes", trusted_proxies=HAPROXY_IP,
                  backend_client_address="xclient", trace_header="yes")
        p.metrics_port = metrics_port
        instances.append(p)
    hap = HAProxy(str(tmp_path), [("p%d" % i, p.port, p.metrics_port)
                                  for i, p in enumerate(instances)])
    try:
        wait_for(lambda: hap.status() == {"p0": "UP", "p1": "UP"},
                 what="both instances UP in HAProxy")
        yield hap, instances, xclient_postfix
    finally:
        hap.stop()


def client(hap, certs):
    c = SMTPClient(hap.port, timeout=30, source=(CLIENT_IP, 0))
    c.greeting()
    c.ehlo()
    c.starttls(client_tls_context(certs.ca))
    c.ehlo()
    return c


def send_one(hap, certs, token):
    c = client(hap, certs)
    r = c.mail(rcpts=("cluster@test.example",),
               body=b"Subject: %s\r\n\r\nthrough haproxy\r\n" % token.encode())
    c.quit()
    return r


def healthz(port):
    return get(port, "/healthz")[0]


def sessions_with_mail(p):
    return [f for f in (log_fields(ln) for ln in p.log_text().splitlines()
                        if " event=summary " in ln) if f.get("messages", "0")
            != "0"]


def test_sessions_spread_and_the_client_address_survives(cluster, certs):
    hap, instances, pf = cluster
    tokens = [unique_token("spread") for _ in range(6)]
    for t in tokens:
        r = send_one(hap, certs, t)
        assert r.code == 250, r
    pf.wait_log(r"status=sent", count=len(tokens))
    per = [len(sessions_with_mail(p)) for p in instances]
    assert sum(per) == 6 and min(per) >= 2, per   # roundrobin: 3 and 3
    for p in instances:
        for f in sessions_with_mail(p):
            assert f["client"].split(":")[0] == CLIENT_IP, f
    log = pf.log_text()
    assert len(re.findall(r"client=\S*\[%s\]" % re.escape(CLIENT_IP),
                          log)) >= 6, log[-3000:]
    assert not re.search(r"client=\S*\[%s\]" % re.escape(HAPROXY_IP), log)
    box = pf.mbox_text()
    for t in tokens:
        assert t in box
    # each message's trace header names the client, not HAProxy
    traces = re.findall(r"Received: from (\S+ \([^)]*\))\n\s.*\n"
                        r"\s+by proxy\.test \(starttls-proxy\)", box)
    assert len(traces) == 6, box[-3000:]
    for t in traces:
        assert "[%s]" % CLIENT_IP in t and HAPROXY_IP not in t, t


def test_a_draining_instance_is_taken_out_and_loses_nothing(cluster, certs):
    hap, instances, pf = cluster
    # a message in flight, on whichever instance HAProxy picks
    c = client(hap, certs)
    assert c.cmd("MAIL FROM:<s@client.test>").code == 250
    assert c.cmd("RCPT TO:<cluster@test.example>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
    busy = [p for p in instances if CLIENT_IP + ":" in p.log_text()]
    assert len(busy) == 1, [p.log_text()[-500:] for p in instances]
    busy = busy[0]
    other = instances[1 - instances.index(busy)]
    name = "p%d" % instances.index(busy)

    busy.proc.send_signal(signal.SIGTERM)
    assert healthz(other.metrics_port) == 200
    wait_for(lambda: healthz(busy.metrics_port) == 503,
             what="/healthz 503 on the draining instance")
    wait_for(lambda: hap.status().get(name) == "DOWN",
             what="HAProxy taking the draining instance out")
    assert busy.proc.poll() is None, "it exited before HAProxy took it out"

    # new sessions, while it drains: every one goes to the other instance
    before = len(sessions_with_mail(other))
    tokens = [unique_token("drain") for _ in range(4)]
    for t in tokens:
        r = send_one(hap, certs, t)
        assert r.code == 250, r
    wait_for(lambda: len(sessions_with_mail(other)) == before + 4,
             what="4 sessions on the instance that stayed")
    assert busy.proc.poll() is None

    # the message in flight is answered 250, then 421, and it exits 0
    c.send(b"second half\r\n.\r\n")
    r = c.read_reply()
    assert r.code == 250, r
    r = c.read_reply()
    assert r.code == 421, r
    c.close()
    assert busy.proc.wait(15) == 0
    busy.expected_exit = True
    pf.wait_log(r"status=sent", count=5)
    box = pf.mbox_text()
    assert "second half" in box
    for t in tokens:
        assert t in box
