/* Unit tests of the batch of refusals and cancels: counts by group, the
 * bound on groups and examples, adding two batches, and what the message
 * says. */
#include <stdlib.h>
#include <string.h>

#include "pgtally/alert_batch.h"
#include "task.h"

/* A verdict of action with budget, rule and SQLSTATE. */
static pgt_verdict_t verdict(pgt_verdict_action_t action, int64_t budget, int64_t rule,
                             const char *sqlstate, const char *message)
{
    pgt_verdict_t v = {.action = action, .budget_id = budget, .rule_id = rule};
    memcpy(v.sqlstate, sqlstate, 6);
    snprintf(v.message, sizeof(v.message), "%s", message);
    return v;
}

static void add(pgt_alert_batch_t *b, const char *user, const pgt_verdict_t *v, int64_t at)
{
    pgt_who_t who = {.user = user, .database = "db", .application = ""};
    pgt_alert_batch_add(b, &who, v, at);
}

/* Renders b; returns the text (malloc'd), with the subject in *subject. */
static char *render(const pgt_alert_batch_t *b, char **subject)
{
    pgt_buf_t s = {0}, t = {0};
    pgt_alert_batch_render(b, "db1:6433", &s, &t);
    CHECK(!s.failed && !t.failed);
    *subject = pgt_buf_take(&s);
    return pgt_buf_take(&t);
}

/* Events of one group count together; each other key is another group. */
static void test_groups(void)
{
    pgt_alert_batch_t b = {0};
    pgt_verdict_t spent = verdict(PGT_VERDICT_REFUSE, 3, 0, "53400", "budget spent");
    pgt_verdict_t rule = verdict(PGT_VERDICT_REFUSE, 0, 9, "42T01", "blocked");
    pgt_verdict_t cancel = verdict(PGT_VERDICT_CANCEL, 3, 0, "57014", "cancelled");
    for (int i = 0; i < 200; i++)
        add(&b, "alice", &spent, 1000 + i);
    add(&b, "bob", &spent, 2000);
    add(&b, "alice", &rule, 3000);
    add(&b, "alice", &cancel, 4000);
    CHECK_INT(b.refused, 202);
    CHECK_INT(b.cancelled, 1);
    CHECK_INT(b.ngroups, 4);
    CHECK_INT(b.groups[0].count, 200);
    CHECK_INT(b.unlisted, 0);
    CHECK_INT(b.nexamples, PGT_ALERT_EXAMPLES_MAX);
    CHECK_STR(b.examples[0], "alice (53400): budget spent");
    CHECK_INT(b.first_us, 1000);
    CHECK_INT(b.last_us, 4000);
    char *subject, *text = render(&b, &subject);
    CHECK_STR(subject, "pgtally: 202 statements refused, 1 cancelled");
    CHECK(strstr(text, "pgtally db1:6433 refused 202 statements and cancelled 1 between") != NULL);
    CHECK(strstr(text, "     200 refused user=alice budget=3 sqlstate=53400\n") != NULL);
    CHECK(strstr(text, "       1 refused user=alice rule=9 sqlstate=42T01\n") != NULL);
    CHECK(strstr(text, "       1 cancelled user=alice budget=3 sqlstate=57014\n") != NULL);
    CHECK(strstr(text, "not itemised") == NULL);
    free(subject);
    free(text);
}

/* More groups than fit: the rest is counted, the total stays exact. */
static void test_bound(void)
{
    pgt_alert_batch_t b = {0};
    pgt_verdict_t v = verdict(PGT_VERDICT_REFUSE, 1, 0, "54000", "over the cap");
    char user[32];
    for (int i = 0; i < 50; i++) {
        snprintf(user, sizeof(user), "user%02d", i);
        add(&b, user, &v, 10);
        add(&b, user, &v, 11);
    }
    CHECK_INT(b.refused, 100);
    CHECK_INT(b.ngroups, PGT_ALERT_GROUPS_MAX);
    CHECK_INT(b.unlisted, 100 - 2 * PGT_ALERT_GROUPS_MAX);
    char *subject, *text = render(&b, &subject);
    CHECK(strstr(text, "      36 more in other groups, not itemised (more than 32 groups)") !=
          NULL);
    free(subject);
    free(text);
    /* A user name longer than a group keeps is cut, not overrun. */
    pgt_alert_batch_t c = {0};
    char longname[200];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    add(&c, longname, &v, 1);
    CHECK_INT(strlen(c.groups[0].user), sizeof(c.groups[0].user) - 1);
}

/* A batch that failed joins the next: counts add, groups merge. */
static void test_merge(void)
{
    pgt_alert_batch_t failed = {0}, next = {0}, empty = {0};
    pgt_verdict_t v = verdict(PGT_VERDICT_REFUSE, 2, 0, "53400", "spent");
    add(&failed, "alice", &v, 100);
    add(&failed, "bob", &v, 200);
    add(&next, "alice", &v, 300);
    pgt_alert_batch_merge(&next, &failed);
    pgt_alert_batch_merge(&next, &empty);
    CHECK_INT(next.refused, 3);
    CHECK_INT(next.ngroups, 2);
    CHECK_INT(next.groups[0].count, 2);
    CHECK_INT(next.first_us, 100);
    CHECK_INT(next.last_us, 300);
    CHECK_INT(next.nexamples, 3);
}

int main(void)
{
    test_groups();
    test_bound();
    test_merge();
    TASK_DONE();
}
