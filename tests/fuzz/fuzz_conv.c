/* libFuzzer target for the conversation model: each input byte is one
 * event, a client's or pgtally's message going upstream or a server
 * message coming back, of a type the byte picks. Whatever the order, the
 * model's counts must stay consistent with its ring, nothing it reports
 * skipped may be lost, and no access may go out of bounds. */
#include <stdint.h>
#include <stdlib.h>

#include "pgtally/conv.h"

static const uint8_t client_types[] = "QPBDECSHFdcfX";
static const uint8_t server_types[] = "123tTnDCIsEZGHWdcNSAV";

static void check(const pgt_conv_t *cv)
{
    uint32_t readies = 0, ours = 0;
    for (uint32_t i = 0; i < cv->len; i++) {
        const pgt_conv_entry_t *e = &cv->q[(cv->head + i) & (cv->cap - 1)];
        if (!(e->flags & 3) && (e->type == 'Q' || e->type == 'F' || e->type == 'S'))
            readies++;
        if (e->from == PGT_CONV_OURS && !(e->flags & 2))
            ours++;
    }
    if (readies != cv->readies || ours != cv->ours || cv->skipping > cv->len)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pgt_conv_t cv;
    pgt_conv_init(&cv);
    for (size_t i = 0; i < size; i++) {
        uint8_t b = data[i];
        if (b < 0x80) {
            pgt_conv_from_t from = b & 0x40 ? PGT_CONV_OURS : PGT_CONV_CLIENT;
            pgt_conv_sent(&cv, client_types[(b & 0x3f) % (sizeof(client_types) - 1)], from, 0);
        } else {
            pgt_conv_reply_t r;
            pgt_conv_reply(&cv, server_types[(b & 0x7f) % (sizeof(server_types) - 1)],
                           (b & 2)   ? "08P01"
                           : (b & 4) ? "22P02"
                                     : NULL,
                           &r);
            pgt_conv_entry_t e;
            uint32_t taken = 0;
            /* Every other time the skipped are left for the next reply. */
            if (b & 1)
                while (pgt_conv_take_skipped(&cv, &e))
                    taken++;
            if ((b & 1) && taken != r.skipped)
                abort();
        }
        check(&cv);
    }
    pgt_conv_free(&cv);
    return 0;
}
