"""Runs tests/integration/libpq_test.c (built by tests/meson.build) against
pgtally: pipeline mode, 100 MB COPY both ways, a 64 MB row, PQcancel and
LISTEN/NOTIFY."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import BUILD, SLOW

SOURCE = Path(__file__).with_name("libpq_test.c")


@pytest.fixture(scope="session")
def libpq_test():
    for candidate in (BUILD / "tests" / "libpq_test", BUILD / "libpq_test"):
        if candidate.exists():
            yield candidate
            return
    # Not built (e.g. a build directory configured before tests/meson.build
    # existed): compile it the way meson would, so the proxy still gets tested.
    out = Path(tempfile.mkdtemp(prefix="pgtally-it-libpq-")) / "libpq_test"
    cflags = subprocess.run(["pkg-config", "--cflags", "--libs", "libpq"],
                            capture_output=True, text=True, check=True).stdout.split()
    r = subprocess.run(["cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2",
                        str(SOURCE), "-o", str(out)] + cflags,
                       capture_output=True, text=True)
    assert r.returncode == 0, "libpq_test.c does not compile:\n" + r.stderr
    print("note: %s/tests/libpq_test not built; compiled %s" % (BUILD, out))
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("subtest", ["pipeline", "copy", "bigrow", "cancel", "notify"])
def test_libpq(pgtally, libpq_test, subtest):
    proxy = pgtally()
    r = subprocess.run([str(libpq_test), proxy.dsn(), subtest], capture_output=True,
                       text=True, timeout=100 * SLOW)
    out = r.stdout + r.stderr
    assert r.returncode == 0, "libpq_test %s failed (exit %d):\n%s" % (subtest, r.returncode, out)
    assert out.startswith("ok %s" % subtest), out
    assert proxy.alive()


@pytest.mark.timeout(120)
def test_libpq_over_tls(pgtally, libpq_test, pg):
    """Cancel and the 64 MB row again with TLS on both legs (the cancel
    request travels outside the TLS session)."""
    proxy = pgtally(client_tls="require", upstream_tls="require")
    r = subprocess.run([str(libpq_test), proxy.dsn(sslmode="require"), "cancel", "bigrow",
                        "notify"], capture_output=True, text=True, timeout=100 * SLOW)
    out = r.stdout + r.stderr
    assert r.returncode == 0, "libpq_test over TLS failed (exit %d):\n%s" % (r.returncode, out)
