/* The journal of finished executions: a ring in a memory-mapped file,
 * written on the loop and freed by the ledger's writer, and read back at
 * the next start after a crash. An entry is its length, then the
 * execution's fields; positions are logical byte counts that only grow, so
 * an entry may wrap around the end of the ring. */
#include "pgtally/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pgtally/log.h"

#define HEADER_BYTES 4096
#define MAGIC "PGTJRN2" /* 2: entries hold the Bind parameters' hash */

/* The first page of the file. */
typedef struct header {
    char magic[8];     /* MAGIC */
    uint32_t layout;   /* LAYOUT: entries of another build are not read */
    uint32_t unused;   /* zero */
    uint64_t capacity; /* bytes of the ring */
    uint64_t head;     /* position after the last entry written */
    uint64_t done;     /* position up to which entries are durable */
} header_t;

/* The sizes of the structs an entry copies whole. */
#define LAYOUT ((uint32_t)(sizeof(pgt_done_t) << 16 | sizeof(pgt_estimate_t)))

struct pgt_journal {
    char *path;        /* the file */
    int fd;            /* open and locked */
    header_t *hdr;     /* the mapping's first page */
    uint8_t *ring;     /* the ring, after it */
    uint64_t capacity; /* bytes of the ring */
    uint64_t appended; /* entries written by this process */
    uint64_t full;     /* entries that did not fit */
    bool full_logged;  /* a full ring was logged in this episode */
};

/* ---- Bytes in the ring ---------------------------------------------------- */

static void ring_put(pgt_journal_t *j, uint64_t pos, const void *src, size_t n)
{
    size_t at = (size_t)(pos % j->capacity), first = j->capacity - at < n ? j->capacity - at : n;
    memcpy(j->ring + at, src, first);
    memcpy(j->ring, (const uint8_t *)src + first, n - first);
}

static void ring_get(const pgt_journal_t *j, uint64_t pos, void *dst, size_t n)
{
    size_t at = (size_t)(pos % j->capacity), first = j->capacity - at < n ? j->capacity - at : n;
    memcpy(dst, j->ring + at, first);
    memcpy((uint8_t *)dst + first, j->ring, n - first);
}

/* ---- Opening -------------------------------------------------------------- */

/* Maps an open, locked file as a journal of bytes, keeping a valid one's
 * entries. Returns 0, or -1 with errno set. */
static int map_file(pgt_journal_t *j, size_t bytes)
{
    struct stat st;
    if (fstat(j->fd, &st) != 0)
        return -1;
    size_t want = HEADER_BYTES + bytes;
    bool fresh = (size_t)st.st_size != want;
    if (fresh && ftruncate(j->fd, (off_t)want) != 0)
        return -1;
    void *m = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED, j->fd, 0);
    if (m == MAP_FAILED)
        return -1;
    j->hdr = m;
    j->ring = (uint8_t *)m + HEADER_BYTES;
    j->capacity = bytes;
    header_t *h = j->hdr;
    bool valid = !fresh && memcmp(h->magic, MAGIC, sizeof(MAGIC)) == 0 && h->layout == LAYOUT &&
                 h->capacity == bytes && h->done <= h->head && h->head - h->done <= bytes;
    if (!valid) {
        if (!fresh && h->head != h->done)
            PGT_WARN("journal_unreadable",
                     "path=\"%s\" hint=\"written by another build or "
                     "damaged; its executions cannot be metered again\"",
                     j->path);
        memset(h, 0, sizeof(*h));
        memcpy(h->magic, MAGIC, sizeof(MAGIC));
        h->layout = LAYOUT;
        h->capacity = bytes;
    }
    return 0;
}

/* Opens and locks path. Returns the descriptor, -1 with errno, or -2 when
 * another process holds it. */
static int open_locked(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return e == EWOULDBLOCK ? -2 : -1;
    }
    return fd;
}

pgt_journal_t *pgt_journal_open(const char *path, size_t bytes, char *err, size_t errlen)
{
    pgt_journal_t *j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    bytes = bytes ? bytes : PGT_JOURNAL_BYTES;
    j->fd = -1;
    for (int i = 1; i <= PGT_JOURNAL_FILES && j->fd < 0; i++) {
        free(j->path);
        j->path = NULL;
        if ((i == 1 ? asprintf(&j->path, "%s", path) : asprintf(&j->path, "%s.%d", path, i)) < 0) {
            j->path = NULL;
            break;
        }
        j->fd = open_locked(j->path);
        if (j->fd == -1)
            break;
    }
    if (j->fd < 0 || map_file(j, bytes) != 0) {
        snprintf(err, errlen, "%s: %s", j->path ? j->path : path,
                 j->fd == -2 ? "held by other pgtally processes" : strerror(errno));
        pgt_journal_close(j);
        return NULL;
    }
    return j;
}

