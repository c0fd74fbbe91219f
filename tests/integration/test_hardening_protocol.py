"""
Protocol discipline (issue 3, section 2): pregreet, pipelining groups,
backend garbage and double replies, HELO-only backends.
"""

import base64
import re
import time

import pytest

from harness import SMTPClient, expect, unique_token
from hardening_util import (connect, data_answered_twice,
                            delayed_greeting_handler, replies_until_close)


# ---- pregreet -------------------------------------------------------------

def test_pregreet_554_disconnect_and_escaped_log(proxy, scripted_backend):
    b = scripted_backend(handler=delayed_greeting_handler(2.5))
    p = proxy(b.port)
    c = SMTPClient(p.port)
    c.send(b"EHLO early\x01\x1b[0m\r\n")      # before any greeting
    replies = replies_until_close(c)
    assert [r.code for r in replies] == [554], replies
    expect(replies[0], 554, "5.5.0")
    assert b"220" not in bytes(c.received)
    line = p.wait_log(r"event=pregreet\b")[0].string
    assert "early" in line, line
    assert "\\x01" in line and "\\x1b" in line, line
    raw = open(p.logfile, "rb").read()
    assert b"\x01" not in raw and b"\x1b" not in raw
    # the client's bytes never reached the backend
    assert b"early" not in b.all_raw()


def test_no_pregreet_for_a_patient_client(proxy, scripted_backend):
    b = scripted_backend(handler=delayed_greeting_handler(1.0))
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.quit()
    assert "event=pregreet" not in p.log_text()


# ---- pipelining -----------------------------------------------------------

