"""The unit tests of the parts that read and write the ledger (budget
tables, the budget thread, the report builder) run again against a real
PostgreSQL ledger: each binary takes the conninfo in PGTALLY_TEST_PG and
works in a schema of its own."""
import os
import subprocess

import pytest

from helpers import PGTALLY_BIN, SLOW


@pytest.mark.parametrize("name", ["budget_store", "budget_sync", "report"])
def test_unit_suite_on_postgresql(ledger_pg, name):
    exe = PGTALLY_BIN.parent / "tests" / "unit" / ("test_" + name)
    assert exe.exists(), "build the unit tests first: %s" % exe
    env = dict(os.environ, PGTALLY_TEST_PG=ledger_pg.new_ledger())
    r = subprocess.run([str(exe)], capture_output=True, text=True, env=env,
                       timeout=120 * SLOW)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
