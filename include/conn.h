/*
 * conn.h - one TCP connection with optional TLS.
 *
 * A conn is a libuv TCP handle plus, once TLS starts, an SSL object on two
 * memory BIOs.  Its owner sees plaintext only: on_data hands over
 * decrypted bytes, conn_write takes plaintext.  Nothing outside conn.c
 * calls SSL_read or SSL_write; all TLS I/O goes through one pump.
 *
 * Lifetime: a conn is freed by itself after its handle's close callback
 * has run and on_close has been called.  conn_close is idempotent; after
 * it, no callback but on_close is made.  A callback may close the conn
 * (or the owner) and the conn checks for that before touching anything.
 * Data passed to on_data is valid only during the call.
 */
#ifndef STARTTLS_PROXY_CONN_H
#define STARTTLS_PROXY_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <uv.h>

struct conn;

/* pending output above CONN_HIGH_WATER: the owner should stop feeding */
#define CONN_HIGH_WATER (256 * 1024)
/* on_drain fires when pending output falls below this after the above */
#define CONN_LOW_WATER (64 * 1024)

struct conn_cbs {
    /* decrypted bytes from the peer */
    void (*on_data)(struct conn *c, void *ud, const char *buf, size_t len);
    /* outgoing connection established (status 0) or failed (< 0) */
    void (*on_connect)(struct conn *c, void *ud, int status);
    /* TLS handshake finished (status 0) or failed (< 0; see conn_error) */
    void (*on_handshake)(struct conn *c, void *ud, int status);
    /* peer closed (status 0) or a read/write/TLS error (< 0) */
    void (*on_eof)(struct conn *c, void *ud, int status);
    /* pending output fell below CONN_LOW_WATER */
    void (*on_drain)(struct conn *c, void *ud);
    /* the handle is closed; the conn is freed right after this returns */
    void (*on_close)(struct conn *c, void *ud);
};

#define CONN_READ_BUF 65536      /* one socket read */
#define CONN_PLAIN_BUF 16384     /* one TLS record's plaintext */

/*
 * struct conn_loop - what the conns of one event loop share: the output
 * buffer (TLS records and plaintext alike, one conn's bytes at a time;
 * while a read or write callback runs, what its session writes waits
 * there and goes out in one write at the end: the cork) and the read
 * scratch space.  Its owner (the
 * loop's context) only embeds it; conn.c alone reads or writes it.
 */
struct conn_loop {
    uv_loop_t *loop;
    unsigned cork;
    char *obuf;
    size_t olen, ocap;
    struct conn *oowner;         /* whose bytes obuf holds, or NULL */
    struct conn *failed;         /* failures to report at the uncork */
    char rbuf[CONN_READ_BUF];
    char pbuf[CONN_PLAIN_BUF];
};

/* conn_loop_init, conn_loop_release - set up cl for loop; free its
 * buffer once the loop has run dry. */
void conn_loop_init(struct conn_loop *cl, uv_loop_t *loop);
void conn_loop_release(struct conn_loop *cl);

/* conn_loop_idle - no output is held (true between callbacks). */
bool conn_loop_idle(const struct conn_loop *cl);

/* conn_new - a conn on w's loop, not yet connected.  NULL on failure. */
struct conn *conn_new(struct conn_loop *cl, const struct conn_cbs *cbs,
                      void *ud);

/* conn_set_cbs - hand the conn to another set of callbacks. */
void conn_set_cbs(struct conn *c, const struct conn_cbs *cbs, void *ud);

/* conn_open - c takes over the accepted socket fd (closed on failure);
 * peer is its address as accept4 gave it. */
int conn_open(struct conn *c, int fd, const struct sockaddr_storage *peer);

/* conn_connect - connect c to addr; on_connect reports the result. */
int conn_connect(struct conn *c, const struct sockaddr *addr);

/* conn_connect_socket - conn_connect on a socket the caller made (with
 * its options set, perhaps bound); c owns fd from now on, also on
 * failure. */
int conn_connect_socket(struct conn *c, int fd, const struct sockaddr *addr);

/* conn_read_start / conn_read_stop - flow control on incoming data. */
int conn_read_start(struct conn *c);
void conn_read_stop(struct conn *c);

/*
 * conn_write - queue plaintext for the peer (encrypted when TLS is up).
 * The bytes are copied.  Returns 0, or -1 when the conn is closing or
 * broken (the error also reaches on_eof).
 */
int conn_write(struct conn *c, const char *buf, size_t len);

/*
 * conn_start_tls - from now on every byte in both directions is TLS.
 * server: act as the TLS server with ctx; otherwise as client with ssl
 * (ownership of ssl passes to the conn, also on failure).
 */
int conn_start_tls_server(struct conn *c, SSL_CTX *ctx);
int conn_start_tls_client(struct conn *c, SSL *ssl);

/* conn_close - close now; pending output is dropped. */
void conn_close(struct conn *c);

/*
 * conn_close_flush - send what is pending (and a TLS close_notify), then
 * close.  A peer that never reads keeps it open: owners keep a deadline.
 */
void conn_close_flush(struct conn *c);

size_t conn_pending(const struct conn *c);
/*
 * conn_arm_drain - make on_drain fire once pending output falls below
 * CONN_LOW_WATER (it also fires by itself after passing CONN_HIGH_WATER).
 * An owner that keeps the other leg paused between the marks needs it.
 */
void conn_arm_drain(struct conn *c);
SSL *conn_ssl(const struct conn *c);           /* NULL before TLS */
/* conn_error - text of the last TLS error, "" when none. */
const char *conn_error(const struct conn *c);
/* conn_peer - "ip:port" of the peer (empty before connect/accept). */
const char *conn_peer(const struct conn *c);
/* conn_peer_addr - the peer's address (family 0 before connect/accept). */
const struct sockaddr_storage *conn_peer_addr(const struct conn *c);
/* conn_local_addr - our side's address of the connection. */
int conn_local_addr(const struct conn *c, struct sockaddr_storage *out);

#endif
