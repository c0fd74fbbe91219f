"""
harness.py - the pieces the integration suite is built from.

Everything here talks to real processes over loopback:

  * free_port / wait_listening   pick ports, wait for a LISTEN socket without
                                 connecting (a probe connection would start a
                                 proxy session and a backend connection)
  * SMTPClient / Reply           one SMTP client with read_reply() that parses
                                 multi-line replies, STARTTLS, raw writes
  * ScriptedBackend              a misbehaving-on-demand SMTP server (threads)
                                 recording every byte it receives
  * write_ini / ProxyProcess     the one place an INI file is written, and the
                                 proxy under test as a child process
  * make_certs                   a test CA and leaf certificates (openssl CLI)
  * PostfixInstance, SmtpSink,   the real backends (Postfix optionally
    AiosmtpdBackend, DovecotAuth   with SASL through a private Dovecot)

The helpers raise (never skip) when a required peer is missing: a missing
peer is a failure of the test environment, CI installs them.
"""

import hashlib
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Generous: the suite must pass on a loaded 2-core machine.
TIMEOUT = 30.0

TERM = b"\r\n.\r\n"


def proxy_bin():
    """proxy_bin - path of the binary under test (STARTTLS_PROXY_BIN or the
    default build location), failing loudly when it does not exist."""
    path = os.environ.get("STARTTLS_PROXY_BIN") or os.path.join(
        REPO, "build", "starttls-proxy")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(
            "starttls-proxy binary not found at %s (build it, or set "
            "STARTTLS_PROXY_BIN)" % path)
    return path


def sanitized(binary):
    """Built with AddressSanitizer (linked to libasan, or with it)?"""
    with open(binary, "rb") as f:
        data = f.read()
    return b"libasan.so" in data or b"AddressSanitizer" in data


def require_program(name, paths=("/usr/sbin", "/usr/bin", "/usr/lib/postfix/sbin")):
    """require_program - absolute path of a required peer program, or raise:
    a missing peer fails the suite instead of skipping it."""
    found = shutil.which(name, path=os.pathsep.join(paths)) or shutil.which(name)
    if not found:
        raise RuntimeError(
            "required program %r not installed (apt-get install postfix "
            "swaks openssl python3-aiosmtpd dovecot-core)" % name)
    return found


