"""
test_transparent.py - transparent interception (README "Transparent
interception") on one machine, with network namespaces the test makes:

    client 192.0.2.2          gateway                     server
    2001:db8:1::2  ==veth==  192.0.2.1     203.0.113.1  ==veth==  203.0.113.25
                             2001:db8:1::1 2001:db8:25::1         2001:db8:25::25
                                           198.51.100.1           198.51.100.25

The client sends plaintext to the server's own address on port 25; the
gateway runs the proxy behind nftables rules (redirect, or tproxy with its
policy routing); the server runs aiosmtpd with STARTTLS on port 25 and
writes what it received, with the TLS state and the peer, to a file.  The
test process enters a namespace only around a socket's creation or a
child's start (setns on its own thread), so every socket lives where it
should.  Namespaces are named after the test's pid and deleted at the end,
also on failure.

Needs root, ip(8) with netns support and nft(8): skipped with the exact
reason otherwise.
"""

import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (TIMEOUT, ProxyProcess, SMTPClient, expect,  # noqa: E402
                     wait_for)

CLONE_NEWNET = 0x40000000
PROXY_PORT = 10025
SERVER_V4 = "203.0.113.25"
SERVER_V6 = "2001:db8:25::25"
OUTSIDE_V4 = "198.51.100.25"     # on the server, outside the destinations
GATEWAY_V4 = "192.0.2.1"         # the gateway's own address (a loop)
CLIENT_V4 = "192.0.2.2"
MARK = 25

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: %s" % os.strerror(e))


