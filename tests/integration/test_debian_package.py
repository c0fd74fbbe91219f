"""test_debian_package.py - the Debian package (cpack -G DEB) installs
into a clean Debian 12 root with apt-get, creates its system user, starts
nothing, and its proxy checks a configuration there.

The clean root is made once with debootstrap and kept outside the
repository ($STARTTLS_PROXY_TEST_CACHE, default
/var/cache/starttls-proxy-tests); each run installs into an overlay of it,
so the cached root stays clean.  Needs root and Debian's archive.
"""
import glob
import os
import shutil
import subprocess
import tempfile

import pytest

from harness import require_program

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

CACHE = os.environ.get("STARTTLS_PROXY_TEST_CACHE",
                       "/var/cache/starttls-proxy-tests")
ROOT = os.path.join(CACHE, "bookworm-minbase")
MIRROR = "http://deb.debian.org/debian"
SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# what the package needs besides minbase: present, so that apt-get
# installs the .deb without fetching anything
INCLUDE = "adduser,libuv1,libinih1,libssl3"


def run(argv, timeout=600, **kw):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout, **kw)
    return p.returncode, p.stdout.decode(errors="replace")


def clean_root():
    """clean_root - a Debian 12 minbase root, made once."""
    if os.path.exists(os.path.join(ROOT, ".complete")):
        return ROOT
    debootstrap = require_program("debootstrap")
    os.makedirs(CACHE, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="bookworm-", dir=CACHE)
    rc, out = run([debootstrap, "--variant=minbase", "--include=" + INCLUDE,
                   "bookworm", tmp, MIRROR], timeout=1200)
    if rc != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError("debootstrap bookworm failed:\n" + out[-3000:])
    os.chmod(tmp, 0o755)
    open(os.path.join(tmp, ".complete"), "w").close()
    shutil.rmtree(ROOT, ignore_errors=True)
    os.rename(tmp, ROOT)
    return ROOT


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """The package, built from this source tree as an administrator
    would (README "Building by hand")."""
    b = str(tmp_path_factory.mktemp("deb-build"))
    rc, out = run(["cmake", "-S", SRC, "-B", b, "-DCMAKE_INSTALL_PREFIX=/usr",
                   "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
    assert rc == 0, out
    rc, out = run(["cmake", "--build", b, "-j2"], timeout=900)
    assert rc == 0, out[-3000:]
    rc, out = run(["cpack", "-G", "DEB"], cwd=b)
    assert rc == 0, out
    debs = glob.glob(os.path.join(b, "starttls-proxy_*.deb"))
    assert len(debs) == 1, (debs, out)
    return debs[0]


@pytest.fixture
def root(tmp_path):
    """An overlay of the clean root (a copy where overlayfs cannot be
    mounted), with /proc; gone afterwards."""
    lower = clean_root()
    up, work, merged = (tmp_path / "up", tmp_path / "work",
                        tmp_path / "merged")
    for d in (up, work, merged):
        d.mkdir()
    rc, out = run(["mount", "-t", "overlay", "overlay", "-o",
                   "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, up, work),
                   str(merged)])
    overlay = rc == 0
    if not overlay:
        merged.rmdir()
        rc, out = run(["cp", "-a", lower, str(merged)])
        assert rc == 0, out
    rc, out = run(["mount", "-t", "proc", "proc", str(merged / "proc")])
    try:
        assert rc == 0, out
        yield str(merged)
    finally:
        run(["umount", str(merged / "proc")])
        if overlay:
            run(["umount", str(merged)])


def processes_in(root):
    """pids of processes whose root directory is root."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink("/proc/%s/root" % d) == root:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def test_installs_creates_user_starts_nothing_and_checks(deb, root, certs):
    shutil.copy(deb, os.path.join(root, "tmp"))
    rc, out = run(["chroot", root, "apt-get", "install", "-y",
                   "/tmp/" + os.path.basename(deb)],
                  env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    assert rc == 0, out[-3000:]
    rc, out = run(["chroot", root, "getent", "passwd", "starttls-proxy"])
    assert rc == 0, "no system user starttls-proxy: " + out
    fields = out.strip().split(":")
    assert int(fields[2]) < 1000 and fields[6].endswith("nologin"), out
    assert processes_in(root) == [], "something was started"
    for path in ("usr/sbin/starttls-proxy",
                 "usr/lib/systemd/system/starttls-proxy.service",
                 "usr/share/man/man8/starttls-proxy.8",
                 "usr/share/man/man5/starttls-proxy.ini.5",
                 "etc/starttls-proxy/starttls-proxy.ini"):
        assert os.path.exists(os.path.join(root, path)), path
    rc, out = run(["chroot", root, "dpkg-query", "-W", "-f",
                   "${Conffiles}", "starttls-proxy"])
    assert "/etc/starttls-proxy/starttls-proxy.ini" in out, out
    # a configuration of the administrator's, checked by the installed
    # proxy: certificate and key readable by root only
    etc = os.path.join(root, "etc/starttls-proxy")
    shutil.copy(certs.proxy_cert, os.path.join(etc, "cert.pem"))
    shutil.copy(certs.proxy_key, os.path.join(etc, "key.pem"))
    os.chmod(os.path.join(etc, "key.pem"), 0o600)
    with open(os.path.join(etc, "test.ini"), "w") as f:
        f.write("[proxy]\nhostname = mx.example.com\nuser = starttls-proxy\n"
                "[smtp]\nlisten = 127.0.0.1:2525\nbackend = 127.0.0.1:10025\n"
                "cert = /etc/starttls-proxy/cert.pem\n"
                "key = /etc/starttls-proxy/key.pem\n")
    rc, out = run(["chroot", root, "starttls-proxy", "-t", "-c",
                   "/etc/starttls-proxy/test.ini"])
    assert rc == 0 and "syntax is ok" in out, out
    # purge takes the user away again
    rc, out = run(["chroot", root, "apt-get", "purge", "-y",
                   "starttls-proxy"],
                  env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    assert rc == 0, out[-2000:]
    rc, _ = run(["chroot", root, "getent", "passwd", "starttls-proxy"])
    assert rc != 0, "the user outlived the purge"
