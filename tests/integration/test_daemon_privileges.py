"""test_daemon_privileges.py - [proxy] user, group and chroot: the proxy
binds and reads every file as root, then runs as the user, with no
supplementary groups and no way back to root (README "Running as a
daemon")."""
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

from harness import (ProxyProcess, SMTPClient, expect, free_port, sanitized,
                     write_ini)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def status_ids(pid):
    """Uid, Gid and Groups lines of /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = value.split()
    return out


def private_keys(certs, tmp_path):
    """The proxy's certificate and key, readable by root only (0600)."""
    d = tmp_path / "keys"
    d.mkdir(mode=0o700)
    cert, key = d / "proxy.crt", d / "proxy.key"
    shutil.copy(certs.proxy_cert, cert)
    shutil.copy(certs.proxy_key, key)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o600)
    return str(cert), str(key)


def session_over_tls(p, client_ctx):
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    c.starttls(client_ctx)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<a@client.test>"), 250)
    expect(c.cmd("RCPT TO:<b@backend.test>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: as nobody\r\n\r\nhello\r\n.\r\n")
    expect(c.read_reply(), 250)
    c.quit()


def test_runs_as_user_after_reading_root_only_keys(proxy, smtp_sink, certs,
                                                   client_ctx, tmp_path):
    nobody = pwd.getpwnam("nobody")
    cert, key = private_keys(certs, tmp_path)
    sink = smtp_sink()
    # started with supplementary groups, which must not survive the drop
    p = proxy(sink.port, cert=cert, key=key, proxy_keys={"user": "nobody"},
              preexec_fn=lambda: os.setgroups([1, 2, 3]))
    ids = status_ids(p.pid)
    assert ids["Uid"] == [str(nobody.pw_uid)] * 4, ids
    assert ids["Gid"] == [str(nobody.pw_gid)] * 4, ids
    assert ids["Groups"] == [], ids
    session_over_tls(p, client_ctx)
    assert "event=privileges user=nobody uid=%d" % nobody.pw_uid \
        in p.log_text()


def test_group_is_set_too(proxy, smtp_sink):
    daemon = grp.getgrnam("daemon")
    sink = smtp_sink()
    p = proxy(sink.port, proxy_keys={"user": "nobody", "group": "daemon"})
    ids = status_ids(p.pid)
    assert ids["Gid"] == [str(daemon.gr_gid)] * 4, ids
    assert ids["Groups"] == [], ids
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    c.quit()


@pytest.fixture
def jail(tmp_path, proxy_bin):
    """An empty directory to chroot into.  Not for a sanitizer build: its
    runtime needs /proc at exit (the leak check stops the threads through
    it), which an empty chroot has not; the normal build is tested."""
    if sanitized(proxy_bin):
        pytest.skip("a sanitizer build needs /proc, which the jail lacks")
    d = tmp_path / "jail"
    d.mkdir()
    return d


def test_chroot(proxy, smtp_sink, client_ctx, jail):
    sink = smtp_sink()
    p = proxy(sink.port, proxy_keys={"user": "nobody",
                                     "chroot": str(jail)})
    assert os.readlink("/proc/%d/root" % p.pid) == str(jail)
    assert status_ids(p.pid)["Uid"][0] == str(pwd.getpwnam("nobody").pw_uid)
    session_over_tls(p, client_ctx)   # every file was read before


def test_without_user_root_is_warned_about(proxy, smtp_sink):
    try:
        pwd.getpwnam("starttls-proxy")
        pytest.skip("a user starttls-proxy exists here: it would be used")
    except KeyError:
        pass
    sink = smtp_sink()
    p = proxy(sink.port)
    assert status_ids(p.pid)["Uid"][0] == "0"
    assert "event=privileges action=none" in p.log_text()


@pytest.mark.parametrize("keys,key,message", [
    ({"user": "no-such-user-here"}, "user",
     "user \"no-such-user-here\" does not exist"),
    ({"user": "nobody", "group": "no-such-group"}, "group",
     "group \"no-such-group\" does not exist"),
    ({"group": "daemon"}, "group", "group needs user"),
    ({"user": "-nobody"}, "user", "is not a user or group name"),
    ({"user": "nobody", "chroot": "relative/dir"}, "chroot",
     "is not an absolute path to a directory"),
], ids=["no-user", "no-group", "group-alone", "bad-name", "relative-chroot"])
def test_check_refuses(proxy_check, certs, keys, key, message):
    sections = {"proxy": dict(keys),
                "smtp": {"listen": "127.0.0.1:2525",
                         "backend": "127.0.0.1:25",
                         "cert": certs.proxy_cert, "key": certs.proxy_key}}
    rc, out, ini = proxy_check(sections)
    assert rc != 0, out
    assert message in out, out
    # the message names the key's line
    with open(ini) as f:
        lines = f.read().splitlines()
    want = [i + 1 for i, l in enumerate(lines)
            if l.replace(" ", "").startswith(key + "=")]
    assert ":%d: " % want[0] in out, (out, lines)


def free_low_port():
    """A port below 1024 that nothing on 127.0.0.1 listens on."""
    for port in range(1023, 900, -1):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.skip("no free port below 1024")


def test_reload_cannot_bind_a_low_port_after_the_drop(proxy_bin, smtp_sink):
    """After the drop to user the proxy has no CAP_NET_BIND_SERVICE: a
    reload that adds a port below 1024 fails, says why, and the old
    configuration serves on.  No TLS, and the file in a directory nobody
    can read, so that the reload gets as far as binding."""
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        if int(f.read()) <= 900:
            pytest.skip("any user may bind low ports here")
    sink = smtp_sink()
    work = tempfile.mkdtemp(prefix="stp-lowport-")
    os.chmod(work, 0o755)
    port = free_port()
    secs = {"proxy": {"hostname": "proxy.test", "log_level": "debug",
                      "user": "nobody"},
            "smtp": {"listen": "127.0.0.1:%d" % port,
                     "backend": "127.0.0.1:%d" % sink.port,
                     "client_tls": "none"}}
    p = ProxyProcess(proxy_bin, work, secs, [port])
    try:
        _low_port_reload(p, secs)
    finally:
        rc = p.stop()
        shutil.rmtree(work, ignore_errors=True)
    assert rc == 0, p.log_text()


def _low_port_reload(p, secs):
    os.chmod(p.ini, 0o644)
    low = free_low_port()
    secs = dict(p.sections)
    secs["low"] = dict(secs["smtp"], listen="127.0.0.1:%d" % low)
    write_ini(p.ini, secs)
    os.chmod(p.ini, 0o644)
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log(r"event=reload result=\w+ generation=1")
    log = p.log_text()
    assert "event=reload result=failed generation=1" in log, log
    assert "Permission\\x20denied" in log, log
    assert "CAP_NET_BIND_SERVICE" in log, log
    assert "change=" not in log, log
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    expect(c.cmd("MAIL FROM:<a@client.test>"), 250)
    expect(c.cmd("RCPT TO:<b@backend.test>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: still served\r\n\r\nhello\r\n.\r\n")
    expect(c.read_reply(), 250)
    c.quit()
