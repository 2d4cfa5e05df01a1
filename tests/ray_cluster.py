"""A real two-node Ray cluster on this machine: the ``ray_cluster`` fixture of tests/conftest.py (used by
tests/filter/test_ray_engine.py).

Both ``ray start`` commands run in one new session, and Ray's daemons and workers stay in it (Ray gives
a worker a process group of its own, not a session), so :meth:`RayCluster.stop` kills every process the
cluster started and only those. Not `ray stop --force`: that kills every Ray process on the machine,
other people's clusters too. A watchdog process does the same if the test process dies without
tearing down (SIGKILL, a crash), so no Ray process outlives the tests."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Per node: small, so that two nodes sharing this machine leave room to others (Ray spills beyond it).
OBJECT_STORE_BYTES = 256 << 20
START_TIMEOUT_S = 180
#: For the nodes and the processes that connect to them. Token authentication off, explicitly: with it
#: unset, Ray 2.60 turns it on for a head node when ~/.ray/auth_token exists (any local `ray.init()`
#: writes one) but not for a node joining it, which then fails with InvalidAuthToken.
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

_WATCHDOG = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[3])
from ray_cluster import session_members
parent, sid = int(sys.argv[1]), int(sys.argv[2])
while os.path.exists(f"/proc/{parent}") and session_members(sid):
    time.sleep(1)
for pid in session_members(sid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is ``sid`` (field 6 of /proc/PID/stat), this one excepted."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # a zombie holds no memory and cannot be killed
            out.append(int(d.name))
    return out


def rss_mib(pids: list[int]) -> float:
    """Resident memory of ``pids`` added up (shared pages counted in each)."""
    total = 0
    for pid in pids:
        try:
            total += next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            pass
    return total / 1024


class RayCluster:
    """A head node and a second node (one CPU each) on this machine; ``address`` is the head's GCS
    address (Ray advertises the machine's own IP for 127.0.0.1, and listens on both)."""

    def __init__(self, ray_bin: str, temp_dir: Path):
        self.ray_bin, self.temp_dir = ray_bin, temp_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sid: int | None = None
        self.watchdog: subprocess.Popen | None = None
        self.start_seconds = 0.0

    def start(self) -> "RayCluster":
        t0 = time.perf_counter()
        common = ["--num-cpus", "1", "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats",
                  "--node-ip-address", "127.0.0.1"]
        head = [self.ray_bin, "start", "--head", "--port", str(self.port), "--include-dashboard", "false",
                "--dashboard-port", str(free_port()), "--temp-dir", str(self.temp_dir), *common]
        node = [self.ray_bin, "start", "--address", self.address, *common]
        proc = subprocess.Popen(["bash", "-c", f"{shlex.join(head)} && {shlex.join(node)}"], cwd=ROOT,
                                start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **CLUSTER_ENV})
        self.sid = proc.pid
        self.watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.sid),
                                          str(Path(__file__).parent)], start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=START_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"`ray start` failed ({proc.returncode}):\n{out[-3000:]}")
            self.wait_nodes(2)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        return self

    def wait_nodes(self, n: int) -> None:
        """Until ``n`` nodes are alive (connects this process, then disconnects it)."""
        import ray

        deadline = time.time() + START_TIMEOUT_S
        ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
        try:
            while sum(1 for node in ray.nodes() if node["Alive"]) < n:
                if time.time() > deadline:
                    raise RuntimeError(f"{n} Ray nodes not alive after {START_TIMEOUT_S} s: {ray.nodes()}")
                time.sleep(0.2)
        finally:
            ray.shutdown()

    def processes(self) -> list[int]:
        """Every live process of the cluster (daemons and workers)."""
        return session_members(self.sid) if self.sid is not None else []

    def workers(self) -> list[int]:
        """The cluster's Python worker processes (`ray::...` once they ran a task, else default_worker.py)."""
        out = []
        for pid in self.processes():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "default_worker.py" in cmd or (cmd.startswith("ray::") and "Agent" not in cmd):
                out.append(pid)
        return out

    def stop(self) -> None:
        if self.sid is not None:
            for pid in self.processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 10
            while self.processes() and time.time() < deadline:
                time.sleep(0.1)
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.kill()
            self.watchdog.wait()