def wait_for(pred, timeout=TIMEOUT, interval=0.05, what="condition"):
    """wait_for - poll pred() until it returns a true value; return it, or
    raise AssertionError naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------
# ports

_PORT_LOW, _PORT_HIGH = 20000, 32000   # below the kernel's ephemeral range


def free_port():
    """free_port - a TCP port on 127.0.0.1 that nothing uses now.  Taken
    below the ephemeral range (32768-60999 by default), so that no
    outgoing connection of the suite, and no other program's listener on
    port 0, can take it before the server the test starts binds it."""
    for _ in range(200):
        port = random.randrange(_PORT_LOW, _PORT_HIGH)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if ("127.0.0.1", port) not in listening_ports():
            return port
    raise AssertionError("no free port in %d-%d" % (_PORT_LOW, _PORT_HIGH))


def listening_ports():
    """listening_ports - set of (ip, port) in LISTEN state (IPv4 and IPv6),
    read from /proc/net/tcp*, so nobody has to connect to find out."""
    result = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] != "0A":
                        continue
                    addr, port = fields[1].split(":")
                    if len(addr) == 8:
                        ip = socket.inet_ntoa(bytes.fromhex(addr)[::-1])
                    else:
                        ip = "v6:" + addr
                    result.add((ip, int(port, 16)))
        except FileNotFoundError:
            pass
    return result


def is_listening(port, ip="127.0.0.1"):
    ports = listening_ports()
    return (ip, port) in ports or ("0.0.0.0", port) in ports


def listening_inodes(port):
    """listening_inodes - socket inodes in LISTEN state on 127.0.0.1:port
    or 0.0.0.0:port (IPv4), from /proc/net/tcp."""
    found = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            addr, p = fields[1].split(":")
            if fields[3] == "0A" and int(p, 16) == port and \
                    addr in ("0100007F", "00000000"):
                found.add(int(fields[9]))
    return found


def socket_inodes(pid):
    """socket_inodes - inodes of the sockets process pid holds open."""
    found = set()
    d = "/proc/%d/fd" % pid
    try:
        names = os.listdir(d)
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(os.path.join(d, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def socket_owners(inodes):
    """socket_owners - 'pid (command line)' of each process holding one of
    the socket inodes, for error messages."""
    owners = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and socket_inodes(int(pid)) & inodes:
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(
                        "utf-8", "replace").strip()
            except OSError:
                cmd = "?"
            owners.append("%s (%s)" % (pid, cmd))
    return owners or ["unknown"]


def wait_listening(port, proc=None, timeout=TIMEOUT, what=None, log=None,
                   own=False):
    """wait_listening - wait until something listens on 127.0.0.1:port; if
    proc (a Popen) exits first, raise with its log.

    own=True: until proc itself listens there, and then nobody else may.
    The proxy binds with SO_REUSEPORT, so another proxy of the same user
    (a suite running at the same time that picked the same free port) can
    listen on the port too and take a share of the connections: the test
    would talk to a stranger and the proxy under test, still starting,
    would meet its SIGTERM before it handles one."""
    deadline = time.monotonic() + timeout
    while True:
        if own:
            inodes = listening_inodes(port)
            mine = inodes & socket_inodes(proc.pid)
            if mine:
                others = inodes - mine
                if others:
                    raise AssertionError(
                        "%s: port %d is also listened on by: %s\n%s"
                        % (what or proc.args[0], port,
                           ", ".join(socket_owners(others)),
                           log() if log else ""))
                return
        elif is_listening(port):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError("%s exited with %s before listening on %d:\n%s"
                                 % (what or proc.args[0], proc.returncode, port,
                                    log() if log else ""))
        if time.monotonic() > deadline:
            raise AssertionError("%s not listening on %d after %.0fs\n%s"
                                 % (what or "server", port, timeout,
                                    log() if log else ""))
        time.sleep(0.02)


# --------------------------------------------------------------------------
# SMTP client

class Reply:
    """Reply - one (possibly multi-line) SMTP reply."""

    def __init__(self, lines):
        self.lines = lines                       # bytes, CRLF stripped
        self.code = int(lines[0][:3])
        self.texts = [l[4:].decode("utf-8", "replace") for l in lines]
        self.text = "\n".join(self.texts)
        m = re.match(r"([245]\.\d{1,3}\.\d{1,3})\b", self.texts[0])
        self.enhanced = m.group(1) if m else None

    @property
    def keywords(self):
        """EHLO keywords (upper case, first word of each line after the
        first)."""
        return [t.split()[0].upper() for t in self.texts[1:] if t.split()]

    def has(self, keyword):
        return keyword.upper() in self.keywords

    def __repr__(self):
        return "Reply(%r)" % b"\\n".join(self.lines)


class ConnectionClosed(Exception):
    pass


def client_tls_context(cafile):
    """client_tls_context - a verifying client context trusting cafile."""
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx


# CN of the proxy's certificate (make_certs): the client leg must end at
# the proxy, not be tunnelled through to the backend's TLS
PROXY_CN = "proxy.localhost"


def peer_cn(sslsock):
    for rdn in sslsock.getpeercert().get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


class SMTPClient:
    """SMTPClient - a deliberately low-level SMTP client.

    Records every byte it receives (self.received) so tests can assert that
    something never reached the client."""

    def __init__(self, port, host="127.0.0.1", timeout=TIMEOUT,
                 implicit_tls=None, server_hostname="localhost",
                 expect_cn=PROXY_CN, source=None):
        self.expect_cn = expect_cn
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.received = bytearray()
        self.tls = False
        self.timeout = timeout
        if implicit_tls is not None:
            self.sock = implicit_tls.wrap_socket(
                self.sock, server_hostname=server_hostname)
            self.tls = True
            self._check_cn()

    def _check_cn(self):
        if self.expect_cn is not None:
            cn = peer_cn(self.sock)
            assert cn == self.expect_cn, \
                "TLS peer is %r, want %r" % (cn, self.expect_cn)

    # -- raw I/O
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _recv(self):
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(
                "no data from server within %.0fs (buffered: %r)"
                % (self.timeout, bytes(self.buf)))
        except (ConnectionResetError, ssl.SSLError) as e:
            raise ConnectionClosed("connection error: %r" % e)
        if not data:
            raise ConnectionClosed("connection closed by server (buffered: %r)"
                                   % bytes(self.buf))
        self.received += data
        self.buf += data
        return data

    def read_line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._recv()

    def read_reply(self):
        """read_reply - read one complete reply, checking its syntax."""
        lines = []
        while True:
            line = self.read_line()
            assert re.match(rb"^[2-5]\d\d([ -]|$)", line), \
                "malformed reply line %r" % line
            if lines:
                assert line[:3] == lines[0][:3], \
                    "reply code changed inside a multi-line reply: %r" % line
            lines.append(line)
            if len(line) == 3 or line[3:4] == b" ":
                return Reply(lines)

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read_reply()

    def greeting(self):
        r = self.read_reply()
        assert r.code == 220, "greeting %r" % r
        return r

    def ehlo(self, name="client.test"):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, "EHLO answered %r" % r
        return r

    def starttls(self, ctx, server_hostname="localhost"):
        """starttls - send STARTTLS, expect 220, handshake.  Bytes the server
        sent behind its 220 are a failure (response injection)."""
        r = self.cmd("STARTTLS")
        assert r.code == 220, "STARTTLS answered %r" % r
        self.start_tls(ctx, server_hostname)
        return r

    def start_tls(self, ctx, server_hostname="localhost"):
        assert not self.buf, "server sent bytes behind 220 to STARTTLS: %r" \
            % bytes(self.buf)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls = True
        self._check_cn()

    def mail(self, sender="sender@client.test", rcpts=("rcpt@test.example",),
             body=b"Subject: test\r\n\r\nhello\r\n"):
        """mail - one complete transaction expected to succeed; returns the
        reply to end-of-data.  body is sent as is (already dot-stuffed,
        CRLF line ends) followed by CRLF.CRLF."""
        r = self.cmd("MAIL FROM:<%s>" % sender)
        assert r.code == 250, "MAIL answered %r" % r
        for rcpt in rcpts:
            r = self.cmd("RCPT TO:<%s>" % rcpt)
            assert r.code == 250, "RCPT answered %r" % r
        r = self.cmd("DATA")
        assert r.code == 354, "DATA answered %r" % r
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.send(body + b".\r\n")
        return self.read_reply()

    def quit(self):
        r = self.cmd("QUIT")
        assert r.code == 221, "QUIT answered %r" % r
        self.expect_closed()
        return r

    def expect_closed(self, timeout=None):
        """expect_closed - read until the server closes; returns what came
        before the close (beyond what was already parsed)."""
        self.sock.settimeout(timeout or self.timeout)
        try:
            while True:
                self._recv()
        except ConnectionClosed:
            pass
        rest = bytes(self.buf)
        self.buf.clear()
        return rest

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# scripted backend

class BackendConn:
    """BackendConn - one connection accepted by a ScriptedBackend, with
    everything it received recorded."""

    def __init__(self, backend, sock, index):
        self.backend = backend
        self.sock = sock
        self.index = index
        self.buf = bytearray()
        self.raw = bytearray()        # every application byte received
        self.lines = []               # command lines, CRLF stripped
        self.messages = []            # DATA payloads (still dot-stuffed,
                                      # up to and incl. the CRLF before ".")
        self.message_digests = []     # (size, sha256) per DATA payload
        self.partial_data = None      # DATA payload cut short by EOF
        self.chunks = []              # BDAT payloads, exactly as received
        self.tls = False
        self.plaintext_behind_starttls = b""
        self.eof = threading.Event()  # peer closed (or we did)
        self.done = threading.Event() # handler finished
        self.error = None
        self.record = True            # False: DATA bytes not kept in raw

    # -- I/O
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _recv(self):
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.eof.set()
            raise EOFError
        if self.record:
            self.raw += data
        return data

    def _take(self):
        """_take - buffered bytes first, else the next read."""
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            return data
        return self._recv()

    def read_line(self, record=True):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                if record:
                    self.lines.append(line)
                return line
            self.buf += self._recv()

    def read_exact(self, n):
        out = bytearray()
        while len(out) < n:
            data = self._take()
            need = n - len(out)
            out += data[:need]
            if len(data) > need:
                self.buf[:0] = data[need:]
        return bytes(out)

    def read_data(self, store=True):
        """read_data - read a DATA payload up to CRLF.CRLF (the CRLF ending
        the DATA command counts as the first CRLF).  Streams: memory stays
        small when store is False."""
        digest = hashlib.sha256()
        parts = []
        size = 0
        hold = bytearray(b"\r\n")
        skip = 2
        self.record = store

        def commit(b):
            nonlocal size
            if b:
                digest.update(b)
                size += len(b)
                if store:
                    parts.append(bytes(b))

        while True:
            i = hold.find(TERM)
            if i >= 0:
                commit(hold[skip:i + 2])
                self.buf[:0] = hold[i + 5:]
                self.record = True
                msg = b"".join(parts)
                self.messages.append(msg if store else None)
                self.message_digests.append((size, digest.hexdigest()))
                return msg
            if len(hold) > skip + 4:
                commit(hold[skip:len(hold) - 4])
                del hold[:len(hold) - 4]
                skip = 0
            try:
                hold += self._take()
            except EOFError:
                commit(hold[skip:])
                self.partial_data = b"".join(parts) if store else size
                raise

    def start_tls(self, ctx):
        self.plaintext_behind_starttls = bytes(self.buf)
        self.buf.clear()
        self.sock = ctx.wrap_socket(self.sock, server_side=True)
        self.tls = True

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.eof.set()

    def wait_eof(self, timeout=TIMEOUT):
        """wait_eof - wait for the peer (the proxy) to close this
        connection."""
        assert self.eof.wait(timeout), \
            "backend connection %d still open after %.0fs" % (self.index,
                                                              timeout)

    def commands(self):
        """commands - verbs of the command lines received, upper case."""
        return [l.split(b" ", 1)[0].upper().decode("latin-1")
                for l in self.lines]


class ScriptedBackend:
    """ScriptedBackend - an SMTP server whose behaviour a test scripts.

    By default it behaves as a well-mannered ESMTP server; options change
    single behaviours:

      greeting         bytes, or None = never greet (just read and record)
      hostname         name in EHLO reply
      keywords         EHLO keywords in plaintext (STARTTLS is added when
                       tls_ctx is set)
      tls_keywords     EHLO keywords after STARTTLS (default: keywords)
      tls_ctx          server SSLContext: enables STARTTLS
      starttls_reply   bytes sent for STARTTLS (in one write); what follows in
                       the same write is injected
      starttls_mode    "ok" | "refuse" (454) | "close" (220 then close)
                       | "garbage" (220, then non-TLS bytes, then close)
                       | "reset" (220, the ClientHello, then a TCP reset)
                       | "stall" (220, then silence until the peer closes)
                       | "alert" (220, the ClientHello, then a fatal TLS
                         handshake_failure alert and close)
      on_data          "accept" | "close" (after the body, no reply)
                       | bytes (this reply to end-of-data) | "silent"
      pause_data       threading.Event: after 354, wait for it before reading
      store_data       keep DATA payloads in memory (False for huge ones)
      replies          {VERB: bytes | "silent" | "close" | callable(conn, line)}
      handler          callable(conn, backend) replacing all of the above
    """

    def __init__(self, greeting=b"220 scripted.test ESMTP ready\r\n",
                 hostname="scripted.test",
                 keywords=("PIPELINING", "SIZE 10240000", "8BITMIME",
                           "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8"),
                 tls_keywords=None, tls_ctx=None,
                 starttls_reply=b"220 2.0.0 Ready to start TLS\r\n",
                 starttls_mode="ok", on_data="accept", pause_data=None,
                 store_data=True, replies=None, handler=None):
        self.greeting = greeting
        self.hostname = hostname
        self.keywords = list(keywords)
        self.tls_keywords = list(tls_keywords) if tls_keywords is not None \
            else list(keywords)
        self.tls_ctx = tls_ctx
        self.starttls_reply = starttls_reply
        self.starttls_mode = starttls_mode
        self.on_data = on_data
        self.pause_data = pause_data
        self.store_data = store_data
        self.replies = {k.upper(): v for k, v in (replies or {}).items()}
        self.handler = handler or default_backend_handler
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = False
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            sock.settimeout(120)
            with self.lock:
                conn = BackendConn(self, sock, len(self.conns))
                self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,),
                             daemon=True).start()

    def _run(self, conn):
        try:
            self.handler(conn, self)
        except EOFError:
            pass
        except Exception as e:   # recorded, reported by tests that care
            conn.error = e
        finally:
            conn.close()
            conn.done.set()

    def wait_conns(self, n, timeout=TIMEOUT):
        wait_for(lambda: len(self.conns) >= n, timeout,
                 what="%d backend connection(s)" % n)
        return self.conns[n - 1]

    def all_raw(self):
        return b"".join(bytes(c.raw) for c in self.conns)

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for c in list(self.conns):
            c.close()


def default_backend_handler(conn, b):
    """default_backend_handler - the scripted backend's SMTP behaviour."""
    if b.greeting is None:
        while True:
            conn.buf += conn._recv()
    conn.send(b.greeting)
    queue_id = 0
    while True:
        line = conn.read_line()
        verb = line.split(b" ", 1)[0].upper().decode("latin-1")
        override = b.replies.get(verb)
        if callable(override):
            override = override(conn, line)
        if override == "silent":
            continue
        if override == "close":
            return
        if isinstance(override, (bytes, str)):
            conn.send(override)
            continue
        if verb == "EHLO":
            kws = list(b.tls_keywords if conn.tls else b.keywords)
            if b.tls_ctx is not None and not conn.tls:
                kws.append("STARTTLS")
            out = [b.hostname] + kws
            conn.send("".join("250%s%s\r\n" % ("-" if i < len(out) - 1
                                               else " ", t)
                              for i, t in enumerate(out)))
        elif verb == "HELO":
            conn.send("250 %s\r\n" % b.hostname)
        elif verb == "STARTTLS":
            if b.tls_ctx is None or conn.tls:
                conn.send(b"502 5.5.1 STARTTLS not available\r\n")
            elif b.starttls_mode == "refuse":
                conn.send(b"454 4.7.0 TLS not available due to local problem\r\n")
            elif b.starttls_mode == "close":
                conn.send(b.starttls_reply)
                return
            elif b.starttls_mode == "garbage":
                conn.send(b.starttls_reply)
                conn.send(b"this is not a TLS ServerHello\r\n" * 4)
                time.sleep(0.5)
                return
            elif b.starttls_mode in ("reset", "alert"):
                conn.send(b.starttls_reply)
                conn.plaintext_behind_starttls = conn._take()  # ClientHello
                if b.starttls_mode == "alert":
                    # TLS 1.2 record: alert, fatal, handshake_failure
                    conn.send(b"\x15\x03\x03\x00\x02\x02\x28")
                    time.sleep(0.3)
                    return
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
                conn.sock.close()   # no shutdown first: RST, not FIN
                return
            elif b.starttls_mode == "stall":
                conn.send(b.starttls_reply)
                while True:
                    conn._take()
            else:
                conn.send(b.starttls_reply)
                conn.start_tls(b.tls_ctx)
        elif verb in ("MAIL",):
            conn.send(b"250 2.1.0 Ok\r\n")
        elif verb == "RCPT":
            conn.send(b"250 2.1.5 Ok\r\n")
        elif verb in ("RSET", "NOOP"):
            conn.send(b"250 2.0.0 Ok\r\n")
        elif verb in ("XCLIENT", "XFORWARD"):
            conn.send(b"250 2.0.0 Ok (trusting you)\r\n")
        elif verb == "QUIT":
            conn.send(b"221 2.0.0 Bye\r\n")
            return
        elif verb == "AUTH":
            args = line.split()
            if len(args) == 2:
                conn.send(b"334 \r\n")
                resp = conn.read_line()
                if resp == b"*":
                    conn.send(b"501 5.7.0 Authentication aborted\r\n")
                    continue
            conn.send(b"235 2.7.0 Authentication successful\r\n")
        elif verb == "DATA":
            conn.send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            if b.pause_data is not None:
                b.pause_data.wait(120)
            conn.read_data(store=b.store_data)
            if b.on_data == "close":
                return
            if b.on_data == "silent":
                continue
            if isinstance(b.on_data, bytes):
                conn.send(b.on_data)
                continue
            queue_id += 1
            conn.send(b"250 2.0.0 Ok: queued as SCRIPT%d\r\n" % queue_id)
        elif verb == "BDAT":
            m = re.match(rb"^BDAT (\d+)( LAST)?$", line, re.I)
            if not m:
                conn.send(b"501 5.5.4 Syntax: BDAT count [LAST]\r\n")
                continue
            n = int(m.group(1))
            conn.chunks.append(conn.read_exact(n))
            if m.group(2):
                queue_id += 1
                conn.send(b"250 2.0.0 Ok: %d octets, queued as SCRIPT%d\r\n"
                          % (n, queue_id))
            else:
                conn.send(b"250 2.0.0 Ok: %d octets\r\n" % n)
        else:
            conn.send(b"502 5.5.2 Error: command not recognized\r\n")


