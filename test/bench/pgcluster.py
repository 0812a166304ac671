"""
pgcluster.py - a throwaway PostgreSQL cluster and a fake Sequin consumer for the benchmark.

initdb and postgres refuse to run as root, so as root the server runs as the ordinary user
`sequin_test` (created if missing, as test/run_tests.sh does) in a temporary directory that user
owns.  Everything is torn down by stop(); callers use it in a finally block.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TEST_USER = "sequin_test"


def pg_config(flag):
    return subprocess.run(["pg_config", flag], check=True, capture_output=True, text=True).stdout.strip()


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


class Cluster:
    """initdb + pg_ctl start in a temporary directory; connect() gives psycopg2 connections."""

    def __init__(self, settings, keep=False, env=None):
        self.settings = settings          # dict of postgresql.conf settings (strings)
        self.keep = keep
        self.env = env or {}              # extra environment of the server (e.g. GLIBC_TUNABLES)
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

    def start(self):
        if is_root():
            ensure_test_user()
        self.dir = tempfile.mkdtemp(prefix="sequin_sync_bench.")
        if is_root():
            pw = pwd.getpwnam(TEST_USER)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        subprocess.run(as_tester([os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", "postgres",
                                  "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        conf = dict(self.settings)
        conf.update({
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "'%s'" % self.dir,
        })
        # The data directory belongs to sequin_test; root may append to its files.
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# sequin_sync benchmark\n")
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        env_prefix = ["env"] + ["%s=%s" % kv for kv in sorted(self.env.items())] if self.env else []
        r = subprocess.run(as_tester(env_prefix + [os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l",
                                                   self.logfile, "-w", "-t", "60", "start"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("the server did not start: %s\n%s" % (r.stderr.strip(), self.log_tail()))
        self.started = True

    def log_tail(self, n=30):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def postmaster_pid(self):
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            return int(f.readline())

    def connect(self, autocommit=True, dbname="postgres"):
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname,
                                application_name="sequin_sync bench")
        conn.autocommit = autocommit
        return conn

    def stop(self):
        if self.dir is None:
            return
        if self.started:
            r = subprocess.run(as_tester([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "fast",
                                          "-w", "-t", "60", "stop"]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode != 0:
                try:
                    os.kill(self.postmaster_pid(), signal.SIGQUIT)
                except (OSError, ValueError):
                    pass
            self.started = False
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


class FakeSequin:
    """test/fake_sequin.py in its own process (its CPU time is measured separately)."""

    def __init__(self, script, workdir):
        self.script = script
        self.workdir = workdir
        self.proc = None
        self.port = None

    def start(self):
        port_file = os.path.join(self.workdir, "fake.port")
        self.proc = subprocess.Popen([sys.executable, self.script, "--port", "0", "--port-file", port_file, "--quiet"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if os.path.exists(port_file):
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("the fake consumer exited: %s" % self.proc.stderr.read().decode(errors="replace"))
            time.sleep(0.05)
        raise RuntimeError("the fake consumer did not start")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
