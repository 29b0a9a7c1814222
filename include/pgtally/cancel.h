/* The map from a server's BackendKeyData (pid, secret key) to the live
 * session that was given it. A CancelRequest arrives on a new connection
 * and carries only the key; this map says whether it is genuine and which
 * upstream it goes to. */
#ifndef PGTALLY_CANCEL_H
#define PGTALLY_CANCEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct pgt_cancel_map pgt_cancel_map_t;

/* Returns an empty map, or NULL when out of memory. */
pgt_cancel_map_t *pgt_cancel_map_new(void);

/* Frees the map (not the values). */
void pgt_cancel_map_free(pgt_cancel_map_t *m);

/* Records key -> value. A key already present is replaced. Returns 0, or
 * -1 when out of memory. */
int pgt_cancel_map_put(pgt_cancel_map_t *m, uint32_t pid, uint32_t key, void *value)
    __attribute__((warn_unused_result));

/* Returns the value recorded for (pid, key), or NULL. */
void *pgt_cancel_map_get(const pgt_cancel_map_t *m, uint32_t pid, uint32_t key);

/* Removes (pid, key) if it maps to value. */
void pgt_cancel_map_del(pgt_cancel_map_t *m, uint32_t pid, uint32_t key, const void *value);

/* Number of entries. */
size_t pgt_cancel_map_count(const pgt_cancel_map_t *m);

/* Writes the CancelRequest packet (protocol docs, "Canceling Requests in
 * Progress") for the server's BackendKeyData (pid, key) into pkt. */
void pgt_cancel_packet(uint8_t pkt[16], uint32_t pid, uint32_t key);

#endif
