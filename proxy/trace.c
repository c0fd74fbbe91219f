/*
 * trace.c - the Received: header, from a struct of facts.
 */
#include "trace.h"

#include <stdio.h>
#include <string.h>

#include "netaddr.h"

/* trace_comment_text - see trace.h. */
void trace_comment_text(const char *in, char *out, size_t cap)
{
    size_t o = 0;

    for (; *in != '\0' && o + 1 < cap; in++) {
        unsigned char c = (unsigned char)*in;

        out[o++] = (c < 0x20 || c > 0x7e || c == '(' || c == ')' ||
                    c == '\\') ? '?' : (char)c;
    }
    out[o] = '\0';
}

/* trace_split_tls - "TLSv1.3/TLS_AES_256_GCM_SHA384" into its version
 * (in ver) and its cipher (returned; "?" when there is none). */
static const char *trace_split_tls(const char *desc, char *ver, size_t cap)
{
    char *cipher;

    snprintf(ver, cap, "%s", desc);
    cipher = strchr(ver, '/');
    if (cipher == NULL)
        return "?";
    *cipher++ = '\0';
    return cipher;
}

/* trace_header - see trace.h. */
size_t trace_header(const struct trace_facts *f, char *out, size_t cap)
{
    char helo[128], addr[NETADDR_TEXT] = "unknown", client[400], backend[660];
    char date[64], ver[96], subject[200], verify[100], dane[100];
    char sts[200];
    const char *cipher;
    struct tm tm;
    int n;

    trace_comment_text(f->helo[0] ? f->helo : "unknown", helo, sizeof helo);
    if (!netaddr_literal(f->client, addr, sizeof addr))
        snprintf(addr, sizeof addr, "unknown");
    if (f->client_tls != NULL) {
        cipher = trace_split_tls(f->client_tls, ver, sizeof ver);
        trace_comment_text(f->client_cert ? f->client_cert : "none", subject,
                           sizeof subject);
        snprintf(client, sizeof client,
                 "(using %s with cipher %s; client certificate %s, %s)", ver,
                 cipher, subject, f->client_verify ? f->client_verify : "none");
    } else {
        snprintf(client, sizeof client, "(no TLS)");
    }
    if (f->backend_tls != NULL) {
        cipher = trace_split_tls(f->backend_tls, ver, sizeof ver);
        trace_comment_text(f->backend_verify, verify, sizeof verify);
        trace_comment_text(f->backend_dane ? f->backend_dane : "", dane,
                           sizeof dane);
        trace_comment_text(f->backend_sts ? f->backend_sts : "", sts,
                           sizeof sts);
        snprintf(backend, sizeof backend,
                 "(backend %s%s%s policy %s using %s with cipher %s; "
                 "certificate %s%s%s%s%s)",
                 f->backend_host, f->backend_port ? ":" : "",
                 f->backend_port ? f->backend_port : "", f->backend_policy, ver,
                 cipher, verify, dane[0] ? "; dane " : "", dane,
                 sts[0] ? "; sts " : "", sts);
    } else {
        snprintf(backend, sizeof backend, "(backend %s%s%s policy %s; no TLS)",
                 f->backend_host, f->backend_port ? ":" : "",
                 f->backend_port ? f->backend_port : "", f->backend_policy);
    }
    gmtime_r(&f->when, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    n = snprintf(out, cap,
                 "Received: from %s (%s)\r\n"
                 "\t%s\r\n"
                 "\tby %s (starttls-proxy) with %s%s id %016llx\r\n"
                 "\t%s;\r\n"
                 "\t%s\r\n",
                 helo, addr, client, f->by, f->esmtp ? "ESMTP" : "SMTP",
                 f->client_tls != NULL ? "S" : "", (unsigned long long)f->id,
                 backend, date);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}
