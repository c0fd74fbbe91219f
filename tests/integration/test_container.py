"""test_container.py - docker/Dockerfile builds with podman from a Debian 12
base made here, and its image relays a message over STARTTLS to a backend
on the host's loopback, reloads on SIGHUP and drains on SIGTERM as PID 1.

No registry is reachable: the base image (localhost/debian:12-slim) is
made with debootstrap --variant=minbase from the host's Debian mirror and
imported into a podman store of our own, kept outside the repository
($STARTTLS_PROXY_TEST_CACHE/podman, default
/var/cache/starttls-proxy-tests/podman), so a second run reuses the base
and the build's apt layers; without it the test makes everything again.
The build's apt uses the host's Debian sources (copied into the base) over
--network host.  Needs root.

What podman needs on this kind of machine (every flag is in PODMAN and
RUN_FLAGS, with the reason):
- --runtime runc: crun 1.8 refuses a hybrid cgroup layout ("cgroups in
  hybrid mode not supported, drop all controllers from cgroupv2": v1
  hierarchies plus a cgroup2 mount with the hugetlb controller);
- --ulimit nofile/nproc no higher than our own: podman's default
  (1048576) is above the hard limit, and without CAP_SYS_RESOURCE
  setrlimit fails with "operation not permitted";
- --cgroup-manager cgroupfs and --events-backend file (no systemd as
  PID 1 of the machine).
Where podman cannot run a container at all, the test skips and prints
podman's exact error.

Only run in the normal build tree (tests/CMakeLists.txt): the image is
built from source, so the ASan tree would only build the same image again.
"""
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from harness import (PROXY_CN, SMTPClient, client_tls_context, free_port,
                     is_listening, require_program, unique_token, wait_for)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

CACHE = os.environ.get("STARTTLS_PROXY_TEST_CACHE",
                       "/var/cache/starttls-proxy-tests")
STORE = os.path.join(CACHE, "podman")
BASE = "localhost/debian:12-slim"
IMAGE = "localhost/starttls-proxy:test"
SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKERFILE = os.path.join(SRC, "docker", "Dockerfile")
DRAIN = 20                       # drain_timeout in the container


def _limits():
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = min(nofile, 65536) if nofile != resource.RLIM_INFINITY \
        else 65536
    # our own hard nproc limit is refused too (runc: "error setting rlimit
    # type 6"); a container needs few processes
    return ["--ulimit", "nofile=%d:%d" % (nofile, nofile),
            "--ulimit", "nproc=4096:4096"]


def podman_argv():
    return [require_program("podman"),
            "--root", os.path.join(STORE, "storage"),
            "--runroot", "/run/starttls-proxy-tests-podman",
            "--storage-driver", "overlay",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--runtime", require_program("runc", paths=("/usr/sbin",
                                                         "/usr/bin"))]


def run(argv, timeout=900, **kw):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout, **kw)
    return p.returncode, p.stdout.decode(errors="replace")


def host_debian_sources():
    """The host's Debian apt sources (not third-party ones), as
    (file name, text), and the first mirror URI in them."""
    for path in ("/etc/apt/sources.list.d/debian.sources",):
        if os.path.exists(path):
            text = open(path).read()
            m = re.search(r"^URIs:\s*(\S+)", text, re.M)
            if m:
                return [("sources.list.d/debian.sources", text)], m.group(1)
    lines = [ln for ln in open("/etc/apt/sources.list")
             if re.match(r"^deb\s+\S+\s+bookworm", ln)] \
        if os.path.exists("/etc/apt/sources.list") else []
    if lines:
        return [("sources.list", "".join(lines))], lines[0].split()[1]
    mirror = "http://deb.debian.org/debian"
    return [("sources.list", "deb %s bookworm main\n" % mirror)], mirror


def image_exists(name):
    rc, _ = run(podman_argv() + ["image", "exists", name])
    return rc == 0


