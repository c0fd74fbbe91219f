/*
 * connlimit.h - connection counts shared by every worker: per service and
 * per client address.
 *
 * The only state workers share that changes at run time.  It is touched
 * once when a session starts and once when it ends, never per byte: a
 * mutex is cheap there.
 */
#ifndef STARTTLS_PROXY_CONNLIMIT_H
#define STARTTLS_PROXY_CONNLIMIT_H

#include <stddef.h>
#include <sys/socket.h>

struct connlimit;

enum connlimit_result {
    CONNLIMIT_OK = 0,
    CONNLIMIT_SERVICE_FULL,   /* max_connections reached */
    CONNLIMIT_ADDRESS_FULL    /* max_connections_per_ip reached */
};

/* connlimit_new - counters for nservices services; NULL on failure. */
struct connlimit *connlimit_new(size_t nservices);

void connlimit_free(struct connlimit *cl);

/*
 * connlimit_reserve - counters for nservices services at least (a reload
 * gives an added service a slot of its own: see main.c); the counts of
 * the existing ones stay.  Returns -1 when out of memory.
 */
int connlimit_reserve(struct connlimit *cl, size_t nservices);

/*
 * connlimit_acquire - count one more connection from addr to service svc,
 * unless that passes max_total or max_per_addr (0: unlimited).  When
 * force is set the connection is counted even past the limits (the
 * "enforce = no" trial mode), and the result still says which limit it
 * passed.  Every call that returns CONNLIMIT_OK, or any result with force,
 * must be paired with connlimit_release.
 */
enum connlimit_result connlimit_acquire(struct connlimit *cl, size_t svc,
                                        const struct sockaddr *addr,
                                        unsigned max_total,
                                        unsigned max_per_addr, int force);

/* connlimit_release - the connection counted by connlimit_acquire ended. */
void connlimit_release(struct connlimit *cl, size_t svc,
                       const struct sockaddr *addr);

#endif
