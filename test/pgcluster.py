"""
pgcluster.py - a throwaway PostgreSQL cluster and a fake Sequin consumer, shared by the Python
suites (through conftest.py's fixtures), the benchmark (test/bench.py) and the sanitizer canary.

initdb and postgres refuse to run as root, so as root every server program (initdb, pg_ctl and
the postmaster, psql, pg_dump ...) runs as the ordinary user `sequin_test` (created if missing, as
test/run_tests.sh does) through runuser, in a temporary directory that user owns.  The
environment is passed through unchanged (runuser without --login keeps it), so UBSAN_OPTIONS
and the like reach pg_ctl and the postmaster.

The server listens on 127.0.0.1 only, on a free port, and on a unix socket in its directory;
psql() uses the socket.  Python standard library only; connect() (the benchmark's) needs psycopg2.
Everything is torn down by stop() (and cleanup()); callers use them in a finally block.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TEST_USER = "sequin_test"


class ClusterError(Exception):
    """A server program failed (the message has its stderr)."""


def pg_config(flag):
    """The PostgreSQL under test: $PG_CONFIG (`make test PG_CONFIG=...` exports it), else PATH's."""
    return subprocess.run([os.environ.get("PG_CONFIG") or "pg_config", flag], check=True, capture_output=True, text=True).stdout.strip()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root():
    return os.geteuid() == 0


def ensure_test_user():
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        TEST_USER], check=True)


def as_tester(cmd):
    """The command line, run as sequin_test when we are root."""
    if is_root():
        return ["runuser", "-u", TEST_USER, "--"] + cmd
    return cmd


