/* libFuzzer target for the wire codec: the input is used as a startup
 * packet, as a stream of typed messages fed in uneven chunks, and as the
 * bodies pgtally inspects. Any out-of-bounds access is a bug. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "pgtally/wire.h"

static void count_cb(void *arg, uint8_t type, uint32_t len, const uint8_t *peek, size_t plen)
{
    size_t *n = arg;
    (void)type;
    (void)len;
    /* Touch every peeked byte so ASan sees a bad pointer. */
    for (size_t i = 0; i < plen; i++)
        *n += peek[i];
    (*n)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pgt_startup_t st;
    pgt_startup_error_t err;
    (void)pgt_wire_startup_parse(data, size, &st, &err);

    /* Feed the stream in chunks whose sizes come from the data itself. */
    pgt_framer_t f;
    pgt_framer_init(&f, 1 << 16);
    size_t n = 0, off = 0;
    while (off < size) {
        size_t chunk = 1 + (data[off] % 17);
        if (chunk > size - off)
            chunk = size - off;
        if (pgt_framer_feed(&f, data + off, chunk, count_cb, &n) != 0)
            break;
        off += chunk;
    }

    /* The same stream with Query, Parse and Bind captured whole, fed the way
     * a session does: what the framer leaves is fed again with more behind. */
    static const uint8_t capture[256] = {['Q'] = 1, ['P'] = 1, ['B'] = 1};
    pgt_framer_init(&f, 1 << 16);
    pgt_framer_capture(&f, capture, 1 << 10);
    size_t start = 0;
    off = 0;
    while (off < size) {
        size_t chunk = 1 + (data[off] % 23);
        if (chunk > size - off)
            chunk = size - off;
        off += chunk;
        int rc = pgt_framer_feed(&f, data + start, off - start, count_cb, &n);
        if (rc < 0)
            break;
        start = rc == PGT_WIRE_PARTIAL ? start + f.stopped_at : off;
    }

    uint8_t type;
    size_t total;
    (void)pgt_wire_next(data, size, 1 << 16, &type, &total);

    uint8_t out[512];
    pgt_msgbuf_t mb;
    pgt_msgbuf_init(&mb, out, sizeof(out));
    (void)pgt_wire_sasl_strip_plus(data, size, &mb);
    char sev[16];
    (void)pgt_wire_error_severity(data, size, sev, sizeof(sev));
    return 0;
}
