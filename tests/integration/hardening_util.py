"""
hardening_util.py - shared pieces of the hardening tests (issue 3):
smuggling payloads and their expected normalized form, scripted-backend
handlers (delayed greeting, PROXY-header reader, DATA answered twice), a
proxy launcher with a low descriptor limit, CPU time of a process, and a
private Postfix that expects a PROXY header from its clients.

Nothing here changes conftest.py or harness.py; it only builds on them.
"""

import os
import re
import select
import socket
import struct
import subprocess
import time

import pytest

from harness import (TIMEOUT, ConnectionClosed, PostfixInstance, SMTPClient,
                     default_backend_handler, proxy_bin,
                     wait_for, wait_listening, write_ini)

# --------------------------------------------------------------------------
# small client helpers


def connect(p, **kw):
    """connect - a client of proxy p that has read the 220 greeting."""
    c = SMTPClient(p.port, **kw)
    c.greeting()
    return c


def try_session(port):
    """try_session - a whole session with one message; True if it worked."""
    try:
        c = SMTPClient(port, timeout=10)
        r = c.read_reply()
        if r.code != 220:
            c.close()
            return False
        c.ehlo()
        ok = c.mail().code == 250
        c.quit()
        return ok
    except (ConnectionClosed, OSError, AssertionError):
        return False


def replies_until_close(c):
    """replies_until_close - every reply the server sends until it closes."""
    out = []
    while True:
        try:
            out.append(c.read_reply())
        except ConnectionClosed:
            return out


def nothing_readable(sock, seconds):
    """nothing_readable - True when sock stays unreadable for seconds."""
    r, _, _ = select.select([sock], [], [], seconds)
    return not r


def closed_within(c, seconds):
    """closed_within - read until the server closes c or seconds pass;
    returns (closed, elapsed, bytes received meanwhile)."""
    start = time.monotonic()
    got = bytearray()
    c.sock.settimeout(seconds)
    try:
        while True:
            data = c.sock.recv(65536)
            if not data:
                return True, time.monotonic() - start, bytes(got)
            got += data
    except socket.timeout:
        return False, time.monotonic() - start, bytes(got)
    except OSError:
        return True, time.monotonic() - start, bytes(got)


# --------------------------------------------------------------------------
# line hygiene

BARE_RX = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def bare_newlines(data):
    """bare_newlines - offsets of every bare CR or bare LF in data."""
    return [m.start() for m in BARE_RX.finditer(data)]


def normalize_content(content):
    """normalize_content - the reference for "bare_newline = normalize":
    content (dot-stuffed DATA payload as the client sent it, up to and
    including the CRLF before the final ".") as the backend must receive
    it.  Lines end at CRLF, at a bare LF or at a bare CR; every line end
    becomes CRLF; a line that starts with "." after a bare line end gets one
    more "." (it was never stuffed by the client), and so does a line that
    is only "." and was ended by a bare line end (it would otherwise turn
    into CRLF "." CRLF).  Lines after a CRLF keep the client's own
    stuffing.  NUL bytes are removed, and a line that then starts with "."
    gets one more when a NUL stood before its dot or right after it."""
    out = bytearray()
    prev_bare = False
    pos = 0
    for m in re.finditer(rb"\r\n|\r|\n", content):
        raw = content[pos:m.start()]
        line = raw.replace(b"\x00", b"")
        bare = m.group(0) != b"\r\n"
        if line.startswith(b".") and (prev_bare or (line == b"." and bare) or
                                      not raw.startswith(b".") or
                                      raw[1:2] == b"\x00"):
            line = b"." + line
        out += line + b"\r\n"
        prev_bare = bare
        pos = m.end()
    assert pos == len(content), "content must end with a line end"
    return bytes(out)


def unstuff(payload):
    """unstuff - what a receiving SMTP server stores for a dot-stuffed
    payload (RFC 5321 4.5.2: the first "." of a line is removed)."""
    lines = payload.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


