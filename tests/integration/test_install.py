"""test_install.py - `cmake --install` lays out what an administrator
expects, and the systemd units pass `systemd-analyze verify` (offline: no
systemd as PID 1 is needed for it)."""
import os
import shutil
import subprocess

import pytest

from harness import TIMEOUT

BIN = os.environ.get("STARTTLS_PROXY_BIN", "")
BUILD = os.path.dirname(os.path.abspath(BIN)) if BIN else ""

pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(BUILD, "CMakeCache.txt")),
    reason="STARTTLS_PROXY_BIN is not in a CMake build directory")


def install(prefix, destdir=None):
    env = dict(os.environ)
    if destdir is not None:
        env["DESTDIR"] = destdir
    return subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix],
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=TIMEOUT,
                          check=True).stdout.decode()


def test_layout_and_config_kept(tmp_path):
    prefix = str(tmp_path / "usr-local")
    install(prefix)
    for rel in ("sbin/starttls-proxy", "share/man/man8/starttls-proxy.8",
                "share/man/man5/starttls-proxy.ini.5",
                "lib/systemd/system/starttls-proxy.service",
                "lib/systemd/system/starttls-proxy.socket",
                "etc/starttls-proxy/starttls-proxy.ini"):
        assert os.path.isfile(os.path.join(prefix, rel)), rel
    assert os.access(os.path.join(prefix, "sbin/starttls-proxy"), os.X_OK)
    ini = os.path.join(prefix, "etc/starttls-proxy/starttls-proxy.ini")
    with open(ini, "a") as f:
        f.write("; the administrator's own edit\n")
    out = install(prefix)
    assert "Kept: " in out, out
    with open(ini) as f:
        assert f.read().endswith("; the administrator's own edit\n")


def test_system_prefix_puts_config_in_etc(tmp_path):
    root = str(tmp_path / "root")
    install("/usr", destdir=root)
    assert os.path.isfile(os.path.join(root, "etc/starttls-proxy/"
                                             "starttls-proxy.ini"))
    assert os.path.isfile(os.path.join(root, "usr/sbin/starttls-proxy"))


def verify(units, manpath):
    env = dict(os.environ, MANPATH=manpath, SYSTEMD_LOG_COLOR="0")
    return subprocess.run(["systemd-analyze", "verify"] + units, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=TIMEOUT)


@pytest.fixture
def units(tmp_path):
    """The installed units, with ExecStart pointing at the built binary
    (the configured sbin may not exist here), and a MANPATH with the
    installed pages (verify checks Documentation=man:...)."""
    prefix = str(tmp_path / "p")
    install(prefix)
    d = tmp_path / "units"
    d.mkdir()
    out = []
    for name in ("starttls-proxy.service", "starttls-proxy.socket"):
        with open(os.path.join(prefix, "lib/systemd/system", name)) as f:
            text = f.read()
        sbin = [l.split("=", 1)[1].split()[0] for l in text.splitlines()
                if l.startswith("ExecStart=")]
        for path in sbin:
            text = text.replace(path, os.path.abspath(BIN))
        (d / name).write_text(text)
        out.append(str(d / name))
    return out, os.path.join(prefix, "share/man")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_units_verify(units):
    files, manpath = units
    r = verify(files, manpath)
    assert r.returncode == 0 and r.stdout.strip() == b"", r.stdout.decode()
    with open(files[0]) as f:
        text = f.read()
    assert "Type=notify" in text and "ExecStartPre=" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_units_verify_catches_a_broken_unit(units):
    files, manpath = units
    with open(files[0]) as f:
        text = f.read()
    with open(files[0], "w") as f:
        f.write(text.replace("Type=notify", "Type=notifyy"))
    r = verify(files, manpath)
    assert b"notifyy" in r.stdout, r.stdout.decode()
