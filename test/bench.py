#!/usr/bin/env python3
"""
bench.py - sequin_sync's benchmark (`make bench`).

Starts a throwaway cluster (temporary directory, free port; as the user sequin_test when run as
root, since postgres refuses root) with sequin_sync preloaded, and the fake Sequin consumer
(test/fake_sequin.py), then measures on the same records in one run, for each workload:

  limit         what Postgres itself must do to write the rows: the extension's own statement
                (INSERT ... SELECT ... ON CONFLICT (id) DO UPDATE ... WHERE stored updated_idx <
                incoming, RETURNING) fed from typed rows already in the server - an UNLOGGED
                staging table loaded before timing, each batch reduced to the newest version
                per id, large values stored uncompressed (so the limit pays TOAST compression
                as a fresh write does) - one statement (= one transaction) per batch;
  ceiling       Postgres' own set-based upsert of the same batches: one
                INSERT ... SELECT FROM jsonb_array_elements(<JSON literal>) ON CONFLICT (id)
                DO UPDATE ... WHERE x.updated_idx < excluded.updated_idx per batch, each batch
                reduced to the newest version per id beforehand (psycopg2, autocommit, the
                worker's work_mem);
  sequin_sync   records published to the fake consumer first, then the consumer created
                (batch_size 1000, wait_for 1 s, 1 and 2 workers); time from the first message
                the fake delivers until every message is acked (the fake's counters, polled
                every 50 ms) - timed like the limit, whose connection and PREPARE come before
                its clock starts; the worker's start (create_consumer to its first message) is
                reported apart, and so is the CPU of the worker's applying (main) thread
                against the limit's backend and of its receive/parse thread;
  stream        the same, one worker, as a Sequin Stream consumer: the same records as change
                messages (insert, then update; commit_lsn/commit_idx growing along the stream;
                record = the row's values under the target's column names; test/bench/
                sequin_stream.py) into the same table plus sequin_version numeric; reported as
                a ratio to the one-worker v1 run of the same workload ("stream / v1", issue 11's
                target: at least 0.90);
  external      a Python worker as users write it from Sequin's upsert guide (psycopg2): pull
                1000, upsert in one transaction, commit, ack - batched with
                psycopg2.extras.execute_values, and (narrow only) per record;
  scaling       (narrow) sequin_sync with 4 workers and batch sizes 100 and 5000;
  latency       (narrow) one record published to an idle consumer until visible (LISTEN/NOTIFY);
  memory        (narrow) the worker's VmRSS/RssAnon before and after 1,000,000 records (not
                with --quick).

Workloads (--workload narrow|wide|both, default both), each N records = N/2 ids x 2 versions
(inserts, then updates of the same ids):
  narrow  200,000 Stripe-customer records of about 1 KB into a 13-column table;
  wide    40,000 Salesforce-like accounts of 120 fields (PascalCase, custom fields with __c),
          4-8 KB each, into a 65-column table: 60 columns filled from data fields of six types
          (found by name, ignoring case and underscores), the standard columns and the whole
          `data` object (test/bench/wide.py).

Every system starts from an empty table (TRUNCATE + CHECKPOINT) after an untimed warm-up, and
every result is checked: row count, sum of updated_idx, no column left empty, and a content
fingerprint that must equal the ceiling's.  Every system is reported as a ratio to the limit and
to the ceiling.  Beside records/s, each run reports the CPU each process used (so the cost per
record can be compared even when other work shares the machine), page faults, WAL and temp-file
bytes.  On a shared, noisy machine use --repeat 3 (best of three, interleaved) and, as root,
--nice -15 (also renices the postgres children's scheduler autogroups).

Prints a table per workload and writes the results as JSON (bench-results.json in the
repository root by default) and as a chart (bench-results.svg beside it: a bar per system, the
limit as a line, a panel per workload).  Options: --workload, --records N, --wide-records N,
--quick, --skip-external, --json PATH, --perf FILE; see --help for the rest.  Needs the
extension installed (make install) and python3-psycopg2 (installed with apt-get when run as
root and missing).
"""

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "bench"))
sys.path.insert(0, HERE)

SYSTEM_PYTHON = "/usr/bin/python3"


def log(msg):
    print("[%7.1fs] %s" % (time.monotonic() - START, msg), file=sys.stderr, flush=True)


START = time.monotonic()


# ------------------------------------------------------------------------------------------
# prerequisites
# ------------------------------------------------------------------------------------------

