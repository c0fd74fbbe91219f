"""
OpenSMTPD as the backend (issue 8, section 4), for real: OpenSMTPD 7.6
from Debian 13, in a root made with debootstrap, listening on loopback
with STARTTLS.  It refuses a repeated EHLO ("503 5.5.1 Invalid command:
Already identified"); through the proxy every client must still deliver.

The root is built once and kept outside the repository (in
$STARTTLS_PROXY_TEST_CACHE, default /var/cache/starttls-proxy-tests); a
run without it builds it (debootstrap, about 30 s).  Needs root (chroot)
and Debian's archive.
"""

import os
import shutil
import signal
import smtplib
import subprocess
import tempfile

import pytest

from harness import (TIMEOUT, SMTPClient, expect, free_port, require_program,
                     smtp_code_in, unique_token, wait_for, wait_listening)
from test_shield_reehlo import RelayingPostfix, run

CACHE = os.environ.get("STARTTLS_PROXY_TEST_CACHE",
                       "/var/cache/starttls-proxy-tests")
ROOT = os.path.join(CACHE, "trixie-opensmtpd")
MIRROR = "http://deb.debian.org/debian"

SMTPD_CONF = """\
pki backend.test cert "{d}/backend.pem"
pki backend.test key "{d}/backend.key"
table vusers file:{d}/vusers
listen on 127.0.0.1 port {port} tls pki backend.test hostname backend.test
action "deliver" mda "/bin/sh -c 'cat >> {d}/mail/box'" virtual <vusers>
match from any for domain {{ "test.example", "relay.example" }} action "deliver"
"""


def build_root():
    """build_root - a Debian 13 minbase root with OpenSMTPD, made once."""
    if os.path.exists(os.path.join(ROOT, ".complete")):
        return ROOT
    if os.geteuid() != 0:
        raise RuntimeError("the OpenSMTPD test needs root (debootstrap, "
                           "chroot)")
    debootstrap = require_program("debootstrap")
    os.makedirs(CACHE, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="trixie-", dir=CACHE)
    p = subprocess.run([debootstrap, "--variant=minbase",
                        "--include=opensmtpd", "trixie", tmp, MIRROR],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=1200)
    if p.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError("debootstrap trixie failed:\n%s"
                           % p.stdout.decode(errors="replace")[-3000:])
    os.chmod(tmp, 0o755)   # mkdtemp's 0700 would lock smtpd's users out
    open(os.path.join(tmp, ".complete"), "w").close()
    shutil.rmtree(ROOT, ignore_errors=True)
    os.rename(tmp, ROOT)
    return ROOT