# --------------------------------------------------------------------------
# configuration and the proxy process

def ini_value(v):
    if v is True:
        return "yes"
    if v is False:
        return "no"
    return str(v)


def write_ini(path, sections):
    """write_ini - the one writer of INI files: sections is an ordered
    {name: {key: value}}; values True/False become yes/no.  Returns the line
    number of every key as {(section, key): line} for error checks."""
    lines = []
    where = {}
    for name, keys in sections.items():
        if lines:
            lines.append("")
        lines.append("[%s]" % name)
        where[(name, None)] = len(lines)
        for k, v in keys.items():
            lines.append("%s = %s" % (k, ini_value(v)))
            where[(name, k)] = len(lines)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return where


class ProxyProcess:
    """ProxyProcess - one running starttls-proxy."""

    def __init__(self, binary, workdir, sections, ports, name="proxy",
                 preexec_fn=None):
        self.binary = binary
        self.ini = os.path.join(workdir, name + ".ini")
        self.logfile = os.path.join(workdir, name + ".log")
        self.ports = ports
        self.port = ports[0]
        # SIGTERM waits for messages in flight up to drain_timeout: short
        # here, so that every teardown ends within its 5 s
        sections = dict(sections)
        sections["proxy"] = dict(sections.get("proxy", {}))
        sections["proxy"].setdefault("drain_timeout", 2)
        # many proxies run at once here: none writes /run's pid file
        sections["proxy"].setdefault("pid_file", "none")
        self.sections = sections
        write_ini(self.ini, sections)
        self.log_fd = open(self.logfile, "wb")
        self.proc = subprocess.Popen([binary, "-c", self.ini],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.log_fd, stderr=self.log_fd,
                                     preexec_fn=preexec_fn)
        self.pid = self.proc.pid
        try:
            for p in ports:
                wait_listening(p, self.proc, what="starttls-proxy",
                               log=self.log_text, own=True)
            # started: its SIGTERM handler is in place (before it, SIGTERM
            # kills it: exit status -15)
            if sections.get("proxy", {}).get("log_level", "info") in (
                    "debug", "info"):
                self.wait_started()
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self.log_fd.close()
            raise

    def wait_started(self, timeout=TIMEOUT):
        """wait_started - until the proxy logged event=start (it logs it
        once it handles SIGTERM and SIGINT)."""
        deadline = time.monotonic() + timeout
        while b" event=start " not in self.log_bytes():
            if self.proc.poll() is not None:
                raise AssertionError(
                    "starttls-proxy exited with %s before event=start:\n%s"
                    % (self.proc.returncode, self.log_text()))
            if time.monotonic() > deadline:
                raise AssertionError("starttls-proxy: no event=start after "
                                     "%.0fs:\n%s" % (timeout, self.log_text()))
            time.sleep(0.005)

    def log_bytes(self):
        with open(self.logfile, "rb") as f:
            return f.read()

    def log_text(self):
        return self.log_bytes().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=TIMEOUT, count=1):
        """wait_log - wait until pattern (regex) matched count lines of the
        log; returns the list of matches."""
        rx = re.compile(pattern)

        def found():
            ms = [m for m in (rx.search(l) for l in
                              self.log_text().splitlines()) if m]
            return ms if len(ms) >= count else None
        try:
            return wait_for(found, timeout, what="log line /%s/" % pattern)
        except AssertionError as e:
            raise AssertionError("%s\n--- proxy log ---\n%s"
                                 % (e, self.log_text()))

    def summaries(self, count=1, timeout=TIMEOUT):
        """summaries - the event=summary lines (at least count of them)."""
        self.wait_log(r"event=summary\b", timeout, count)
        return [l for l in self.log_text().splitlines()
                if re.search(r"event=summary\b", l)]

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)

    def stop(self, timeout=5.0):
        """stop - SIGTERM; returns the exit status (None if it had to be
        killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log_fd.close()
                return None
        self.log_fd.close()
        return self.proc.returncode


def run_check(binary, ini):
    """run_check - `starttls-proxy -t -c ini`: (rc, stdout+stderr text)."""
    p = subprocess.run([binary, "-t", "-c", ini], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=TIMEOUT)
    return p.returncode, (p.stderr + p.stdout).decode("utf-8", "replace")


# --------------------------------------------------------------------------
# certificates

class Certs:
    pass


def _openssl(*args, cwd):
    openssl = require_program("openssl")
    p = subprocess.run([openssl] + list(args), cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s"
                           % (" ".join(args), p.stdout.decode()))


def make_certs(d):
    """make_certs - a test CA, a proxy and a backend certificate signed by
    it, and a self-signed untrusted one, all ECDSA P-256, in directory d."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "30", "-subj", "/CN=starttls-proxy test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    leaves = {
        "proxy": "DNS:localhost,IP:127.0.0.1",
        "backend": "DNS:localhost,IP:127.0.0.1,DNS:backend.test",
    }
    for name, san in leaves.items():
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=%s\n" % san)
        _openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr",
                 "-subj", "/CN=" + name + ".localhost", cwd=d)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem",
                 "-CAkey", "ca.key", "-CAcreateserial", "-days", "30",
                 "-extfile", name + ".ext", "-out", name + ".pem", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "untrusted.key",
             "-out", "untrusted.pem", "-days", "30",
             "-subj", "/CN=untrusted.localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    os.chmod(d, 0o755)
    c = Certs()
    c.dir = d
    c.ca = os.path.join(d, "ca.pem")
    for name in ("proxy", "backend", "untrusted"):
        setattr(c, name + "_cert", os.path.join(d, name + ".pem"))
        setattr(c, name + "_key", os.path.join(d, name + ".key"))
    return c


