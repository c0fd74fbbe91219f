"""
test_backend_pins.py - backend_tls = fingerprint: the backend's
certificate (or its public key) must match a configured SHA-256 pin,
whatever CA signed it; the private Postfix is the backend.
"""

import hashlib
import subprocess

from harness import SMTPClient, expect, log_fields, require_program, unique_token
from test_backends import deliver


def cert_sha256(path, pubkey=False):
    openssl = require_program("openssl")
    if pubkey:
        pem = subprocess.run([openssl, "x509", "-in", path, "-noout", "-pubkey"],
                             check=True, stdout=subprocess.PIPE).stdout
        der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"],
                             input=pem, check=True,
                             stdout=subprocess.PIPE).stdout
    else:
        der = subprocess.run([openssl, "x509", "-in", path, "-outform", "DER"],
                             check=True, stdout=subprocess.PIPE).stdout
    return hashlib.sha256(der).hexdigest()


def colons(hexdigest):
    return ":".join(hexdigest[i:i + 2] for i in range(0, 64, 2)).upper()


def test_certificate_pin_in_openssl_form_delivers(
        proxy, postfix_backend, certs, client_ctx):
    pf = postfix_backend
    pin = "sha256:" + colons(cert_sha256(certs.backend_cert))
    p = proxy(pf.port, backend_tls="fingerprint",
              backend_tls_fingerprints=pin)
    expect(deliver(SMTPClient(p.port), client_ctx, unique_token("pin-cert")), 250)
    f = log_fields(p.summaries()[0])
    assert f["backend_verify"].startswith("fingerprint:sha256:"), f


def test_public_key_pin_delivers_and_the_untrusted_certificate_is_refused(
        proxy, postfix_backend, certs, client_ctx):
    """The pin, not a CA, decides: the self-signed certificate on the
    other port matches no pin and is refused before the greeting."""
    pf = postfix_backend
    pin = "pubkey-sha256:" + cert_sha256(certs.backend_cert, pubkey=True)
    p = proxy(pf.port, backend_tls="fingerprint",
              backend_tls_fingerprints=pin)
    expect(deliver(SMTPClient(p.port), client_ctx, unique_token("pin-key")), 250)
    f = log_fields(p.summaries()[0])
    assert f["backend_verify"].startswith("fingerprint:pubkey-sha256:"), f
    q = proxy(pf.untrusted_port, backend_tls="fingerprint",
              backend_tls_fingerprints=pin)
    c = SMTPClient(q.port)
    r = c.read_reply()
    assert r.code == 421 and r.text.startswith("4.7.0"), r
    q.wait_log(r"event=backend_tls_required reason=\"certificate\\x20matches"
               r"\\x20no\\x20fingerprint\"")
