/* The journal: a memory-mapped file where the loop writes each finished
 * execution before its result is forwarded to the client. The kernel keeps
 * the mapping's pages when the process dies, even by kill -9, so the next
 * start finds the executions that the ledger had not yet made durable
 * (committed, or written to the spool file) and meters them again; their
 * record ids make the ledger keep each record once. The ledger's writer
 * moves the journal's "done" mark as records become durable, which frees
 * the space before it. */
#ifndef PGTALLY_JOURNAL_H
#define PGTALLY_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pgtally/meter.h"

#define PGT_JOURNAL_BYTES (64u << 20) /* default size of the ring */
#define PGT_JOURNAL_FILES 8           /* path, path.2, ... path.8: one per live process */

typedef struct pgt_journal pgt_journal_t;

/* Opens (creating) the first of path, path.2, ... that no other live process
 * holds, with a ring of bytes (0: PGT_JOURNAL_BYTES). An existing journal
 * keeps its entries for pgt_journal_replay. Returns NULL with the cause in
 * err when none can be opened. */
pgt_journal_t *pgt_journal_open(const char *path, size_t bytes, char *err, size_t errlen);

/* The file a journal maps. */
const char *pgt_journal_path(const pgt_journal_t *j);

/* Hands each execution left in the journal by an earlier process to cb,
 * which owns it (free it with pgt_exec_free). Returns how many there were;
 * sets *damaged to the entries that could not be read. */
uint64_t pgt_journal_replay(pgt_journal_t *j, void (*cb)(pgt_exec_t *e, void *arg), void *arg,
                            uint64_t *damaged);

/* Empties the journal (after the replayed executions are durable). */
void pgt_journal_reset(pgt_journal_t *j);

/* On the loop: writes e, whose records are e->instance's from e->seq on.
 * Returns the journal position after it, for pgt_journal_done, or 0 when
 * it did not fit (the ring is full of executions not yet durable). */
uint64_t pgt_journal_append(pgt_journal_t *j, const pgt_exec_t *e);

/* From any thread: every execution up to position end is durable. */
void pgt_journal_done(pgt_journal_t *j, uint64_t end);

/* Counters. */
typedef struct pgt_journal_stats {
    uint64_t appended; /* executions written */
    uint64_t full;     /* executions that did not fit */
    uint64_t pending;  /* bytes written and not yet durable */
} pgt_journal_stats_t;
void pgt_journal_stats(pgt_journal_t *j, pgt_journal_stats_t *out);

/* Unmaps and closes. NULL is allowed. */
void pgt_journal_close(pgt_journal_t *j);

#endif