def make_base():
    """localhost/debian:12-slim: Debian 12 minbase with the host's Debian
    sources, imported once into our store."""
    if image_exists(BASE):
        return
    debootstrap = require_program("debootstrap")
    sources, mirror = host_debian_sources()
    os.makedirs(CACHE, exist_ok=True)
    root = tempfile.mkdtemp(prefix="bookworm-oci-", dir=CACHE)
    try:
        rc, out = run([debootstrap, "--variant=minbase", "bookworm", root,
                       mirror], timeout=1200)
        assert rc == 0, "debootstrap bookworm failed:\n" + out[-3000:]
        for name in ("sources.list", "sources.list.d/debian.sources"):
            p = os.path.join(root, "etc/apt", name)
            if os.path.exists(p):
                os.unlink(p)
        for name, text in sources:
            with open(os.path.join(root, "etc/apt", name), "w") as f:
                f.write(text)
        run(["chroot", root, "apt-get", "clean"])
        for d in ("var/lib/apt/lists", "var/cache/apt"):
            run(["find", os.path.join(root, d), "-type", "f", "-delete"])
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."],
                               stdout=subprocess.PIPE)
        imp = subprocess.run(podman_argv() + ["import", "-", BASE],
                             stdin=tar.stdout, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=600)
        tar.stdout.close()
        assert tar.wait() == 0 and imp.returncode == 0, \
            "podman import failed:\n" + imp.stdout.decode(errors="replace")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def image():
    make_base()
    # can this machine run a container at all?
    rc, out = run(podman_argv() + ["run", "--rm", "--network", "host"] +
                  _limits() + [BASE, "true"], timeout=120)
    if rc != 0:
        pytest.skip("podman cannot run a container here: " + out.strip())
    t0 = time.monotonic()
    rc, out = run(podman_argv() + ["build", "--network", "host",
                                   "--pull=never"] + _limits() +
                  ["--build-arg", "BASE=" + BASE, "-f", DOCKERFILE,
                   "-t", IMAGE, SRC], timeout=1500)
    assert rc == 0, "podman build failed:\n" + out[-4000:]
    print("podman build: %.0f s" % (time.monotonic() - t0))
    return IMAGE


@pytest.fixture
def confdir(tmp_path, certs):
    """A configuration directory as docker/README.md says: ini, cert.pem,
    key.pem readable by UID 2525."""
    d = tmp_path / "etc"
    d.mkdir()
    shutil.copy(certs.proxy_cert, d / "cert.pem")
    shutil.copy(certs.proxy_key, d / "key.pem")
    os.chown(d / "key.pem", 2525, 2525)
    os.chmod(d / "key.pem", 0o600)
    os.chmod(d, 0o755)
    return d


def write_config(d, port, backend_port, metrics_port):
    with open(d / "starttls-proxy.ini", "w") as f:
        f.write("[proxy]\nhostname = mx.container.test\n"
                "drain_timeout = %d\nmetrics_listen = 127.0.0.1:%d\n"
                "[smtp]\nlisten = 127.0.0.1:%d\nbackend = 127.0.0.1:%d\n"
                "cert = /etc/starttls-proxy/cert.pem\n"
                "key = /etc/starttls-proxy/key.pem\n"
                % (DRAIN, metrics_port, port, backend_port))
    os.chmod(d / "starttls-proxy.ini", 0o644)


@pytest.fixture
def container():
    names = []

    def start(image, confdir, *extra):
        name = "starttls-proxy-test-%d-%d" % (os.getpid(), len(names))
        run(podman_argv() + ["rm", "-f", name])
        rc, out = run(podman_argv() + [
            "run", "-d", "--name", name, "--network", "host"] + _limits() +
            ["-v", "%s:/etc/starttls-proxy:ro" % confdir] + list(extra) +
            [image], timeout=120)
        assert rc == 0, "podman run failed:\n" + out
        names.append(name)
        return name
    yield start
    for name in names:
        run(podman_argv() + ["rm", "-f", "-t", "0", name])


def logs(name):
    return run(podman_argv() + ["logs", name])[1]


def state(name, field):
    rc, out = run(podman_argv() + ["inspect", "--format",
                                   "{{.State.%s}}" % field, name])
    assert rc == 0, out
    return out.strip()


def health_cmd(metrics_port):
    """The Dockerfile's HEALTHCHECK command, with the metrics port the test
    uses in place of 9325 (the rest is taken from the Dockerfile, so a
    change there is tested)."""
    text = open(DOCKERFILE).read()
    m = re.search(r'^HEALTHCHECK .*?CMD (\[[^\n]*\])$', text, re.S | re.M)
    assert m, "no HEALTHCHECK in docker/Dockerfile"
    argv = json.loads(m.group(1))
    assert "127.0.0.1/9325" in argv[-1], argv
    argv[-1] = argv[-1].replace("127.0.0.1/9325",
                                "127.0.0.1/%d" % metrics_port)
    return json.dumps(argv)


def wait_up(name, port):
    def up():
        if state(name, "Running") != "true":
            raise AssertionError("the container stopped (exit code %s):\n%s"
                                 % (state(name, "ExitCode"), logs(name)))
        return is_listening(port)
    wait_for(up, timeout=30, what="the container's proxy on port %d" % port)


