"""
httpsd.py - HTTPS policy hosts (MTA-STS, TLSRPT) for the integration tests.

One nginx on 127.0.0.1:<port> serves several host names, each with its own
certificate (SNI).  A name with no site fails the TLS handshake
(ssl_reject_handshake); a request whose Host names no site gets 421.

    web = PolicyHosts(str(tmp_path / "https"))
    web.site("mta-sts.example", cert, key)      # e.g. from issue_cert()
    web.policy("mta-sts.example", "version: STSv1\\r\\nmode: enforce\\r\\n...")
    web.receiver("mta-sts.example")                 # POST .../tlsrpt
    with web:
        ...
        web.policy("mta-sts.example", "gone", status=404)
        web.reload()            # returns once only the new config answers
        web.requests("mta-sts.example"), web.posts("mta-sts.example")

Everything (config, logs, pid, temp files, bodies) lives in workdir; no
Debian config is read.  Policy bodies are files, written per generation at
start()/reload().  A receiver reads the body into a file it keeps
(client_body_in_file_only) and proxies only the headers to a plain HTTP
helper server on 127.0.0.1:<sink_port>, which answers the status.  The
access log is JSON.  nginx logs a request just after it sent the response,
so requests() and posts() first ask the single worker for /barrier on the
helper port: once that is answered, every earlier response is logged.
"""

import http.client
import json
import os
import signal
import subprocess
import time

from harness import TIMEOUT, free_port, require_program, wait_for, \
    wait_listening

POLICY_PATH = "/.well-known/mta-sts.txt"
REDIRECTS = (301, 302, 303, 307, 308)

# worker_processes 1: the /barrier of _log() relies on it.  ssl_protocols:
# nginx before 1.23.4 leaves TLSv1.3 off by default.
MAIN = """\
{user}daemon off;
worker_processes 1;
worker_shutdown_timeout 5s;
pid {w}/nginx.pid;
lock_file {w}/nginx.lock;
error_log {w}/error.log info;
events {{ worker_connections 256; }}
http {{
  types {{ }}
  default_type application/octet-stream;
  ssl_protocols TLSv1.2 TLSv1.3;
  client_body_temp_path {w}/body;
  proxy_temp_path {w}/tmp;
  fastcgi_temp_path {w}/tmp;
  uwsgi_temp_path {w}/tmp;
  scgi_temp_path {w}/tmp;
  log_format httpsd escape=json '{{"host":"$host","sni":"$ssl_server_name",'
      '"method":"$request_method","path":"$request_uri","status":"$status",'
      '"content_type":"$content_type","body_file":"$request_body_file"}}';
  access_log {w}/access.log httpsd;
  server {{
    listen 127.0.0.1:{port} ssl default_server;
    ssl_reject_handshake on;
    return 421;
  }}
  server {{
    listen 127.0.0.1:{sink};
    access_log off;
    location / {{ return 404; }}
    location = /barrier {{ return 204; }}
{statuses}  }}
{servers}}}
"""

SERVER = """\
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name {name};
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ return 404; }}
{locations}  }}
"""

RECEIVER = """\
    location = {path} {{
      client_body_in_file_only on;
      client_max_body_size 16m;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_pass http://127.0.0.1:{sink}/status/{status};
    }}
"""


def _q(s):
    """s as a double-quoted nginx config string."""
    return '"%s"' % str(s).replace("\\", "\\\\").replace('"', '\\"')


def _group(pgid):
    """Pids of the live (not zombie) processes of process group pgid."""
    found = set()
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except (OSError, ValueError):
            continue
        fields = stat[stat.rfind(")") + 2:].split()   # after "pid (comm)"
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            found.add(int(pid))
    return found


