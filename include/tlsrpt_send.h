/*
 * tlsrpt_send.h - TLS reports (RFC 8460) leaving the proxy: on one
 * worker loop, a timer saves the counts of the store (tlsrpt.h) every
 * few seconds and takes each finished window out of it; for each domain
 * the _smtp._tls TXT record is looked up through the loop's resolver,
 * the JSON report is written gzip'd into tlsrpt_dir (atomically, named
 * as RFC 8460 5.3 names the attachment), and POSTed to every https: rua
 * through the loop's fetcher (sts_fetch.h) as application/tlsrpt+gzip.
 * mailto: addresses are left to the local MTA: the file stays, and a
 * log line names it and the address.  A report every https: address
 * took, and no mailto: address wants, is removed.
 */
#ifndef STARTTLS_PROXY_TLSRPT_SEND_H
#define STARTTLS_PROXY_TLSRPT_SEND_H

#include <uv.h>

struct dns_resolver;
struct logger;
struct sts_fetcher;
struct tlsrpt_store;
struct x509_store_st;

struct tlsrpt_settings {
    const char *organization;        /* organization-name */
    const char *contact;             /* contact-info: an address */
    const char *submitter;           /* the contact's domain */
    unsigned tick_ms;                /* how often counts are saved */
};

/* The certificate store a report to domain's servers is checked with. */
typedef struct x509_store_st *(*tlsrpt_store_fn)(void *ud,
                                                 const char *domain);

struct tlsrpt_sender;

/* tlsrpt_sender_new - start sending st's reports on loop; the settings
 * are copied.  NULL when out of memory. */
struct tlsrpt_sender *tlsrpt_sender_new(uv_loop_t *loop,
                                        struct tlsrpt_store *st,
                                        struct dns_resolver *r,
                                        struct sts_fetcher *f,
                                        const struct tlsrpt_settings *set,
                                        tlsrpt_store_fn store_for, void *ud,
                                        struct logger *log);

/* tlsrpt_sender_close - save the counts, drop reports under way (their
 * files stay in the directory), free s once its timer has closed.  Call
 * it before the fetcher and the resolver are closed.  NULL is fine. */
void tlsrpt_sender_close(struct tlsrpt_sender *s);

#endif