def _have_psycopg2(python):
    return subprocess.run([python, "-c", "import psycopg2"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def ensure_psycopg2():
    """psycopg2 comes from Debian's python3-psycopg2, which only /usr/bin/python3 sees: install it
    when root, and re-run under /usr/bin/python3 when this interpreter cannot import it."""
    try:
        import psycopg2  # noqa: F401
        return
    except ImportError:
        pass
    system = os.path.exists(SYSTEM_PYTHON)
    if system and not _have_psycopg2(SYSTEM_PYTHON):
        if os.geteuid() != 0:
            sys.exit("bench.py needs psycopg2: sudo apt-get install -y python3-psycopg2")
        print("installing python3-psycopg2", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "python3-psycopg2"],
                           env=env, stdout=subprocess.DEVNULL)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "python3-psycopg2"],
                           env=env, stdout=subprocess.DEVNULL, check=True)
    if system and _have_psycopg2(SYSTEM_PYTHON):
        if os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON):
            os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
        import importlib
        importlib.invalidate_caches()
        import psycopg2  # noqa: F401
        return
    sys.exit("bench.py needs psycopg2 (Debian: apt-get install python3-psycopg2)")


def check_installed():
    from pgcluster import pg_config
    lib = os.path.join(pg_config("--pkglibdir"), "sequin_sync.so")
    ctl = os.path.join(pg_config("--sharedir"), "extension", "sequin_sync.control")
    missing = [p for p in (lib, ctl) if not os.path.exists(p)]
    if missing:
        sys.exit("sequin_sync is not installed (%s): run make && make install first" % ", ".join(missing))
    return lib


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    commit = None
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kb / 1048576, 1),
            "kernel": platform.release(), "python": platform.python_version(), "git_commit": commit}


def set_autogroup_nice(pid, nice):
    """With the scheduler's autogroups (one per session), a process's niceness only counts inside
    its session: the session's group gets the same niceness (best effort)."""
    try:
        with open("/proc/%d/autogroup" % pid, "w") as f:
            f.write(str(nice))
    except OSError:
        pass


class AutogroupShield:
    """Keeps every process of the benchmark at a given autogroup niceness: postgres starts each
    child in a new session (so in a new scheduler autogroup), including the sequin_sync workers,
    which come and go; a thread re-applies the niceness to new children every 50 ms."""

    def __init__(self, postmaster_pid, nice):
        import threading
        self.pm = postmaster_pid
        self.nice = nice
        self.done = set()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        import procstat
        while not self.stop_event.is_set():
            for pid in procstat.children(self.pm):
                if pid not in self.done:
                    try:
                        os.setpriority(os.PRIO_PROCESS, pid, self.nice)
                    except OSError:
                        pass
                    set_autogroup_nice(pid, self.nice)
                    self.done.add(pid)
            self.stop_event.wait(0.05)

    def stop(self):
        self.stop_event.set()
        self.thread.join(5)


def so_info(path):
    """Which build was measured: the installed library may differ from the checked-out commit."""
    import hashlib
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    mtime = dt.datetime.fromtimestamp(os.path.getmtime(path), dt.timezone.utc)
    return {"library": path, "sha256": digest[:16], "installed_at": mtime.strftime("%Y-%m-%d %H:%M:%S UTC")}


SERVER_SETTINGS = {
    "shared_preload_libraries": "'sequin_sync'",
    "sequin_sync.database": "'postgres'",
    "shared_buffers": "'1GB'",
    "max_worker_processes": "32",
    # No checkpoint in the middle of a run: each run starts with an explicit CHECKPOINT.
    "max_wal_size": "'8GB'",
    "min_wal_size": "'4GB'",      # WAL segments are recycled, not created and zero-filled, in later runs
    "checkpoint_timeout": "'30min'",
    # Durability as shipped: fsync, synchronous_commit and full_page_writes keep their defaults.
    "log_min_messages": "warning",
    "log_checkpoints": "off",
}


# ------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------

def fmt_int(n):
    return "{:,}".format(int(round(n)))


def cpu_cols(run):
    c = run["cpu"]
    wall = c["wall"] or 1
    pg = c["postgres"]
    main_role = "sequin_sync worker" if run["system"] == "sequin_sync" else "client backend"
    main = pg.get(main_role, 0.0)
    other = sum(v for k, v in pg.items() if k != main_role)
    faults = c.get("postgres_minor_faults", {}).get(main_role, 0)
    return ("%d%%" % round(100 * main / wall), "%d%%" % round(100 * other / wall),
            "%d%%" % round(100 * c["fake_consumer"] / wall), "%d%%" % round(100 * c["bench_python"] / wall),
            "%d%%" % round(100 * c.get("others", 0) / wall), "%d%%" % round(c["machine_busy_pct"] or 0),
            "%.1f" % (faults / max(run["records"], 1)))


def cpu_per_record_us(run):
    """CPU spent on our side per record: every postgres process plus this script (which is the
    external worker, or only the driver); the fake consumer stands for Sequin and is excluded."""
    c = run["cpu"]
    return 1e6 * (sum(c["postgres"].values()) + c["bench_python"]) / max(run["records"], 1)


