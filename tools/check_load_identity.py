"""Is this checkout's loader's result identical to another checkout's (main's, say)?

    python tools/check_load_identity.py --ref /tmp/cqia-main-ref [--data ../shared/coig-cqia] [--times 10]

(make one with ``git worktree add /tmp/cqia-main-ref main``). Every load runs in a fresh process with
the checkout first on PYTHONPATH (checked: the child reports which ``cqia_nb`` it imported), and
writes what it loaded to Arrow IPC files; this process compares them: the frame's schema, row order
and every value, and the load report (problems with file, line, field and message; the files table
with status, counts and hashes; the normalisation notes; the summary line; ``reconciles()``).

Sources: the real copy (``--data``, skipped when absent), the same copy repeated ``--times`` times
(0: skip), and a crafted folder of every bad input the tests cover (LFS pointer, empty file,
malformed JSON, wrong types, missing and null fields, GB18030 bytes, JSON array, non-object lines,
BOM / CRLF / blank lines / U+2028, unknown keys, .jsonl.gz / .jsonl.zst / gzip bytes named .jsonl /
damaged gzip, a record longer than a parse block, invalid UTF-8 inside a string, a file outside the
card's configs, an unsupported suffix). For each source, each checkout loads it cold (empty cache),
warm (a second process on that cache) and without the cache; all six results must be equal.

Exit status 0 when everything is identical, 1 otherwise (each difference is printed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
TABLES = ("frame", "problems", "files", "notes")


# ----------------------------------------------------------------------------- child

def child(source: str, cache_dir: str, use_cache: bool, out: str) -> None:
    import warnings

    import cqia_nb
    from cqia_nb.data.load import LoadConfig, load
    from cqia_nb.data.schema import DataQualityWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataQualityWarning)
        res = load(LoadConfig(source=source, cache=use_cache, cache_dir=cache_dir))
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        getattr(res, name).write_ipc(o / f"{name}.arrow")
    meta = {"module": cqia_nb.__file__, "from_cache": res.from_cache, "summary": res.summary(),
            "reconciles": res.reconciles(), "source": res.source, "root": str(res.root),
            "schemas": {n: {k: str(v) for k, v in getattr(res, n).schema.items()} for n in TABLES}}
    (o / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))


# ----------------------------------------------------------------------------- sources

def crafted(root: Path) -> Path:
    """Every bad input of tests/data/test_load.py, in one folder with a card."""
    sys.path.insert(0, str(HERE / "tests"))
    from conftest import jsonl, make_record  # type: ignore[import-not-found]

    good = make_record()
    lfs = (b"version https://git-lfs.github.com/spec/v1\n"
           b"oid sha256:0c609b053610df4b3506dc1fe9efdd69b2561eafd0365d24302634ade0d11e1d\nsize 69117801\n")
    bare = {"instruction": "问题", "output": "回答"}
    files = {
        "zhihu/lfs.jsonl": lfs,
        "zhihu/empty.jsonl": b"",
        "zhihu/blank.jsonl": b" \n\n",
        "zhihu/broken.jsonl": jsonl([good]) + b'{"instruction": "x", \n' + jsonl([good]),
        "zhihu/types.jsonl": jsonl([good, make_record(human_verified="true"), make_record(domain="医疗"),
                                    make_record(task_type={"major": "问答"}), make_record(input=3)]),
        "zhihu/missing.jsonl": jsonl([{k: v for k, v in good.items() if k != "output"}]),
        "zhihu/gbk.jsonl": jsonl([good]) + json.dumps(make_record(output="中文回答"),
                                                      ensure_ascii=False).encode("gbk") + b"\n",
        "zhihu/array.jsonl": b"[" + json.dumps(good, ensure_ascii=False).encode() + b"]\n",
        "zhihu/notobj.jsonl": b'["a", "b"]\n3\n"s"\n',
        "zhihu/nulls.jsonl": jsonl([make_record(input=None), bare,
                                    make_record(task_type=None, domain=None, human_verified=None),
                                    make_record(task_type={"major": None}), make_record(output=None),
                                    {k: v for k, v in good.items() if k != "instruction"},
                                    make_record(domain=["a", None]), make_record()]),
        "zhihu/extra.jsonl": jsonl([make_record(score=9.5, task_type={"major": [], "minor": [], "x": 1})]),
        "zhihu/utf8.jsonl": jsonl([good]) + jsonl([make_record(output="x")]).replace(b'"x"', b'"x\xff"'),
        "zhihu/notes.csv": b"a,b\n1,2\n",
        "xhs/bom.jsonl": b"\xef\xbb\xbf" + jsonl([make_record(output="第一行\u2028仍是同一条记录")]).replace(
            b"\n", b"\r\n") + b"\r\n   \n" + jsonl([make_record(instruction="第二条")]),
        "xhs/long.jsonl": jsonl([make_record(output="长" * 400_000)] + [make_record(instruction=f"短{i}")
                                                                         for i in range(2000)]),
        "xhs/a.jsonl.gz": gzip.compress(jsonl([make_record(instruction="压缩的问题")])),
        "xhs/wrong.jsonl": gzip.compress(jsonl([good])),
        "xhs/bad.jsonl.gz": b"\x1f\x8bnot gzip",
        "xhs/noeol.jsonl": jsonl([good, make_record(instruction="最后一行")])[:-1],
        "other/unclaimed.jsonl": jsonl([good]),
    }
    try:
        import zstandard

        files["xhs/z.jsonl.zst"] = zstandard.ZstdCompressor().compress(jsonl([make_record(instruction="zstd")]))
    except ImportError:
        files["xhs/z.jsonl.zst"] = b"\x28\xb5\x2f\xfd"
    for rel, raw in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(raw)
    (root / "README.md").write_text('---\nconfigs:\n- config_name: "zhihu"\n  data_files: "zhihu/*"\n'
                                    '- config_name: "xhs"\n  data_files: "xhs/*"\n---\n# crafted\n')
    return root


def scaled(src: Path, dst: Path, times: int) -> Path:
    sys.path.insert(0, str(HERE / "benchmarks"))
    from bench_load import scaled_copy  # type: ignore[import-not-found]

    scaled_copy(src, dst, times)
    return dst


# ----------------------------------------------------------------------------- compare

def run_load(tree: Path, source: Path, cache: Path, use_cache: bool, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), CQIA_CACHE_DIR=str(cache))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--source", str(source),
           "--cache-dir", str(cache), "--out", str(out)] + ([] if use_cache else ["--no-cache"])
    subprocess.run(cmd, env=env, check=True, cwd=tempfile.gettempdir())
    meta = json.loads((out / "meta.json").read_text())
    want = str(tree.resolve() / "cqia_nb" / "__init__.py")
    if str(Path(meta["module"]).resolve()) != want:
        raise SystemExit(f"the child imported {meta['module']}, not {want}: fix PYTHONPATH")
    return meta


def differences(a: Path, b: Path, ma: dict, mb: dict) -> list[str]:
    import polars as pl

    out = []
    for key in ("summary", "reconciles", "source", "root", "schemas"):
        if ma[key] != mb[key]:
            out.append(f"{key}: {ma[key]!r} != {mb[key]!r}")
    for name in TABLES:
        x, y = pl.read_ipc(a / f"{name}.arrow"), pl.read_ipc(b / f"{name}.arrow")
        if x.schema != y.schema:
            out.append(f"{name}: schema {x.schema} != {y.schema}")
            continue
        if x.height != y.height:
            out.append(f"{name}: {x.height} rows != {y.height}")
            continue
        if x.equals(y, null_equal=True):
            continue
        for c in x.columns:
            ne = ~(x[c].eq_missing(y[c])) if x[c].dtype != pl.List(pl.String) else pl.Series(
                [u != v for u, v in zip(x[c].to_list(), y[c].to_list())])
            idx = ne.arg_true()
            if len(idx):
                i = int(idx[0])
                out.append(f"{name}.{c}: {len(idx)} rows differ, first at row {i}: {x[c][i]!r} != {y[c][i]!r}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", type=Path, help="the other checkout (e.g. a worktree of main)")
    ap.add_argument("--new", type=Path, default=HERE, help="this checkout (default: the one holding this script)")
    ap.add_argument("--data", type=Path, default=HERE.parent / "shared" / "coig-cqia")
    ap.add_argument("--times", type=int, default=10, help="also the real copy repeated this many times (0: no)")
    ap.add_argument("--only", choices=("crafted", "real", "scaled"), action="append")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    ap.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.source, args.cache_dir, not args.no_cache, args.out)
        return 0
    if args.ref is None:
        ap.error("--ref is required")

    tmp = Path(tempfile.mkdtemp(prefix="cqia-identity-"))
    failed = 0
    try:
        sources: list[tuple[str, Path]] = []
        only = set(args.only or ("crafted", "real", "scaled"))
        if "crafted" in only:
            sources.append(("crafted", crafted(tmp / "crafted")))
        if (args.data / "README.md").is_file():
            if "real" in only:
                sources.append(("real", args.data))
            if "scaled" in only and args.times > 1:
                sources.append((f"real x{args.times}", scaled(args.data, tmp / "scaled", args.times)))
        else:
            print(f"no real copy at {args.data}: crafted inputs only")
        for label, src in sources:
            runs = {}
            for side, tree in (("ref", args.ref), ("new", args.new)):
                cache = tmp / f"cache-{side}-{label.replace(' ', '')}"
                for mode, use in (("cold", True), ("warm", True), ("nocache", False)):
                    out = tmp / f"out-{side}-{mode}-{label.replace(' ', '')}"
                    runs[side, mode] = (out, run_load(tree, src, cache, use, out))
                    if mode == "warm" and not runs[side, mode][1]["from_cache"]:
                        print(f"[{label}] {side}: the second load was not served from the cache")
                        failed += 1
                shutil.rmtree(cache, ignore_errors=True)
            base_out, base_meta = runs["ref", "cold"]
            print(f"[{label}] ref: {base_meta['summary']}")
            for key, (out, meta) in runs.items():
                if key == ("ref", "cold"):
                    continue
                diff = differences(base_out, out, base_meta, meta)
                what = f"{key[0]} {key[1]}"
                if diff:
                    failed += 1
                    print(f"[{label}] {what}: DIFFERENT from ref cold")
                    for d in diff:
                        print("    " + d)
                else:
                    print(f"[{label}] {what}: identical")
            for (_, _), (out, _) in runs.items():
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("IDENTICAL" if not failed else f"{failed} DIFFERENCE(S)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