class OpenSMTPD:
    """OpenSMTPD - smtpd -d in the trixie root, its files in a directory
    of its own inside the root, on a picked loopback port."""

    def __init__(self, root, certs):
        self.root = root
        self.rel = tempfile.mkdtemp(prefix="smtpd-test-",
                                    dir=os.path.join(root, "var/tmp"))
        self.d = "/" + os.path.relpath(self.rel, root)
        os.chmod(self.rel, 0o755)
        os.mkdir(os.path.join(self.rel, "mail"))
        os.chmod(os.path.join(self.rel, "mail"), 0o777)
        shutil.copy(certs.backend_cert, os.path.join(self.rel, "backend.pem"))
        shutil.copy(certs.backend_key, os.path.join(self.rel, "backend.key"))
        os.chmod(os.path.join(self.rel, "backend.key"), 0o600)
        # libtls wants a CA file even for a server that asks no certificate
        os.makedirs(os.path.join(root, "etc/ssl/certs"), exist_ok=True)
        shutil.copy(certs.ca, os.path.join(root,
                                           "etc/ssl/certs/ca-certificates.crt"))
        with open(os.path.join(self.rel, "vusers"), "w") as f:
            f.write("@test.example nobody\n@relay.example nobody\n")
        self.port = free_port()
        conf = os.path.join(self.rel, "smtpd.conf")
        with open(conf, "w") as f:
            f.write(SMTPD_CONF.format(d=self.d, port=self.port))
        self.logfile = os.path.join(self.rel, "smtpd.log")
        self.log_fd = open(self.logfile, "wb")
        self.proc = subprocess.Popen(
            ["chroot", root, "/usr/sbin/smtpd", "-d", "-f",
             self.d + "/smtpd.conf"],
            stdin=subprocess.DEVNULL, stdout=self.log_fd,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(self.port, self.proc, what="OpenSMTPD",
                           log=self.log_text)
        except BaseException:
            self.stop()
            raise

    def log_text(self):
        with open(self.logfile, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def mbox_text(self):
        try:
            with open(os.path.join(self.rel, "mail", "box"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_message(self, token):
        wait_for(lambda: token in self.mbox_text(),
                 what="the message in OpenSMTPD's mailbox")
        assert self.mbox_text().count("Subject: " + token) == 1

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log_fd.close()
        shutil.rmtree(self.rel, ignore_errors=True)


@pytest.fixture(scope="module")
def trixie_root():
    return build_root()


@pytest.fixture
def opensmtpd(trixie_root, certs):
    running = []

    def start():
        s = OpenSMTPD(trixie_root, certs)
        running.append(s)
        return s
    yield start
    for s in running:
        s.stop()


def verify(certs):
    return dict(backend_tls="verify", backend_ca_file=certs.ca,
                backend_verify_name="backend.test")


def test_opensmtpd_refuses_a_second_ehlo_itself(opensmtpd):
    s = opensmtpd()
    c = SMTPClient(s.port, expect_cn=None)
    c.greeting()
    c.ehlo()
    r = c.cmd("EHLO again.test")
    expect(r, 503, "5.5.1")
    assert "Already identified" in r.text, r
    c.close()


@pytest.mark.parametrize("backend_tls", ["none", "verify"])
def test_swaks_through_the_proxy_to_opensmtpd(proxy, opensmtpd, certs,
                                              backend_tls):
    swaks = require_program("swaks")
    s = opensmtpd()
    p = proxy(s.port, **(verify(certs) if backend_tls == "verify"
                         else {"backend_tls": "none"}))
    token = unique_token("swaks-opensmtpd")
    rc, out = run([swaks, "--server", "127.0.0.1", "--port", str(p.port),
                   "--tls", "--tls-verify", "--tls-ca-path", certs.ca,
                   "--ehlo", "client.test", "--from", "s@client.test",
                   "--to", "r@test.example", "--header", "Subject: " + token])
    assert rc == 0, out + s.log_text()
    assert "<-  220 backend.test ESMTP OpenSMTPD" in out, out
    assert not smtp_code_in(out, 503), out
    s.wait_message(token)
    if backend_tls == "verify":
        assert "smtp tls ciphers=TLSv1.3" in s.log_text(), s.log_text()


def test_smtplib_through_the_proxy_to_opensmtpd(proxy, opensmtpd, certs,
                                                client_ctx):
    s = opensmtpd()
    p = proxy(s.port, **verify(certs))
    token = unique_token("smtplib-opensmtpd")
    with smtplib.SMTP("127.0.0.1", p.port, local_hostname="client.test",
                      timeout=TIMEOUT) as c:
        c.starttls(context=client_ctx)
        assert c.sendmail("s@client.test", ["r@test.example"],
                          "Subject: %s\r\n\r\nx\r\n" % token) == {}
    s.wait_message(token)


def test_postfix_relays_through_the_proxy_to_opensmtpd(proxy, opensmtpd,
                                                       certs):
    s = opensmtpd()
    p = proxy(s.port, **verify(certs))
    pf = RelayingPostfix(certs, p.port)
    try:
        token = unique_token("postfix-opensmtpd")
        c = SMTPClient(pf.port, expect_cn=None)
        c.greeting()
        c.ehlo()
        expect(c.mail(rcpts=["r@relay.example"],
                      body=("Subject: %s\r\n\r\nx\r\n" % token).encode()), 250)
        c.quit()
        s.wait_message(token)
        pf.wait_log(r"to=<r@relay\.example>, relay=127\.0\.0\.1.*status=sent")
        assert not smtp_code_in(pf.log_text(), 503)
    finally:
        pf.stop()