def fake_line(w, runs, stream=False):
    """How long the fake takes to serve and ack a batch, against the time sequin_sync (v1, or with
    stream the Sequin Stream run) spends per batch."""
    f = w.get("fake_probe_stream" if stream else "fake_probe")
    if not f:
        return None
    main = next((r for r in runs if r["label"] == ("sequin_sync stream" if stream else "sequin_sync")), None)
    line = ("  %s serves a %d-%s batch (%.2f MB) in %.1f ms p50 (max %.1f) and acks it in %.1f ms: "
            "~%s records/s for one client" % ("stream:  " if stream else "fake:    ", f["batch_size"],
                                              "message" if stream else "record", f["batch_bytes"] / 1e6,
                                              f["next_ms_p50"], f["next_ms_max"], f["ack_ms_p50"],
                                              fmt_int(f["max_records_per_s"])))
    if main:
        per_batch = 1000.0 * main["seconds"] / max(1, main["records"] / main["batch_size"])
        fake_pct = 100 * main["cpu"]["fake_consumer"] / main["cpu"]["wall"]
        line += ("; sequin_sync spends %.1f ms per batch, of which the fake's share is ~%.0f%%, and the fake "
                 "process used %.0f%% of one core during the run -> %s" % (
                     per_batch, 100 * (f["next_ms_p50"] + f["ack_ms_p50"]) / per_batch, fake_pct,
                     "the fake is NOT the bottleneck" if (f["next_ms_p50"] + f["ack_ms_p50"]) < 0.25 * per_batch
                     else "WARNING: the fake is a significant share of the time"))
    return line


def thread_line(runs):
    """Where the one-worker run's CPU went: the worker's main thread (Postgres' work: converting
    and writing) against the limit's backend, and its receive/parse thread."""
    one = next((r for r in runs if r["label"] == "sequin_sync"), None)
    limit = next((r for r in runs if r["system"] == "limit"), None)
    if not one or not one.get("worker_cpu_s") or not limit:
        return None
    n = max(one["records"], 1)
    apply_us = 1e6 * one["apply_thread_cpu_s"] / n
    helper_us = 1e6 * (one["worker_cpu_s"] - one["apply_thread_cpu_s"]) / n
    limit_us = 1e6 * limit["cpu"]["postgres"].get("client backend", 0.0) / max(limit["records"], 1)
    return ("  threads:  one worker's applying (main) thread used %.1f us/record, %.2fx the limit's backend "
            "(%.1f us/record); its receive/parse thread %.1f us/record on the other core; its first message came "
            "%.0f ms after create_consumer (worker start, not timed, as the limit's connection and PREPARE)" % (
                apply_us, apply_us / limit_us if limit_us else float("nan"), limit_us, helper_us,
                1000 * one.get("startup_s", 0.0)))


def render_runs(runs):
    """The table of one workload's runs."""
    out = []
    hdr = ("%-32s %7s %5s %9s %8s %9s %7s %6s %8s  %5s %6s %4s %6s %6s %4s %7s %7s %7s  %s" %
           ("system", "workers", "batch", "records", "seconds", "records/s", "x limit", "x ceil", "CPU us/r", "apply",
            "oth.pg", "fake", "python", "others", "busy", "flt/rec", "WAL B/r", "temp MB", "check"))
    out.append(hdr)
    out.append("-" * len(hdr))
    ceiling = next((r for r in runs if r["system"] == "ceiling"), None)
    limit = next((r for r in runs if r["system"] == "limit"), None)
    for r in runs:
        x_ceil = ("%.2f" % (r["records_per_s"] / ceiling["records_per_s"])) if ceiling else "-"
        x_limit = ("%.2f" % (r["records_per_s"] / limit["records_per_s"])) if limit else "-"
        reps = r.get("repetitions") or []
        chk = "ok" if r["check"]["ok"] else "FAILED (rows %d)" % r["check"]["rows"]
        if r["check"].get("empty_columns"):
            chk += ", empty columns: " + ", ".join(r["check"]["empty_columns"])
        if ceiling and r is not ceiling and r["check"]["fingerprint"] != ceiling["check"]["fingerprint"]:
            chk += ", content differs from ceiling"
        elif ceiling and r is not ceiling:
            chk += ", same content as ceiling"
        out.append("%-32s %7d %5d %9s %8.2f %9s %7s %6s %8.0f  %5s %6s %4s %6s %6s %4s %7s %7s %7s  %s" % (
            (r["label"], r["workers"], r["batch_size"], fmt_int(r["records"]), r["seconds"],
             fmt_int(r["records_per_s"]), x_limit, x_ceil, cpu_per_record_us(r)) + cpu_cols(r) +
            (fmt_int(r.get("wal_bytes", 0) / max(r["records"], 1)), "%.1f" % (r.get("temp_bytes", 0) / 1e6), chk)))
        if r.get("protocol") == "stream" and r["check"].get("versioned_rows") is not None:
            out[-1] += ", every row versioned" if r["check"]["versioned_rows"] == r["check"]["rows"] else \
                ", %d rows without sequin_version" % (r["check"]["rows"] - r["check"]["versioned_rows"])
        if len(reps) > 1:
            out.append("%-32s %s" % ("", "repetitions: " + ", ".join(
                "%.2f s (%s/s, %.0f us/r)" % (x["seconds"], fmt_int(x["records_per_s"]), x["cpu_us_per_record"])
                for x in reps)))
    return out


