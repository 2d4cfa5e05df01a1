"""A real two-node Ray cluster on this machine, for tests/filter/test_ray_engine.py."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Per node: small, so that two nodes sharing this machine leave room to others (Ray spills beyond it).
OBJECT_STORE_BYTES = 256 << 20
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_members(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (field 6 of /proc/PID/stat)."""
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


class RayCluster:
    """A head node and a second node (one CPU each) on this machine; ``address`` is the head's GCS
    address. Both ``ray start`` commands run in one new session, and Ray's daemons and workers stay
    in it (Ray gives workers process groups of their own, not sessions), so :meth:`stop` kills every
    process they started and only those. Not `ray stop --force`: that kills every Ray process on the
    machine, other people's clusters too."""

    def __init__(self, ray_bin: str, temp_dir: Path):
        self.ray_bin, self.temp_dir = ray_bin, temp_dir
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sid: int | None = None
        self.start_seconds = 0.0

    def start(self) -> "RayCluster":
        t0 = time.perf_counter()
        common = ["--num-cpus", "1", "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats",
                  "--node-ip-address", "127.0.0.1"]
        head = [self.ray_bin, "start", "--head", "--port", str(self.port), "--include-dashboard", "false",
                "--dashboard-port", str(_free_port()),
                "--temp-dir", str(self.temp_dir), *common]
        node = [self.ray_bin, "start", "--address", self.address, *common]
        script = f"{shlex.join(head)} && {shlex.join(node)}"
        proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        self.sid = proc.pid
        try:
            out, _ = proc.communicate(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"`ray start` did not finish in {START_TIMEOUT_S} s")
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"`ray start` failed ({proc.returncode}):\n{out[-3000:]}")
        self.wait_nodes(2)
        self.start_seconds = time.perf_counter() - t0
        return self

    def wait_nodes(self, n: int) -> None:
        """Until ``n`` nodes are alive (connects, then disconnects this process)."""
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
        return session_members(self.sid) if self.sid is not None else []

    def stop(self) -> None:
        if self.sid is None:
            return
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while self.processes() and time.time() < deadline:
            time.sleep(0.1)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A running two-node Ray cluster (head + one more node, 1 CPU each, on 127.0.0.1); skipped with a
    reason when ray is not installed. Every process it started is killed at the end of the session,
    whatever the tests did."""
    pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]' (or `make setup`) "
                                      "to run the Ray engine tests")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    if not Path(ray_bin).is_file():
        ray_bin = shutil.which("ray") or ray_bin
    # short: Ray's socket paths (inside the temp dir) must fit in 107 bytes
    temp_dir = Path(tempfile.mkdtemp(prefix="rayt-", dir="/tmp" if os.path.isdir("/tmp") else None))
    cluster = RayCluster(ray_bin, temp_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
