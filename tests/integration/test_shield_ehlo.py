"""
EHLO keywords (issue 8, section 2): the proxy passes only the keywords
whose meaning it keeps (an allowlist), drops the rest (named once per
session at debug), passes more per service with ehlo_pass, and refuses a
verb the proxy does not know unless ehlo_pass names it.
"""

import re

import subprocess

from harness import SMTPClient, expect, require_program

# what a backend may advertise that the proxy must not pass on
UNSAFE = ("REQUIRETLS", "XEXCH50", "X-LINK2STATE", "BINARYMIME", "BURL imap",
          "X-EXPS GSSAPI NTLM", "XRCPTFORWARD", "ATRN", "X-ANYTHING-NEW")
SAFE = ("PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "DSN",
        "ENHANCEDSTATUSCODES", "CHUNKING", "HELP", "VRFY", "ETRN",
        "LIMITS RCPTMAX=100")


def connect(p):
    c = SMTPClient(p.port)
    c.greeting()
    return c


def keywords(reply):
    return [t.split(" ")[0].upper() for t in reply.texts[1:]]


def test_only_allowlisted_keywords_reach_the_client(proxy, scripted_backend,
                                                    client_ctx,
                                                    backend_tls_ctx):
    b = scripted_backend(keywords=UNSAFE + SAFE, tls_ctx=backend_tls_ctx)
    p = proxy(b.port, backend_tls="encrypt")
    c = connect(p)
    for tls in (False, True):
        kws = keywords(c.ehlo())
        want = [k.split(" ")[0] for k in SAFE]
        if not tls:
            want.append("STARTTLS")
        assert kws == want, kws
        # the lines kept are the backend's own, parameters included
        if tls:
            break
        c.starttls(client_ctx)
    c.quit()
    # named once per session, at debug
    drops = re.findall(r"event=ehlo_dropped keywords=(\S+)", p.log_text())
    assert drops == ["REQUIRETLS,XEXCH50,X-LINK2STATE,BINARYMIME,BURL,"
                     "X-EXPS,XRCPTFORWARD,ATRN,X-ANYTHING-NEW"], drops


def test_postfix_keywords_pass_unchanged(proxy, postfix_backend, client_ctx,
                                         certs):
    """Everything a stock Postfix offers is on the list: the client sees
    Postfix's own EHLO reply (with the proxy's STARTTLS) and nothing is
    dropped."""
    p = proxy(postfix_backend.port, backend_tls="verify",
              backend_ca_file=certs.ca, backend_verify_name="localhost")
    c = connect(p)
    c.ehlo()
    c.starttls(client_ctx)
    e = c.ehlo()
    kws = keywords(e)
    for k in ("PIPELINING", "SIZE", "VRFY", "ETRN", "ENHANCEDSTATUSCODES",
              "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"):
        assert k in kws, e
    c.quit()
    assert "event=ehlo_dropped" not in p.log_text()


def test_verbs_of_dropped_extensions_are_refused(proxy, scripted_backend):
    b = scripted_backend(keywords=UNSAFE + SAFE)
    p = proxy(b.port, backend_tls="none")
    c = connect(p)
    c.ehlo()
    for line in ("XEXCH50 2048 2", "X-LINK2STATE FIRST CHUNK=x",
                 "BURL imap://x/y LAST", "ATRN example.org", "TURN",
                 "X-EXPS GSSAPI", "XYZZY"):
        expect(c.cmd(line), 502, "5.5.2")
    expect(c.cmd("ETRN example.org"), 502)      # relayed: the backend's 502
    expect(c.cmd("NOOP"), 250)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    assert conn.commands() == ["EHLO", "ETRN", "NOOP", "QUIT"], conn.lines


def test_ehlo_pass_shows_keyword_and_relays_its_verb(proxy, scripted_backend):
    b = scripted_backend(keywords=("PIPELINING", "X-LINK2STATE", "DELIVERBY 60",
                                   "XEXCH50"),
                         replies={"X-LINK2STATE": b"250 2.0.0 linked\r\n"})
    p = proxy(b.port, backend_tls="none", ehlo_pass="x-link2state, DELIVERBY")
    c = connect(p)
    assert keywords(c.ehlo()) == ["PIPELINING", "X-LINK2STATE", "DELIVERBY",
                                  "STARTTLS"]
    expect(c.cmd("x-link2state LAST CHUNK=abc"), 250)
    expect(c.cmd("XEXCH50 1 2"), 502, "5.5.2")
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    assert b"x-link2state LAST CHUNK=abc" in conn.lines
    assert "XEXCH50" not in conn.commands()


def test_check_refuses_ehlo_pass_of_what_the_proxy_keeps(proxy_check, certs):
    for kw, why in (("STARTTLS", "client_tls decides"),
                    ("xclient", "trusts from the proxy"),
                    ("XFORWARD", "trusts from the proxy"),
                    ("REQUIRETLS", "REQUIRETLS is the proxy's")):
        rc, out, ini = proxy_check({
            "smtp": {"listen": "127.0.0.1:2525", "backend": "127.0.0.1:25",
                     "cert": certs.proxy_cert, "key": certs.proxy_key,
                     "ehlo_pass": "DELIVERBY, " + kw}})
        assert rc == 1, out
        assert re.search(r"%s:6: ehlo_pass: %s cannot be passed: .*%s"
                         % (re.escape(ini), kw.upper(), why), out), out


def test_swaks_sees_no_dropped_keyword(proxy, scripted_backend):
    swaks = require_program("swaks")
    b = scripted_backend(keywords=UNSAFE + SAFE)
    p = proxy(b.port)
    out = subprocess.run([swaks, "--server", "127.0.0.1", "--port",
                          str(p.port), "--quit-after", "EHLO"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=60).stdout.decode()
    assert "250-SIZE 10240000" in out, out
    for kw in UNSAFE:
        assert kw.split(" ")[0] not in out, out