def render(res):
    out = []
    m = res["machine"]
    out.append("sequin_sync benchmark  (%s)" % res["started_at"])
    out.append("machine:   nproc %d, %s, %.1f GiB RAM, Linux %s; %s" % (
        m["nproc"], m["cpu_model"], m["mem_gib"], m["kernel"], res["postgres"]["version"]))
    ext = res.get("extension") or {}
    out.append("build:     %s (sha256 %s, installed %s), checkout %s" % (
        ext.get("library"), ext.get("sha256"), ext.get("installed_at"), (m.get("git_commit") or "?")[:12]))
    out.append("server:    " + ", ".join("%s=%s" % (k, v) for k, v in res["postgres"]["settings"].items()))
    if res["options"].get("nice") is not None:
        out.append("priority:  everything ran at niceness %d" % res["options"]["nice"])
    if res.get("server_env"):
        out.append("server env: " + " ".join("%s=%s" % kv for kv in res["server_env"].items()))
    if res["options"].get("repeat", 1) > 1:
        out.append("repeat:    every throughput run %d times, interleaved; rows show the fastest" % res["options"]["repeat"])
    load = res.get("machine_load")
    if load and load["busy_pct"] > 10:
        out.append("WARNING:   the machine was not idle before the benchmark (%.0f%% of all CPUs busy): %s. Results "
                   "are distorted; see the 'others' column." % (load["busy_pct"], "; ".join(
                       "%s (%d%% of a core)" % (cmd or pid, pct) for pid, pct, cmd in load["top"]) or "?"))
    for name, w in res["workloads"].items():
        runs = [r for r in res["runs"] if r["workload"] == name]
        out.append("")
        out.append("%s workload: %s records = %s ids x 2 versions (%s inserts, then %s updates), %s, ~%s B/record "
                   "JSON, %s; batches of %d" % (
                       name, fmt_int(w["records"]), fmt_int(w["ids"]), fmt_int(w["ids"]),
                       fmt_int(w["records"] - w["ids"]), w["collection"], fmt_int(w["bytes_per_record"]),
                       w["table_note"], w["batch_size"]))
        line = fake_line(w, runs)
        if line:
            out.append(line)
        line = fake_line(w, runs, stream=True)
        if line:
            out.append(line)
        st = w.get("stage")
        if st:
            out.append("  limit:   staging table %s: %s rows in %d batches, %.1f MB, loaded in %.1f s before timing" % (
                st["table"], fmt_int(st["rows"]), st["batches"], st["bytes"] / 1e6, st["load_seconds"]))
        out.append("")
        out.extend(render_runs(runs))
        rt = w.get("ratios") or {}
        if rt:
            out.append("  ratios (throughput): " + ", ".join("%s = %.2f" % (k, v) for k, v in rt.items()))
        line = thread_line(runs)
        if line:
            out.append(line)
        sv = w.get("stream_vs_v1")
        if sv:
            out.append("  Sequin Stream vs v1 (one worker, same records, same run): throughput %.2fx, CPU per record "
                       "%.2fx -> %s" % (sv["throughput"], sv["cpu_per_record"],
                                        "within 10% of v1" if sv["throughput"] >= 0.9 else
                                        "MORE THAN 10% SLOWER than v1 (issue 11's target: at least 0.90)"))
        cr = w.get("cpu_cost_relative_to_sequin_sync") or {}
        if cr:
            out.append("  CPU per record relative to sequin_sync (>1: costs more than sequin_sync): " +
                       ", ".join("%s = %.2f" % (k, v) for k, v in cr.items()))
    out.append("")
    out.append("  limit = the extension's own statement (INSERT ... SELECT ... ON CONFLICT (id) DO UPDATE ... WHERE "
               "stored updated_idx < incoming, RETURNING) fed from typed, reduced rows already in the server (an "
               "unlogged staging table, large values")
    out.append("  stored uncompressed so the limit compresses them as a fresh write does), one transaction per batch: "
               "what Postgres itself must do to write these rows; ceiling = Postgres' own upsert from the JSON text.")
    out.append("  CPU us/r = CPU microseconds per record on our side (all postgres processes + this script, which is "
               "the external worker; not the fake, which stands for Sequin): less sensitive to other load than seconds.")
    out.append("  apply = CPU of the process(es) doing the upserts (sequin_sync workers, or the client backend), "
               "oth.pg = other postgres processes (walwriter, checkpointer, ...),")
    out.append("  fake = fake consumer process, python = this script (the external worker runs in it), others = processes "
               "outside the benchmark, busy = whole machine;")
    out.append("  CPU as %% of one core, busy as %% of all %d cores; flt/rec = minor page faults of the apply "
               "process(es) per record;" % m["nproc"])
    out.append("  WAL B/r = WAL bytes written per record; temp MB = temporary files written (work_mem spills).")
    lat = res.get("latency")
    if lat:
        out.append("")
        out.append("latency (one record published to an idle consumer until visible, %d samples, %d warm-up excluded): "
                   "p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, min %.1f ms, max %.1f ms; the publish request itself "
                   "takes %.1f ms p50" % (lat["samples"], lat["warmup_excluded"], lat["p50_ms"], lat["p90_ms"],
                                          lat["p99_ms"], lat["min_ms"], lat["max_ms"], lat["publish_request_ms_p50"]))
        out.append("  method: " + lat["method"])
    mem = res.get("memory")
    if mem:
        def mb(d, k):
            return "%.1f" % (d.get(k, 0) / 1024.0) if d else "-"
        out.append("")
        out.append("memory (one worker, %s records in %.1f s = %s records/s while being fed):" % (
            fmt_int(mem["records"]), mem["seconds"], fmt_int(mem["records_per_s"])))
        out.append("  %-28s %10s %10s %10s" % ("", "VmRSS MB", "RssAnon MB", "RssShmem MB"))
        for label, d in (("before (started, idle)", mem["start_kb"]), ("after first 100k records", mem["after_100k_kb"]),
                         ("after %s records" % fmt_int(mem["records"]), mem["end_kb"])):
            out.append("  %-28s %10s %10s %10s" % (label, mb(d, "VmRSS"), mb(d, "RssAnon"), mb(d, "RssShmem")))
        g = mem["growth_kb"]
        out.append("  growth: VmRSS %+.1f MB, RssAnon %+.1f MB (private memory); after the first 100k: RssAnon %+.1f MB; "
                   "peak RssAnon sampled %.1f MB; VmHWM %.1f MB; same worker throughout: %s" % (
                       g["VmRSS"] / 1024.0, g["RssAnon"] / 1024.0,
                       (mem["growth_after_warmup_kb"] or {}).get("RssAnon", 0) / 1024.0,
                       (mem["rss_anon_max_kb"] or 0) / 1024.0, mem["end_kb"].get("VmHWM", 0) / 1024.0,
                       "yes" if mem["same_worker_throughout"] else "NO (it restarted)"))
        if mem.get("rss_anon_peak_first_quarter_kb") and mem.get("rss_anon_peak_last_quarter_kb"):
            out.append("  leak check: peak RssAnon %.1f MB in the first quarter of the stream, %.1f MB in the last quarter "
                       "(sampled every 0.5 s; RssAnon swings from batch to batch as freed memory returns to the kernel)" % (
                           mem["rss_anon_peak_first_quarter_kb"] / 1024.0, mem["rss_anon_peak_last_quarter_kb"] / 1024.0))
        out.append("  (VmRSS includes the shared buffers the worker touched; RssAnon is its private memory.)")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description="sequin_sync benchmark: the limit and the ceiling vs sequin_sync vs an "
                                             "external worker, on narrow and wide records.")
    ap.add_argument("--workload", choices=("narrow", "wide", "both"), default="both",
                    help="narrow (Stripe customers, 13 columns), wide (Salesforce-like accounts of 120 fields, "
                         "65 columns) or both (default)")
    ap.add_argument("--records", type=int, help="records per run, narrow workload (default 200000, 20000 with --quick)")
    ap.add_argument("--wide-records", type=int, help="records per run, wide workload (default 40000, 8000 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer records, fewer latency samples, no million-record memory phase")
    ap.add_argument("--skip-external", action="store_true", help="do not run the external Python worker")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run the throughput measurements N times (interleaved) and report the fastest of each")
    ap.add_argument("--skip-scaling", action="store_true",
                    help="do not run the scaling points (narrow: 4 workers, batches of 100 and 5000)")
    ap.add_argument("--skip-latency", action="store_true", help="do not measure latency")
    ap.add_argument("--skip-memory", action="store_true", help="do not run the memory phase")
    ap.add_argument("--memory-records", type=int, default=1000000, help="records of the memory phase (1000000)")
    ap.add_argument("--latency-samples", type=int, help="latency samples (default 300, 200 with --quick)")
    ap.add_argument("--json", default=os.path.join(REPO, "bench-results.json"), metavar="PATH",
                    help="where to write the results (default: bench-results.json in the repository root); the "
                         "chart goes next to it, with .svg in place of .json")
    ap.add_argument("--perf", metavar="FILE", help="record `perf record -a -g` (cpu-clock) during the one-worker "
                                                   "sequin_sync run of each workload into FILE.<workload>, and "
                                                   "during its stream run into FILE.<workload>.stream; and the "
                                                   "worker's main (applying) thread alone (perf -t) into "
                                                   "<that file>.main")
    ap.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment variable for the server (repeatable), e.g. for experiments "
                         "GLIBC_TUNABLES=glibc.malloc.trim_threshold=268435456")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="extra postgresql.conf setting (repeatable)")
    ap.add_argument("--nice", type=int, metavar="N",
                    help="run the benchmark (this script, the server, the fake) at this niceness; a negative "
                         "value (root only) shields it from unrelated load on a shared machine")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--keep", action="store_true", help="keep the temporary cluster directory")
    args = ap.parse_args(argv)
    if args.records is None:
        args.records = 20000 if args.quick else 200000
    if args.wide_records is None:
        args.wide_records = 8000 if args.quick else 40000
    if args.latency_samples is None:
        args.latency_samples = 200 if args.quick else 300
    if args.quick:
        args.skip_memory = True
    if args.records < 2 or args.wide_records < 2:
        ap.error("--records and --wide-records must be at least 2")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    for kv in args.server_env + args.set:
        if "=" not in kv:
            ap.error("expected NAME=VALUE, got %r" % kv)
    args.workloads = ["narrow", "wide"] if args.workload == "both" else [args.workload]
    if "narrow" not in args.workloads:
        # Both measure the narrow records.
        args.skip_latency = args.skip_memory = True
    return args