@contextlib.contextmanager
def netns(name):
    """netns - run the block in network namespace name (this thread only);
    sockets made and children started inside stay there."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open("/run/netns/" + name, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def run(*args, ns=None, check=True):
    cmd = list(args)
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns] + cmd
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=TIMEOUT)
    if check and p.returncode != 0:
        raise AssertionError("%s: exit %d\n%s" % (" ".join(cmd), p.returncode,
                                                  p.stdout.decode()))
    return p.stdout.decode()


def _missing():
    """_missing - why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, IP_TRANSPARENT)"
    for prog in ("ip", "nft"):
        if shutil.which(prog) is None:
            return "%s(8) not found (Debian: %s)" % (
                prog, "iproute2" if prog == "ip" else "nftables")
    probe = "stp-probe-%d" % os.getpid()
    p = subprocess.run(["ip", "netns", "add", probe], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if p.returncode != 0:
        return "ip netns add failed: %s" % p.stdout.decode().strip()
    try:
        p = subprocess.run(["ip", "netns", "exec", probe, "nft", "add",
                            "table", "inet", "probe"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            return "nftables unusable in a namespace: %s" % (
                p.stdout.decode().strip())
    finally:
        subprocess.run(["ip", "netns", "del", probe])
    return None


_why = _missing()
pytestmark = pytest.mark.skipif(_why is not None, reason=str(_why))


SERVER_PY = r'''
import json, ssl, sys, time
from aiosmtpd.controller import Controller

out, cert, key, ready = sys.argv[1:5]
addrs = sys.argv[5:]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        rec = {"peer": session.peer[0], "tls": session.ssl is not None,
               "mail_from": envelope.mail_from, "rcpt": envelope.rcpt_tos,
               "data": envelope.content.decode("utf-8", "replace")}
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        return "250 2.0.0 Ok: delivered to the server namespace"

cs = []
for a in addrs:
    c = Controller(Handler(), hostname=a, port=25, tls_context=ctx,
                   require_starttls=False, server_hostname="server.test",
                   ident="ESMTP in the server namespace", decode_data=False)
    c.start()
    cs.append(c)
open(ready, "w").close()
while True:
    time.sleep(3600)
'''


class Network:
    """Network - the three namespaces, their links and addresses."""

    def __init__(self, tmp):
        tag = "%d" % os.getpid()
        self.cli, self.gw, self.srv = ("stp-cli-" + tag, "stp-gw-" + tag,
                                       "stp-srv-" + tag)
        self.tmp = tmp
        self.server = None
        self.made = []
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise

    def _build(self):
        for ns in (self.cli, self.gw, self.srv):
            run("ip", "netns", "add", ns)
            self.made.append(ns)
            run("ip", "link", "set", "lo", "up", ns=ns)
        run("ip", "link", "add", "c0", "netns", self.cli, "type", "veth",
            "peer", "name", "g0", "netns", self.gw)
        run("ip", "link", "add", "g1", "netns", self.gw, "type", "veth",
            "peer", "name", "s0", "netns", self.srv)
        for ns, dev, addrs in (
                (self.cli, "c0", ["192.0.2.2/24", "2001:db8:1::2/64"]),
                (self.gw, "g0", ["192.0.2.1/24", "2001:db8:1::1/64"]),
                (self.gw, "g1", ["203.0.113.1/24", "198.51.100.1/24",
                                 "2001:db8:25::1/64"]),
                (self.srv, "s0", ["203.0.113.25/24", "198.51.100.25/24",
                                  "2001:db8:25::25/64"])):
            for a in addrs:
                run("ip", "addr", "add", a, "dev", dev,
                    *(["nodad"] if ":" in a else []), ns=ns)
            run("ip", "link", "set", dev, "up", ns=ns)
        run("ip", "route", "add", "default", "via", "192.0.2.1", ns=self.cli)
        run("ip", "-6", "route", "add", "default", "via", "2001:db8:1::1",
            ns=self.cli)
        run("ip", "route", "add", "default", "via", "203.0.113.1", ns=self.srv)
        run("ip", "-6", "route", "add", "default", "via", "2001:db8:25::1",
            ns=self.srv)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.gw)
        run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=self.gw)

    def start_server(self, certs):
        self.received = os.path.join(self.tmp, "received.jsonl")
        ready = os.path.join(self.tmp, "server.ready")
        script = os.path.join(self.tmp, "server.py")
        with open(script, "w") as f:
            f.write(SERVER_PY)
        self.server_log = open(os.path.join(self.tmp, "server.log"), "wb")
        with netns(self.srv):
            self.server = subprocess.Popen(
                ["/usr/bin/python3", script, self.received,
                 certs.backend_cert, certs.backend_key, ready,
                 SERVER_V4, OUTSIDE_V4, SERVER_V6],
                stdin=subprocess.DEVNULL, stdout=self.server_log,
                stderr=subprocess.STDOUT)

        def up():
            if self.server.poll() is not None:
                raise AssertionError("the server exited: %s" % open(
                    self.server_log.name).read())
            return os.path.exists(ready)
        wait_for(up, what="aiosmtpd in the server namespace")

    def messages(self):
        if not os.path.exists(self.received):
            return []
        with open(self.received) as f:
            return [json.loads(l) for l in f if l.strip()]

    def nft(self, ruleset):
        path = os.path.join(self.tmp, "rules.nft")
        with open(path, "w") as f:
            f.write(ruleset)
        run("nft", "-f", path, ns=self.gw)

    def destroy(self):
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait()
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.made = []


# The gateway's rules for transparent = redirect.  The nat output chain
# also sends the gateway's own port-25 connections to the proxy (a gateway
# whose local programs send mail too): only backend_mark keeps the proxy's
# connections out of it, and its counter shows that the mark was seen.
REDIRECT_RULES = """
table inet stp {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        tcp dport 25 redirect to :%(port)d
    }
    chain output {
        type nat hook output priority -100; policy accept;
        meta mark %(mark)d counter return
        tcp dport 25 redirect to :%(port)d
    }
}
"""

# transparent = tproxy: packets to port 25 go to the proxy's socket as
# they are; packets of sockets that exist (accepted ones, and the
# backend's own with transparent_source = client) are marked and routed
# to this host by the policy rule below.
TPROXY_RULES = """
table inet stp {
    chain prerouting {
        type filter hook prerouting priority mangle; policy accept;
        meta l4proto tcp socket transparent 1 meta mark set 1 accept
        meta nfproto ipv4 tcp dport 25 tproxy ip to :%(port)d meta mark set 1 accept
        meta nfproto ipv6 tcp dport 25 tproxy ip6 to :%(port)d meta mark set 1 accept
    }
}
"""


@pytest.fixture
def net(tmp_path, certs):
    n = Network(str(tmp_path))
    try:
        n.start_server(certs)
        yield n
    finally:
        n.destroy()


@pytest.fixture
def gw_proxy(net, proxy_bin, certs, tmp_path):
    """gw_proxy(**service keys) -> ProxyProcess in the gateway namespace,
    listening on 0.0.0.0 and [::] port 10025."""
    running = []

    def start(proxy_keys=None, **keys):
        svc = {"listen": "0.0.0.0:%d, [::]:%d" % (PROXY_PORT, PROXY_PORT),
               "cert": certs.proxy_cert, "key": certs.proxy_key,
               "client_tls": "may", "backend_tls": "encrypt",
               "max_connections": 5}
        svc.update(keys)
        sections = {"proxy": {"hostname": "gw.test", "log_level": "debug"},
                    "gateway": svc}
        sections["proxy"].update(proxy_keys or {})
        with netns(net.gw):
            p = ProxyProcess(proxy_bin, str(tmp_path), sections, [PROXY_PORT],
                             name="gw%d" % len(running))
        running.append(p)
        return p
    yield start
    for p in running:
        rc = p.stop()
        assert rc == 0, "proxy exit status %r\n%s" % (rc, p.log_text())


def send_mail(net, host, token):
    """send_mail - from the client namespace, plaintext to host:25: the
    greeting seen and the final reply of the message."""
    with netns(net.cli):
        c = SMTPClient(25, host=host)
    try:
        greeting = c.greeting()
        ehlo = c.ehlo("legacy.client.test")
        expect(ehlo, 250)
        final = c.mail(sender="printer@client.test",
                       rcpts=("admin@server.test",),
                       body=b"Subject: %s\r\n\r\n%s\r\n" % (
                           token.encode(), token.encode()))
        c.quit()
        return greeting, final
    finally:
        c.close()


def refused(net, host, port=25):
    """refused - the first reply from the proxy when connecting to host."""
    with netns(net.cli):
        c = SMTPClient(port, host=host)
    try:
        r = c.read_reply()
        c.expect_closed()
        return r
    finally:
        c.close()


def delivered(net, token):
    def find():
        return [m for m in net.messages() if token in m["data"]] or None
    return wait_for(find, what="message %s at the server" % token)[0]


def test_redirect_ipv4_and_ipv6_delivered_over_tls(net, gw_proxy):
    net.nft(REDIRECT_RULES % {"port": PROXY_PORT, "mark": MARK})
    p = gw_proxy(transparent="redirect", backend_mark=MARK,
                 transparent_destinations="203.0.113.0/24, 2001:db8:25::/48",
                 trace_header=True)
    for host, shown in ((SERVER_V4, "203.0.113.25:25"),
                        (SERVER_V6, "[2001:db8:25::25]:25")):
        token = "redirect-%s" % host
        greeting, final = send_mail(net, host, token)
        # the client saw the server's own greeting, through the proxy
        expect(greeting, 220)
        assert "server.test" in greeting.text, greeting
        expect(final, 250)
        m = delivered(net, token)
        assert m["tls"] is True, m          # the backend leg was TLS
        # redirect, transparent_source = proxy: the gateway connects
        assert m["peer"] in ("203.0.113.1", "2001:db8:25::1"), m
        # the trace header names the original destination
        assert "(backend %s policy encrypt using TLS" % shown in m["data"], \
            m["data"]
        # every line of the session names it
        s = p.wait_log(r"session=(\w+) orig_dst=%s event=summary .*"
                       r"backend=%s backend_tls=TLS"
                       % (shown.replace("[", r"\[").replace("]", r"\]"),
                          shown.replace("[", r"\[").replace("]", r"\]")))
        sid = s[-1].group(1)
        lines = [l for l in p.log_text().splitlines()
                 if "session=%s " % sid in l]
        assert len(lines) > 5, lines
        for l in lines:
            assert "session=%s orig_dst=%s event=" % (sid, shown) in l, l
    # the proxy's own connections carried the mark: the output chain's
    # "meta mark 25 counter return" saw them (without it they would have
    # been redirected to the proxy again)
    rules = run("nft", "list", "chain", "inet", "stp", "output", ns=net.gw)
    assert "counter packets 0 " not in rules, rules


def test_redirect_without_mark_loops_into_itself(net, gw_proxy):
    """The counter-proof of backend_mark: the same rules, no mark.  The
    proxy's connection is redirected to itself; the connection limit ends
    the chain, and the mail does not reach the server.  (The loop guard
    cannot see this loop: each hop's destination is the server's.)"""
    net.nft(REDIRECT_RULES % {"port": PROXY_PORT, "mark": MARK})
    p = gw_proxy(transparent="redirect")
    with netns(net.cli):
        c = SMTPClient(25, host=SERVER_V4)
    try:
        r = c.read_reply()
        assert r.code != 220 or "server.test" not in r.text, r
    finally:
        c.close()
    p.wait_log(r"event=limit limit=max_connections")
    assert net.messages() == []


def test_mark_as_unprivileged_user_keeps_only_net_admin(net, gw_proxy):
    """SO_MARK needs CAP_NET_ADMIN: after the drop to user, the proxy
    keeps that one capability (and no other), and the mark still works."""
    net.nft(REDIRECT_RULES % {"port": PROXY_PORT, "mark": MARK})
    p = gw_proxy(transparent="redirect", backend_mark=MARK,
                 proxy_keys={"user": "nobody"})
    p.wait_log(r"event=privileges user=nobody .* capabilities=cap_net_admin")
    with open("/proc/%d/status" % p.pid) as f:
        caps = dict(l.split(":", 1) for l in f if l.startswith("Cap"))
    assert int(caps["CapEff"], 16) == 1 << 12, caps     # CAP_NET_ADMIN
    assert int(caps["CapPrm"], 16) == 1 << 12, caps
    greeting, final = send_mail(net, SERVER_V4, "as-nobody")
    expect(final, 250)
    assert delivered(net, "as-nobody")["tls"] is True


def test_redirect_loop_refused_before_any_backend(net, gw_proxy):
    net.nft(REDIRECT_RULES % {"port": PROXY_PORT, "mark": MARK})
    p = gw_proxy(transparent="redirect", backend_mark=MARK)
    # the gateway's own address on port 25 (redirected) and the proxy's
    # listener itself (not redirected: the conntrack entry's destination)
    for host, port, shown in ((GATEWAY_V4, 25, "192.0.2.1:25"),
                              (GATEWAY_V4, PROXY_PORT, "192.0.2.1:10025"),
                              ("2001:db8:1::1", 25, r"\[2001:db8:1::1\]:25")):
        r = refused(net, host, port)
        expect(r, 554, "5.4.6")
        p.wait_log(r"orig_dst=%s event=transparent_refused reason=loop "
                   r"client=" % shown)
    for s in p.summaries(3):
        assert "backend_connections=0" in s, s
    assert "event=backend_connected" not in p.log_text()


def test_redirect_destination_outside_list_refused(net, gw_proxy):
    net.nft(REDIRECT_RULES % {"port": PROXY_PORT, "mark": MARK})
    p = gw_proxy(transparent="redirect", backend_mark=MARK,
                 transparent_destinations="203.0.113.0/24",
                 proxy_keys={"metrics_listen": "127.0.0.1:9325"})
    r = refused(net, OUTSIDE_V4)
    expect(r, 554, "5.7.1")
    # counted, without a label naming the destination (unbounded)
    with netns(net.gw):
        text = urllib.request.urlopen("http://127.0.0.1:9325/metrics",
                                      timeout=TIMEOUT).read().decode()
    assert ('starttls_proxy_protection_events_total{service="gateway",'
            'kind="transparent_denied"} 1') in text, text
    assert "198.51.100.25" not in text
    p.wait_log(r"orig_dst=198\.51\.100\.25:25 event=transparent_refused "
               r"reason=denied client=192\.0\.2\.2:\d+")
    s = p.summaries(1)[0]
    assert "backend_connections=0" in s, s
    assert "event=backend_connected" not in p.log_text()
    # and a destination inside it is relayed
    greeting, final = send_mail(net, SERVER_V4, "inside-the-list")
    expect(final, 250)
    delivered(net, "inside-the-list")


def test_redirect_verify_by_configured_name(net, gw_proxy, certs):
    net.nft(REDIRECT_RULES % {"port": PROXY_PORT, "mark": MARK})
    p = gw_proxy(transparent="redirect", backend_mark=MARK,
                 backend_tls="verify", backend_verify_name="backend.test",
                 backend_ca_file=certs.ca)
    greeting, final = send_mail(net, SERVER_V4, "verified-hop")
    expect(final, 250)
    assert delivered(net, "verified-hop")["tls"] is True
    p.wait_log(r"orig_dst=203\.0\.113\.25:25 event=summary .*"
               r"backend_verify=verified")


def _tproxy_routing(net):
    run("ip", "rule", "add", "fwmark", "1", "lookup", "100", ns=net.gw)
    run("ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table",
        "100", ns=net.gw)
    run("ip", "-6", "rule", "add", "fwmark", "1", "lookup", "100", ns=net.gw)
    run("ip", "-6", "route", "add", "local", "::/0", "dev", "lo", "table",
        "100", ns=net.gw)
    net.nft(TPROXY_RULES % {"port": PROXY_PORT})


@pytest.mark.parametrize("source", ["proxy", "client"])
def test_tproxy_delivered_both_families(net, gw_proxy, source):
    _tproxy_routing(net)
    p = gw_proxy(transparent="tproxy", transparent_source=source,
                 backend_mark=MARK)
    for host, shown, client in (
            (SERVER_V4, "203.0.113.25:25", CLIENT_V4),
            (SERVER_V6, r"\[2001:db8:25::25\]:25", "2001:db8:1::2")):
        token = "tproxy-%s-%s" % (source, host)
        greeting, final = send_mail(net, host, token)
        assert "server.test" in greeting.text, greeting
        expect(final, 250)
        m = delivered(net, token)
        assert m["tls"] is True, m
        if source == "client":
            # IP_TRANSPARENT: the server sees the client, not the gateway
            assert m["peer"] == client, m
        else:
            assert m["peer"] in ("203.0.113.1", "2001:db8:25::1"), m
        p.wait_log(r"orig_dst=%s event=connect client=\S+ service=gateway "
                   r"transparent=tproxy" % shown)
        p.wait_log(r"orig_dst=%s event=summary " % shown)


def test_tproxy_loop_refused(net, gw_proxy):
    _tproxy_routing(net)
    p = gw_proxy(transparent="tproxy", backend_mark=MARK)
    r = refused(net, GATEWAY_V4)
    expect(r, 554, "5.4.6")
    p.wait_log(r"orig_dst=192\.0\.2\.1:25 event=transparent_refused "
               r"reason=loop")
    assert "event=backend_connected" not in p.log_text()


def test_redirect_without_conntrack_entry_refused(net, gw_proxy):
    """No nftables rule in the gateway: conntrack does not follow the
    namespace's connections, so SO_ORIGINAL_DST has nothing to say; the
    proxy refuses rather than guess (the socket's own address would be a
    loop to itself)."""
    p = gw_proxy(transparent="redirect", backend_mark=MARK)
    r = refused(net, GATEWAY_V4, PROXY_PORT)
    expect(r, 421, "4.3.5")
    p.wait_log(r"event=transparent_refused reason=unknown error=\"[^\"]+\" "
               r"client=192\.0\.2\.2:\d+")
    assert "event=backend_connected" not in p.log_text()
