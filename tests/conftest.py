"""Shared fixtures. Tests never touch the user's cache or the repository's figures/ folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("CQIA_REAL_DATA", ROOT.parent / "shared" / "coig-cqia"))
REAL_BENCHMARKS = Path(os.environ.get("CQIA_REAL_BENCHMARKS", ROOT.parent / "shared" / "benchmarks"))

# Set at import so that notebook kernels started by nbval inherit them too.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="cqia-tests-"))
os.environ["CQIA_CACHE_DIR"] = str(_SESSION_TMP / "cache")
os.environ["CQIA_FIGURES_DIR"] = str(_SESSION_TMP / "figures")
os.environ["CQIA_RESULTS"] = str(_SESSION_TMP / "results" / "results.jsonl")  # never build/results
os.environ.pop("CQIA_DATA", None)  # stored notebook outputs are those of the bundled default
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def real_data() -> Path:
    """The real COIG-CQIA copy beside the checkout (CI has it); skip with a reason otherwise."""
    if not (REAL_DATA / "README.md").is_file():
        pytest.skip(f"real COIG-CQIA copy not found at {REAL_DATA} (set CQIA_REAL_DATA to run this tier)")
    return REAL_DATA


def make_record(**over) -> dict:
    rec = {"instruction": "什么是指令微调？", "input": "", "output": "指令微调是用指令和回答训练模型。",
           "task_type": {"major": ["问答"], "minor": ["百科问答"]}, "domain": ["通用"],
           "metadata": "暂无元数据信息", "answer_from": "human", "human_verified": True,
           "copyright": "暂无版权及作者信息"}
    rec.update(over)
    return rec


def jsonl(records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


class Unprivileged:
    """Runs commands as a user for whom a read-only folder is read-only (root writes into any folder)."""

    def __init__(self, prefix: list[str], uid: int, gid: int, home: Path, how: str):
        self.prefix, self.uid, self.gid, self.home, self.how = prefix, uid, gid, home, how

    def folder(self, name: str, mode: int = 0o755) -> Path:
        """A folder inside ``home`` owned by the unprivileged user, with ``mode``."""
        p = self.home / name
        p.mkdir(parents=True, exist_ok=True)
        _give(p, self.uid, self.gid)
        p.chmod(mode)
        return p

    def env(self, **over: str) -> dict[str, str]:
        """The test environment with every writable place inside ``home`` (the session's cache and
        figure folders belong to the user running pytest)."""
        env = {**os.environ, "HOME": str(self.home), "CQIA_CACHE_DIR": str(self.home / "cache"),
               "CQIA_FIGURES_DIR": str(self.home / "figures"),
               "CQIA_RESULTS": str(self.home / "results" / "results.jsonl"),
               "XDG_CACHE_HOME": str(self.home / "xdg"), "MPLCONFIGDIR": str(self.home / "mpl"),
               "PYTHONDONTWRITEBYTECODE": "1"}
        env.update(over)
        return env

    def run(self, args: list[str], **kw):
        import subprocess

        kw.setdefault("env", self.env())
        return subprocess.run(self.prefix + args, capture_output=True, text=True, cwd=str(ROOT), **kw)


def _give(p: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0 and (uid, gid) != (0, 0):
        os.chown(p, uid, gid)


def _scratch(uid: int, gid: int) -> Path:
    """A fresh folder the unprivileged user owns, under /tmp (pytest's tmp_path is private to root)."""
    home = Path(tempfile.mkdtemp(prefix="cqia-unprivileged-", dir="/tmp" if os.path.isdir("/tmp") else None))
    home.chmod(0o755)
    _give(home, uid, gid)
    return home


def _drop_candidates() -> list[tuple[str, list[str], int, int]]:
    """(how, argv prefix, uid, gid) ways for root to run a command without root's file powers."""
    import pwd
    import shutil

    out = []
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        nobody = None
    if nobody is not None and shutil.which("setpriv"):
        out.append(("setpriv to nobody", ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                                          "--clear-groups", "--"], nobody.pw_uid, nobody.pw_gid))
    if nobody is not None and shutil.which("runuser"):
        out.append(("runuser to nobody", ["runuser", "-u", "nobody", "--"], nobody.pw_uid, nobody.pw_gid))
    if shutil.which("setpriv"):  # for a Python that `nobody` cannot reach (under /root, say)
        caps = "-dac_override,-dac_read_search"
        out.append(("setpriv: root without CAP_DAC_OVERRIDE", ["setpriv", f"--bounding-set={caps}",
                                                                f"--inh-caps={caps}", "--"], 0, 0))
    return out