def workload_jobs(ctx, args, spec, records, expected, batch, perf_file, stream_lines):
    """The measured runs of one workload, in order: (label, function).  The stream run follows
    the one-worker v1 run it is compared with."""
    import systems
    jobs = [("ceiling (INSERT..SELECT jsonb)", lambda: systems.run_ceiling(ctx, spec, records, expected, batch)),
            ("limit (staged rows, same stmt)", lambda: systems.run_limit(ctx, spec, records, expected, batch)),
            ("sequin_sync", lambda: systems.run_sequin_sync(ctx, spec, records, expected, batch, 1, name="sequin_sync",
                                                            perf_file=perf_file())),
            ("sequin_sync stream", lambda: systems.run_sequin_sync(ctx, spec, records, expected, batch, 1,
                                                                   name="sequin_sync stream",
                                                                   perf_file=perf_file("stream"),
                                                                   stream_lines=stream_lines)),
            ("sequin_sync: workers 2", lambda: systems.run_sequin_sync(ctx, spec, records, expected, batch, 2))]
    if not args.skip_external:
        jobs.append(("external: batched execute_values",
                     lambda: systems.run_external(ctx, spec, records, expected, "batched", batch)))
        if spec.name == "narrow":
            jobs.append(("external: per-record INSERT",
                         lambda: systems.run_external(ctx, spec, records, expected, "per-record", batch)))
    if not args.skip_scaling and spec.name == "narrow":
        jobs.append(("sequin_sync: workers 4",
                     lambda: systems.run_sequin_sync(ctx, spec, records, expected, batch, 4)))
        for bs in (100, 5000):
            jobs.append(("sequin_sync: batch %d" % bs,
                         lambda b=bs: systems.run_sequin_sync(ctx, spec, records, expected, b, 1)))
    return jobs