class PolicyHosts:
    """nginx on 127.0.0.1:<port> serving HTTPS for several host names, each
    with its own certificate (SNI)."""

    def __init__(self, workdir):
        self.workdir = w = os.path.abspath(workdir)
        if set(w) & set(' \t\n"\';{}$\\#'):
            raise ValueError("workdir unfit for nginx.conf: %r" % w)
        for d in ("body", "tmp", "docs"):
            os.makedirs(os.path.join(w, d), exist_ok=True)
        self.port = free_port()
        self.sink_port = self.port
        while self.sink_port == self.port:
            self.sink_port = free_port()
        self.conf = os.path.join(w, "nginx.conf")
        self.error_log = os.path.join(w, "error.log")
        self.access_log = os.path.join(w, "access.log")
        if os.path.exists(self.access_log):
            os.unlink(self.access_log)      # requests() of this object only
        self._sites = {}        # name -> (cert, key)
        self._policies = {}     # name -> (body, type, status, location)
        self._receivers = {}    # (name, path) -> status
        self._gen = 0
        self._proc = None

    def site(self, name, cert, key):
        """A server block for name with that PEM cert (chain allowed) and
        key."""
        self._sites[name.lower()] = (os.path.abspath(cert),
                                     os.path.abspath(key))

    def policy(self, name, text, content_type="text/plain", status=200,
               location=None):
        """What GET https://name/.well-known/mta-sts.txt returns: text (str
        or bytes) with exactly that Content-Type; with location, a status
        redirect there; a status other than 200: that status with the
        body.  text=None: no policy (404)."""
        if text is None:
            self._policies.pop(name.lower(), None)
            return
        if location is not None and status not in REDIRECTS:
            raise ValueError("a redirect needs one of %r" % (REDIRECTS,))
        if location is None and status != 200 and not 300 <= status <= 599:
            raise ValueError("status %d with a body: not supported" % status)
        if isinstance(text, str):
            text = text.encode("utf-8")
        self._policies[name.lower()] = (text, content_type, status, location)

    def receiver(self, name, path="/tlsrpt", status=201):
        """POST https://name{path} is answered with status, its body and
        Content-Type are kept for posts()."""
        self._receivers[(name.lower(), path)] = status

    def _log(self):
        """Every access log entry so far, oldest first."""
        if self._proc is not None:
            conn = http.client.HTTPConnection("127.0.0.1", self.sink_port,
                                              timeout=TIMEOUT)
            try:
                conn.request("GET", "/barrier")
                conn.getresponse().read()
            finally:
                conn.close()
        try:
            with open(self.access_log, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line.decode("utf-8", "replace"))
                for line in lines if line]

    def requests(self, name=None):
        """[{"host", "method", "path", "status", "sni"}] from the access log,
        oldest first; path is the request target as sent."""
        name = name and name.lower()
        return [{"host": e["host"], "method": e["method"], "path": e["path"],
                 "status": int(e["status"]), "sni": e["sni"]}
                for e in self._log() if name in (None, e["host"])]

    def posts(self, name=None):
        """[{"host", "path", "content_type", "body", "status"}] of the POSTs
        to receivers so far, oldest first; body: the bytes as sent."""
        name, result = name and name.lower(), []
        for e in self._log():
            target = (e["host"], e["path"].split("?")[0])
            if e["method"] != "POST" or name not in (None, e["host"]) or \
                    target not in self._receivers:
                continue
            body = b""
            if e["body_file"]:
                with open(e["body_file"], "rb") as f:
                    body = f.read()
            result.append({"host": e["host"], "path": e["path"],
                           "content_type": e["content_type"], "body": body,
                           "status": int(e["status"])})
        return result

    def _locations(self, name, docs):
        """The policy and receiver locations of site name."""
        out = ""
        if name in self._policies:
            body, ctype, status, location = self._policies[name]
            path = os.path.join(docs, name)
            with open(path, "wb") as f:
                f.write(body)
            serve = "default_type %s; alias %s;" % (_q(ctype), _q(path))
            if location is not None:
                out += "    location = %s { return %d %s; }\n" % (
                    POLICY_PATH, status, _q(location))
            elif status == 200:
                out += "    location = %s { %s }\n" % (POLICY_PATH, serve)
            else:
                out += ("    location = %s { error_page %d /.body; "
                        "return %d; }\n"
                        "    location = /.body { internal; %s }\n"
                        % (POLICY_PATH, status, status, serve))
        for (host, path), status in sorted(self._receivers.items()):
            if host == name:
                out += RECEIVER.format(path=path, sink=self.sink_port,
                                       status=status)
        return out

    def _write_conf(self):
        """Write nginx.conf and this generation's policy bodies; check them
        with nginx -t."""
        missing = (set(self._policies) | {n for n, _ in self._receivers}) \
            - set(self._sites)
        if missing:
            raise ValueError("no site() for %s" % ", ".join(sorted(missing)))
        self._gen += 1
        docs = os.path.join(self.workdir, "docs", str(self._gen))
        os.makedirs(docs, exist_ok=True)
        servers = "".join(
            SERVER.format(port=self.port, name=name, cert=_q(cert),
                          key=_q(key), locations=self._locations(name, docs))
            for name, (cert, key) in sorted(self._sites.items()))
        statuses = "".join("    location = /status/%d { return %d; }\n"
                           % (s, s) for s in sorted(set(
                               self._receivers.values())))
        with open(self.conf, "w") as f:
            f.write(MAIN.format(
                user="user root;\n" if os.geteuid() == 0 else "",
                w=self.workdir, port=self.port, sink=self.sink_port,
                statuses=statuses, servers=servers))
        p = subprocess.run(self._argv() + ["-t"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=TIMEOUT)
        if p.returncode != 0:
            raise RuntimeError("nginx -t failed:\n" + p.stdout.decode())

    def _argv(self):
        # -e: nginx logs to its built-in error log path until it has read
        # the config; keep that in workdir too
        return [require_program("nginx"), "-p", self.workdir,
                "-c", self.conf, "-e", self.error_log]

    def _log_tail(self):
        try:
            with open(self.error_log) as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return "(no nginx error log)"

    def _workers(self):
        """Pids of the workers (start_new_session: the group is nginx's)."""
        return _group(self._proc.pid) - {self._proc.pid}

    def start(self):
        """Write the config, start nginx in a session of its own and wait
        until it listens and its worker runs."""
        if self._proc is not None:
            raise RuntimeError("nginx already started")
        self._write_conf()
        with open(os.path.join(self.workdir, "nginx.out"), "ab") as out:
            self._proc = subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            for port in (self.port, self.sink_port):
                wait_listening(port, self._proc, what="nginx",
                               log=self._log_tail)
            wait_for(self._workers, what="nginx worker")
        except BaseException:
            self.stop()
            raise

    def reload(self):
        """Apply site()/policy()/receiver() changes: SIGHUP, then wait until
        a new worker runs and every old one has exited (an old worker ends
        its open requests first, for at most worker_shutdown_timeout)."""
        if self._proc is None:
            raise RuntimeError("nginx not started")
        self._write_conf()
        old = self._workers()
        self._proc.send_signal(signal.SIGHUP)

        def done():
            if self._proc.poll() is not None:
                raise RuntimeError("nginx exited:\n" + self._log_tail())
            now = self._workers()
            return now and not now & old
        wait_for(done, what="nginx reload (old workers %s)" % sorted(old))

    def stop(self):
        """Stop nginx (fast shutdown; SIGKILL to its process group when that
        fails) and wait until none of its processes is left.  Safe to call
        more than once."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                if sig == signal.SIGTERM:
                    proc.send_signal(sig)       # the master ends its workers
                else:
                    os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
            deadline = time.monotonic() + 10
            while _group(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _group(proc.pid):
                return

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
