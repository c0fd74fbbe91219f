"""
Smaller defects found trying the proxy as a new user would (issue 8,
section 3): signals that must not kill it, -t naming the key's line,
running out of descriptors without spinning, every handshake failure
under backend_tls = may retried in plaintext, command_timeout following
idle_timeout.
"""

import signal
import socket
import time

import pytest

from harness import (SMTPClient, expect, free_port, run_check, unique_token,
                     wait_for, write_ini)
from hardening_util import (cpu_seconds, limited_proxy,  # noqa: F401
                            open_fds, try_session)


def connect(p):
    c = SMTPClient(p.port)
    c.greeting()
    return c


# ---- signals ---------------------------------------------------------------

def test_hup_usr1_usr2_pipe_do_not_stop_the_proxy(proxy, smtp_sink):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = connect(p)                       # a session open across the signals
    c.ehlo()
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGPIPE, signal.SIGHUP):
        p.proc.send_signal(sig)
        time.sleep(0.2)
        assert p.proc.poll() is None, "signal %s stopped the proxy\n%s" % (
            sig, p.log_text()[-2000:])
    expect(c.mail(), 250)
    c.quit()
    c2 = connect(p)                      # and it still accepts
    c2.quit()
    # SIGHUP reloads now (test_daemon_reload.py): twice, both fine
    p.wait_log(r"event=reload result=ok generation=3")
    p.wait_log(r"event=signal signal=USR1 action=ignored")
    p.wait_log(r"event=signal signal=USR2 action=ignored")
    # the fixture's teardown checks that SIGTERM still stops it with 0


# ---- -t names the key's line ------------------------------------------------

def check_line(proxy_bin, tmp_path, certs, keys, bad_key, message,
               section="smtp", extra=None):
    """-t on a service whose key bad_key is wrong: the error names the
    line of that key (the header and other keys come before it)."""
    sections = {"proxy": {"hostname": "proxy.test"},
                "smtp": {"listen": "127.0.0.1:2525",
                         "backend": "127.0.0.1:25",
                         "idle_timeout": 60,
                         "cert": certs.proxy_cert, "key": certs.proxy_key}}
    sections["smtp"].update(keys)
    sections.update(extra or {})
    ini = str(tmp_path / ("line-%s.ini" % bad_key))
    where = write_ini(ini, sections)
    rc, out = run_check(proxy_bin, ini)
    assert rc == 1, out
    line = where[(section, bad_key)]
    assert line != where[(section, None)]
    assert out.startswith("%s:%d: [%s] %s" % (ini, line, section, message)), \
        (line, out)


def test_check_names_the_line_of_the_failing_key(proxy_bin, tmp_path, certs):
    missing = str(tmp_path / "missing.pem")
    check_line(proxy_bin, tmp_path, certs, {"cert": missing}, "cert",
               "cannot load certificate " + missing)
    check_line(proxy_bin, tmp_path, certs, {"key": missing}, "key",
               "cannot load key " + missing)
    check_line(proxy_bin, tmp_path, certs, {"key": certs.backend_key}, "key",
               "cannot load key " + certs.backend_key)   # key values mismatch
    check_line(proxy_bin, tmp_path, certs,
               {"backend_tls": "verify", "backend_ca_file": missing},
               "backend_ca_file", "cannot load CA file " + missing)
    check_line(proxy_bin, tmp_path, certs,
               {"client_cert": "ask", "client_ca_file": missing},
               "client_ca_file", "cannot load client_ca_file " + missing)
    check_line(proxy_bin, tmp_path, certs, {"client_tls_ciphers": "NOPE"},
               "client_tls_ciphers", "bad client_tls_ciphers 'NOPE'")
    check_line(proxy_bin, tmp_path, certs,
               {"backend_tls_groups": "P-256:NOPE"}, "backend_tls_groups",
               "bad backend_tls_groups 'P-256:NOPE'")
    check_line(proxy_bin, tmp_path, certs, {"profiles": "printers"},
               "client_tls_ciphers", "bad client_tls_ciphers 'NOPE'",
               section="profile printers",
               extra={"profile printers": {"sources": "10.0.0.0/8",
                                           "client_tls": "may",
                                           "client_tls_ciphers": "NOPE"}})