def summarize(w, runs, batch):
    """Ratios of one workload's runs, into its entry of res["workloads"]."""
    by_label = {r["label"]: r for r in runs}
    ceiling = by_label["ceiling (INSERT..SELECT jsonb)"]
    limit = by_label["limit (staged rows, same stmt)"]
    main_run = by_label["sequin_sync"]
    two = by_label["sequin_sync: workers 2"]
    ext_b = by_label.get("external: batched execute_values")
    ext_r = by_label.get("external: per-record INSERT")
    rate = lambda r: r["records_per_s"]
    ratios = {"sequin_sync / limit": rate(main_run) / rate(limit),
              "sequin_sync workers 2 / limit": rate(two) / rate(limit),
              "sequin_sync / ceiling": rate(main_run) / rate(ceiling),
              "limit / ceiling": rate(limit) / rate(ceiling)}
    if ext_b:
        ratios["sequin_sync / external batched"] = rate(main_run) / rate(ext_b)
    if ext_r:
        ratios["sequin_sync / external per-record"] = rate(main_run) / rate(ext_r)
    w["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
    stream = by_label.get("sequin_sync stream")
    if stream:
        w["stream_vs_v1"] = {"throughput": round(rate(stream) / rate(main_run), 3),
                             "cpu_per_record": round(stream["cpu_us_per_record"] / main_run["cpu_us_per_record"], 3),
                             "stream_records_per_s": rate(stream), "v1_records_per_s": rate(main_run)}
    # CPU per record relative to sequin_sync: robust when other processes share the machine.
    cpu = lambda r: r["cpu_us_per_record"] / main_run["cpu_us_per_record"]
    cpu_ratios = {"limit": cpu(limit), "ceiling": cpu(ceiling)}
    if ext_b:
        cpu_ratios["external batched"] = cpu(ext_b)
    if ext_r:
        cpu_ratios["external per-record"] = cpu(ext_r)
    w["cpu_cost_relative_to_sequin_sync"] = {k: round(v, 2) for k, v in cpu_ratios.items()}
    w["stage"] = {k: v for k, v in limit["stage"].items()}
    if any(r["label"] == "sequin_sync: workers 4" for r in runs):
        w["scaling"] = {
            "workers": {str(r["workers"]): r["records_per_s"] for r in runs
                        if r["system"] == "sequin_sync" and r.get("protocol") != "stream"
                        and r["batch_size"] == batch},
            "batch_size": {str(r["batch_size"]): r["records_per_s"] for r in runs
                           if r["system"] == "sequin_sync" and r.get("protocol") != "stream" and r["workers"] == 1},
        }


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    ensure_psycopg2()
    so_path = check_installed()
    if args.nice is not None:
        # Inherited by everything started from here: pg_ctl, the postmaster and its children, the fake.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        set_autogroup_nice(os.getpid(), args.nice)

    import pgcluster
    import sequin_stream
    import systems
    import workload
    import chart
    from fakeclient import FakeAdmin

    def on_term(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)

    res = {"schema": 2, "started_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
           "machine": machine_info(), "options": {k: v for k, v in vars(args).items() if k != "json"},
           "extension": so_info(so_path), "workloads": {}}
    batch = 1000

    specs = [workload.SPECS[name] for name in args.workloads]
    data = {}           # workload name -> (records, expected)
    for spec in specs:
        n = args.records if spec.name == "narrow" else args.wide_records
        log("generating %s %s records" % (fmt_int(n), spec.name))
        records = spec.generate(n, seed=args.seed)
        expected = workload.expected_state(records)
        stream_lines = sequin_stream.messages(spec, records)
        data[spec.name] = (records, expected, stream_lines)
        res["workloads"][spec.name] = {
            "records": len(records), "ids": expected[0], "collection": spec.collection,
            "bytes_per_record": round(sum(len(r.line) for r in records) / len(records)), "batch_size": batch,
            "stream_bytes_per_message": round(sum(len(m) for m in stream_lines) / len(stream_lines)),
            "table": spec.table, "table_columns": len(spec.columns), "table_note": spec.table_note, "seed": args.seed}

    import procstat
    busy, top = procstat.busy_processes(1.0)
    res["machine_load"] = {"busy_pct": busy, "top": top}
    if busy > 10:
        log("WARNING: the machine is busy before the benchmark (%.0f%% of all CPUs): %s"
            % (busy, "; ".join("%s %d%%" % (cmd[:60], pct) for _, pct, cmd in top)))
    settings = dict(SERVER_SETTINGS)
    for kv in args.set:
        k, v = kv.split("=", 1)
        settings[k] = v
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    res["server_env"] = server_env
    cluster = pgcluster.Cluster(settings, keep=args.keep, env=server_env)
    shield = None
    fake = None
    admin = None
    conn = None
    try:
        log("starting the cluster")
        cluster.start()
        if args.nice is not None:
            set_autogroup_nice(cluster.postmaster_pid(), args.nice)   # the postmaster has its own session
            shield = AutogroupShield(cluster.postmaster_pid(), args.nice)
        fake = pgcluster.FakeSequin(os.path.join(HERE, "fake_sequin.py"), cluster.dir)
        fake.start()
        admin = FakeAdmin(fake.port)
        conn = cluster.connect()
        ctx = systems.Context(cluster, fake, admin, conn, os.cpu_count(), log)
        systems.setup_database(ctx, specs)
        version = ctx.sql("SHOW server_version")[0][0]
        shown = {}
        for k in ["shared_buffers", "max_wal_size", "checkpoint_timeout", "fsync", "synchronous_commit",
                  "full_page_writes", "wal_level", "max_worker_processes"] + [kv.split("=", 1)[0] for kv in args.set]:
            shown[k] = ctx.sql("SHOW %s" % k)[0][0]
        res["postgres"] = {"version": "PostgreSQL " + version, "settings": shown, "data_dir": cluster.dir}

        # The measured runs, workload by workload; with --repeat N the whole sequence runs N
        # times (interleaved, so slow phases of a shared machine hit every system alike) and
        # each row reports the fastest repetition, with all of them in the JSON.
        jobs = []
        for spec in specs:
            records, expected, stream_lines = data[spec.name]
            log("probing the fake consumer (%s)" % spec.name)
            res["workloads"][spec.name]["fake_probe"] = systems.probe_fake(ctx, records, batch)
            res["workloads"][spec.name]["fake_probe_stream"] = systems.probe_fake(ctx, records, batch,
                                                                                  stream_lines=stream_lines)

            def perf_file(kind="", name=spec.name, pending={}):
                """FILE.<workload> (FILE.<workload>.stream for the stream run), for the first
                repetition only."""
                if not args.perf or pending.get(kind):
                    return None
                pending[kind] = True
                return "%s.%s%s" % (args.perf, name, kind and "." + kind)
            for label, fn in workload_jobs(ctx, args, spec, records, expected, batch, perf_file, stream_lines):
                jobs.append((spec.name, label, fn))

            # Untimed warm-up: creates the WAL segments that later runs recycle (a new segment is
            # zero-filled by whoever needs it), warms the caches and the fake consumer.
            warm = records[:min(len(records), 20000 if spec.name == "narrow" else 4000)]
            warm_expected = workload.expected_state(warm)
            log("warm-up, %s (%s records, not measured)" % (spec.name, fmt_int(len(warm))))
            systems.run_ceiling(ctx, spec, warm, warm_expected, batch)
            systems.run_sequin_sync(ctx, spec, warm, warm_expected, batch, 1)
            systems.run_sequin_sync(ctx, spec, warm, warm_expected, batch, 1, stream_lines=stream_lines[:len(warm)])
            log("loading the limit's staging table (%s, not measured)" % spec.name)
            systems.build_stage(ctx, spec, records, batch)

        samples = {(wl, label): [] for wl, label, _ in jobs}
        for rep in range(args.repeat):
            for wl, label, fn in jobs:
                log("%s: %s%s" % (wl, label, " (repetition %d of %d)" % (rep + 1, args.repeat) if args.repeat > 1
                                  else ""))
                run = fn()
                run["label"] = label
                run["workload"] = wl
                run["cpu_us_per_record"] = round(cpu_per_record_us(run), 1)
                samples[(wl, label)].append(run)
                log("%-40s %8.2f s  %10s records/s  %s" % (label, run["seconds"], fmt_int(run["records_per_s"]),
                                                           "ok" if run["check"]["ok"] else "CHECK FAILED"))
        runs = []
        for wl, label, _ in jobs:
            reps = samples[(wl, label)]
            best = dict(min(reps, key=lambda r: r["seconds"]))
            best["repetitions"] = [{"seconds": r["seconds"], "records_per_s": r["records_per_s"],
                                    "cpu_us_per_record": r["cpu_us_per_record"]} for r in reps]
            best["check"] = dict(best["check"], ok=all(r["check"]["ok"] for r in reps))
            runs.append(best)
        res["runs"] = runs
        for spec in specs:
            summarize(res["workloads"][spec.name], [r for r in runs if r["workload"] == spec.name], batch)

        if not args.skip_latency:
            log("latency (%d samples)" % args.latency_samples)
            res["latency"] = systems.run_latency(ctx, data["narrow"][0], args.latency_samples)
        if not args.skip_memory:
            log("memory (%s records)" % fmt_int(args.memory_records))
            res["memory"] = systems.run_memory(ctx, workload.SPECS["narrow"], data["narrow"][0], args.memory_records)
        res["server_log_errors"] = [line.rstrip() for line in cluster.log_tail(400).splitlines()
                                    if " ERROR: " in line or " FATAL: " in line or "PANIC" in line][-20:]
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except systems.BenchError as e:
        print("benchmark failed: %s" % e, file=sys.stderr)
        return 1
    finally:
        if shield is not None:
            shield.stop()
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
        if admin is not None:
            admin.close()
        if fake is not None:
            fake.stop()
        cluster.stop()

    text = render(res)
    print(text)
    res["table"] = text.splitlines()
    with open(args.json, "w") as f:
        json.dump(res, f, indent=2, default=str)
        f.write("\n")
    svg = os.path.splitext(args.json)[0] + ".svg"
    with open(svg, "w") as f:
        f.write(chart.render_svg(res))
    print("\nresults written to %s, chart to %s" % (os.path.abspath(args.json), os.path.abspath(svg)))
    failed = ["%s: %s" % (r["workload"], r["label"]) for r in res["runs"] if not r["check"]["ok"]]
    if failed:
        print("CHECK FAILED: %s" % ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