def server_tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


# --------------------------------------------------------------------------
# Postfix

MASTER_CF = """\
# private test instance: every service unchrooted, nothing on port 25
{trusted_port_line}
{untrusted_port_line}
  -o syslog_name=postfix-untrusted
  -o smtpd_tls_cert_file={untrusted_cert}
  -o smtpd_tls_key_file={untrusted_key}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# private test instance (written by tests/integration/harness.py)
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = backend.test
mydomain = backend.test
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
alias_maps =
alias_database =
biff = no
smtputf8_enable = yes
smtpd_banner = $myhostname ESMTP postfix-backend
smtpd_sasl_auth_enable = no
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
    check_recipient_access inline:{{ {{rejected@test.example = REJECT no such user}} }}
# test.example is delivered into one mbox file: {mail}/box
virtual_mailbox_domains = test.example
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:box
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
# nothing ever leaves this host
default_transport = error:5.7.1 test instance does not relay
relay_transport = error:5.7.1 test instance does not relay
smtpd_tls_security_level = may
smtpd_tls_cert_file = {backend_cert}
smtpd_tls_key_file = {backend_key}
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
maillog_file = {log}
maillog_file_prefixes = {base}
"""


# With a SASL socket (PostfixInstance(sasl_path=...)): a provider's 587
# (STARTTLS required, AUTH only over TLS) and 465 (implicit TLS), both
# relaying for nobody but an authenticated client, and saying who logged
# in in the Received: header (Authenticated sender: ...).
SASL_MASTER_CF = """\
127.0.0.1:{submission_port} inet n - n - - smtpd
  -o syslog_name=postfix-submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path={sasl_path}
  -o smtpd_sasl_authenticated_header=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:{smtps_port} inet n - n - - smtpd
  -o syslog_name=postfix-smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path={sasl_path}
  -o smtpd_sasl_authenticated_header=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
"""