# end-of-data look-alikes from the public SMTP smuggling research (SEC
# Consult's smtp-smuggling-tools, the Postfix/Sendmail/Exim advisories of
# CVE-2023-51764/51765/51766) and a few more.  None contains a real
# CRLF "." CRLF: each must leave the message open.
SMUGGLING_EODS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\r\n",
    b"\r.\n",
    b"\r\n.\r",
    b"\r\n.\n",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n\x00.\r",
    b"\r\n\x00.\n",
    b"\n\x00.\n",
    b"\r\n\x00\x00.\x00\r\n",
    b"\r\n.\r\r\n",
    b"\r\n.\n\r\n",
    b"\r\n\r.\r\n",
    b"\n\n.\n\n",
    b"\r\r.\r\r",
    b"\r\n..\n",
]

SMUGGLED = (b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\n"
            b"smuggled\r\n")


def eod_id(v):
    return v.decode("latin-1").encode("unicode_escape").decode().replace(
        "\\", "") or "empty"


def smuggling_content(eod, head=b"Subject: smuggling test\r\n\r\nhello"):
    """smuggling_content - DATA content: a message, an end-of-data
    look-alike, a smuggled MAIL/RCPT/DATA/text.  Sent followed by ".\\r\\n"
    the stream ends with the real CRLF "." CRLF (the one that ends the
    smuggled message for a backend that was fooled)."""
    return head + eod + SMUGGLED


# --------------------------------------------------------------------------
# scripted-backend handlers

def delayed_greeting_handler(delay):
    """delayed_greeting_handler - the default behaviour, but the greeting
    comes only after delay seconds (so a client can talk first)."""
    def handler(conn, b):
        time.sleep(delay)
        default_backend_handler(conn, b)
    return handler


PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header_handler(conn, b):
    """proxy_header_handler - read a PROXY v1 or v2 header (if the first
    bytes within 10 s are one) into conn.proxy_header, then behave as the
    default backend.  conn.raw keeps every byte, header included."""
    conn.proxy_header = None
    r, _, _ = select.select([conn.sock], [], [], 10)
    if r:
        first = conn.read_exact(12)
        if first.startswith(b"PROXY "):
            conn.buf[:0] = first
            conn.proxy_header = conn.read_line(record=False) + b"\r\n"
        elif first == PP2_SIG:
            fixed = conn.read_exact(4)
            (n,) = struct.unpack("!H", fixed[2:4])
            conn.proxy_header = first + fixed + conn.read_exact(n)
        else:
            conn.buf[:0] = first
    default_backend_handler(conn, b)


def parse_proxy_v2(h):
    """parse_proxy_v2 - (command, family/transport byte, src ip, src port,
    dst ip, dst port) of a PROXY v2 header for TCP over IPv4."""
    assert h[:12] == PP2_SIG, h
    ver_cmd, fam = h[12], h[13]
    (n,) = struct.unpack("!H", h[14:16])
    assert len(h) == 16 + n, h
    if fam == 0x11:
        src = socket.inet_ntoa(h[16:20])
        dst = socket.inet_ntoa(h[20:24])
        sport, dport = struct.unpack("!HH", h[24:28])
        return ver_cmd, fam, src, sport, dst, dport
    return ver_cmd, fam, None, None, None, None


def build_proxy_v2(src, sport, dst, dport):
    """build_proxy_v2 - a PROXY v2 header (PROXY command, TCP over IPv4)."""
    body = socket.inet_aton(src) + socket.inet_aton(dst) + \
        struct.pack("!HH", sport, dport)
    return PP2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def data_answered_twice(first, second, delay=0.0):
    """data_answered_twice - a replies={"DATA": ...} override: 354, read
    the message, then two replies to the one end-of-data."""
    def override(conn, line):
        conn.send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        conn.read_data()
        conn.send(first)
        if delay:
            time.sleep(delay)
        conn.send(second)
        return "silent"
    return override


# --------------------------------------------------------------------------
# processes

