"""
test_tls_testssl.py - testssl.sh finds nothing rated HIGH or CRITICAL in the
client leg of the shipped default configuration (issue 3, section 6).

The proxy runs the [proxy] and service keys of config/starttls-proxy.ini as
shipped, with only listen, backend, cert and key replaced, in front of
smtp-sink.  Its certificate is made here, not taken from the suite's
`certs` fixture: testssl.sh also rates the certificate, and a 30-day test
certificate without a CRL URI is rated HIGH (cert_expirationStatus,
cert_revocation) whatever the TLS settings are.  This one is what a real
deployment has: RSA 2048 (most common, and the key type that makes the
ROBOT/DROWN/FREAK checks meaningful), valid for a year, with a CRL URI in
.invalid that nobody fetches (no --phone-out).

testssl.sh never touches the network: the target is an IP literal, --nodns
none forbids every DNS lookup, and without --phone-out it fetches no CRL and
asks no OCSP responder; it has no update check.  The full default run takes
about 10 minutes (its per-cipher and client-simulation sections: 370
ciphers one by one); the checks that rate settings run in about 2:
protocols (-p), cipher categories (-s), forward secrecy (-f), server
preference (-P), server defaults and certificate (-S), vulnerabilities (-U).

test_shipped_default_resumes_sessions checks by hand, with openssl
s_client -sess_out/-sess_in, what testssl.sh's resumption checks ask (its
ticket check has a client-side race in TLS 1.3: TESTSSL_TICKET_RACE).

Package: testssl.sh (Debian), binary /usr/bin/testssl.
"""

import configparser
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import harness

SHIPPED = os.path.join(harness.REPO, "config", "starttls-proxy.ini")
CHECKS = ["-p", "-s", "-f", "-P", "-S", "-U"]
TESTSSL_TIMEOUT = 600     # seconds; a normal run takes 2 to 6 minutes

# testssl.sh 3.0's ticket resumption check runs `openssl s_client -sess_out
# F </dev/null`, then `s_client -sess_in F`, in the protocol that brought
# the first session ticket.  When that is TLS 1.3 (whether it is depends on
# timing: the ticket comes after the handshake and s_client, at EOF on
# stdin, mostly closes before reading it), the first s_client again closes
# before the NewSessionTicket arrives (OpenSSL 3.0 s_client; the same
# against openssl s_server), F is never written, the second s_client stops
# at "Can't open session file" without connecting, and testssl reports
# this, and only this, finding.  The server is not involved: the second
# connection never reaches it.
TESTSSL_TICKET_RACE = ("sessionresumption_ticket",
                       "check failed because of connect problem")


