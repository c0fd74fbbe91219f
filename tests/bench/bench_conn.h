/*
 * bench_conn.h - one TCP connection of the bench tools, with optional TLS
 * driven through memory BIOs (one pump: ciphertext in, SSL_read loop,
 * write BIO drained into one uv_write).
 *
 * Callbacks run from inside libuv callbacks.  Any of them may call
 * bench_conn_close(); the connection's memory stays valid until
 * ops->on_close, which is the only place where the owner may free it.
 */
#ifndef BENCH_CONN_H
#define BENCH_CONN_H

#include <stddef.h>

#include <openssl/ssl.h>
#include <uv.h>

/* Read scratch shared by every connection of one loop: libuv fills rbuf
 * and the read callback consumes it before returning, so one buffer per
 * loop is enough however many connections are open. */
#define BENCH_IO_BUF (64 * 1024)
struct bench_io {
    char rbuf[BENCH_IO_BUF];
    char pbuf[BENCH_IO_BUF];
};

struct bench_conn;

struct bench_conn_ops {
    /* plaintext from the peer (decrypted when TLS is on) */
    void (*on_data)(struct bench_conn *c, const char *p, size_t n);
    /* TLS handshake completed */
    void (*on_handshake)(struct bench_conn *c);
    /* peer closed (TCP FIN or TLS close_notify) */
    void (*on_eof)(struct bench_conn *c);
    /* I/O or TLS failure; what is a short static description */
    void (*on_error)(struct bench_conn *c, const char *what);
    /* write queue dropped to or below BENCH_CONN_LOW_WATER (may be NULL) */
    void (*on_drain)(struct bench_conn *c);
    /* handle closed: the owner may now free the memory */
    void (*on_close)(struct bench_conn *c);
};

#define BENCH_CONN_LOW_WATER (128 * 1024)
#define BENCH_CONN_HIGH_WATER (512 * 1024)

struct bench_conn {
    uv_tcp_t tcp;
    const struct bench_conn_ops *ops;
    struct bench_io *io;
    void *user;
    SSL *ssl;
    BIO *rbio;   /* network -> SSL, owned by ssl */
    BIO *wbio;   /* SSL -> network, owned by ssl */
    size_t wq_bytes; /* bytes handed to uv_write and not yet completed */
    int handshaking;
    int closing;
    int close_when_flushed;
};

/* bench_conn_init - set up the handle; 0 or a negative libuv error. */
int bench_conn_init(uv_loop_t *loop, struct bench_conn *c,
                    const struct bench_conn_ops *ops, struct bench_io *io,
                    void *user);

/* bench_conn_start_read - start delivering input; 0 or libuv error. */
int bench_conn_start_read(struct bench_conn *c);

/* bench_conn_start_tls - switch the connection to TLS (client or server
 * side); a client sends its ClientHello at once.  resume may be NULL.
 * 0 on success, -1 on failure (nothing to undo by the caller but close). */
int bench_conn_start_tls(struct bench_conn *c, SSL_CTX *ctx, int server,
                         SSL_SESSION *resume);

/* bench_conn_write - send n bytes (encrypted when TLS is on).  When
 * is_static is set, the bytes must stay valid and unchanged until the
 * connection is closed (used for the shared message body); otherwise they
 * are copied if they cannot be written at once.  0 or -1. */
int bench_conn_write(struct bench_conn *c, const void *p, size_t n,
                     int is_static);

/* bench_conn_end - send close_notify if TLS, then close once everything
 * queued has been written. */
void bench_conn_end(struct bench_conn *c);

/* bench_conn_close - close now; idempotent. */
void bench_conn_close(struct bench_conn *c);

/* bench_tls_error - the first queued OpenSSL error as text (static
 * storage of the caller's buffer), clearing the queue. */
const char *bench_tls_error(char *buf, size_t len);

/* bench_raise_nofile - raise RLIMIT_NOFILE to the hard limit; returns the
 * resulting soft limit. */
unsigned long bench_raise_nofile(void);

#endif