_PROBE = """
import os, sys
import cqia_nb, polars
ro = sys.argv[1]
open(os.path.join(os.path.dirname(ro), "ok"), "w").close()
try:
    open(os.path.join(ro, "x"), "w").close()
except PermissionError:
    print("read-only holds")
else:
    print("read-only ignored")
"""


@pytest.fixture(scope="session")
def _unprivileged_way() -> tuple[str, list[str], int, int]:
    """The first way to drop root's file powers that runs this Python with the package importable and
    that a mode-0555 folder stops; checked once per session."""
    import shutil
    import subprocess
    import sys

    if os.name != "posix":
        pytest.skip("POSIX permissions are needed to make a folder read-only")
    if os.geteuid() != 0:
        return ("this user", [], os.getuid(), os.getgid())
    tried = []
    for how, prefix, uid, gid in _drop_candidates():
        home = _scratch(uid, gid)
        ro = home / "ro"
        try:
            ro.mkdir()
            _give(ro, uid, gid)
            ro.chmod(0o555)
            r = subprocess.run(prefix + [sys.executable, "-c", _PROBE, str(ro)], capture_output=True, text=True,
                               cwd=str(ROOT), env={**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"})
            if r.returncode == 0 and r.stdout.strip() == "read-only holds":
                return how, prefix, uid, gid
            last = (r.stderr.strip().splitlines() or [r.stdout.strip()])[-1]
            tried.append(f"{how}: {last}")
        finally:
            if ro.is_dir():
                ro.chmod(0o755)
            shutil.rmtree(home, ignore_errors=True)
    pytest.skip("running as root, and no way to drop root's file powers works here "
                f"({'; '.join(tried) or 'neither setpriv nor runuser exists'}): a folder cannot be made "
                f"read-only for root; install util-linux (setpriv, runuser) or run the tests as a normal user")


@pytest.fixture
def unprivileged(_unprivileged_way):
    """Tests run as root on CI, and root writes into read-only folders. As root, commands run through
    :meth:`Unprivileged.run` run as `nobody` (setpriv or runuser), or, where `nobody` cannot run this
    Python, as root without CAP_DAC_OVERRIDE; as any other user, as that user. Skips only when tests
    run as root and none of these works, saying why."""
    import shutil

    how, prefix, uid, gid = _unprivileged_way
    home = _scratch(uid, gid)
    try:
        yield Unprivileged(prefix, uid, gid, home, how)
    finally:
        for p in [home, *home.rglob("*")]:
            try:
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o755)
            except OSError:
                pass
        shutil.rmtree(home, ignore_errors=True)


def sigkill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 600) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every 50 ms): a kill in the middle of
    a run, for the resume tests. Fails with the child's stderr if it exits first."""
    try:
        deadline = time.time() + timeout_s
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def float_bits_equal(a: pl.Series, b: pl.Series) -> bool:
    """Float64 columns equal bit for bit, nulls in the same places (NaN == NaN, -0.0 != 0.0)."""
    na, nb = a.is_null().to_numpy(), b.is_null().to_numpy()
    va = a.fill_null(0.0).to_numpy().view(np.uint64)
    vb = b.fill_null(0.0).to_numpy().view(np.uint64)
    return bool(np.array_equal(na, nb) and np.array_equal(va[~na], vb[~nb]))


