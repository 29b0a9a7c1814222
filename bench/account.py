"""bench/account.py: where a proxy's CPU goes, per transaction.

Used by bench/compare.  While one pgbench run goes through a proxy it reads:

  * each thread's CPU time from /proc/PID/task/TID/schedstat (nanoseconds
    on a CPU), so pgtally's event loop, its meter worker (pgt-meter), its
    ledger writer (pgt-ledger) and the rest are told apart;
  * with Linux perf (when it may trace this process): syscalls and
    context switches (perf stat), and 999 Hz samples of the loop thread
    (perf record), which split the loop's time by where it was spent.

The loop's samples are split by the code they fall in: the kernel (the
socket syscalls themselves), libc and libuv (the syscall stubs, the event
loop, malloc and memcpy), framing (proxy/wire.c, proxy/msgbuf.c), TLS
(OpenSSL and proxy/tls.c), metering on the loop (the conversation model,
interception, EXPLAIN, budgets, the estimator, the journal: proxy/conv.c,
intercept.c, explain.c, judge.c and accounting/), and pgtally's relay
(proxy/session.c, listener.c, cancel.c).
"""

import os
import re
import shutil
import subprocess
import tempfile

# Loop categories, in the order they are printed.
CATEGORIES = ["kernel", "libc+libuv", "relay", "framing", "tls", "metering", "other"]

_FILE_CATEGORY = {
    "session.c": "relay", "listener.c": "relay", "cancel.c": "relay", "main.c": "relay",
    "wire.c": "framing", "msgbuf.c": "framing",
    "tls.c": "tls",
    "conv.c": "metering", "intercept.c": "metering", "explain.c": "metering",
    "judge.c": "metering",
}


def perf_usable():
    """Whether perf exists and may attach to a process of ours."""
    perf = shutil.which("perf")
    if not perf:
        return False
    try:
        r = subprocess.run([perf, "stat", "-e", "raw_syscalls:sys_enter", "--", "true"],
                           capture_output=True, timeout=30)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def symbol_files(binary):
    """pgtally's function names -> the source file each is defined in."""
    out = {}
    try:
        r = subprocess.run(["nm", "-l", "--defined-only", binary], capture_output=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return out
    for line in r.stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] in "tTwW":
            path = parts[3].rsplit(":", 1)[0]
            out[parts[2]] = path
    return out


def _category(dso, sym, files):
    if dso.startswith("[kernel") or sym.startswith("[k]"):
        return "kernel"
    base = os.path.basename(dso)
    if base.startswith(("libssl", "libcrypto")):
        return "tls"
    if base.startswith(("libc.", "libc-", "libuv", "libm.", "ld-linux", "[vdso]")):
        return "libc+libuv"
    if base.startswith(("libpg_query", "libsqlite3", "libjansson")):
        return "metering"
    name = sym.split("] ", 1)[-1].strip()
    path = files.get(name) or files.get(name.split(".")[0])
    if path:
        f = os.path.basename(path)
        if f in _FILE_CATEGORY:
            return _FILE_CATEGORY[f]
        if "/accounting/" in path or "/base/" in path:
            return "metering"
    return "other"


def thread_cpu_ns(pid):
    """{tid: (name, ns on CPU)} for every thread of pid."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[int(tid)] = (name, ns)
    return out


def thread_roles(pid, before, after):
    """CPU ns spent between two thread_cpu_ns snapshots, by role: "loop"
    (the main thread), "worker" (pgt-meter), "writer" (pgt-ledger) and
    "other" threads."""
    roles = {"loop": 0, "worker": 0, "writer": 0, "other": 0}
    for tid, (name, ns) in after.items():
        spent = ns - before.get(tid, (name, 0))[1]
        if tid == pid:
            roles["loop"] += spent
        elif name == "pgt-meter":
            roles["worker"] += spent
        elif name == "pgt-ledger":
            roles["writer"] += spent
        else:
            roles["other"] += spent
    return roles


class Probe:
    """Measures one proxy process while a run goes on: start(), then the
    run, then stop() returns the measurements."""

    def __init__(self, pid, seconds, perf=False, binary=None, files=None, tmp=None):
        self.pid, self.seconds, self.perf = pid, seconds, perf
        self.binary, self.files = binary, files or {}
        self.tmp = tmp or tempfile.gettempdir()
        self.stat_out = os.path.join(self.tmp, f"perf-stat-{pid}.txt")
        self.rec_out = os.path.join(self.tmp, f"perf-{pid}.data")
        self.procs = []

    def start(self):
        self.before = thread_cpu_ns(self.pid)
        if not self.perf:
            return
        dur = str(self.seconds)
        self.procs = [
            subprocess.Popen(["perf", "stat", "-x", ",", "-e",
                              "raw_syscalls:sys_enter,context-switches",
                              "-p", str(self.pid), "-o", self.stat_out, "--", "sleep", dur],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen(["perf", "record", "-q", "-F", "999", "-t", str(self.pid),
                              "-o", self.rec_out, "--", "sleep", dur],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]

    def stop(self):
        after = thread_cpu_ns(self.pid)
        res = {"roles": thread_roles(self.pid, self.before, after),
               "syscalls": None, "switches": None, "split": None}
        for p in self.procs:
            try:
                p.wait(self.seconds + 60)
            except subprocess.TimeoutExpired:
                p.kill()
        if not self.perf:
            return res
        try:
            with open(self.stat_out) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) < 3 or not parts[0].isdigit():
                        continue
                    if parts[2].startswith("raw_syscalls"):
                        res["syscalls"] = int(parts[0])
                    elif parts[2].startswith("context-switches"):
                        res["switches"] = int(parts[0])
        except OSError:
            pass
        res["split"] = self._split()
        for path in (self.stat_out, self.rec_out):
            try:
                os.unlink(path)
            except OSError:
                pass
        return res

    def _split(self):
        """Fractions of the loop thread's samples per category."""
        try:
            r = subprocess.run(["perf", "report", "-i", self.rec_out, "--no-children",
                                "-g", "none", "--sort", "dso,sym", "-t", "|",
                                "--percent-limit", "0"], capture_output=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired):
            return None
        split = dict.fromkeys(CATEGORIES, 0.0)
        for line in r.stdout.decode(errors="replace").splitlines():
            if line.startswith("#") or "|" not in line:
                continue
            pct, dso, sym = (x.strip() for x in (line.split("|") + ["", ""])[:3])
            m = re.match(r"([0-9.]+)%", pct)
            if not m:
                continue
            split[_category(dso, sym, self.files)] += float(m.group(1)) / 100.0
        total = sum(split.values())
        return {k: v / total for k, v in split.items()} if total else None
