"""
Logs: one line per event with a session id, the summary line, escaped peer
text, AUTH payloads never logged.
"""

import base64
import re

from harness import SMTPClient, expect, log_fields

LINE_RX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* (error|warn|info|debug) ")


def session_ids(p):
    return set(re.findall(r"\bsession=([0-9a-f]{16})\b", p.log_text()))


def run_session(p, client_ctx, tls, extra_rcpts=0):
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    if tls:
        c.starttls(client_ctx)
        c.ehlo()
    rcpts = ["log%d@test.example" % i for i in range(1 + extra_rcpts)]
    expect(c.mail(rcpts=rcpts), 250)
    c.quit()


def test_summary_line_names_both_legs_tls_and_counts(
        proxy, aiosmtpd_backend, backend_tls_ctx, certs, client_ctx):
    b = aiosmtpd_backend(tls_ctx=backend_tls_ctx)
    p = proxy(b.port, backend_tls="verify", backend_ca_file=certs.ca,
              backend_verify_name="localhost")
    run_session(p, client_ctx, tls=True)
    run_session(p, client_ctx, tls=True, extra_rcpts=3)
    lines = p.summaries(count=2)
    assert len(lines) == 2, lines
    f1, f2 = log_fields(lines[0]), log_fields(lines[1])
    for f in (f1, f2):
        assert re.fullmatch(r"[0-9a-f]{16}", f["session"]), f
        assert re.match(r"TLSv1\.[23]", f["client_tls"]), f
        assert re.match(r"TLSv1\.[23]", f["backend_tls"]), f
        assert "backend_verify" in f, f
        assert f["messages"] == "1", f
        assert int(f["commands"]) >= 5, f
    assert f1["session"] != f2["session"]
    # three more RCPT commands: the count follows the commands
    assert int(f2["commands"]) == int(f1["commands"]) + 3, (f1, f2)


def test_summary_line_plaintext_legs(proxy, smtp_sink):
    sink = smtp_sink()
    p = proxy(sink.port)
    run_session(p, None, tls=False)
    f = log_fields(p.summaries()[0])
    assert f["client_tls"] == "plaintext", f
    assert f["backend_tls"] == "plaintext", f
    assert f["messages"] == "1", f


def test_every_session_line_has_time_level_and_session_id(
        proxy, smtp_sink, client_ctx):
    sink = smtp_sink()
    p = proxy(sink.port)
    run_session(p, client_ctx, tls=True)
    p.summaries()
    ids = session_ids(p)
    assert len(ids) == 1, ids
    for line in p.log_text().splitlines():
        if not line.strip():
            continue
        assert LINE_RX.match(line), line
        assert "event=" in line, line


def test_peer_text_is_escaped_in_log(proxy, scripted_backend):
    b = scripted_backend(
        greeting=b"220 scripted.test ESMTP \x1b[31mred\x1b[0m\r\n",
        replies={"NOOP": b"250 2.0.0 ok \x07bell\x7f\r\n"})
    p = proxy(b.port)
    c = SMTPClient(p.port)
    c.greeting()
    expect(c.cmd(b"HELO evil\x01name\x02"), 250)
    expect(c.cmd(b"NOOP \x03arg\xff"), 250)
    expect(c.cmd(b"VRFY line\x0bwith\x0ccontrols"), 502)
    c.quit()
    p.summaries()
    raw = p.log_bytes()
    for ch in (b"\x01", b"\x02", b"\x03", b"\x07", b"\x0b", b"\x0c", b"\x1b",
               b"\x7f", b"\xff", b"\r"):
        assert ch not in raw, (ch, raw[-3000:])
    text = raw.decode("ascii")
    assert re.search(r"evil\\x01name\\x02", text), text
    # one event per line: no line may be cut by peer bytes
    for line in text.splitlines():
        assert LINE_RX.match(line), line


def test_auth_payload_never_logged(proxy, scripted_backend, client_ctx):
    b = scripted_backend(keywords=("PIPELINING", "AUTH PLAIN LOGIN"))
    p = proxy(b.port)
    c = SMTPClient(p.port)
    c.greeting()
    c.ehlo()
    c.starttls(client_ctx)
    c.ehlo()
    initial = base64.b64encode(b"\0alice\0initial-response-pw").decode()
    cont = base64.b64encode(b"\0bob\0continuation-pw").decode()
    expect(c.cmd("AUTH PLAIN " + initial), 235)
    expect(c.cmd("RSET"), 250)
    expect(c.cmd("AUTH PLAIN"), 334)
    expect(c.cmd(cont), 235)
    c.quit()
    p.summaries()
    log = p.log_text()
    for secret in (initial, cont, initial[:16], cont[:16]):
        assert secret not in log, log
    conn = b.conns[-1]
    conn.done.wait(10)
    assert cont.encode() in conn.lines   # it did travel