def cpu_seconds(pid):
    """cpu_seconds - utime + stime of pid, in seconds (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


class LimitedProxy:
    """LimitedProxy - starttls-proxy run with RLIMIT_NOFILE set (soft and
    hard) to nofile, so that the proxy cannot raise it."""

    def __init__(self, workdir, sections, nofile, name="limited"):
        import resource

        self.ini = os.path.join(workdir, name + ".ini")
        self.logfile = os.path.join(workdir, name + ".log")
        write_ini(self.ini, sections)
        self.port = int(sections["smtp"]["listen"].rsplit(":", 1)[1])
        self.log_fd = open(self.logfile, "wb")

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            # a proxy that logs in a loop must not fill the disk: it dies
            # of SIGXFSZ instead, and the test fails
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
        self.proc = subprocess.Popen([proxy_bin(), "-c", self.ini],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.log_fd, stderr=self.log_fd,
                                     preexec_fn=limit)
        self.pid = self.proc.pid
        try:
            wait_listening(self.port, self.proc, what="starttls-proxy",
                           log=self.log_text, own=True)
            self.wait_log(r" event=start ")   # it handles SIGTERM from now on
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self.log_fd.close()
            raise

    def log_text(self):
        with open(self.logfile, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=TIMEOUT):
        rx = re.compile(pattern)
        try:
            return wait_for(lambda: rx.search(self.log_text()), timeout,
                            what="log /%s/" % pattern)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.log_text()[-4000:]))

    def stop(self, timeout=5.0):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log_fd.close()
                return None
        self.log_fd.close()
        return self.proc.returncode


@pytest.fixture
def limited_proxy(tmp_path):
    """limited_proxy(sections, nofile) -> LimitedProxy; stopped at the end
    of the test, which fails unless it exits 0 on SIGTERM."""
    running = []

    def start(sections, nofile):
        p = LimitedProxy(str(tmp_path), sections, nofile,
                         name="limited%d" % len(running))
        running.append(p)
        return p
    yield start
    bad = []
    for p in running:
        rc = p.stop()
        if rc != 0:
            bad.append("limited proxy: exit status %r after SIGTERM\n%s"
                       % (rc, p.log_text()[-3000:]))
    if bad:
        pytest.fail("\n".join(bad))


HAPROXY_MAIN_CF = """
# added by hardening_util.py: the proxy in front sends a PROXY header
smtpd_upstream_proxy_protocol = haproxy
smtpd_upstream_proxy_timeout = 20s
smtpd_client_port_logging = yes
"""


class HaproxyPostfix(PostfixInstance):
    """HaproxyPostfix - harness.PostfixInstance with HAPROXY_MAIN_CF added
    to its main.cf before it is first checked and started."""

    def run(self, *args, check=True):
        if args and args[0] == "check" and not getattr(self, "_haproxy",
                                                       False):
            with open(os.path.join(self.conf, "main.cf"), "a") as f:
                f.write(HAPROXY_MAIN_CF)
            self._haproxy = True
        return super().run(*args, check=check)


def start_postfix_haproxy(certs):
    """start_postfix_haproxy - a private Postfix whose smtpd wants a PROXY
    header (smtpd_upstream_proxy_protocol = haproxy) and logs client
    ports.  Caller stops it."""
    pf = HaproxyPostfix(certs)
    assert getattr(pf, "_haproxy", False), "main.cf was not extended"
    return pf


@pytest.fixture
def proxy_profiles(certs, tmp_path):
    """proxy_profiles(backend_port, profile_sections={name: {key: value}},
    **keys)
    -> harness.ProxyProcess: like conftest's proxy fixture (service
    [smtp], hostname proxy.test, log_level debug) plus [profile NAME]
    sections, which have no listen address.  Teardown: SIGTERM, exit 0."""
    from harness import ProxyProcess, free_port

    running = []

    def start(backend_port, profile_sections=None, **keys):
        port = free_port()
        smtp = {"listen": "127.0.0.1:%d" % port,
                "backend": "127.0.0.1:%d" % backend_port,
                "cert": certs.proxy_cert, "key": certs.proxy_key}
        smtp.update(keys)
        sections = {"proxy": {"hostname": "proxy.test", "log_level": "debug"},
                    "smtp": smtp}
        for name, sec in (profile_sections or {}).items():
            sections["profile " + name] = sec
        p = ProxyProcess(proxy_bin(), str(tmp_path), sections, [port],
                         name="pproxy%d" % len(running))
        running.append(p)
        return p
    yield start
    bad = []
    for p in running:
        rc = p.stop()
        if rc != 0:
            bad.append("proxy pid %d: exit status %r after SIGTERM\n%s"
                       % (p.pid, rc, p.log_text()[-3000:]))
    if bad:
        pytest.fail("\n".join(bad))
