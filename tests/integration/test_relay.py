"""
Faithful relaying: PIPELINING, multi-line replies, BDAT/CHUNKING, DATA and
its end-of-data sequence at any offset.
"""

import time

from harness import (SMTPClient, assert_same_content, expect, unique_token,
                     wait_for)

PAUSE = 0.1   # lets separate writes arrive as separate reads/records


def connect(p):
    c = SMTPClient(p.port)
    c.greeting()
    return c


def tls_session(p, client_ctx, tls):
    c = connect(p)
    c.ehlo()
    if tls:
        c.starttls(client_ctx)
        c.ehlo()
    return c


def test_pipelined_transaction_replies_in_order_postfix(
        proxy, postfix_backend, certs, client_ctx):
    p = proxy(postfix_backend.port, backend_tls="verify",
              backend_ca_file=certs.ca, backend_verify_name="localhost")
    token = unique_token("pipe")
    c = tls_session(p, client_ctx, True)
    c.send(b"MAIL FROM:<s@client.test>\r\n"
           b"RCPT TO:<one@test.example>\r\n"
           b"RCPT TO:<rejected@test.example>\r\n"
           b"RCPT TO:<two@test.example>\r\n"
           b"DATA\r\n")
    replies = [c.read_reply() for _ in range(5)]
    assert [r.code for r in replies] == [250, 250, 554, 250, 354], replies
    assert "rejected@test.example" in replies[2].text
    c.send(("Subject: %s\r\n\r\npipelined\r\n.\r\n" % token).encode()
           + b"RSET\r\nNOOP\r\nQUIT\r\n")
    r = c.read_reply()
    expect(r, 250, "2.0.0")
    assert "queued as" in r.text
    expect(c.read_reply(), 250, "2.0.0")          # RSET
    expect(c.read_reply(), 250, "2.0.0")          # NOOP
    expect(c.read_reply(), 221)                   # QUIT
    c.expect_closed()
    wait_for(lambda: postfix_backend.mbox_text().count(token) >= 2,
             what="two deliveries of the pipelined message")


def test_pipelined_commands_forwarded_without_waiting_for_replies(
        proxy, scripted_backend):
    """The backend answers nothing until it has all four commands: a proxy
    that waited for each reply before forwarding the next would stall."""
    got_all = []

    def handler(conn, b):
        conn.send(b"220 batch.test ESMTP\r\n")
        while True:
            line = conn.read_line()
            if line.upper().startswith(b"EHLO"):
                conn.send(b"250-batch.test\r\n250 PIPELINING\r\n")
                continue
            if line.upper().startswith(b"QUIT"):
                conn.send(b"221 bye\r\n")
                return
            batch = [line]
            conn.sock.settimeout(10)
            try:
                while len(batch) < 4:
                    batch.append(conn.read_line())
            except Exception:
                pass
            got_all.append(len(batch) == 4)
            conn.send(b"".join(b"250 2.0.0 reply %d to %s\r\n"
                               % (i, l.split()[0]) for i, l in
                               enumerate(batch)))

    b = scripted_backend(handler=handler)
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@test.example>\r\n"
           b"RCPT TO:<c@test.example>\r\nNOOP\r\n")
    replies = [c.read_reply() for _ in range(4)]
    assert [r.texts[0] for r in replies] == [
        "2.0.0 reply 0 to MAIL", "2.0.0 reply 1 to RCPT",
        "2.0.0 reply 2 to RCPT", "2.0.0 reply 3 to NOOP"], replies
    assert got_all == [True]
    c.quit()


def test_multiline_replies_relayed_intact(proxy, scripted_backend):
    b = scripted_backend(replies={
        "HELP": b"214-2.0.0 line one\r\n214-2.0.0 line two\r\n"
                b"214-\r\n214 2.0.0 end\r\n",
        "VRFY": b"252 2.0.0 Cannot VRFY user\r\n"})
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    r = c.cmd("HELP")
    assert r.lines == [b"214-2.0.0 line one", b"214-2.0.0 line two",
                       b"214-", b"214 2.0.0 end"], r
    expect(c.cmd("VRFY someone"), 252)
    c.quit()