def test_image_relays_starttls_reloads_and_drains_as_pid1(
        image, confdir, container, aiosmtpd_backend, certs):
    swaks = require_program("swaks")
    backend = aiosmtpd_backend()
    port = free_port()
    # the image's HEALTHCHECK asks 127.0.0.1:9325; with the host's network
    # that port may be taken, so the test's own port is set in its place
    metrics_port = free_port()
    write_config(confdir, port, backend.port, metrics_port)
    name = container(image, confdir, "--health-cmd",
                     health_cmd(metrics_port))
    wait_up(name, port)

    # the image's health check command answers healthy (no systemd timer
    # runs it here, so it is run by hand)
    rc, out = run(podman_argv() + ["healthcheck", "run", name], timeout=60)
    assert rc == 0, "healthcheck: %d %s" % (rc, out)

    # the proxy is PID 1 and runs as the image's unprivileged user
    rc, out = run(podman_argv() + ["exec", name, "sh", "-c",
                                   "tr '\\0' ' ' </proc/1/cmdline; echo; "
                                   "grep '^Uid:' /proc/1/status"])
    assert rc == 0, out
    assert out.startswith("/usr/local/sbin/starttls-proxy -c "
                          "/etc/starttls-proxy/starttls-proxy.ini"), out
    assert re.search(r"^Uid:\s+2525\s", out, re.M), out

    # one message with swaks over STARTTLS, verified against the test CA
    token = unique_token("container")
    rc, out = run([swaks, "--server", "127.0.0.1", "--port", str(port),
                   "--tls", "--tls-verify", "--tls-ca-path", certs.ca,
                   "--ehlo", "client.test", "--from", "s@client.test",
                   "--to", "container@test.example",
                   "--header", "Subject: " + token], timeout=60)
    assert rc == 0, out
    assert re.search(r"=== TLS started with cipher TLSv1\.[23]", out), out
    assert '=== TLS peer DN="/CN=%s"' % PROXY_CN in out, out
    assert "<~  250 2.0.0 Ok: recorded by aiosmtpd" in out, out
    env = backend.wait_messages(1)[0]
    assert token.encode() in env.content
    assert env.rcpt_tos == ["container@test.example"]

    # reload: SIGHUP to PID 1, and starttls-proxy -s reload inside (its
    # pid_file directory is the image's /run/starttls-proxy)
    rc, out = run(podman_argv() + ["kill", "-s", "HUP", name])
    assert rc == 0, out
    wait_for(lambda: "event=reload result=ok" in logs(name),
             what="a reload after SIGHUP")
    rc, out = run(podman_argv() + ["exec", name, "starttls-proxy", "-s",
                                   "reload", "-c",
                                   "/etc/starttls-proxy/starttls-proxy.ini"],
                  timeout=60)
    assert rc == 0, out

    # drain: a message in flight when podman stop sends SIGTERM to PID 1
    # finishes, then 421; the proxy exits 0 before the stop timeout
    c = SMTPClient(port)
    c.greeting()
    c.ehlo()
    c.starttls(client_tls_context(certs.ca))
    c.ehlo()
    assert c.cmd("MAIL FROM:<s@client.test>").code == 250
    assert c.cmd("RCPT TO:<drain@test.example>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(b"Subject: drain\r\n\r\nfirst half\r\n")
    stopped = {}

    def stop():
        t0 = time.monotonic()
        stopped["rc"], stopped["out"] = run(
            podman_argv() + ["stop", "-t", str(DRAIN + 20), name],
            timeout=DRAIN + 60)
        stopped["s"] = time.monotonic() - t0
    t = threading.Thread(target=stop)
    t.start()
    try:
        # SIGTERM arrived: it stops accepting at once
        wait_for(lambda: not is_listening(port), timeout=15,
                 what="the listener closed after SIGTERM")
        c.send(b"second half\r\n.\r\n")
        r = c.read_reply()
        assert r.code == 250, "end of data in the drain: %r" % r
        r = c.read_reply()
        assert r.code == 421, "after the drained message: %r" % r
        c.close()
    finally:
        t.join()
    assert stopped["rc"] == 0, stopped["out"]
    assert stopped["s"] < DRAIN, "podman stop took %.1f s" % stopped["s"]
    assert state(name, "ExitCode") == "0", logs(name)
    assert len(backend.wait_messages(2)) == 2
    assert b"second half" in backend.envelopes[1].content
    # no stop timeout passed: it was not SIGKILLed
    assert "SIGKILL" not in stopped["out"], stopped["out"]
