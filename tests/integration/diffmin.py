"""Shrinks a sequence that test_differential reports to the shortest one
that still fails the same way (drops steps, merges steps, drops messages,
as long as a problem of the same kind, with the given text in it if any,
remains).

    PGTALLY_BUILD=$PWD/build /usr/bin/python3 tests/integration/diffmin.py \\
        SEED INDEX KIND [TEXT]

KIND is one of the kinds in the test's report (replies, ledger, early,
idle, health, ...). It starts its own PostgreSQL and pgtally (as the
tests do), and reads the ledger while pgtally runs instead of stopping it.
"""

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffgen as dg  # noqa: E402
import test_differential as td  # noqa: E402
from helpers import PgServer, Pgtally, make_pgtally_config  # noqa: E402
from test_budgets import set_budget  # noqa: E402


class Lab:
    """A PostgreSQL and a pgtally configured as test_differential's."""

    def __init__(self):
        self.pg = PgServer()
        self.pg.start()
        workdir = tempfile.mkdtemp(prefix="pgtally-diffmin-")
        self.proxy = Pgtally(workdir + "/pgtally",
                             make_pgtally_config(self.pg, (None, None), td.CONFIG))
        self.proxy.start()
        set_budget(self.proxy, "--user", td.USER, "--period", "day", "--limit", "1000",
                   "--per-query", "100")
        self.admin = self.pg.admin()
        self.admin.execute("SET lock_timeout = '10s'")
        for sql in dg.SETUP_SQL:
            self.admin.execute(sql)
        self.runs = 0

    def close(self):
        self.admin.close()
        self.proxy.shutdown()
        self.pg.stop()

    def _records(self, app):
        con = sqlite3.connect(str(self.proxy.workdir / "pgtally.db"))
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute(
                "SELECT * FROM queries WHERE application = ? OR application LIKE ? ORDER BY id",
                (app, app + ".%"))]
        finally:
            con.close()

    def records(self, app, timeout=3.0):
        """The session's records, once its idle check's record is in (it is
        always made, at its end or at the session's) and a little after."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("idle_check" in (r["normalized"] or "") for r in self._records(app)):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        return self._records(app)

    def run(self, steps):
        self.runs += 1
        app = "pgtdiffmin.%d" % self.runs
        out = td.run_one(self.pg, self.proxy, self.admin, self.runs, "candidate", app, steps)
        if out.direct is not None:
            td.check_ledger(out, self.records(app))
        return out


def shrink(lab, steps, fails):
    steps = [list(s) for s in steps if s]

    def attempt(cand):
        cand = [s for s in cand if s]
        return cand if cand and fails(lab.run(cand)) else None

    changed = True
    while changed:
        changed = False
        i = 0
        while i < len(steps):  # drop a step
            cand = attempt(steps[:i] + steps[i + 1:])
            if cand:
                steps, changed = cand, True
            else:
                i += 1
        i = 0
        while i < len(steps) - 1:  # merge two steps into one write
            cand = attempt(steps[:i] + [steps[i] + steps[i + 1]] + steps[i + 2:])
            if cand:
                steps, changed = cand, True
            else:
                i += 1
        si = 0
        while si < len(steps):  # drop a message
            mi, dropped_step = 0, False
            while mi < len(steps[si]):
                rest = steps[si][:mi] + steps[si][mi + 1:]
                cand = attempt(steps[:si] + [rest] + steps[si + 1:])
                if cand:
                    dropped_step = len(cand) < len(steps)
                    steps, changed = cand, True
                    if dropped_step:
                        break
                else:
                    mi += 1
            if not dropped_step:
                si += 1
    return steps


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    seed, index, kind = int(argv[1]), int(argv[2]), argv[3]
    text = argv[4] if len(argv) > 4 else None

    def fails(out):
        return any(k == kind and (text is None or text in t) for k, t in out.problems)

    lab = Lab()
    try:
        app = "pgtdiff.%d.%d" % (seed, index)
        steps = dg.Gen(seed, index, app).sequence()
        out = lab.run(steps)
        print(td.describe_outcome(out))
        if not fails(out):
            sys.exit("sequence %d of seed %d does not fail with a %r problem%s"
                     % (index, seed, kind, " holding %r" % text if text else ""))
        small = shrink(lab, steps, fails)
        print("\n=== shortest found (%d runs):" % lab.runs)
        print(td.describe_outcome(lab.run(small)))
    finally:
        lab.close()


if __name__ == "__main__":
    main(sys.argv)
