/*
 * connlimit.c - a mutex, a counter per service, and a small hash table of
 * counters per (service, address).  Entries are removed when they drop to
 * zero, so the table holds only addresses with live connections.
 */
#include "connlimit.h"
#include "netaddr.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define CONNLIMIT_BUCKETS 4096

struct connlimit_entry {
    struct connlimit_entry *next;
    size_t svc;
    unsigned char addr[16];       /* IPv4 as ::ffff:a.b.c.d */
    unsigned count;
};

struct connlimit {
    uv_mutex_t lock;
    size_t nservices;
    unsigned *per_service;
    struct connlimit_entry *buckets[CONNLIMIT_BUCKETS];
};

struct connlimit *connlimit_new(size_t nservices)
{
    struct connlimit *cl = calloc(1, sizeof *cl);

    if (cl == NULL)
        return NULL;
    cl->per_service = calloc(nservices ? nservices : 1, sizeof *cl->per_service);
    if (cl->per_service == NULL || uv_mutex_init(&cl->lock) != 0) {
        free(cl->per_service);
        free(cl);
        return NULL;
    }
    cl->nservices = nservices;
    return cl;
}

void connlimit_free(struct connlimit *cl)
{
    if (cl == NULL)
        return;
    for (size_t i = 0; i < CONNLIMIT_BUCKETS; i++) {
        struct connlimit_entry *e = cl->buckets[i], *next;

        for (; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    uv_mutex_destroy(&cl->lock);
    free(cl->per_service);
    free(cl);
}

/* connlimit_reserve - see connlimit.h. */
int connlimit_reserve(struct connlimit *cl, size_t nservices)
{
    unsigned *grown;
    int r = 0;

    uv_mutex_lock(&cl->lock);
    if (nservices > cl->nservices) {
        grown = realloc(cl->per_service, nservices * sizeof *grown);
        if (grown == NULL) {
            r = -1;
        } else {
            memset(grown + cl->nservices, 0,
                   (nservices - cl->nservices) * sizeof *grown);
            cl->per_service = grown;
            cl->nservices = nservices;
        }
    }
    uv_mutex_unlock(&cl->lock);
    return r;
}

static size_t connlimit_hash(size_t svc, const unsigned char key[16])
{
    uint64_t h = 1469598103934665603ull ^ svc;   /* FNV-1a */

    for (int i = 0; i < 16; i++) {
        h ^= key[i];
        h *= 1099511628211ull;
    }
    return (size_t)(h % CONNLIMIT_BUCKETS);
}

static struct connlimit_entry **connlimit_find(struct connlimit *cl,
                                               size_t svc,
                                               const unsigned char key[16])
{
    struct connlimit_entry **pp = &cl->buckets[connlimit_hash(svc, key)];

    while (*pp != NULL &&
           ((*pp)->svc != svc || memcmp((*pp)->addr, key, 16) != 0))
        pp = &(*pp)->next;
    return pp;
}

/* connlimit_acquire - see connlimit.h. */
enum connlimit_result connlimit_acquire(struct connlimit *cl, size_t svc,
                                        const struct sockaddr *addr,
                                        unsigned max_total,
                                        unsigned max_per_addr, int force)
{
    enum connlimit_result r = CONNLIMIT_OK;
    unsigned char key[16];
    struct connlimit_entry **pp, *e;

    netaddr_key(addr, key);
    uv_mutex_lock(&cl->lock);
    pp = connlimit_find(cl, svc, key);
    e = *pp;
    if (max_total != 0 && cl->per_service[svc] >= max_total)
        r = CONNLIMIT_SERVICE_FULL;
    else if (max_per_addr != 0 && e != NULL && e->count >= max_per_addr)
        r = CONNLIMIT_ADDRESS_FULL;
    if (r == CONNLIMIT_OK || force) {
        if (e == NULL) {
            e = calloc(1, sizeof *e);
            if (e == NULL) {
                uv_mutex_unlock(&cl->lock);
                return CONNLIMIT_SERVICE_FULL;
            }
            e->svc = svc;
            memcpy(e->addr, key, 16);
            *pp = e;
        }
        e->count++;
        cl->per_service[svc]++;
    }
    uv_mutex_unlock(&cl->lock);
    return r;
}

void connlimit_release(struct connlimit *cl, size_t svc,
                       const struct sockaddr *addr)
{
    unsigned char key[16];
    struct connlimit_entry **pp, *e;

    netaddr_key(addr, key);
    uv_mutex_lock(&cl->lock);
    pp = connlimit_find(cl, svc, key);
    e = *pp;
    if (e != NULL) {
        if (--e->count == 0) {
            *pp = e->next;
            free(e);
        }
        if (cl->per_service[svc] > 0)
            cl->per_service[svc]--;
    }
    uv_mutex_unlock(&cl->lock);
}
