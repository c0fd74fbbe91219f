/*
 * trace.h - the Received: header of "trace_header = yes" (README "Trace
 * header"), built from a plain struct of facts: no session, no clock of
 * its own, so it is tested on its own.
 */
#ifndef STARTTLS_PROXY_TRACE_H
#define STARTTLS_PROXY_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

struct trace_facts {
    const char *helo;             /* the client's EHLO/HELO name, or "" */
    const struct sockaddr_storage *client;
    bool esmtp;                   /* it said EHLO */
    const char *client_tls;       /* "TLSv1.3/TLS_AES_..." or NULL */
    const char *client_cert;      /* its certificate's subject, or NULL */
    const char *client_verify;    /* its verification result, or NULL */
    const char *by;               /* our hostname */
    uint64_t id;                  /* the session id */
    const char *backend_host;     /* or "ADDR:PORT" with backend_port NULL
                                     (transparent: the original
                                     destination) */
    const char *backend_port;
    const char *backend_policy;   /* "none", "may", "encrypt", "verify" */
    const char *backend_tls;      /* as client_tls, or NULL */
    const char *backend_verify;   /* "verified", "no_cert", an error */
    const char *backend_dane;     /* DANE's verdict, or NULL */
    const char *backend_sts;      /* the MTA-STS policy applied, or NULL */
    time_t when;
};

/*
 * trace_header - one Received: header (RFC 5321 4.4, RFC 5322 3.6.7)
 * with its CRLF, folded over five lines: who the client is and how it
 * reached us (protocol, cipher, certificate), and how we reached the
 * backend.  Peer text is made safe for a comment.  Returns its length,
 * 0 when it does not fit in cap.
 */
size_t trace_header(const struct trace_facts *f, char *out, size_t cap);

/* trace_comment_text - in made safe inside an RFC 5322 comment:
 * printable ASCII only, no parentheses or backslashes ('?' instead),
 * capped at cap - 1 bytes. */
void trace_comment_text(const char *in, char *out, size_t cap);

#endif
