"""test_daemon_syslog.py - "log = syslog": lines go to the system logger
with facility mail and ident starttls-proxy.  The test is the system
logger: a datagram socket at /dev/log, in a mount namespace of the
proxy's own when the machine has a /dev/log of its own already."""
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from harness import TIMEOUT, SMTPClient, free_port, write_ini

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

LOG_MAIL = 2 << 3
SEVERITY = {"error": 3, "warn": 4, "info": 6, "debug": 7}


@pytest.fixture
def devlog(tmp_path):
    """(socket, argv prefix): the socket the proxy's syslog() reaches."""
    if os.path.exists("/dev/log"):
        if shutil.which("unshare") is None or subprocess.run(
                ["unshare", "--mount", "true"]).returncode != 0:
            pytest.skip("/dev/log exists and no mount namespace can be "
                        "made to put the test's own there")
        path = str(tmp_path / "log.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        prefix = ["unshare", "--mount", "--propagation", "private", "sh",
                  "-c", 'mount --bind "$0" /dev/log && exec "$@"', path]
        yield s, prefix
        s.close()
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("/dev/log")
    try:
        yield s, []
    finally:
        s.close()
        os.unlink("/dev/log")


def test_lines_go_to_syslog_mail(devlog, proxy_bin, certs, smtp_sink,
                                 tmp_path):
    sock, prefix = devlog
    sock.settimeout(TIMEOUT)
    sink = smtp_sink()
    port = free_port()
    ini = str(tmp_path / "syslog.ini")
    write_ini(ini, {"proxy": {"hostname": "proxy.test", "log": "syslog",
                              "log_level": "info", "drain_timeout": 2},
                    "smtp": {"listen": "127.0.0.1:%d" % port,
                             "backend": "127.0.0.1:%d" % sink.port,
                             "cert": certs.proxy_cert,
                             "key": certs.proxy_key}})
    err = open(str(tmp_path / "stderr"), "wb")
    proc = subprocess.Popen(prefix + [proxy_bin, "-c", ini],
                            stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        got = []
        while not any(" event=start " in g for g in got):
            got.append(sock.recv(4096).decode())
        c = SMTPClient(port)
        c.greeting()
        c.quit()
        while not any("event=summary" in g for g in got):
            got.append(sock.recv(4096).decode())
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
        err.close()
    assert rc == 0
    rx = re.compile(r"^<(\d+)>.*starttls-proxy\[(\d+)\]: (\w+) (.*)$")
    for g in got:
        m = rx.match(g)
        assert m, g
        pri, pid, level, rest = int(m.group(1)), m.group(2), m.group(3), \
            m.group(4)
        assert pri & ~7 == LOG_MAIL, g              # facility mail
        assert pri & 7 == SEVERITY[level], g        # severity = level
        assert int(pid) == proc.pid, g
        assert not re.match(r"\d{4}-\d\d-\d\dT", rest), g   # no own stamp
    summary = [g for g in got if "event=summary" in g][0]
    assert "session=" in summary and "client=127.0.0.1:" in summary
    with open(str(tmp_path / "stderr"), "rb") as f:
        assert b"event=" not in f.read()            # nothing on stderr