class PostfixInstance:
    """PostfixInstance - a private Postfix (own config, queue, data, mail and
    log directories under one temp dir), smtpd on two loopback ports: `port`
    presents the CA-signed backend certificate, `untrusted_port` the
    self-signed one (its log lines say postfix-untrusted/smtpd)."""

    def __init__(self, certs, sasl_path=None):
        self.postfix = require_program("postfix")
        require_program("postconf")
        import pwd
        pw = pwd.getpwnam("postfix")   # KeyError: postfix not installed
        self.base = tempfile.mkdtemp(prefix="stp-postfix-")
        os.chmod(self.base, 0o755)
        self.conf = os.path.join(self.base, "conf")
        self.queue = os.path.join(self.base, "queue")
        self.data = os.path.join(self.base, "data")
        self.mail = os.path.join(self.base, "mail")
        self.logdir = os.path.join(self.base, "log")
        self.log = os.path.join(self.logdir, "maillog")
        self.mbox = os.path.join(self.mail, "box")
        for d in (self.conf, self.queue):
            os.mkdir(d, 0o755)
        for d in (self.data, self.mail, self.logdir):
            os.mkdir(d, 0o755)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.untrusted_port = free_port()
        self.submission_port = self.smtps_port = None
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(
                trusted_port_line="127.0.0.1:%d inet n - n - - smtpd"
                % self.port,
                untrusted_port_line="127.0.0.1:%d inet n - n - - smtpd"
                % self.untrusted_port,
                untrusted_cert=certs.untrusted_cert,
                untrusted_key=certs.untrusted_key))
            if sasl_path is not None:
                self.submission_port = free_port()
                self.smtps_port = free_port()
                f.write(SASL_MASTER_CF.format(
                    submission_port=self.submission_port,
                    smtps_port=self.smtps_port, sasl_path=sasl_path))
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(
                queue=self.queue, data=self.data, mail=self.mail,
                uid=pw.pw_uid, gid=pw.pw_gid, log=self.log, base=self.base,
                backend_cert=certs.backend_cert,
                backend_key=certs.backend_key))
        self.env = dict(os.environ, MAIL_CONFIG=self.conf)
        self.run("check")
        self.run("start")
        try:
            wait_listening(self.port, what="postfix smtpd", log=self.diag)
            wait_listening(self.untrusted_port, what="postfix smtpd",
                           log=self.diag)
            for port in (self.submission_port, self.smtps_port):
                if port is not None:
                    wait_listening(port, what="postfix smtpd (SASL)",
                                   log=self.diag)
        except Exception:
            self.stop()
            raise

    def run(self, *args, check=True):
        p = subprocess.run([self.postfix, "-c", self.conf] + list(args),
                           env=self.env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60)
        if check and p.returncode != 0:
            raise RuntimeError("postfix %s failed (%d):\n%s\n%s"
                               % (" ".join(args), p.returncode,
                                  p.stdout.decode(), self.diag()))
        return p

    def diag(self):
        return "--- postfix maillog ---\n" + self.log_text()

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_offset(self):
        return len(self.log_text())

    def log_since(self, offset):
        return self.log_text()[offset:]

    def wait_log(self, pattern, since=0, timeout=TIMEOUT, count=1):
        """wait_log - matches of pattern in log lines written after
        offset `since` (postlogd writes asynchronously)."""
        rx = re.compile(pattern)

        def found():
            ms = [m for m in (rx.search(l) for l in
                              self.log_since(since).splitlines()) if m]
            return ms if len(ms) >= count else None
        try:
            return wait_for(found, timeout, what="postfix log /%s/" % pattern)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.log_since(since)))

    def mbox_text(self):
        try:
            with open(self.mbox, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        self.run("stop", check=False)
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        try:
            with open(pidfile) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        if pid:
            def gone():
                try:
                    os.kill(pid, 0)
                    return False
                except ProcessLookupError:
                    return True
            try:
                wait_for(gone, 15, what="postfix master to exit")
            except AssertionError:
                self.run("abort", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------
# Dovecot, as Postfix's SASL server only

DOVECOT_CONF = """\
# private test instance (written by tests/integration/harness.py): SASL
# for Postfix only, no mail protocol, nothing listening on the network
protocols =
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
instance_name = stp-dovecot-{name}
log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home=/nonexistent
}}
service auth {{
  unix_listener {socket} {{
    mode = 0666
  }}
}}
"""


class DovecotAuth:
    """DovecotAuth - a private Dovecot whose only service is the auth
    socket Postfix's smtpd_sasl_type = dovecot talks to (self.socket);
    users is {name: password}, kept in a passwd-file.  The log goes to
    self.log."""

    def __init__(self, users):
        binary = require_program("dovecot")
        self.base = tempfile.mkdtemp(prefix="stp-dovecot-")
        os.chmod(self.base, 0o755)
        self.socket = os.path.join(self.base, "auth-postfix")
        self.log = os.path.join(self.base, "dovecot.log")
        self.conf = os.path.join(self.base, "dovecot.conf")
        with open(os.path.join(self.base, "users"), "w") as f:
            for name, password in users.items():
                f.write("%s:{PLAIN}%s\n" % (name, password))
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(base=self.base, socket=self.socket,
                                        name=os.path.basename(self.base)))
        self._stderr = open(self.log + ".stderr", "wb")
        self.proc = subprocess.Popen([binary, "-F", "-c", self.conf],
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self._stderr)
        try:
            wait_for(lambda: os.path.exists(self.socket) or
                     self.proc.poll() is not None, what="dovecot auth socket")
            if self.proc.poll() is not None:
                raise RuntimeError("dovecot exited %d:\n%s"
                                   % (self.proc.returncode, self.log_text()))
        except BaseException:
            self.stop()
            raise

    def log_text(self):
        out = ""
        for path in (self.log, self.log + ".stderr"):
            try:
                with open(path, "rb") as f:
                    out += f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                pass
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------
# smtp-sink

class SmtpSink:
    """SmtpSink - Postfix's smtp-sink (no TLS) on a picked port; each message
    is dumped into its own file in self.dumpdir; -v writes the conversation
    to self.logfile.  backlog: its listen queue (more connections arriving
    at once than that are dropped by the kernel and may never be greeted)."""

    def __init__(self, *flags, port=None, backlog=100):
        binary = require_program("smtp-sink")
        import pwd
        pw = pwd.getpwnam("postfix")
        self.base = tempfile.mkdtemp(prefix="stp-sink-")
        os.chmod(self.base, 0o755)
        self.dumpdir = os.path.join(self.base, "dump")
        os.mkdir(self.dumpdir)
        os.chown(self.dumpdir, pw.pw_uid, pw.pw_gid)
        self.logfile = os.path.join(self.base, "sink.log")
        self.port = port or free_port()
        self.log_fd = open(self.logfile, "wb")
        self.proc = subprocess.Popen(
            [binary, "-u", "postfix", "-v", "-c",
             "-d", os.path.join(self.dumpdir, "%M."), *flags,
             "127.0.0.1:%d" % self.port, str(backlog)],
            stdin=subprocess.DEVNULL, stdout=self.log_fd,
            stderr=self.log_fd)
        try:
            wait_listening(self.port, self.proc, what="smtp-sink",
                           log=self.log_text)
        except BaseException:
            self.stop()
            raise

    def log_text(self):
        with open(self.logfile, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def dumps(self):
        out = []
        for name in sorted(os.listdir(self.dumpdir)):
            with open(os.path.join(self.dumpdir, name), "rb") as f:
                out.append(f.read())
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_fd.close()
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------
# aiosmtpd

class AiosmtpdBackend:
    """AiosmtpdBackend - aiosmtpd in this process, recording envelopes.
    tls_ctx offers STARTTLS; implicit_ctx makes it TLS from the first byte."""

    def __init__(self, tls_ctx=None, implicit_ctx=None):
        from aiosmtpd.controller import Controller

        backend = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                backend.envelopes.append(envelope)
                transport = getattr(server, "transport", None)
                backend.sessions_tls.append(
                    session.ssl is not None or (
                        transport is not None and
                        transport.get_extra_info("ssl_object") is not None))
                return "250 2.0.0 Ok: recorded by aiosmtpd"

        self.envelopes = []
        self.sessions_tls = []
        self.port = free_port()
        kwargs = dict(hostname="127.0.0.1", port=self.port,
                      server_hostname="aiosmtpd.test", enable_SMTPUTF8=True,
                      decode_data=False, ident="aiosmtpd-backend")
        if tls_ctx is not None:
            kwargs.update(tls_context=tls_ctx, require_starttls=False)
        if implicit_ctx is not None:
            kwargs.update(ssl_context=implicit_ctx)
        self.controller = Controller(Handler(), **kwargs)
        self.controller.start()
        wait_listening(self.port, what="aiosmtpd")

    def wait_messages(self, n=1, timeout=TIMEOUT):
        wait_for(lambda: len(self.envelopes) >= n, timeout,
                 what="%d message(s) at aiosmtpd" % n)
        return self.envelopes

    def stop(self):
        self.controller.stop()


# --------------------------------------------------------------------------
# small assertion helpers shared by the test files

def expect(reply, code, enhanced=None):
    """expect - assert a reply's code (and enhanced status code)."""
    assert reply.code == code, "want %d%s, got %r" % (
        code, " " + enhanced if enhanced else "", reply)
    if enhanced is not None:
        assert reply.enhanced == enhanced, "want %d %s, got %r" % (
            code, enhanced, reply)
    return reply


_token_counter = [0]


def smtp_code_in(text, code):
    """True when TEXT (a client transcript or a mail log) holds an SMTP
    reply with CODE, such as "503 5.5.1" or "503-...": a bare substring test
    would also match process ids ("qmgr[6503]") and queue ids."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return re.search(r"(?<![\w.\[])%d[ -]" % code, text) is not None


def unique_token(prefix="tok"):
    """unique_token - a string that occurs nowhere else (message ids)."""
    _token_counter[0] += 1
    return "%s-%d-%d-%s" % (prefix, os.getpid(), _token_counter[0],
                            os.urandom(4).hex())


def log_fields(line):
    """log_fields - key=value pairs of one log line (values may be
    double-quoted; the quotes are removed)."""
    out = {}
    for m in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line):
        v = m.group(2)
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1]
        out[m.group(1)] = v
    return out


def normalize_bare_newlines(content):
    """normalize_bare_newlines - DATA content (dot-stuffed, up to the CRLF
    before the final ".") as a proxy that repairs bare line ends sends it:
    lines end at CRLF, bare LF or bare CR; every line end becomes CRLF; a
    "." starting a line after a bare line end is stuffed, and so is a line
    "." ended by a bare line end.  Tests accept either this or the bytes
    exactly as sent: both keep CRLF.CRLF the only end of the message."""
    out = bytearray()
    prev_bare = False
    for m in re.finditer(rb"([^\r\n]*)(\r\n|\n|\r(?!\n))", content):
        line, end = m.group(1), m.group(2)
        bare = end != b"\r\n"
        if line.startswith(b"."):
            if prev_bare or (line == b"." and bare):
                line = b"." + line
        out += line + b"\r\n"
        prev_bare = bare
    return bytes(out)


def assert_same_content(got, sent):
    """assert_same_content - got is the DATA content exactly as sent, or
    as normalize_bare_newlines() makes it."""
    assert got in (sent, normalize_bare_newlines(sent)), (
        "content changed:\n sent %r\n  got %r" % (sent, got))
