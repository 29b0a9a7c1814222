/* A chained hash map from (backend pid, secret key) to a session. */
#include "pgtally/cancel.h"

#include <stdlib.h>

typedef struct entry {
    struct entry *next; /* next entry in the same bucket */
    uint32_t pid;       /* server backend pid */
    uint32_t key;       /* server secret key */
    void *value;        /* the session holding that key */
} entry_t;

struct pgt_cancel_map {
    entry_t **buckets; /* nbuckets chains */
    size_t nbuckets;   /* a power of two */
    size_t count;      /* entries stored */
};

static size_t slot(const pgt_cancel_map_t *m, uint32_t pid, uint32_t key)
{
    uint64_t h = ((uint64_t)pid << 32 | key) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (m->nbuckets - 1);
}

pgt_cancel_map_t *pgt_cancel_map_new(void)
{
    pgt_cancel_map_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->nbuckets = 64;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    return m;
}

void pgt_cancel_map_free(pgt_cancel_map_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        entry_t *e = m->buckets[i];
        while (e) {
            entry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    free(m);
}

static void grow(pgt_cancel_map_t *m)
{
    size_t n = m->nbuckets * 2;
    entry_t **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return; /* keep the longer chains; still correct */
    entry_t **old = m->buckets;
    size_t oldn = m->nbuckets;
    m->buckets = nb;
    m->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        entry_t *e = old[i];
        while (e) {
            entry_t *next = e->next;
            size_t s = slot(m, e->pid, e->key);
            e->next = nb[s];
            nb[s] = e;
            e = next;
        }
    }
    free(old);
}

int pgt_cancel_map_put(pgt_cancel_map_t *m, uint32_t pid, uint32_t key, void *value)
{
    size_t s = slot(m, pid, key);
    for (entry_t *e = m->buckets[s]; e; e = e->next) {
        if (e->pid == pid && e->key == key) {
            e->value = value;
            return 0;
        }
    }
    entry_t *e = malloc(sizeof(*e));
    if (!e)
        return -1;
    e->pid = pid;
    e->key = key;
    e->value = value;
    e->next = m->buckets[s];
    m->buckets[s] = e;
    m->count++;
    if (m->count > m->nbuckets * 2)
        grow(m);
    return 0;
}

void *pgt_cancel_map_get(const pgt_cancel_map_t *m, uint32_t pid, uint32_t key)
{
    for (entry_t *e = m->buckets[slot(m, pid, key)]; e; e = e->next)
        if (e->pid == pid && e->key == key)
            return e->value;
    return NULL;
}

void pgt_cancel_map_del(pgt_cancel_map_t *m, uint32_t pid, uint32_t key, const void *value)
{
    entry_t **pp = &m->buckets[slot(m, pid, key)];
    for (; *pp; pp = &(*pp)->next) {
        entry_t *e = *pp;
        if (e->pid == pid && e->key == key && e->value == value) {
            *pp = e->next;
            free(e);
            m->count--;
            return;
        }
    }
}

size_t pgt_cancel_map_count(const pgt_cancel_map_t *m)
{
    return m->count;
}

void pgt_cancel_packet(uint8_t pkt[16], uint32_t pid, uint32_t key)
{
    const uint32_t words[4] = {16, 80877102 /* CancelRequest */, pid, key};
    for (int i = 0; i < 16; i++)
        pkt[i] = (uint8_t)(words[i / 4] >> (8 * (3 - i % 4)));
}