def wait_until(what, cond, timeout, interval=0.1):
    """Polls cond() until it returns a true value (returned); raises TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Cluster:
    """initdb + pg_ctl start in a temporary directory.

    settings: postgresql.conf settings (values as they go into the file, e.g. "'sequin_sync'");
    env: extra environment variables for the server programs, on top of os.environ."""

    def __init__(self, settings=None, keep=False, env=None, prefix="sequin_sync_test."):
        self.settings = dict(settings or {})
        self.keep = keep
        self.env = env or {}
        self.prefix = prefix
        self.bindir = pg_config("--bindir")
        self.dir = None
        self.port = None
        self.started = False

    @property
    def datadir(self):
        return os.path.join(self.dir, "data")

    @property
    def logfile(self):
        return os.path.join(self.dir, "server.log")

    def _env(self, extra=None):
        env = dict(os.environ)
        env.update(self.env)
        env.update(extra or {})
        return env

    def bin(self, name):
        return os.path.join(self.bindir, name)

    def run(self, argv, check=True, timeout=120, input=None, env=None):
        """Runs a program as the test user in the cluster's directory; returns the
        CompletedProcess (bytes).  check: raise ClusterError on a nonzero exit."""
        p = subprocess.run(as_tester(argv), cwd=self.dir, input=input, capture_output=True,
                           timeout=timeout, env=self._env(env))
        if check and p.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} failed ({p.returncode}): "
                               f"{p.stderr.decode('utf-8', 'replace').strip()}")
        return p

    # -- life cycle ---------------------------------------------------------------------------

    def init(self):
        """The directory, initdb and postgresql.conf (the server is not started)."""
        if is_root():
            ensure_test_user()
        self.dir = tempfile.mkdtemp(prefix=self.prefix)
        if is_root():
            pw = pwd.getpwnam(TEST_USER)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.run([self.bin("initdb"), "-D", self.datadir, "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-locale", "--no-sync"])
        conf = {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": "'%s'" % self.dir}
        conf.update(self.settings)
        conf["port"] = str(self.port)
        # The data directory belongs to the test user; root may append to its files.
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# %s\n" % os.path.basename(sys.argv[0] or "pgcluster"))
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))

    def pg_ctl(self, *args, timeout=120):
        return self.run([self.bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile, "-w", "-t", "90"]
                        + list(args), timeout=timeout)

    def start(self):
        """init() when not done yet, then start the server and wait until it accepts connections."""
        if self.dir is None:
            self.init()
        try:
            self.pg_ctl("start")
        except ClusterError as e:
            raise ClusterError("the server did not start: %s\n%s" % (e, self.log_tail()))
        self.started = True

    def restart(self, mode="fast"):
        self.pg_ctl("restart", "-m", mode)

    def stop(self):
        """Stops the server (fast, else immediate, else SIGQUIT); then cleanup() unless keep."""
        if self.dir is None:
            return
        if self.started:
            try:
                self.pg_ctl("stop", "-m", "fast", timeout=60)
            except Exception:
                try:
                    self.pg_ctl("stop", "-m", "immediate", timeout=60)
                except Exception:
                    try:
                        os.kill(self.postmaster_pid(), signal.SIGQUIT)
                    except (OSError, ValueError):
                        pass
            self.started = False
        if not self.keep:
            self.cleanup()

    def cleanup(self):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- looking inside -----------------------------------------------------------------------

    def server_log(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=30):
        return "".join(self.server_log().splitlines(True)[-n:])

    def postmaster_pid(self):
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            return int(f.readline())

    def psql(self, sql, check=True, timeout=60, dbname="postgres"):
        """Runs sql through psql (stops at the first error); returns stdout (unaligned, tuples
        only), or None when it failed and check is false."""
        p = self.run([self.bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.dir,
                      "-p", str(self.port), "-U", "postgres", "-d", dbname],
                     check=False, timeout=timeout, input=sql.encode("utf-8"),
                     env={"PGCLIENTENCODING": "UTF8", "PGOPTIONS": "-c client_min_messages=warning"})
        if check and p.returncode != 0:
            raise ClusterError(f"psql failed: {p.stderr.decode('utf-8', 'replace').strip()}\n"
                               f"SQL: {sql[:300]}")
        return p.stdout.decode("utf-8") if p.returncode == 0 else None

    def query_json(self, sql):
        """The rows of sql as a list of dicts (via json_agg)."""
        return json.loads(self.psql(f"SELECT COALESCE(json_agg(q), '[]') FROM ({sql}) q"))

    def scalar(self, sql):
        return self.psql(sql).strip()

    def connect(self, autocommit=True, dbname="postgres"):
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname,
                                application_name="sequin_sync bench")
        conn.autocommit = autocommit
        return conn


class FakeSequin:
    """test/fake_sequin.py in its own process (and session), on 127.0.0.1 and a free port."""

    def __init__(self, script, workdir):
        self.script = script
        self.workdir = workdir
        self.proc = None
        self.port = None
        self.err = None

    def start(self):
        port_file = os.path.join(self.workdir, "fake.port")
        self.err = open(os.path.join(self.workdir, "fake.log"), "wb")
        self.proc = subprocess.Popen([sys.executable, self.script, "--port", "0", "--port-file", port_file,
                                      "--quiet"], stdout=subprocess.DEVNULL, stderr=self.err,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(port_file):
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise ClusterError("the fake consumer did not start (see %s)" % self.err.name)

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def http(self, method, path, doc=None, raw=None, timeout=60):
        """An admin request: JSON in (doc, or raw bytes), JSON out."""
        body = raw if raw is not None else (json.dumps(doc).encode() if doc is not None else None)
        req = urllib.request.Request(self.url(path), data=body, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    # -- Sequin Stream consumers (fake_sequin.py's StreamConsumer; see its module doc) ----------

    def stream_consumer(self, cid, token, **settings):
        """Create (or change) a Sequin Stream sink: name (default cid), uuid, ack_wait_ms,
        paused, message_grouping, ...  Returns its description (with "uuid")."""
        doc = {"id": cid, "token": token, "protocol": "stream"}
        doc.update(settings)
        return self.http("POST", "/admin/consumers", doc)

    def stream_endpoint(self, cid_or_name, legacy=False):
        """The endpoint a stream consumer is created with in sequin_sync."""
        prefix = "http_pull_consumers" if legacy else "sequin_streams"
        return self.url("/api/%s/%s" % (prefix, cid_or_name))

    def publish_stream(self, cid, messages):
        """Publish data objects {record, changes, action, metadata} (e.g. gen_stream's);
        returns {"published": n, "deduplicated": k}."""
        return self.http("POST", "/admin/consumers/%s/publish" % cid, messages)

    def stream_stats(self, cid):
        """published, delivered, acked, in_flight, pending, outstanding, ..."""
        return self.http("GET", "/admin/consumers/%s/stats" % cid)

    def restart_stream(self, cid, replay_acked=0, keep_ack_ids=False):
        """A simulated Sequin restart: nothing in flight, new ack_ids, and the last
        replay_acked acked messages delivered again."""
        return self.http("POST", "/admin/consumers/%s/restart" % cid,
                         {"replay_acked": replay_acked, "keep_ack_ids": keep_ack_ids})

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)   # the session this object started
                self.proc.wait(10)
        self.proc = None
        if self.err is not None:
            self.err.close()
            self.err = None


# The postgresql.conf settings of a test cluster with sequin_sync preloaded (for the database
# postgres): conftest.py's default, and the base of the suites' own.
PRELOAD_SETTINGS = {
    "shared_preload_libraries": "'sequin_sync'",
    "sequin_sync.database": "'postgres'",
    "max_worker_processes": "32",
    "fsync": "off",
    "log_line_prefix": "'%m [%p] %b '",
}