# ---- out of descriptors -----------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_out_of_descriptors_never_spins_20_runs(limited_proxy,
                                                scripted_backend, certs,
                                                workers):
    """40 descriptors, 60 clients: the proxy serves what it can, the rest
    wait, and it uses (almost) no CPU meanwhile.  With two workers, libuv's
    own accept loop spun in about half of such runs (one worker's spare
    descriptor taken by the other's accept): 20 runs each."""
    b = scripted_backend()
    nofile = 40
    for run in range(20):
        port = free_port()
        sections = {
            "proxy": {"hostname": "proxy.test", "log_level": "info",
                      "workers": workers},
            "smtp": {"listen": "127.0.0.1:%d" % port,
                     "backend": "127.0.0.1:%d" % b.port,
                     "cert": certs.proxy_cert, "key": certs.proxy_key},
        }
        p = limited_proxy(sections, nofile=nofile)
        clients = []
        try:
            for _ in range(60):
                try:
                    clients.append(socket.create_connection(
                        ("127.0.0.1", port), timeout=10))
                except OSError:
                    pass
            wait_for(lambda: open_fds(p.pid) >= nofile - 2, 10,
                     what="the proxy at its descriptor limit")
            time.sleep(0.5)
            cpu0 = cpu_seconds(p.pid)
            time.sleep(1.0)
            cpu1 = cpu_seconds(p.pid)
            assert p.proc.poll() is None, p.log_text()[-3000:]
            assert cpu1 - cpu0 < 0.3, (
                "run %d, %d worker(s): %.2f s of CPU in 1 s out of "
                "descriptors (%d open): it spins\n%s"
                % (run, workers, cpu1 - cpu0, open_fds(p.pid),
                   p.log_text()[-2000:]))
        finally:
            for s in clients:
                s.close()
        # the clients that waited in the backlog are served afterwards
        wait_for(lambda: try_session(port), 30, interval=0.2,
                 what="a session once descriptors are free (run %d)" % run)
        assert p.stop() == 0, p.log_text()[-3000:]
    assert "event=accept_paused" in p.log_text()


# ---- backend_tls = may: every handshake failure gets the plaintext retry -----

FAILURES = ["close", "reset", "stall", "alert", "garbage"]


@pytest.mark.parametrize("mode", FAILURES)
def test_may_retries_plaintext_after_any_handshake_failure(
        proxy, scripted_backend, backend_tls_ctx, client_ctx, mode):
    b = scripted_backend(tls_ctx=backend_tls_ctx, starttls_mode=mode)
    p = proxy(b.port, backend_tls="may", tls_handshake_timeout=2)
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    c.starttls(client_ctx)
    c.ehlo()
    token = unique_token("may-" + mode)
    expect(c.mail(body=("Subject: %s\r\n\r\nx\r\n" % token).encode()), 250)
    c.quit()
    assert len(b.conns) == 2, [x.lines for x in b.conns]
    first, second = b.conns
    assert b"STARTTLS" in first.lines and first.messages == []
    assert b"STARTTLS" not in second.lines and not second.tls
    assert len(second.messages) == 1 and token.encode() in second.messages[0]
    p.wait_log(r"event=backend_tls_failed .*action=retry_plaintext")


@pytest.mark.parametrize("mode", FAILURES)
def test_encrypt_refuses_after_any_handshake_failure(
        proxy, scripted_backend, backend_tls_ctx, mode):
    b = scripted_backend(tls_ctx=backend_tls_ctx, starttls_mode=mode)
    p = proxy(b.port, backend_tls="encrypt", tls_handshake_timeout=2)
    c = SMTPClient(p.port)
    expect(c.read_reply(), 421, "4.7.0")
    c.expect_closed()
    assert len(b.conns) == 1
    assert b"MAIL" not in b.all_raw().upper()


# ---- command_timeout follows idle_timeout -------------------------------------

def test_command_timeout_defaults_to_idle_timeout(proxy, scripted_backend):
    """idle_timeout = 5 and no command_timeout: a client trickling one byte
    a second is cut off after about 5 s (the old default was 300 s)."""
    b = scripted_backend()
    p = proxy(b.port, idle_timeout=5)
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    start = time.monotonic()
    line = b"NOOP " + b"x" * 60 + b"\r\n"
    c.sock.settimeout(1.0)
    got = b""
    for i in range(len(line)):
        try:
            c.sock.sendall(line[i:i + 1])
        except OSError:
            break
        try:
            data = c.sock.recv(4096)
            if not data:
                break
            got += data
            if b"421" in got:
                break
        except socket.timeout:
            pass
    elapsed = time.monotonic() - start
    assert got.startswith(b"421 4.4.2"), got
    assert 4 <= elapsed < 15, "cut off after %.1f s, want about 5" % elapsed
    p.wait_log(r"event=timeout waiting_for=command\b")
