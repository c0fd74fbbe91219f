/*
 * backend.c - the backend leg's setup, before the client is greeted.
 *
 * resolve -> connect -> [implicit TLS] -> greeting -> EHLO -> STARTTLS ->
 * handshake -> ready.  Each step is driven by the backend's reply to the
 * previous one.  Under a strict policy (encrypt, verify) every way out
 * that does not end in a verified-enough TLS session refuses the client
 * with 421 4.7.0 before it has sent anything.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "log.h"
#include "proxyproto.h"
#include "session_int.h"

static void backend_on_connect(struct conn *c, void *ud, int status);
static void backend_send(struct session *s, const char *line);
static void backend_on_handshake(struct conn *c, void *ud, int status);
static void backend_on_eof(struct conn *c, void *ud, int status);
static void backend_on_drain(struct conn *c, void *ud);
static void backend_on_close(struct conn *c, void *ud);

/* session.c reacts to these once the leg is relaying */
void session_backend_eof(struct session *s, int status);
void session_backend_drain(struct session *s);

static const struct conn_cbs backend_cbs = {
    .on_data = session_backend_data,
    .on_connect = backend_on_connect,
    .on_handshake = backend_on_handshake,
    .on_eof = backend_on_eof,
    .on_drain = backend_on_drain,
    .on_close = backend_on_close,
};

const char *backend_state_name(enum backend_state st)
{
    static const char *const names[] = {
        "idle", "resolving", "connecting", "tls_implicit", "greeting",
        "ehlo", "starttls", "tls_handshake", "xclient_ehlo", "xclient",
        "ready", "failed"};

    return (unsigned)st < sizeof names / sizeof names[0] ? names[st] : "?";
}

/* backend_set_state - every change of the setup state goes through here. */
static void backend_set_state(struct session *s, enum backend_state st)
{
    log_event(&s->w->log, LOG_DEBUG, s->id, "event=backend_state from=%s to=%s",
              backend_state_name(s->bstate), backend_state_name(st));
    s->bstate = st;
}

static bool backend_strict(const struct session *s)
{
    return s->svc->backend_tls == BACKEND_TLS_ENCRYPT ||
           s->svc->backend_tls == BACKEND_TLS_VERIFY;
}

/*
 * backend_refuse - the policy cannot be met: refuse the client.  Returns
 * false instead under "enforce = no" (logged as would_refuse): the caller
 * then carries on as "may" would.
 */
static bool backend_refuse(struct session *s, const char *why)
{
    if (!session_enforce(s, "backend_tls", why))
        return false;
    backend_set_state(s, BACKEND_FAILED);
    session_fail(s, REPLY_BACKEND_TLS_REQUIRED, "backend_tls_required", why);
    return true;
}

/* backend_give_up - setup failed for a reason that is not policy. */
static void backend_give_up(struct session *s, enum reply_id reply,
                            const char *event, const char *why)
{
    backend_set_state(s, BACKEND_FAILED);
    session_fail(s, reply, event, why);
}

static void backend_connect(struct session *s)
{
    struct conn *c = conn_new(s->w, &backend_cbs, s);

    if (c == NULL) {
        backend_give_up(s, REPLY_BACKEND_UNAVAILABLE, "backend_error",
                        "out of memory");
        return;
    }
    session_ref(s);
    s->backend = c;
    s->nbackends++;
    backend_set_state(s, BACKEND_CONNECTING);
    if (conn_connect(c, (const struct sockaddr *)&s->baddr) != 0)
        backend_give_up(s, REPLY_BACKEND_UNAVAILABLE, "backend_unreachable",
                        conn_error(c));
}

static void backend_on_resolved(uv_getaddrinfo_t *req, int status,
                                struct addrinfo *res)
{
    struct session *s = req->data;