def test_bdat_chunks_pass_exactly(proxy, scripted_backend):
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING", "8BITMIME"))
    p = proxy(b.port)
    c = connect(p)
    e = c.ehlo()
    assert e.has("CHUNKING"), e
    expect(c.cmd("MAIL FROM:<bdat@client.test>"), 250)
    expect(c.cmd("RCPT TO:<bdat@test.example>"), 250)
    chunk1 = b"Subject: bdat\r\n\r\nline\r\n.\r\nQUIT\r\nRSET\r\n"
    c.send(b"BDAT %d\r\n" % len(chunk1) + chunk1)
    expect(c.read_reply(), 250)
    # a chunk split across writes, header and payload separate
    chunk2 = b"..not stuffed\r\nXCLIENT ADDR=1.2.3.4\r\nSTARTTLS\r\n\x00\xff"
    c.send(b"BDAT %d LAST\r\n" % len(chunk2))
    time.sleep(PAUSE)
    c.send(chunk2[:7])
    time.sleep(PAUSE)
    c.send(chunk2[7:])
    r = c.read_reply()
    expect(r, 250)
    assert "queued as" in r.text
    # pipelined: two chunks and a command in one write
    expect(c.cmd("MAIL FROM:<bdat2@client.test>"), 250)
    expect(c.cmd("RCPT TO:<bdat@test.example>"), 250)
    c.send(b"BDAT 3\r\nabcBDAT 0 LAST\r\nNOOP\r\n")
    replies = [c.read_reply() for _ in range(3)]
    assert [r.code for r in replies] == [250, 250, 250], replies
    c.quit()
    conn = b.conns[-1]
    conn.done.wait(10)
    assert conn.chunks == [chunk1, chunk2, b"abc", b""]
    assert conn.commands().count("XCLIENT") == 0
    assert conn.commands().count("BDAT") == 4


