"""test_daemon_systemd.py - the service manager's protocols, tested
without systemd: readiness notification to $NOTIFY_SOCKET (a datagram
socket of the test's own) and socket activation (a listening socket the
test passes as fd 3 with LISTEN_FDS / LISTEN_PID)."""
import os
import signal
import socket
import subprocess
import time

import pytest

from harness import (TIMEOUT, SMTPClient, expect, free_port, is_listening,
                     wait_for, write_ini)


def sections(certs, port, backend_port, **proxy):
    keys = {"hostname": "proxy.test", "log_level": "debug",
            "drain_timeout": 2}
    keys.update(proxy)
    return {"proxy": keys,
            "smtp": {"listen": "127.0.0.1:%d" % port,
                     "backend": "127.0.0.1:%d" % backend_port,
                     "cert": certs.proxy_cert, "key": certs.proxy_key}}


class Launched:
    """A proxy started by hand: env and inherited fds of the test's
    choosing (the harness's ProxyProcess passes neither)."""

    def __init__(self, tmp_path, binary, secs, env=None, listen_fd=None,
                 listen_pid="self"):
        self.ini = str(tmp_path / "sd.ini")
        self.logfile = str(tmp_path / "sd.log")
        write_ini(self.ini, secs)
        self.log_fd = open(self.logfile, "wb")
        env = dict(os.environ, **(env or {}))
        argv = [binary, "-c", self.ini]
        pass_fds = ()
        if listen_fd is not None:
            # bash puts the socket at fd 3 and, with exec, keeps its
            # pid for the proxy: LISTEN_PID=$$ names the proxy itself
            pid = "$$" if listen_pid == "self" else str(listen_pid)
            argv = ["bash", "-c",
                    "exec 3<&%d %d<&-; LISTEN_PID=%s LISTEN_FDS=1 "
                    "LISTEN_FDNAMES=smtp exec \"$0\" \"$@\""
                    % (listen_fd, listen_fd, pid), binary, "-c", self.ini]
            pass_fds = (listen_fd,)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log_fd, stderr=self.log_fd,
                                     pass_fds=pass_fds)

    def log_text(self):
        with open(self.logfile, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text):
        wait_for(lambda: text in self.log_text(), TIMEOUT,
                 what="log %r" % text)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        self.log_fd.close()
        return rc


@pytest.fixture
def launch(proxy_bin, tmp_path):
    started = []

    def start(*a, **kw):
        p = Launched(tmp_path, proxy_bin, *a, **kw)
        started.append(p)
        return p
    yield start
    for p in started:
        assert p.stop() == 0, p.log_text()


def notify_socket(tmp_path, abstract=False):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = "@stp-test-%d-%d" % (os.getpid(), time.monotonic_ns())
        s.bind("\0" + name[1:])
    else:
        name = str(tmp_path / "notify.sock")
        s.bind(name)
    s.settimeout(TIMEOUT)
    return s, name


def messages_until(s, want):
    got = []
    while True:
        data = s.recv(4096).decode()
        got.append(data)
        if want in data:
            return got


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_ready_status_stopping(launch, certs, smtp_sink, tmp_path,
                                      abstract):
    sink = smtp_sink()
    s, name = notify_socket(tmp_path, abstract)
    port = free_port()
    p = launch(sections(certs, port, sink.port),
               env={"NOTIFY_SOCKET": name})
    ready = messages_until(s, "READY=1")[-1]
    # ready means listening, and it names the main pid
    assert is_listening(port)
    fields = dict(l.split("=", 1) for l in ready.split("\n"))
    assert fields["MAINPID"] == str(p.proc.pid), ready
    assert fields["STATUS"].startswith("accepting, 0 sessions"), ready
    c = SMTPClient(port)
    c.greeting()
    c.ehlo()
    status = messages_until(s, "1 sessions")[-1]   # every 5 s
    assert "STATUS=accepting, 1 sessions" in status, status
    c.quit()
    # a reload is announced, then readiness again
    p.proc.send_signal(signal.SIGHUP)
    reloading = messages_until(s, "RELOADING=1")[-1]
    usec = dict(l.split("=", 1) for l in reloading.split("\n"))
    assert int(usec["MONOTONIC_USEC"]) > 0, reloading
    assert "READY=1" in messages_until(s, "READY=1")[-1]
    p.proc.send_signal(signal.SIGTERM)
    assert "STOPPING=1" in messages_until(s, "STOPPING=1")[-1]
    assert p.stop() == 0


def test_no_notify_socket_is_no_op(launch, certs, smtp_sink):
    sink = smtp_sink()
    port = free_port()
    env = {"NOTIFY_SOCKET": ""}
    p = launch(sections(certs, port, sink.port), env=env)
    p.wait_log(" event=start ")
    c = SMTPClient(port)
    c.greeting()
    c.quit()
    assert "notify_failed" not in p.log_text()


def listening_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


@pytest.mark.parametrize("workers", [1, 2])
def test_socket_activation_uses_the_passed_socket(launch, certs, smtp_sink,
                                                  workers):
    sink = smtp_sink()
    port = free_port()
    ls = listening_socket(port)
    # a client that connects before the proxy runs is not refused: it
    # waits in the socket's queue
    early = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    p = launch(sections(certs, port, sink.port, workers=workers),
               listen_fd=ls.fileno())
    ls.close()
    p.wait_log(" event=start ")
    log = p.log_text()
    assert "event=socket_activation listen=127.0.0.1:%d fd=3 name=smtp" \
        % port in log, log
    early.settimeout(TIMEOUT)
    assert early.recv(512).startswith(b"220 "), "the early client"
    early.close()
    for _ in range(4):
        c = SMTPClient(port)
        c.greeting()
        c.ehlo()
        expect(c.cmd("NOOP"), 250)
        c.quit()


def test_passed_socket_without_listen_address_is_an_error(proxy_bin, certs,
                                                          smtp_sink,
                                                          tmp_path):
    sink = smtp_sink()
    ls = listening_socket(free_port())
    p = Launched(tmp_path, proxy_bin, sections(certs, free_port(), sink.port),
                 listen_fd=ls.fileno())
    rc = p.proc.wait(TIMEOUT)
    ls.close()
    p.log_fd.close()
    assert rc == 1, p.log_text()
    assert "socket activation: fd 3 matches no listen address" in \
        p.log_text()


def test_listen_pid_of_another_process_is_ignored(launch, certs, smtp_sink):
    sink = smtp_sink()
    other = listening_socket(free_port())
    port = free_port()
    p = launch(sections(certs, port, sink.port), listen_fd=other.fileno(),
               listen_pid=1)
    other.close()
    p.wait_log(" event=start ")
    assert "socket_activation" not in p.log_text()
    c = SMTPClient(port)        # it bound its own address
    c.greeting()
    c.quit()