PIPELINES = {
    "ehlo-mail-rcpt-data": (
        b"EHLO x.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
        b"DATA\r\n",
        [250, 250, 250, 354]),
    "helo-then-commands": (
        b"HELO x.test\r\nNOOP\r\nRSET\r\nMAIL FROM:<a@b.test>\r\n",
        [250, 250, 250, 250]),
    "ehlo-ehlo-helo": (
        b"EHLO one.test\r\nEHLO two.test\r\nHELO three.test\r\nNOOP\r\n",
        [250, 250, 250, 250]),
    "backend-error-in-the-middle": (
        b"EHLO x.test\r\nEXPN list\r\nNOOP\r\nVRFY someone\r\n",
        [250, 502, 250, 502]),
    # FOO is answered by the proxy itself (502 5.5.2), in its place in
    # the group, and never reaches the backend
    "unknown-in-the-middle": (
        b"EHLO x.test\r\nFOO bar\r\nNOOP\r\nVRFY someone\r\n",
        [250, 502, 250, 502]),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_group_ending_commands_pipelined_answered_in_order(
        proxy, scripted_backend, name):
    data, codes = PIPELINES[name]
    b = scripted_backend(replies={"VRFY": b"502 5.5.1 VRFY disabled\r\n"})
    p = proxy(b.port)
    c = connect(p)
    c.send(data)                           # one write
    replies = [c.read_reply() for _ in codes]
    assert [r.code for r in replies] == codes, replies
    if data.startswith(b"EHLO"):
        assert len(replies[0].lines) > 1, replies[0]   # a real EHLO reply
    if codes[-1] == 354:
        c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\n")
        expect(c.read_reply(), 250)
    expect(c.cmd("NOOP"), 250)
    c.quit()
    conn = b.wait_conns(1)
    assert len(b.conns) == 1, b.conns
    conn.done.wait(10)
    # the backend got the client's commands in the client's order
    sent = [l for l in data.split(b"\r\n") if l and not l.startswith(b"FOO")]
    got = [l for l in conn.lines if l != b"EHLO proxy.test"]
    assert got[:len(sent)] == sent, (got, sent)


def test_data_content_pipelined_behind_data_waits_for_354(
        proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    token = unique_token("pipe-data")
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"
           + ("Subject: %s\r\n\r\nNOOP\r\n" % token).encode()
           + b".\r\nNOOP\r\nQUIT\r\n")
    codes = [r.code for r in replies_until_close(c)]
    assert codes == [250, 250, 354, 250, 250, 221], codes
    conn = b.conns[0]
    conn.done.wait(10)
    assert len(conn.messages) == 1 and token.encode() in conn.messages[0]
    # the NOOP inside the message stayed content
    assert conn.commands().count("NOOP") == 1, conn.lines


def test_auth_pipelined_behind_is_answered_in_order(proxy, scripted_backend):
    b = scripted_backend(keywords=("PIPELINING", "AUTH PLAIN"))
    p = proxy(b.port, client_plaintext_auth="yes")
    c = connect(p)
    assert c.ehlo().has("AUTH")
    ir = base64.b64encode(b"\0user\0pw").decode()
    c.send(("AUTH PLAIN %s\r\nNOOP\r\nMAIL FROM:<a@b.test>\r\n" % ir).encode())
    codes = [c.read_reply().code for _ in range(3)]
    assert codes == [235, 250, 250], codes
    c.quit()


# ---- backend misbehaviour ---------------------------------------------------

@pytest.mark.parametrize("delay", [0.0, 0.5], ids=["same-write", "later"])
def test_backend_two_replies_to_one_end_of_data_421(
        proxy, scripted_backend, delay):
    b = scripted_backend(replies={"DATA": data_answered_twice(
        b"250 2.0.0 Ok: queued as FIRST\r\n",
        b"250 2.0.0 Ok: queued as SECOND\r\n", delay)})
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<a@b.test>"), 250)
    expect(c.cmd("RCPT TO:<c@d.test>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: twice\r\n\r\nbody\r\n.\r\n")
    replies = replies_until_close(c)
    assert replies and replies[-1].code == 421, replies
    expect(replies[-1], 421, "4.3.0")
    assert [r.code for r in replies[:-1]] in ([], [250]), replies
    assert b"SECOND" not in bytes(c.received), bytes(c.received)
    b.conns[0].wait_eof()
    p.wait_log(r"event=backend_garbage\b")


def test_backend_garbage_instead_of_end_of_data_reply_421(
        proxy, scripted_backend):
    b = scripted_backend(on_data=b"HTTP/1.1 200 OK\r\n")
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<a@b.test>"), 250)
    expect(c.cmd("RCPT TO:<c@d.test>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(b"Subject: garbage\r\n\r\nbody\r\n.\r\n")
    replies = replies_until_close(c)
    assert [r.code for r in replies] == [421], replies
    expect(replies[0], 421, "4.3.0")
    assert b"HTTP" not in bytes(c.received)


def test_backend_unsolicited_reply_while_idle_421(proxy, scripted_backend):
    def noop(conn, line):
        conn.send(b"250 2.0.0 Ok\r\n")
        time.sleep(0.5)
        conn.send(b"250 2.0.0 nobody asked\r\n")
        return "silent"
    b = scripted_backend(replies={"NOOP": noop})
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("NOOP"), 250)
    replies = replies_until_close(c)
    assert [r.code for r in replies] == [421], replies
    expect(replies[0], 421, "4.3.0")
    assert b"nobody asked" not in bytes(c.received)


# ---- HELO-only backend ----------------------------------------------------------

def helo_only_backend(scripted_backend):
    return scripted_backend(
        replies={"EHLO": b"502 5.5.1 command not implemented\r\n"})


def test_helo_only_backend_client_ehlo_answered_by_proxy(
        proxy, scripted_backend):
    b = helo_only_backend(scripted_backend)
    p = proxy(b.port)                      # client_tls = may
    c = connect(p)
    e = c.ehlo("legacy-client.test")
    assert len(e.lines) > 1, e
    assert e.keywords == ["STARTTLS"], e
    token = unique_token("helo-only")
    expect(c.mail(rcpts=["old@test.example"],
                  body=("Subject: %s\r\n\r\nx\r\n" % token).encode()), 250)
    c.quit()
    conn = b.conns[0]
    conn.done.wait(10)
    assert b"HELO legacy-client.test" in conn.lines, conn.lines
    assert not any(l.upper().startswith(b"EHLO LEGACY") for l in conn.lines)
    assert len(conn.messages) == 1 and token.encode() in conn.messages[0]


def test_helo_only_backend_after_client_starttls(
        proxy, scripted_backend, client_ctx):
    b = helo_only_backend(scripted_backend)
    p = proxy(b.port)
    c = connect(p)
    assert c.ehlo("legacy-client.test").keywords == ["STARTTLS"]
    c.starttls(client_ctx)
    e = c.ehlo("legacy-client.test")
    assert "STARTTLS" not in e.keywords, e
    # the backend has no extensions: nothing it would have to honour
    assert set(e.keywords) <= {"PIPELINING"}, e
    expect(c.mail(rcpts=["old@test.example"]), 250)
    c.quit()
    conn = b.conns[-1]
    conn.done.wait(10)
    assert len(conn.messages) == 1
    assert all(not l.upper().startswith(b"EHLO LEGACY") for x in b.conns
               for l in x.lines)


def test_helo_only_backend_client_tls_none_no_keywords(
        proxy, scripted_backend):
    b = helo_only_backend(scripted_backend)
    p = proxy(b.port, client_tls="none")
    c = connect(p)
    e = c.ehlo("legacy-client.test")
    assert e.keywords == [], e
    expect(c.mail(), 250)
    c.quit()
    assert re.search(rb"HELO legacy-client\.test", b.all_raw())