def assert_frames_identical(a: pl.DataFrame, b: pl.DataFrame, what: str) -> None:
    assert a.schema == b.schema, f"{what}: schema {a.schema} != {b.schema}"
    assert a.equals(b, null_equal=True), f"{what}: frames differ"
    for c, t in a.schema.items():
        if t == pl.Float64:
            assert float_bits_equal(a[c], b[c]), f"{what}: column {c} differs in its float bits"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator["RayCluster"]:
    """A running two-node Ray cluster (a head and one more node, 1 CPU each, on 127.0.0.1; see
    tests/ray_cluster.py), skipped with a reason when ray is not installed. Every process it started is
    killed at the end of the session, whatever the tests did."""
    pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]' (or `make setup`) "
                                      "to run the Ray engine tests")
    from ray_cluster import CLUSTER_ENV, RayCluster

    saved_env = {k: os.environ.get(k) for k in CLUSTER_ENV}
    os.environ.update(CLUSTER_ENV)  # this process connects to the cluster as its nodes do
    ray_bin = Path(sys.executable).with_name("ray")
    # short: Ray's socket paths (inside the temp dir) must fit in 107 bytes
    temp_dir = Path(tempfile.mkdtemp(prefix="rayt-", dir="/tmp" if os.path.isdir("/tmp") else None))
    cluster = RayCluster(str(ray_bin) if ray_bin.is_file() else (shutil.which("ray") or "ray"), temp_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_frame(source: str) -> pl.DataFrame:
    """The loader's frame of ``source`` ('bundled' or a path), its data warnings silenced."""
    import warnings

    from cqia_nb.data.load import LoadConfig, load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load(LoadConfig(source=source)).frame


def parquet_shards(frame: pl.DataFrame, folder: Path, n: int, row_group_size: int | None = None) -> Path:
    """``frame`` as ``n`` parquet shards in ``folder`` (small ``row_group_size``: a shard is several batches)."""
    folder.mkdir()
    size = -(-frame.height // n)
    for i in range(n):
        frame.slice(i * size, size).write_parquet(folder / f"part-{i:03d}.parquet", row_group_size=row_group_size)
    return folder


def assert_same_output_files(a: Path, b: Path) -> None:
    """Two `cqia-nb filter` output folders hold the same records, reasons and counts (steps.csv: but
    the seconds)."""
    for name in ("kept", "dropped"):
        assert_frames_identical(pl.read_parquet(a / f"{name}.parquet"), pl.read_parquet(b / f"{name}.parquet"), name)
        assert (a / f"{name}.jsonl").read_bytes() == (b / f"{name}.jsonl").read_bytes(), f"{name}.jsonl differs"
    assert_frames_identical(pl.read_csv(a / "steps.csv").drop("seconds"), pl.read_csv(b / "steps.csv").drop("seconds"),
                            "steps.csv")
    assert (a / "pipeline.json").read_text() == (b / "pipeline.json").read_text()


def assert_same_build_files(a: Path, b: Path) -> None:
    """Two `cqia-nb build` output folders hold the same files with the same bytes, file by file."""
    fa = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert fa == fb, f"different files: only in {a.name}: {sorted(set(fa) - set(fb))}, only in {b.name}: {sorted(set(fb) - set(fa))}"
    differ = [f for f in fa if (a / f).read_bytes() != (b / f).read_bytes()]
    assert not differ, f"{len(differ)} of {len(fa)} files differ: {differ[:10]}"


def ref_char_rep(t: str, n: int = 10) -> float:
    """Data-Juicer's character_repetition_filter, per record, in plain Python (the rule's reference)."""
    from collections import Counter

    grams = Counter(t[i:i + n] for i in range(len(t) - n + 1))
    if not grams:
        return 0.0
    freq = sorted(grams.values(), reverse=True)
    k = min(int(len(freq) ** 0.5), sum(1 for f in freq if f > 1))
    return sum(freq[:k]) / sum(freq)