def test_bdat_through_proxy_to_postfix(proxy, postfix_backend, client_ctx):
    p = proxy(postfix_backend.port)
    token = unique_token("bdat-pf")
    c = tls_session(p, client_ctx, True)
    assert c.ehlo().has("CHUNKING")
    expect(c.cmd("MAIL FROM:<s@client.test>"), 250)
    expect(c.cmd("RCPT TO:<bdat@test.example>"), 250)
    chunk1 = ("Subject: %s\r\n\r\nfirst\r\n.\r\n" % token).encode()
    chunk2 = b"..two dots stay\r\nend\r\n"
    c.send(b"BDAT %d\r\n" % len(chunk1) + chunk1)
    expect(c.read_reply(), 250)
    c.send(b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
    expect(c.read_reply(), 250, "2.0.0")
    c.quit()
    wait_for(lambda: token in postfix_backend.mbox_text(),
             what="BDAT message in mailbox")
    mbox = postfix_backend.mbox_text()
    msg = mbox[mbox.index(token):]
    assert "\nfirst\n.\n..two dots stay\nend\n" in msg, msg


def test_bdat_bad_argument_501(proxy, scripted_backend):
    b = scripted_backend(keywords=("PIPELINING", "CHUNKING"))
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<a@client.test>"), 250)
    expect(c.cmd("RCPT TO:<b@test.example>"), 250)
    for bad in ("BDAT", "BDAT x", "BDAT -1", "BDAT 10 FIRST",
                "BDAT 99999999999999999999999"):
        expect(c.cmd(bad), 501, "5.5.4")
    expect(c.cmd("NOOP"), 250)
    c.quit()
    assert b.conns[-1].commands().count("BDAT") == 0


def test_auth_login_multi_step_continuations_relayed(
        proxy, scripted_backend, client_ctx):
    def auth_login(conn, line):
        conn.send(b"334 VXNlcm5hbWU6\r\n")
        conn.read_line()
        conn.send(b"334 UGFzc3dvcmQ6\r\n")
        conn.read_line()
        return b"235 2.7.0 Authentication successful\r\n"

    b = scripted_backend(keywords=("PIPELINING", "AUTH LOGIN"),
                         replies={"AUTH": auth_login})
    p = proxy(b.port)
    c = tls_session(p, client_ctx, True)
    r = c.cmd("AUTH LOGIN")
    assert r.lines == [b"334 VXNlcm5hbWU6"], r
    r = c.cmd("dXNlci1zZWNyZXQtbmFtZQ==")
    assert r.lines == [b"334 UGFzc3dvcmQ6"], r
    expect(c.cmd("cGFzc3dvcmQtc2VjcmV0LTk5"), 235)
    expect(c.cmd("NOOP"), 250)
    c.quit()
    conn = b.conns[-1]
    conn.done.wait(10)
    assert conn.lines[-4:] == [b"dXNlci1zZWNyZXQtbmFtZQ==",
                               b"cGFzc3dvcmQtc2VjcmV0LTk5", b"NOOP", b"QUIT"]
    log = p.log_text()
    assert "dXNlci1zZWNyZXQtbmFtZQ==" not in log
    assert "cGFzc3dvcmQtc2VjcmV0LTk5" not in log


BODY = (b"Subject: split\r\n\r\nline one\r\n..stuffed\r\n"
        b"bare\n.\nLF dot LF inside\r\n"
        b"XCLIENT ADDR=6.6.6.6\r\nSTARTTLS\r\nQUIT\r\n"
        b"cr\r.\rdot\r\nlast")


def send_split(c, data, offsets):
    prev = 0
    for off in offsets + [len(data)]:
        c.send(data[prev:off])
        time.sleep(PAUSE)
        prev = off


def check_data_end_split(p, b, client_ctx, tls):
    c = tls_session(p, client_ctx, tls)
    terminator = b"\r\n.\r\n"
    sent = []
    # the terminator split at every offset inside it, and at offsets
    # around it, each message in the same session
    for k in range(0, len(terminator) + 1):
        expect(c.cmd("MAIL FROM:<split%d@client.test>" % k), 250)
        expect(c.cmd("RCPT TO:<split@test.example>"), 250)
        expect(c.cmd("DATA"), 354)
        data = BODY + terminator
        cut = len(BODY) + k
        send_split(c, data, [cut - 1, cut] if k else [cut])
        r = c.read_reply()
        expect(r, 250)
        assert "queued as" in r.text
        sent.append(BODY + b"\r\n")
    expect(c.cmd("NOOP"), 250)      # exactly one reply per message
    c.quit()
    conn = b.conns[-1]
    conn.done.wait(10)
    assert len(conn.messages) == len(sent)
    for got, want in zip(conn.messages, sent):
        assert_same_content(got, want)
    assert conn.commands().count("XCLIENT") == 0
    assert conn.commands().count("STARTTLS") == 0


def test_data_end_split_across_writes_plaintext(proxy, scripted_backend,
                                                client_ctx):
    b = scripted_backend()
    p = proxy(b.port)
    check_data_end_split(p, b, client_ctx, tls=False)


def test_data_end_split_across_tls_records(proxy, scripted_backend,
                                           client_ctx):
    b = scripted_backend()
    p = proxy(b.port)
    check_data_end_split(p, b, client_ctx, tls=True)


def test_data_byte_by_byte_over_tls(proxy, scripted_backend, client_ctx):
    b = scripted_backend()
    p = proxy(b.port)
    c = tls_session(p, client_ctx, True)
    expect(c.cmd("MAIL FROM:<bytes@client.test>"), 250)
    expect(c.cmd("RCPT TO:<bytes@test.example>"), 250)
    expect(c.cmd("DATA"), 354)
    data = b"a\r\n..\r\n.x\r\n\n.\n\r\n.\r\n"
    for i in range(len(data)):
        c.send(data[i:i + 1])
        time.sleep(0.01)
    expect(c.read_reply(), 250)
    expect(c.cmd("NOOP"), 250)
    c.quit()
    msgs = b.conns[-1].messages
    assert len(msgs) == 1
    assert_same_content(msgs[0], b"a\r\n..\r\n.x\r\n\n.\n\r\n")


def test_bare_lf_dot_lf_does_not_end_data(proxy, scripted_backend):
    """If the proxy ended the message at LF.LF it would take the body lines
    after it as commands: STARTTLS would be answered by the proxy, XCLIENT
    refused.  They must reach the backend as message text."""
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    expect(c.cmd("MAIL FROM:<lf@client.test>"), 250)
    expect(c.cmd("RCPT TO:<lf@test.example>"), 250)
    expect(c.cmd("DATA"), 354)
    body = b"text\n.\nSTARTTLS\r\nXCLIENT ADDR=6.6.6.6\r\n\r.\r\r\n.\n\r\n"
    c.send(body)
    # nothing may come back before the real end of data
    c.sock.settimeout(1.5)
    try:
        early = c.sock.recv(4096)
    except OSError:
        early = b""
    c.sock.settimeout(c.timeout)
    assert early == b"", early
    c.send(b".\r\n")
    expect(c.read_reply(), 250)
    expect(c.cmd("NOOP"), 250)
    c.quit()
    msgs = b.conns[-1].messages
    assert len(msgs) == 1
    assert_same_content(msgs[0], body)


def test_empty_message_and_dot_first_line(proxy, scripted_backend):
    b = scripted_backend()
    p = proxy(b.port)
    c = connect(p)
    c.ehlo()
    for body in (b"", b"..\r\n", b".\r"):
        expect(c.cmd("MAIL FROM:<e@client.test>"), 250)
        expect(c.cmd("RCPT TO:<e@test.example>"), 250)
        expect(c.cmd("DATA"), 354)
        if body == b".\r":
            c.send(b".\r\r\n.\r\n")
        else:
            c.send(body + b".\r\n")
        expect(c.read_reply(), 250)
    c.quit()
    msgs = b.conns[-1].messages
    assert len(msgs) == 3
    for got, want in zip(msgs, [b"", b"..\r\n", b".\r\r\n"]):
        assert_same_content(got, want)


def test_large_message_relayed_intact(proxy, aiosmtpd_backend, client_ctx):
    b = aiosmtpd_backend()
    p = proxy(b.port)
    c = tls_session(p, client_ctx, True)
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * 60000 + b"..dot\r\n"
    expect(c.cmd("MAIL FROM:<big@client.test>"), 250)
    expect(c.cmd("RCPT TO:<big@test.example>"), 250)
    expect(c.cmd("DATA"), 354)
    c.send(body + b".\r\n")
    expect(c.read_reply(), 250)
    c.quit()
    env = b.wait_messages(1)[0]
    assert env.content == body.replace(b"\r\n..dot", b"\r\n.dot")
