"""
procstat.py - CPU time and resident memory of processes, from /proc (Linux only).

A CpuSnapshot records the CPU seconds (user + system) of the postmaster's children, the fake
consumer, this process, and the machine as a whole; the difference of two snapshots says where
the cores went during a run.
"""

import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    return rest   # rest[0] is field 3 (state)


def cpu_seconds(pid):
    """user + system CPU seconds of a process (0.0 when it is gone)."""
    try:
        f = _stat_fields(pid)
    except (OSError, ValueError):
        return 0.0
    return (int(f[11]) + int(f[12])) / CLK_TCK


def thread_cpu_seconds(pid, tid):
    """user + system CPU seconds of one thread of a process (0.0 when it is gone); a process's
    main thread has tid == pid."""
    try:
        with open("/proc/%d/task/%d/stat" % (pid, tid)) as f:
            data = f.read()
        fields = data[data.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def minor_faults(pid):
    """Minor page faults of a process so far (0 when it is gone)."""
    try:
        return int(_stat_fields(pid)[7])
    except (OSError, ValueError, IndexError):
        return 0


def ppid(pid):
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, ValueError, IndexError):
        return -1


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children(parent):
    try:
        with open("/proc/%d/task/%d/children" % (parent, parent)) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        pass
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            pid = int(name)
            if ppid(pid) == parent:
                out.append(pid)
    return out


def machine_jiffies():
    """(busy, total) jiffies over all CPUs, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts[:8]]       # user nice system idle iowait irq softirq steal
    idle = vals[3] + vals[4]
    total = sum(vals)
    return total - idle, total


def postgres_role(title):
    """A short label for a postgres process from its process title."""
    t = title
    if t.startswith("postgres: "):
        t = t[len("postgres: "):]
    for known in ("sequin_sync worker", "sequin_sync launcher", "checkpointer", "background writer",
                  "walwriter", "autovacuum launcher", "autovacuum worker", "logical replication launcher",
                  "stats collector"):
        if t.startswith(known):
            return known
    if "sequin_sync" in t and "worker" in t:
        return "sequin_sync worker"
    return "client backend"


def status_kb(pid, keys=("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")):
    """Selected /proc/<pid>/status values in kB (missing keys are absent)."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


class CpuSnapshot:
    def __init__(self, postmaster_pid, fake_pid):
        self.procs = {}                       # pid -> (role, cpu seconds, minor faults)
        for pid in children(postmaster_pid):
            self.procs[pid] = (postgres_role(cmdline(pid)), cpu_seconds(pid), minor_faults(pid))
        self.fake = cpu_seconds(fake_pid) if fake_pid else 0.0
        t = os.times()
        self.me = t.user + t.system
        self.busy, self.total = machine_jiffies()

    def diff(self, before, wall, ncpu):
        """CPU seconds per role between `before` and this snapshot, plus the machine's busy share."""
        roles = {}
        faults = {}
        for pid, (role, sec, flt) in self.procs.items():
            _, base, base_flt = before.procs.get(pid, (role, 0.0, 0))
            roles[role] = roles.get(role, 0.0) + max(sec - base, 0.0)
            faults[role] = faults.get(role, 0) + max(flt - base_flt, 0)
        busy = self.busy - before.busy
        total = self.total - before.total
        ours = sum(roles.values()) + (self.fake - before.fake) + (self.me - before.me)
        return {
            "postgres": {k: round(v, 2) for k, v in sorted(roles.items())},
            "postgres_minor_faults": dict(sorted(faults.items())),
            "fake_consumer": round(self.fake - before.fake, 2),
            "bench_python": round(self.me - before.me, 2),
            "machine_busy_pct": round(100.0 * busy / total, 1) if total else None,
            # CPU used by processes outside the benchmark (other work on the machine).
            "others": round(max(busy / CLK_TCK - ours, 0.0), 2),
            "wall": round(wall, 3),
            "ncpu": ncpu,
        }


def all_cpu():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            out[int(name)] = cpu_seconds(int(name))
    return out


def busy_processes(interval=1.0, exclude=(), top=5):
    """Processes that used CPU during `interval` seconds: (machine busy %, [(pid, % of one core,
    command), ...]) - to warn when the machine is not idle before a benchmark."""
    b0, t0 = machine_jiffies()
    c0 = all_cpu()
    time.sleep(interval)
    b1, t1 = machine_jiffies()
    c1 = all_cpu()
    procs = []
    for pid, sec in c1.items():
        if pid in exclude or pid == os.getpid():
            continue
        d = sec - c0.get(pid, sec)
        if d > 0.02 * interval:
            procs.append((pid, round(100 * d / interval), cmdline(pid)[:100]))
    procs.sort(key=lambda p: -p[1])
    return (round(100.0 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else 0.0), procs[:top]
