"""
Command line, configuration checking (-t), start-up failures and clean
shutdown.
"""

import re
import signal
import subprocess
import time

import pytest

from harness import (TIMEOUT, SMTPClient, expect, free_port, is_listening,
                     write_ini)


def good_sections(certs, backend_port=25, **keys):
    svc = {"listen": "127.0.0.1:%d" % free_port(),
           "backend": "127.0.0.1:%d" % backend_port,
           "cert": certs.proxy_cert, "key": certs.proxy_key}
    svc.update(keys)
    return {"proxy": {"hostname": "proxy.test", "log_level": "info"},
            "smtp": {k: v for k, v in svc.items() if v is not None}}


def test_check_good_config_exits_0(proxy_check, certs):
    sections = good_sections(
        certs, client_tls="encrypt", client_implicit_tls=False,
        client_plaintext_auth=True, backend_tls="verify",
        backend_implicit_tls=False, backend_ca_file=certs.ca,
        backend_verify_name="backend.test", idle_timeout=60,
        max_line_length=4096)
    sections["smtps"] = {"listen": "127.0.0.1:%d, 127.0.0.1:%d"
                         % (free_port(), free_port()),
                         "backend": "localhost:2525",
                         "client_implicit_tls": True,
                         "cert": certs.proxy_cert, "key": certs.proxy_key}
    sections["plain"] = {"listen": "127.0.0.1:%d" % free_port(),
                         "backend": "127.0.0.1:2526", "client_tls": "none",
                         "backend_tls": "none"}
    rc, out, ini = proxy_check(sections)
    assert rc == 0, out
    assert not re.search(r"%s:\d+:" % re.escape(ini), out), out


def test_check_accepts_comments_and_shipped_configs(proxy_check, certs,
                                                    proxy_bin):
    text = ("; leading comment\n# another\n[proxy]\nhostname = p.test ; "
            "trailing\nlog_level = warn\n\n[svc]\nlisten = 127.0.0.1:%d\n"
            "backend = 127.0.0.1:25\ncert = %s\nkey = %s\n"
            % (free_port(), certs.proxy_cert, certs.proxy_key))
    rc, out, _ = proxy_check(text)
    assert rc == 0, out


@pytest.mark.parametrize("key,value", [
    ("no_such_key", "1"),
    ("client_tls", "sometimes"),
    ("backend_tls", "required"),
    ("client_implicit_tls", "maybe"),
    ("idle_timeout", "0"),
    ("idle_timeout", "86401"),
    ("idle_timeout", "12abc"),
    ("max_line_length", "100"),
    ("max_line_length", "70000"),
    ("listen", "127.0.0.1"),
    ("listen", "127.0.0.1:99999"),
    ("listen", "localhost:25"),
    ("backend", "127.0.0.1"),
    ("backend", "127.0.0.1:0"),
    ("cert", "/nonexistent/cert.pem"),
    ("key", "/nonexistent/key.pem"),
    ("backend_ca_file", "/nonexistent/ca.pem"),
])
def test_check_bad_value_exits_1_with_file_and_line(proxy_check, certs,
                                                    tmp_path, key, value):
    sections = good_sections(certs)
    sections["smtp"][key] = value
    ini = str(tmp_path / "bad.ini")
    where = write_ini(ini, sections)
    rc, out, ini = proxy_check(sections)
    assert rc == 1, out
    lines = [where[("smtp", key)]]
    if key in ("cert", "key", "backend_ca_file"):
        # a file that cannot be loaded: its key's line, or the section's
        lines.append(where[("smtp", None)])
    assert any(re.search(r"^%s:%d: \S" % (re.escape(ini), line), out, re.M)
               for line in lines), \
        "want %s:%s: ... got:\n%s" % (ini, lines, out)


def test_check_mismatched_key_and_cert_exits_1(proxy_check, certs):
    sections = good_sections(certs, key=certs.backend_key)
    rc, out, ini = proxy_check(sections)
    assert rc == 1, out
    assert re.search(r"^%s:\d+: \S" % re.escape(ini), out, re.M), out


@pytest.mark.parametrize("section,key,value", [
    ("proxy", "log_level", "verbose"),
    ("proxy", "listen", "127.0.0.1:25"),
])
def test_check_bad_proxy_section_exits_1(proxy_check, certs, tmp_path,
                                         section, key, value):
    sections = good_sections(certs)
    sections[section][key] = value
    where = write_ini(str(tmp_path / "x.ini"), sections)
    rc, out, ini = proxy_check(sections)
    assert rc == 1, out
    assert re.search(r"^%s:%d: \S" % (re.escape(ini), where[(section, key)]),
                     out, re.M), out


