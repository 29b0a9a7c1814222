/* Unit tests of the cancel-key map, including growth past many entries. */
#include <stdint.h>

#include "pgtally/cancel.h"
#include "task.h"

int main(void)
{
    pgt_cancel_map_t *m = pgt_cancel_map_new();
    static int values[5000];
    for (uint32_t i = 0; i < 5000; i++)
        CHECK_INT(pgt_cancel_map_put(m, 1000 + i, i * 7919u, &values[i]), 0);
    CHECK_INT(pgt_cancel_map_count(m), 5000);
    for (uint32_t i = 0; i < 5000; i++)
        CHECK(pgt_cancel_map_get(m, 1000 + i, i * 7919u) == &values[i]);
    /* A right pid with a wrong key is not a match. */
    CHECK(pgt_cancel_map_get(m, 1000, 1) == NULL);
    /* Deleting with a different owner leaves the entry. */
    pgt_cancel_map_del(m, 1001, 7919u, &values[0]);
    CHECK(pgt_cancel_map_get(m, 1001, 7919u) == &values[1]);
    for (uint32_t i = 0; i < 5000; i += 2)
        pgt_cancel_map_del(m, 1000 + i, i * 7919u, &values[i]);
    CHECK_INT(pgt_cancel_map_count(m), 2500);
    CHECK(pgt_cancel_map_get(m, 1000, 0) == NULL);
    CHECK(pgt_cancel_map_get(m, 1003, 3 * 7919u) == &values[3]);
    pgt_cancel_map_free(m);
    TASK_DONE();
}