    s->gai_busy = false;
    if (s->closing || status != 0 || res == NULL) {
        if (!s->closing)
            backend_give_up(s, REPLY_BACKEND_UNAVAILABLE,
                            "backend_unreachable", uv_strerror(status));
        uv_freeaddrinfo(res);
        session_unref(s);
        return;
    }
    memcpy(&s->baddr, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
    backend_connect(s);
    session_unref(s);
}

/* backend_start - see session_int.h. */
void backend_start(struct session *s)
{
    const struct service *svc = s->svc;
    struct addrinfo hints;
    int port = (int)strtol(svc->backend_port, NULL, 10); /* validated */

    sbuf_free(&s->bin);
    s->bstate = BACKEND_IDLE;
    s->bhs_start = 0;
    free(s->held_helo);           /* it was this backend session's */
    s->held_helo = NULL;
    if (uv_ip4_addr(svc->backend_host, port,
                    (struct sockaddr_in *)&s->baddr) == 0 ||
        uv_ip6_addr(svc->backend_host, port,
                    (struct sockaddr_in6 *)&s->baddr) == 0) {
        backend_connect(s);
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    s->gai.data = s;
    backend_set_state(s, BACKEND_RESOLVING);
    if (uv_getaddrinfo(s->w->loop, &s->gai, backend_on_resolved,
                       svc->backend_host, svc->backend_port, &hints) != 0) {
        backend_give_up(s, REPLY_BACKEND_UNAVAILABLE, "backend_unreachable",
                        "cannot resolve");
        return;
    }
    s->gai_busy = true;
    session_ref(s);
}

/* backend_tls_begin - start the TLS client on the backend conn. */
static void backend_tls_begin(struct session *s, enum backend_state next)
{
    SSL *ssl = tls_client_ssl(s->tls->client, s->svc->backend_verify_name);
    SSL_SESSION **slot = worker_backend_session(s->w, s->svc_index);

    backend_set_state(s, next);
    s->bhs_start = uv_now(s->w->loop);   /* tls_handshake_timeout */
    session_arm(s);
    if (ssl != NULL && slot != NULL) {
        /* resume the service's last backend session: no certificate or
         * key exchange work on either side when the backend agrees */
        SSL_set_app_data(ssl, slot);
        if (*slot != NULL)
            (void)SSL_set_session(ssl, *slot);
    }
    if (ssl == NULL || conn_start_tls_client(s->backend, ssl) != 0)
        backend_give_up(s, REPLY_BACKEND_UNAVAILABLE, "backend_error",
                        "cannot start TLS");
}

/*
 * backend_send_proxy_header - "backend_client_address = proxy-v1|v2": the
 * first bytes on every backend connection say who the client is.
 */
static void backend_send_proxy_header(struct session *s)
{
    unsigned char hdr[PROXYPROTO_MAX_LEN];
    size_t n = 0;

    if (s->svc->backend_client_address == CLIENT_ADDRESS_PROXY_V1)
        n = proxyproto_write_v1((const struct sockaddr *)&s->client_sa,
                                (const struct sockaddr *)&s->client_dst,
                                (char *)hdr, sizeof hdr);
    else if (s->svc->backend_client_address == CLIENT_ADDRESS_PROXY_V2)
        n = proxyproto_write_v2((const struct sockaddr *)&s->client_sa,
                                (const struct sockaddr *)&s->client_dst,
                                hdr, sizeof hdr);
    if (n > 0)
        conn_write(s->backend, (const char *)hdr, n);
}

static void backend_on_connect(struct conn *c, void *ud, int status)
{
    struct session *s = ud;

    if (s->closing || c != s->backend)
        return;
    if (status != 0) {
        backend_give_up(s, REPLY_BACKEND_UNAVAILABLE, "backend_unreachable",
                        uv_strerror(status));
        return;
    }
    log_event(&s->w->log, LOG_DEBUG, s->id, "event=backend_connected peer=%s",
              conn_peer(c));
    session_touch_backend(s);
    conn_read_start(c);
    backend_send_proxy_header(s);
    if (s->svc->backend_implicit_tls)
        backend_tls_begin(s, BACKEND_TLS_IMPLICIT);
    else
        backend_set_state(s, BACKEND_GREETING);
}

/* backend_record_tls - what the summary line says about this leg. */
static void backend_record_tls(struct session *s)
{
    SSL *ssl = conn_ssl(s->backend);
    long vr = SSL_get_verify_result(ssl);

    tls_describe(ssl, s->backend_tls_desc, sizeof s->backend_tls_desc);
    if (SSL_get0_peer_certificate(ssl) == NULL)
        snprintf(s->backend_verify, sizeof s->backend_verify, "no_cert");
    else if (vr == X509_V_OK)
        snprintf(s->backend_verify, sizeof s->backend_verify, "verified");
    else
        log_escape(s->backend_verify, sizeof s->backend_verify,
                   X509_verify_cert_error_string(vr),
                   strlen(X509_verify_cert_error_string(vr)));
}

static void backend_ready(struct session *s)
{
    backend_set_state(s, BACKEND_READY);
    session_backend_ready(s);
}

/* backend_xtext - RFC 3461 4 xtext: '+', '=' and bytes outside 33..126
 * become +HH. */
static void backend_xtext(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *in != '\0' && o + 4 < cap; in++) {
        unsigned char c = (unsigned char)*in;

        if (c < 33 || c > 126 || c == '+' || c == '=') {
            out[o++] = '+';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

/* backend_xclient_addr - the client's address in XCLIENT's syntax. */
static void backend_xclient_addr(const struct session *s, char *addr,
                                 size_t addr_len, int *port)
{
    char host[INET6_ADDRSTRLEN] = "";

    *port = 0;
    if (s->client_sa.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&s->client_sa;

        uv_ip4_name(a, host, sizeof host);
        snprintf(addr, addr_len, "%s", host);
        *port = ntohs(a->sin_port);
    } else if (s->client_sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&s->client_sa;

        uv_ip6_name(a, host, sizeof host);
        snprintf(addr, addr_len, "IPV6:%s", host);
        *port = ntohs(a->sin6_port);
    } else {
        snprintf(addr, addr_len, "[UNAVAILABLE]");
    }
}

/*
 * backend_finish - TLS is settled.  With "backend_client_address =
 * xclient" the backend is told who the client is before the client is
 * greeted, but only if it offers XCLIENT (after TLS: the capabilities
 * learnt before do not count).  caps_known says whether caps is the
 * current EHLO answer.
 */
static void backend_finish(struct session *s, bool caps_known, unsigned caps)
{
    char line[200], addr[64];
    int port;

    if (s->svc->backend_client_address != CLIENT_ADDRESS_XCLIENT ||
        s->backend_helo_only) {
        backend_ready(s);
        return;
    }
    if (!caps_known) {
        snprintf(line, sizeof line, "EHLO %s\r\n", s->w->cfg->hostname);
        backend_set_state(s, BACKEND_XCLIENT_EHLO);
        backend_send(s, line);
        return;
    }
    if (!(caps & SMTP_CAP_XCLIENT)) {
        log_event(&s->w->log, LOG_WARN, s->id,
                  "event=xclient_unavailable reason=not_offered");
        backend_ready(s);
        return;
    }
    backend_xclient_addr(s, addr, sizeof addr, &port);
    snprintf(line, sizeof line,
             "XCLIENT ADDR=%s PORT=%d NAME=[UNAVAILABLE]\r\n", addr, port);
    backend_set_state(s, BACKEND_XCLIENT);
    backend_send(s, line);
}

/* backend_xclient_helo - XCLIENT HELO=... PROTO=... for the client's EHLO
 * or HELO (session.c sends it just before relaying that command). */
int backend_xclient_helo(const struct session *s, bool esmtp, char *out,
                         size_t cap)
{
    char name[200];

    backend_xtext(s->helo_name, name, sizeof name);
    return snprintf(out, cap, "XCLIENT HELO=%s PROTO=%s\r\n",
                    name[0] ? name : "[UNAVAILABLE]", esmtp ? "ESMTP" : "SMTP");
}

/*
 * backend_tls_failed - the backend's TLS handshake failed, whatever the
 * way: an alert, a close, a reset, or no progress within
 * tls_handshake_timeout.  Strict policies refuse (unless enforce = no);
 * otherwise, as Postfix's "may" does, the backend gets one more
 * connection without TLS (not with implicit TLS, which has no plaintext).
 */
static void backend_tls_failed(struct session *s, const char *why)
{
    SSL_SESSION **slot = worker_backend_session(s->w, s->svc_index);
    char esc[200];

    if (slot != NULL) {    /* start afresh next time */
        SSL_SESSION_free(*slot);
        *slot = NULL;
    }
    if (backend_strict(s) && backend_refuse(s, why))
        return;
    if (s->svc->backend_implicit_tls || s->backend_plain_retry) {
        backend_give_up(s, REPLY_BACKEND_UNAVAILABLE, "backend_tls_failed",
                        why);
        return;
    }
    log_escape(esc, sizeof esc, why, strlen(why));
    log_event(&s->w->log, LOG_WARN, s->id,
              "event=backend_tls_failed error=\"%s\" action=retry_plaintext",
              esc);
    s->backend_plain_retry = true;
    s->bhs_start = 0;
    conn_close(s->backend);
    s->backend = NULL;
    backend_start(s);
}

/* backend_handshake_timeout - see session_int.h. */
void backend_handshake_timeout(struct session *s)
{
    backend_tls_failed(s, "TLS handshake timed out");
}

static void backend_on_handshake(struct conn *c, void *ud, int status)
{
    struct session *s = ud;

    if (s->closing || c != s->backend)
        return;
    if (status != 0) {
        backend_tls_failed(s, conn_error(c));
        return;
    }
    s->bhs_start = 0;
    backend_record_tls(s);
    if (s->svc->backend_tls == BACKEND_TLS_VERIFY &&
        SSL_get_verify_result(conn_ssl(c)) != X509_V_OK &&
        backend_refuse(s, s->backend_verify))
        return;
    log_event(&s->w->log, LOG_INFO, s->id,
              "event=backend_tls tls=%s verify=%s resumed=%s",
              s->backend_tls_desc, s->backend_verify,
              SSL_session_reused(conn_ssl(c)) ? "yes" : "no");
    if (s->bstate == BACKEND_TLS_IMPLICIT)
        backend_set_state(s, BACKEND_GREETING);
    else
        backend_finish(s, false, 0);
}

static void backend_on_eof(struct conn *c, void *ud, int status)
{
    struct session *s = ud;
    char why[160];

    if (s->closing || c != s->backend)
        return;
    if (s->bstate == BACKEND_READY) {
        session_backend_eof(s, status);
        return;
    }
    if (s->bstate == BACKEND_TLS_HANDSHAKE || s->bstate == BACKEND_TLS_IMPLICIT) {
        /* a reset during the handshake is a failed handshake like any */
        snprintf(why, sizeof why, "connection %s during TLS handshake%s%s",
                 status == 0 ? "closed" : "lost",
                 conn_error(c)[0] ? ": " : "", conn_error(c));
        backend_tls_failed(s, why);
        return;
    }
    snprintf(why, sizeof why, "closed during %s%s%s",
             backend_state_name(s->bstate), conn_error(c)[0] ? ": " : "",
             conn_error(c));
    if (!(backend_strict(s) && s->bstate >= BACKEND_EHLO &&
          backend_refuse(s, why)))
        backend_give_up(s, REPLY_BACKEND_UNAVAILABLE, "backend_unreachable",
                        why);
}

static void backend_on_drain(struct conn *c, void *ud)
{
    struct session *s = ud;

    if (!s->closing && c == s->backend)
        session_backend_drain(s);
}

static void backend_on_close(struct conn *c, void *ud)
{
    struct session *s = ud;

    if (s->backend == c)
        s->backend = NULL;
    session_unref(s);
}

static void backend_send(struct session *s, const char *line)
{
    conn_write(s->backend, line, strlen(line));
}

/*
 * backend_setup_input - one reply per setup step.  Anything the backend
 * sends that was not asked for (bytes after the reply) is a protocol
 * error, except after its 220 to STARTTLS: those bytes are dropped
 * unread (RFC 3207 5: no plaintext state survives; CVE-2011-0411 class).
 */
void backend_setup_input(struct session *s)
{
    struct smtp_reply rep;
    enum smtp_reply_result r;
    char ehlo[300];
    char esc[200];

    while (!s->closing && s->bin.len > 0) {
        r = smtp_reply_scan(sbuf_ptr(&s->bin), s->bin.len, SESSION_REPLY_LINE,
                            SESSION_REPLY_LINES, &rep);
        if (r == SMTP_REPLY_MORE)
            return;
        if (r == SMTP_REPLY_BAD ||
            (s->bstate != BACKEND_GREETING && s->bstate != BACKEND_EHLO &&
             s->bstate != BACKEND_STARTTLS &&
             s->bstate != BACKEND_XCLIENT_EHLO &&
             s->bstate != BACKEND_XCLIENT)) {
            log_escape(esc, sizeof esc, sbuf_ptr(&s->bin),
                       s->bin.len < 60 ? s->bin.len : 60);
            log_event(&s->w->log, LOG_WARN, s->id,
                      "event=backend_garbage state=%s data=\"%s\"",
                      backend_state_name(s->bstate), esc);
            if (!(backend_strict(s) && backend_refuse(s, "protocol error")))
                backend_give_up(s, REPLY_BACKEND_PROTOCOL, "backend_error",
                                "protocol error during setup");
            return;
        }
        switch (s->bstate) {
        case BACKEND_GREETING:
            if (rep.code != 220 && backend_strict(s)) {
                log_escape(esc, sizeof esc, sbuf_ptr(&s->bin), rep.len);
                if (backend_refuse(s, esc))
                    return;
            }
            free(s->greeting);
            s->greeting = malloc(rep.len);
            if (s->greeting == NULL) {
                backend_give_up(s, REPLY_BACKEND_UNAVAILABLE, "backend_error",
                                "out of memory");
                return;
            }
            memcpy(s->greeting, sbuf_ptr(&s->bin), rep.len);
            s->greeting_len = rep.len;
            sbuf_consume(&s->bin, rep.len);
            if (s->bin.len > 0) {
                backend_give_up(s, REPLY_BACKEND_PROTOCOL, "backend_error",
                                "unsolicited data after greeting");
                return;
            }
            if (rep.code != 220) {
                backend_ready(s);
                return;
            }
            if (s->svc->backend_tls == BACKEND_TLS_NONE ||
                s->svc->backend_implicit_tls || s->backend_plain_retry) {
                backend_finish(s, false, 0);
                return;
            }
            snprintf(ehlo, sizeof ehlo, "EHLO %s\r\n", s->w->cfg->hostname);
            backend_set_state(s, BACKEND_EHLO);
            backend_send(s, ehlo);
            break;
        case BACKEND_EHLO: {
            unsigned caps = smtp_ehlo_caps(sbuf_ptr(&s->bin), rep.len);

            sbuf_consume(&s->bin, rep.len);
            if (s->bin.len > 0) {
                backend_give_up(s, REPLY_BACKEND_PROTOCOL, "backend_error",
                                "unsolicited data after EHLO reply");
                return;
            }
            if (rep.code == 250 && (caps & SMTP_CAP_STARTTLS)) {
                backend_set_state(s, BACKEND_STARTTLS);
                backend_send(s, "STARTTLS\r\n");
                break;
            }
            if (rep.code == 500 || rep.code == 502)
                s->backend_helo_only = true;
            if (backend_strict(s) &&
                backend_refuse(s, rep.code == 250 ? "STARTTLS not offered"
                                                  : "EHLO refused"))
                return;
            log_event(&s->w->log, LOG_INFO, s->id,
                      "event=backend_plaintext reason=%s",
                      rep.code == 250 ? "no_starttls" : "ehlo_refused");
            backend_finish(s, rep.code == 250, caps);
            return;
        }
        case BACKEND_STARTTLS:
            if (rep.code != 220) {
                sbuf_consume(&s->bin, rep.len);
                if (backend_strict(s) && backend_refuse(s, "STARTTLS refused"))
                    return;
                log_event(&s->w->log, LOG_INFO, s->id,
                          "event=backend_plaintext reason=starttls_refused code=%d",
                          rep.code);
                backend_finish(s, false, 0);
                return;
            }
            sbuf_consume(&s->bin, rep.len);
            if (s->bin.len > 0) {
                log_event(&s->w->log, LOG_WARN, s->id,
                          "event=backend_response_injection dropped=%zu",
                          s->bin.len);
                sbuf_free(&s->bin);
            }
            backend_tls_begin(s, BACKEND_TLS_HANDSHAKE);
            return;
        case BACKEND_XCLIENT_EHLO: {
            unsigned caps = smtp_ehlo_caps(sbuf_ptr(&s->bin), rep.len);

            sbuf_consume(&s->bin, rep.len);
            if (rep.code != 250) {
                if (rep.code == 500 || rep.code == 502)
                    s->backend_helo_only = true;
                log_event(&s->w->log, LOG_WARN, s->id,
                          "event=xclient_unavailable reason=ehlo_refused");
                backend_ready(s);
                return;
            }
            backend_finish(s, true, caps);
            return;
        }
        case BACKEND_XCLIENT:
            sbuf_consume(&s->bin, rep.len);
            if (rep.code != 220) {
                log_event(&s->w->log, LOG_WARN, s->id,
                          "event=xclient_refused code=%d", rep.code);
            } else {
                s->xclient_ok = true;
                log_event(&s->w->log, LOG_INFO, s->id,
                          "event=xclient client=%s", s->client_addr);
            }
            backend_ready(s);
            return;
        default:
            return;
        }
    }
}