def test_check_missing_required_keys_exits_1(proxy_check, certs):
    sections = good_sections(certs)
    del sections["smtp"]["backend"]
    rc, out, ini = proxy_check(sections)
    assert rc == 1, out
    assert re.search(r"^%s:\d+: .*backend" % re.escape(ini), out, re.M), out
    sections = good_sections(certs)
    del sections["smtp"]["cert"]      # client_tls=may needs a certificate
    rc, out, ini = proxy_check(sections)
    assert rc == 1, out
    assert re.search(r"^%s:\d+: " % re.escape(ini), out, re.M), out


def test_check_unreadable_file_exits_1(proxy_bin, tmp_path):
    missing = str(tmp_path / "missing.ini")
    p = subprocess.run([proxy_bin, "-t", "-c", missing],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=TIMEOUT)
    assert p.returncode == 1
    assert missing in p.stdout.decode(), p.stdout


def test_start_with_bad_config_exits_1_and_binds_nothing(
        proxy_bin, certs, tmp_path):
    sections = good_sections(certs)
    port = int(sections["smtp"]["listen"].rsplit(":", 1)[1])
    sections["second"] = {"listen": "127.0.0.1:%d" % free_port(),
                          "backend": "127.0.0.1:25", "client_tls": "bogus",
                          "cert": certs.proxy_cert, "key": certs.proxy_key}
    port2 = int(sections["second"]["listen"].rsplit(":", 1)[1])
    ini = str(tmp_path / "bad.ini")
    write_ini(ini, sections)
    proc = subprocess.Popen([proxy_bin, "-c", ini], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            assert not is_listening(port) and not is_listening(port2)
            time.sleep(0.01)
        if proc.poll() is None:
            pytest.fail("proxy kept running with a bad configuration")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode()
    assert proc.returncode == 1, out
    assert re.search(r"^%s:\d+: " % re.escape(ini), out, re.M), out


def test_start_with_port_in_use_exits_1(proxy_bin, certs, tmp_path):
    import socket
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    sections = good_sections(certs)
    sections["smtp"]["listen"] = "127.0.0.1:%d" % holder.getsockname()[1]
    ini = str(tmp_path / "busy.ini")
    write_ini(ini, sections)
    p = subprocess.run([proxy_bin, "-c", ini], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=TIMEOUT)
    holder.close()
    assert p.returncode == 1, p.stdout


def test_second_instance_on_the_same_port_exits_1(proxy, proxy_bin,
                                                  smtp_sink, tmp_path):
    """The workers' sockets use SO_REUSEPORT; a second starttls-proxy on
    the same address must not silently take a share of the connections
    (a forgotten old instance would serve half the clients): it exits 1
    with a clear error, and the first one keeps every connection."""
    sink = smtp_sink()
    first = proxy(sink.port)
    ini = str(tmp_path / "second.ini")
    write_ini(ini, first.sections)
    p = subprocess.run([proxy_bin, "-c", ini], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=TIMEOUT)
    out = p.stdout.decode()
    assert p.returncode == 1, out
    assert "cannot listen on 127.0.0.1:%d" % first.port in out, out
    assert "Address already in use" in out, out
    for _ in range(8):          # the first instance serves every client
        c = SMTPClient(first.port)
        expect(c.greeting(), 220)
        expect(c.ehlo(), 250)
        c.quit()
    assert first.proc.poll() is None


def test_version_and_usage(proxy_bin):
    p = subprocess.run([proxy_bin, "-V"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert p.returncode == 0
    assert re.search(rb"\d+\.\d+\.\d+", p.stdout), p.stdout
    p = subprocess.run([proxy_bin, "-h"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert p.returncode == 0
    assert b"-c" in p.stdout and b"-t" in p.stdout, p.stdout
    p = subprocess.run([proxy_bin, "--no-such-option"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=TIMEOUT)
    assert p.returncode != 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_stops_proxy_with_exit_0(proxy, smtp_sink, sig):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    c.quit()
    p.proc.send_signal(sig)
    assert p.proc.wait(5) == 0, p.log_text()
    assert not is_listening(p.port)
    p.expected_exit = True


def test_shutdown_with_open_session_sends_421_432(proxy, smtp_sink):
    sink = smtp_sink()
    p = proxy(sink.port)
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    p.proc.send_signal(signal.SIGTERM)
    expect(c.read_reply(), 421, "4.3.2")
    c.expect_closed()
    assert p.proc.wait(5) == 0, p.log_text()
    p.expected_exit = True


def test_two_services_two_listeners(proxy, aiosmtpd_backend, smtp_sink,
                                    certs, client_ctx):
    a = aiosmtpd_backend()
    sink = smtp_sink()
    second = {"listen": "127.0.0.1:%d" % free_port(),
              "backend": "127.0.0.1:%d" % sink.port,
              "cert": certs.proxy_cert, "key": certs.proxy_key,
              "client_implicit_tls": True}
    p = proxy(a.port, extra_sections={"second": second})
    c = SMTPClient(p.ports[0])
    assert "aiosmtpd" in c.greeting().text
    c.quit()
    c = SMTPClient(p.ports[1], implicit_tls=client_ctx)
    assert "smtp-sink" in c.greeting().text
    c.quit()