const char *pgt_journal_path(const pgt_journal_t *j)
{
    return j->path;
}

void pgt_journal_close(pgt_journal_t *j)
{
    if (!j)
        return;
    if (j->hdr)
        munmap(j->hdr, HEADER_BYTES + j->capacity);
    if (j->fd >= 0)
        close(j->fd); /* drops the lock */
    free(j->path);
    free(j);
}

/* ---- Entries -------------------------------------------------------------- */

/* The fields of an execution an entry holds, whole, before its strings. */
typedef struct fixed {
    int64_t instance;     /* the records' instance */
    int64_t seq;          /* the first record's seq */
    int64_t portal_batch; /* e->portal_batch */
    int64_t sent_us;      /* e->sent_us */
    uint64_t session_id;  /* attr */
    int32_t backend_pid;  /* attr */
    uint8_t flags;        /* extended, function_call, failed, unknown_portal */
    uint8_t unused[3];    /* zero */
    int32_t ndone;        /* completions after the strings */
    pgt_estimate_t est;   /* e->est */
    uint64_t params;      /* e->params */
} fixed_t;

static size_t str_len(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Bytes of e's entry after its length. */
static size_t entry_size(const pgt_exec_t *e)
{
    const pgt_attr_t *a = e->attr;
    return sizeof(fixed_t) + 5 * sizeof(uint32_t) + str_len(a->user) + str_len(a->database) +
           str_len(a->application) + str_len(a->client_addr) + e->text->len +
           (size_t)e->ndone * sizeof(pgt_done_t);
}

/* Writes s at *pos as its length and bytes. */
static void put_str(pgt_journal_t *j, uint64_t *pos, const char *s, size_t n)
{
    uint32_t len = (uint32_t)n;
    ring_put(j, *pos, &len, sizeof(len));
    ring_put(j, *pos + sizeof(len), s ? s : "", n);
    *pos += sizeof(len) + n;
}

uint64_t pgt_journal_append(pgt_journal_t *j, const pgt_exec_t *e)
{
    size_t n = entry_size(e);
    uint64_t head = j->hdr->head, done = __atomic_load_n(&j->hdr->done, __ATOMIC_ACQUIRE);
    if (n > UINT32_MAX || n + sizeof(uint32_t) > j->capacity - (head - done)) {
        j->full++;
        if (!j->full_logged)
            PGT_WARN("journal_full",
                     "path=\"%s\" bytes=%llu hint=\"the ledger is behind; "
                     "executions are still metered, but a crash now may lose some\"",
                     j->path, (unsigned long long)j->capacity);
        j->full_logged = true;
        return 0;
    }
    j->full_logged = false;
    const pgt_attr_t *a = e->attr;
    fixed_t f = {.instance = e->instance,
                 .seq = e->seq,
                 .portal_batch = e->portal_batch,
                 .sent_us = e->sent_us,
                 .session_id = a->session_id,
                 .backend_pid = a->backend_pid,
                 .flags = (uint8_t)(e->extended | e->function_call << 1 | e->failed << 2 |
                                    e->unknown_portal << 3),
                 .ndone = e->ndone,
                 .est = e->est,
                 .params = e->params};
    uint32_t len = (uint32_t)n;
    uint64_t pos = head;
    ring_put(j, pos, &len, sizeof(len));
    pos += sizeof(len);
    ring_put(j, pos, &f, sizeof(f));
    pos += sizeof(f);
    put_str(j, &pos, a->user, str_len(a->user));
    put_str(j, &pos, a->database, str_len(a->database));
    put_str(j, &pos, a->application, str_len(a->application));
    put_str(j, &pos, a->client_addr, str_len(a->client_addr));
    put_str(j, &pos, e->text->data, e->text->len);
    ring_put(j, pos, e->done, (size_t)e->ndone * sizeof(pgt_done_t));
    pos += (size_t)e->ndone * sizeof(pgt_done_t);
    /* The entry is whole before the head moves past it. */
    __atomic_store_n(&j->hdr->head, pos, __ATOMIC_RELEASE);
    j->appended++;
    return pos;
}

void pgt_journal_done(pgt_journal_t *j, uint64_t end)
{
    uint64_t cur = __atomic_load_n(&j->hdr->done, __ATOMIC_ACQUIRE);
    while (end > cur && end <= __atomic_load_n(&j->hdr->head, __ATOMIC_ACQUIRE) &&
           !__atomic_compare_exchange_n(&j->hdr->done, &cur, end, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        ;
}

void pgt_journal_stats(pgt_journal_t *j, pgt_journal_stats_t *out)
{
    out->appended = j->appended;
    out->full = j->full;
    out->pending = __atomic_load_n(&j->hdr->head, __ATOMIC_ACQUIRE) -
                   __atomic_load_n(&j->hdr->done, __ATOMIC_ACQUIRE);
}

void pgt_journal_reset(pgt_journal_t *j)
{
    j->hdr->done = j->hdr->head = 0;
}

/* ---- Reading back --------------------------------------------------------- */

/* Reads a string at *pos of an entry ending at end into a new string.
 * Returns it, or NULL when it overruns the entry or memory is out. */
static char *get_str(const pgt_journal_t *j, uint64_t *pos, uint64_t end, size_t *lenp)
{
    uint32_t len;
    if (end - *pos < sizeof(len))
        return NULL;
    ring_get(j, *pos, &len, sizeof(len));
    *pos += sizeof(len);
    if (end - *pos < len)
        return NULL;
    char *s = malloc((size_t)len + 1);
    if (!s)
        return NULL;
    ring_get(j, *pos, s, len);
    s[len] = '\0';
    *pos += len;
    if (lenp)
        *lenp = len;
    return s;
}

/* Makes the execution of the entry at [pos, end). Returns it, or NULL. */
static pgt_exec_t *decode(const pgt_journal_t *j, uint64_t pos, uint64_t end)
{
    fixed_t f;
    if (end - pos < sizeof(f))
        return NULL;
    ring_get(j, pos, &f, sizeof(f));
    pos += sizeof(f);
    char *s[4] = {0}, *text = NULL;
    size_t tlen = 0;
    bool ok = f.ndone >= 0;
    for (int i = 0; ok && i < 4; i++)
        ok = (s[i] = get_str(j, &pos, end, NULL)) != NULL;
    ok = ok && (text = get_str(j, &pos, end, &tlen)) != NULL;
    ok = ok && end - pos == (uint64_t)f.ndone * sizeof(pgt_done_t);
    pgt_exec_t *e = ok ? calloc(1, sizeof(*e)) : NULL;
    if (e) {
        e->attr = pgt_attr_new(f.session_id, s[0], s[1], s[2], s[3]);
        e->text = pgt_text_new(text, tlen);
        e->done = malloc((size_t)(f.ndone ? f.ndone : 1) * sizeof(pgt_done_t));
    }
    for (int i = 0; i < 4; i++)
        free(s[i]);
    free(text);
    if (!e || !e->attr || !e->text || !e->done) {
        if (e)
            pgt_exec_free(e);
        return NULL;
    }
    ring_get(j, pos, e->done, (size_t)f.ndone * sizeof(pgt_done_t));
    e->attr->backend_pid = f.backend_pid;
    e->ndone = e->done_cap = f.ndone;
    e->instance = f.instance;
    e->seq = f.seq;
    e->portal_batch = f.portal_batch;
    e->params = f.params;
    e->sent_us = f.sent_us;
    e->est = f.est;
    e->extended = f.flags & 1;
    e->function_call = f.flags & 2;
    e->failed = f.flags & 4;
    e->unknown_portal = f.flags & 8;
    return e;
}

uint64_t pgt_journal_replay(pgt_journal_t *j, void (*cb)(pgt_exec_t *e, void *arg), void *arg,
                            uint64_t *damaged)
{
    uint64_t n = 0, pos = j->hdr->done, head = j->hdr->head;
    *damaged = 0;
    while (head - pos >= sizeof(uint32_t)) {
        uint32_t len;
        ring_get(j, pos, &len, sizeof(len));
        pos += sizeof(len);
        pgt_exec_t *e = len <= head - pos ? decode(j, pos, pos + len) : NULL;
        if (!e) {
            (*damaged)++;
            break; /* the rest cannot be found */
        }
        pos += len;
        cb(e, arg);
        n++;
    }
    return n;
}