def read_findings(path):
    """read_findings - testssl.sh's flat JSON findings; a file cut short by
    a killed scan (no closing bracket) is read up to its last finding."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return []
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return json.loads(text.rstrip(",") + "\n]")
    except ValueError:
        return []


def find_testssl():
    """find_testssl - testssl.sh's path (Debian installs it as testssl),
    or raise: a missing peer fails the suite."""
    for name in ("testssl", "testssl.sh"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("testssl.sh not installed (apt-get install testssl.sh)")


def shipped_keys():
    """shipped_keys - ([proxy] keys, the one service's keys) as shipped,
    without the keys a test has to replace."""
    cp = configparser.ConfigParser(interpolation=None,
                                   comment_prefixes=("#", ";"),
                                   inline_comment_prefixes=None)
    cp.optionxform = str
    cp.read(SHIPPED)
    services = [s for s in cp.sections() if s != "proxy"]
    assert len(services) == 1, "shipped config: services %r" % services
    svc = dict(cp[services[0]])
    for k in ("listen", "backend", "cert", "key"):
        svc.pop(k, None)
    return dict(cp["proxy"]), svc


def make_deploy_cert(d):
    """make_deploy_cert - a CA and an RSA 2048 leaf for localhost and
    127.0.0.1, valid a year, with a CRL distribution point; returns
    (ca, cert, key)."""
    def run(*args):
        p = subprocess.run(["openssl"] + list(args), cwd=d,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        assert p.returncode == 0, "openssl %s:\n%s" % (
            " ".join(args), p.stdout.decode())

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "400", "-subj", "/CN=testssl test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "crlDistributionPoints=URI:http://crl.invalid/ca.crl\n")
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key",
        "-out", "leaf.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey",
        "ca.key", "-CAcreateserial", "-days", "365", "-sha256",
        "-extfile", "leaf.ext", "-out", "leaf.pem")
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    os.chmod(d, 0o755)
    return (os.path.join(d, "ca.pem"), os.path.join(d, "leaf.pem"),
            os.path.join(d, "leaf.key"))


def test_testssl_shipped_default(proxy, smtp_sink, tmpdir_path):
    binary = find_testssl()
    ca, cert, key = make_deploy_cert(tmpdir_path)
    proxy_keys, svc_keys = shipped_keys()
    # nothing in the shipped service may touch TLS knobs we would not see
    assert not any(k.startswith(("client_tls_", "backend_tls_"))
                   for k in svc_keys), svc_keys
    sink = smtp_sink()
    p = proxy(sink.port, proxy_keys=proxy_keys, cert=cert, key=key,
              **svc_keys)
    jsonfile = os.path.join(tmpdir_path, "testssl.json")
    cmd = [binary, "--starttls", "smtp", "--quiet", "--color", "0",
           "--warnings", "batch", "--severity", "HIGH", "--nodns", "none",
           "--add-ca", ca, "--connect-timeout", "30", *CHECKS,
           "--jsonfile", jsonfile,
           "127.0.0.1:%d" % p.port]
    started = time.monotonic()
    run = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           cwd=tmpdir_path, start_new_session=True)
    try:
        out, _ = run.communicate(timeout=TESTSSL_TIMEOUT)
        timed_out = False
    except subprocess.TimeoutExpired:
        # testssl.sh and its openssl children: its own process group
        os.killpg(run.pid, signal.SIGKILL)
        out, _ = run.communicate()
        timed_out = True
    took = time.monotonic() - started
    out = out.decode("utf-8", "replace")
    findings = read_findings(jsonfile)
    context = "testssl exit %s after %.0fs\n%s\n--- proxy log ---\n%s" % (
        run.returncode, took, out, p.log_text()[-3000:])

    # first what was found (also from a scan cut short: a weak server
    # takes much longer, every offered cipher is tried)
    bad = [f for f in findings if f["severity"] in ("HIGH", "CRITICAL")]
    assert not bad, "testssl.sh findings rated HIGH or CRITICAL:\n%s\n%s" % (
        "\n".join("%s %s: %s" % (f["severity"], f["id"], f["finding"])
                  for f in bad), context)
    assert not timed_out, "testssl.sh still running after %ds\n%s" % (
        TESTSSL_TIMEOUT, context)

    # the scan ran to its end ("Done <date> [ 97s] -->> 127.0.0.1:port"),
    # with no scan problem (rated FATAL, or the scanProblem id) and no
    # WARN, but for the one a known client-side race makes (see
    # TESTSSL_TICKET_RACE); that resumption works is asserted by
    # test_shipped_default_resumes_sessions below.
    problems = [f for f in findings
                if f["severity"] == "FATAL" or f["id"] == "scanProblem" or
                (f["severity"] == "WARN" and
                 (f["id"], f.get("finding")) != TESTSSL_TICKET_RACE)]
    assert not problems, "%r\n%s" % (problems, context)
    assert re.search(r"^ Done .*\[\s*\d+s\] -->> 127\.0\.0\.1:%d"
                     % p.port, out, re.M), "scan did not finish\n" + context
    # ... and it talked TLS 1.3 and 1.2 through STARTTLS with the proxy
    log = p.log_text()
    assert re.search(r"event=client_tls tls=TLSv1\.3/", log), context
    assert re.search(r"event=client_tls tls=TLSv1\.2/", log), context


@pytest.mark.parametrize("ticket", [True, False], ids=["ticket", "id"])
@pytest.mark.parametrize("proto", ["-tls1_3", "-tls1_2"])
def test_shipped_default_resumes_sessions(proxy, smtp_sink, certs,
                                          tmpdir_path, proto, ticket):
    """What testssl.sh's resumption checks ask, without their race: a
    session from one STARTTLS connection (-sess_out) resumes on the next
    ones (-sess_in), by ticket and by session id (-no_ticket), in TLS 1.3
    and 1.2, with the shipped [proxy] and service settings.  s_client keeps
    reading until the proxy closes after QUIT (-ign_eof), so it has read
    the TLS 1.3 NewSessionTicket, which comes after the handshake.  Four
    resumptions: a session may resume on either worker."""
    openssl = harness.require_program("openssl")
    proxy_keys, svc_keys = shipped_keys()
    sink = smtp_sink()
    p = proxy(sink.port, proxy_keys=proxy_keys, **svc_keys)
    sess = os.path.join(tmpdir_path, "session.pem")
    base = [openssl, "s_client", "-starttls", "smtp",
            "-connect", "127.0.0.1:%d" % p.port, "-CAfile", certs.ca,
            "-verify_return_error", "-noservername", "-crlf", "-ign_eof",
            proto] + ([] if ticket else ["-no_ticket"])
    version = {"-tls1_3": "TLSv1.3", "-tls1_2": "TLSv1.2"}[proto]

    def s_client(*args):
        r = subprocess.run(base + list(args), input=b"QUIT\n",
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60)
        out = r.stdout.decode("utf-8", "replace")
        assert r.returncode == 0, out
        assert re.search(r"^221 ", out, re.M), out     # QUIT answered
        return out

    out = s_client("-sess_out", sess)
    assert re.search(r"^New, %s, " % version, out, re.M), out
    assert os.path.getsize(sess) > 0, out
    for _ in range(4):
        out = s_client("-sess_in", sess)
        assert re.search(r"^Reused, %s, " % version, out, re.M), out
    log = p.log_text()
    assert len(re.findall(r"event=client_tls tls=%s/" % re.escape(version),
                          log)) == 5, log
    assert "event=client_tls_failed" not in log, log
