"""Latency of the dataset browser as a person sees it: JupyterLab in headless Chromium, full real data (not a test).

A notebook in a temporary folder loads the real COIG-CQIA copy (17,971 records) and shows
``widgets.browse(frame)``. For each interaction the clock runs inside the page, from just before
the DOM event a user's action fires (the config list's ``change``, the search box's ``change`` on
Enter, the Next button's click) until the page table's HTML has changed and the next frame has
been drawn: the browser → kernel → browser round trip plus rendering. Each change really changes
the rows (values are cycled); the kernel is idle again before the next repetition; the first two
of each are warm-ups and not counted. Target: p95 <= 200 ms.

For scale, the same run times the floor of any ipywidgets round trip (an IntText whose change
sets a Label in the kernel) and the kernel-side work alone (the same calls on a DatasetBrowser
in this process, as benchmarks/bench_widget.py does).

    .venv/bin/python benchmarks/bench_browser.py [--root ../shared/coig-cqia] [--reps 20] [--json out.json]

Needs what the browser test tier needs: playwright and Debian's chromium (``make test``
installs it where apt-get works).

``--lazy-parquet`` measures something else, without a browser: a parquet file larger than one
wants in memory (the bundled records repeated to ``--gb`` GB, generated under /tmp and deleted
afterwards), opened with ``browse(path)`` (lazy: footers, label values, the first page's row group)
against ``browse(pl.read_parquet(path))`` (eager): open + first page, a search's first page, the
exact match count, the last page and each process's peak RSS; and one middle page read with
pyarrow's ``read_row_group`` against polars' ``scan_parquet().slice()``.

    .venv/bin/python benchmarks/bench_browser.py --lazy-parquet [--gb 1.5] [--rows-per-group 10000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "browser"))

try:
    import lab  # noqa: E402  (tests/browser/lab.py: the tier's JupyterLab + Chromium driver)
except ImportError:  # --lazy-parquet needs no browser
    lab = None

TARGET_MS = 200.0
WARMUP = 2
SEARCH_PLACEHOLDER = "text (Enter to apply)"
BROWSER_ROOT = f'.widget-vbox:has(> .widget-hbox input[placeholder="{SEARCH_PLACEHOLDER}"])'
TEXTS = ["中国", "如何", "医生", "电影", "python", "学习", "公司", "孩子"]

# One measured interaction, run in the page. The observer is attached before the event fires;
# done = the page table changed, then one animation frame and a task later (the frame is drawn).
_JS_MEASURE = """async ([cellIndex, rootSel, kind, arg]) => {
  const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[cellIndex];
  const root = cell.querySelector(rootSel);
  let target, act;
  if (kind === 'echo') {
    const box = cell.querySelector('.widget-vbox');
    target = box.querySelector(':scope > .widget-label');  // the Label, not IntText's description
    const input = box.querySelector('input');
    act = () => { input.value = String(arg); input.dispatchEvent(new Event('change', {bubbles: true})); };
  } else {
    target = root.querySelector(':scope > .widget-html .widget-html-content');
    if (kind === 'config') {
      const sel = [...root.querySelectorAll('.widget-select-multiple')]
        .find(d => d.querySelector('label').textContent === 'config').querySelector('select');
      act = () => { for (const o of sel.options) o.selected = (o.value === arg);
                    sel.dispatchEvent(new Event('change', {bubbles: true})); };
    } else if (kind === 'search') {
      const input = root.querySelector('input[type=text]');
      act = () => { input.value = arg; input.dispatchEvent(new Event('change', {bubbles: true})); };
    } else if (kind === 'next') {
      const next = [...root.querySelectorAll('button')].find(b => b.textContent.includes('Next'));
      act = () => next.click();
    } else {
      throw new Error('unknown interaction ' + kind);
    }
  }
  const before = target.innerHTML;
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { obs.disconnect(); reject(new Error(kind + ': no update within 30 s')); }, 30000);
    const obs = new MutationObserver(() => {
      if (target.innerHTML === before) return;
      obs.disconnect();
      clearTimeout(timer);
      requestAnimationFrame(() => setTimeout(() => resolve(performance.now() - t0), 0));
    });
    obs.observe(target, {childList: true, subtree: true, characterData: true});
    const t0 = performance.now();
    act();
  });
}"""


_JS_CONFIGS = """rootSel => {
  const root = document.querySelectorAll('.jp-Notebook .jp-Cell')[1].querySelector(rootSel);
  const box = [...root.querySelectorAll('.widget-select-multiple')]
    .find(d => d.querySelector('label').textContent === 'config');
  return [...box.querySelector('select').options].map(o => o.value);
}"""


def _chromium_version() -> str:
    import subprocess

    r = subprocess.run([str(lab.chromium_path()), "--version"], capture_output=True, text=True)
    return r.stdout.strip().split(" built on")[0] or "Chromium (version unknown)"


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]  # nearest rank


def _notebook(root: Path, data_root: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "import warnings\n\nfrom cqia_nb import data\nfrom cqia_nb.ui import browser as widgets\n\n"
        "with warnings.catch_warnings():\n    warnings.simplefilter('ignore')  # the copy's known LFS pointers\n"
        f"    frame = data.load(source={str(data_root)!r}).frame\nframe.height",
        "b = widgets.browse(frame, page_size=10)\nb",
        "import ipywidgets as w\n\nsrc, dst = w.IntText(description='echo'), w.Label()\n"
        "src.observe(lambda ch: setattr(dst, 'value', str(ch['new'])), names='value')\nw.VBox([src, dst])",
    )]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = root / "bench_browser.ipynb"
    nbformat.write(nb, str(path))
    return path


def _kernel_side_ms(data_root: Path, configs: list[str], reps: int) -> dict[str, float]:
    """Median ms of the same calls on a DatasetBrowser in this process (no browser, no comm)."""
    import cqia_nb.data as data
    import cqia_nb.ui.browser as widgets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = data.load(source=str(data_root)).frame
    b = widgets.DatasetBrowser(frame, page_size=10)

    def timed(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1000.0

    out = {}
    out["config filter change"] = statistics.median(
        timed(lambda k=k: b.set_query(configs=(configs[k % len(configs)],))) for k in range(reps))
    b.set_query(configs=())
    out["search + Enter"] = statistics.median(
        timed(lambda k=k: b.set_query(text=TEXTS[k % len(TEXTS)])) for k in range(reps))
    b.set_query(text="")
    out["next page"] = statistics.median(timed(b.next_page) for _ in range(reps))
    return out


# ----------------------------------------------------------------------------- lazy parquet (--lazy-parquet)

LAZY_SEARCH = "中国"


def _make_big_parquet(path: Path, target_gb: float, rows_per_group: int) -> dict[str, Any]:
    """The bundled records repeated (record ids made distinct) into one parquet file of about ``target_gb``.

    No dictionary encoding (repeated text would otherwise shrink to nothing; real text does not repeat),
    snappy pages, ``rows_per_group`` rows per row group. Written a row group at a time.
    """
    import polars as pl
    import pyarrow.parquet as pq

    from cqia_nb.data.load import LoadConfig, load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = load(LoadConfig(source="bundled")).frame
    per_copy_bytes = base.estimated_size()
    copies = max(1, int(target_gb * 1e9 / per_copy_bytes))
    per_group = max(1, rows_per_group // base.height)
    writer = None
    k = 0
    while k < copies:
        n = min(per_group, copies - k)
        part = pl.concat([base.with_columns(pl.col("record_id") + f"#{k + j}") for j in range(n)])
        table = part.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="snappy", use_dictionary=False)
        writer.write_table(table, row_group_size=len(table))
        k += n
    assert writer is not None
    writer.close()
    md = pq.read_metadata(path)
    return {"rows": md.num_rows, "row_groups": md.num_row_groups, "copies": copies,
            "file_gb": path.stat().st_size / 1e9, "in_memory_gb": copies * per_copy_bytes / 1e9}


def _lazy_child(mode: str, path: Path) -> dict[str, Any]:
    """One measurement, in its own process so that its peak RSS is its own."""
    import polars as pl

    from cqia_nb.ui.browser import browse
    from cqia_nb.ui.lazy import ParquetSource

    out: dict[str, Any] = {"mode": mode}
    t0 = time.perf_counter()
    if mode in ("lazy", "eager"):
        if mode == "eager":
            b = browse(pl.read_parquet(path), page_size=10)
        else:
            b = browse(path, page_size=10)
        out["open_first_page_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        b.set_query(text=LAZY_SEARCH)
        out["search_first_page_s"] = time.perf_counter() - t1
        out["search_status"] = b.status_text
        t2 = time.perf_counter()
        out["matches"] = b.count_all()
        out["count_all_s"] = time.perf_counter() - t2
        b.set_query(text="")
        t3 = time.perf_counter()
        b.set_query(page=b.query.page + 10**9)  # the last page
        out["last_page_s"] = time.perf_counter() - t3
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the reopen
        t4 = time.perf_counter()  # again, imports done (pyarrow.parquet imports pandas: ~1 s the first time)
        browse(path if mode == "lazy" else pl.read_parquet(path), page_size=10)
        out["reopen_s"] = time.perf_counter() - t4
    else:  # one page of 10 rows in the middle, read two ways
        n = ParquetSource([path]).height
        mid = n // 2
        t0 = time.perf_counter()
        if mode == "page-pyarrow":
            page = ParquetSource([path]).rows(mid, 10)
        else:
            page = pl.scan_parquet(path).slice(mid, 10).collect()
        out["middle_page_s"] = time.perf_counter() - t0
        out["rows"] = page.height
    out.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def lazy_parquet_main(args: argparse.Namespace) -> int:
    import subprocess

    tmp = Path(tempfile.mkdtemp(prefix="cqia-bench-lazy-", dir="/tmp"))
    try:
        path = tmp / "big.parquet"
        t0 = time.perf_counter()
        info = _make_big_parquet(path, args.gb, args.rows_per_group)
        print(f"generated {path}: {info['rows']:,} rows ({info['copies']:,} copies of the bundled records) in "
              f"{info['row_groups']:,} row groups, {info['file_gb']:.2f} GB on disk, "
              f"~{info['in_memory_gb']:.2f} GB in memory, in {time.perf_counter() - t0:.0f} s")
        results = []
        for mode in ("lazy", "eager", "page-pyarrow", "page-polars"):
            r = subprocess.run([sys.executable, __file__, "--_lazy-child", mode, str(path)],
                               capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if r.returncode:
                print(f"{mode} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
                return 1
            results.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    lazy, eager = results[0], results[1]
    print(f"\n{'':<34} {'lazy':>10} {'eager':>10}")
    for key, label in (("open_first_page_s", "open + first page (s)"), ("reopen_s", "the same again (s)"),
                       ("search_first_page_s", f"search {LAZY_SEARCH!r}, first page (s)"),
                       ("count_all_s", "count all matches (s)"), ("last_page_s", "last page (s)"),
                       ("peak_rss_mb", "peak RSS (MB)")):
        print(f"{label:<34} {lazy[key]:>10.2f} {eager[key]:>10.2f}")
    print(f"matches: lazy {lazy['matches']:,}, eager {eager['matches']:,}")
    print(f"middle page of 10 rows: pyarrow read_row_group {results[2]['middle_page_s']:.3f} s, "
          f"{results[2]['peak_rss_mb']:.0f} MB peak; polars scan_parquet().slice() "
          f"{results[3]['middle_page_s']:.3f} s, {results[3]['peak_rss_mb']:.0f} MB peak")
    if args.json:
        args.json.write_text(json.dumps({"file": info, "results": results}, indent=2, ensure_ascii=False),
                             encoding="utf-8")
    return 0 if lazy["matches"] == eager["matches"] else 1


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--_lazy-child":
        print(json.dumps(_lazy_child(sys.argv[2], Path(sys.argv[3])), ensure_ascii=False))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lazy-parquet", action="store_true",
                    help="instead: open + first page + search on a generated parquet, lazy vs eager (no browser)")
    ap.add_argument("--gb", type=float, default=1.5, help="--lazy-parquet: in-memory size of the generated data")
    ap.add_argument("--rows-per-group", type=int, default=10_000, help="--lazy-parquet: rows per row group")
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "coig-cqia")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.lazy_parquet:
        return lazy_parquet_main(args)
    if args.reps < 10:
        ap.error("--reps must be at least 10")
    if not (args.root / "README.md").is_file():
        print(f"{args.root}: not a COIG-CQIA copy; pass --root to a clone of m-a-p/COIG-CQIA", file=sys.stderr)
        return 2
    missing = lab.missing_requirements()
    if missing:
        print("cannot run the browser benchmark: " + "; ".join(missing), file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    data_root = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="cqia-bench-browser-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "root").mkdir()
        nb_path = _notebook(tmp / "root", data_root)
        env = {"CQIA_CACHE_DIR": str(tmp / "cache"), "CQIA_FIGURES_DIR": str(tmp / "figures"),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        os.environ.update(env)  # the in-process kernel-side timing uses the same empty cache
        t0 = time.perf_counter()
        with lab.LabServer(lab.LabConfig(tmp / "root", tmp / "state", env=env)) as server, \
                sync_playwright() as pw:
            context = lab.launch_chromium(pw, tmp / "profile")
            page = context.new_page()
            nb = lab.NotebookPage(page, server)
            nb.open(nb_path.name)
            nb.run_all(timeout_s=600)
            problems = nb.widget_problems()
            if problems:
                raise SystemExit(f"the widgets did not render: {problems}")
            n_records = int(nb.output(0).inner_text().split(":")[-1].strip().replace(",", ""))
            configs = page.evaluate(_JS_CONFIGS, BROWSER_ROOT)
            print(f"{n_records:,} records from {data_root}; JupyterLab up and notebook run in "
                  f"{time.perf_counter() - t0:.1f} s; {len(configs)} configs")

            def measure(cell: int, kind: str, arg: Any) -> float:
                ms = page.evaluate(_JS_MEASURE, [cell, BROWSER_ROOT, kind, arg])
                nb.wait_idle(60)  # the status and record view follow the table: let them finish
                return float(ms)

            root = nb.output(1).locator(BROWSER_ROOT).first

            def untimed(action: Callable[[], None]) -> None:
                action()
                page.wait_for_timeout(200)  # let the kernel pick the change up, then finish
                nb.wait_idle(60)

            # The unfiltered first page is the first config's first rows, so the cycle starts
            # at the second config: every timed change shows other rows.
            cases: list[tuple[str, Callable[[int], float]]] = [
                ("config filter change", lambda k: measure(1, "config", configs[(k + 1) % len(configs)])),
                ("search + Enter", lambda k: measure(1, "search", TEXTS[k % len(TEXTS)])),
                ("next page", lambda k: measure(1, "next", None)),
                ("ipywidgets echo (floor)", lambda k: measure(2, "echo", k + 1)),
            ]
            results = []
            for name, run in cases:
                if name == "search + Enter":  # from all records
                    untimed(lambda: root.locator("select[multiple]").nth(1).select_option([]))
                if name == "next page":  # through all records
                    untimed(lambda: (root.locator(f'input[placeholder="{SEARCH_PLACEHOLDER}"]').fill(""),
                                     root.locator(f'input[placeholder="{SEARCH_PLACEHOLDER}"]').press("Enter")))
                times = [run(k) for k in range(args.reps + WARMUP)][WARMUP:]
                results.append({"interaction": name, "reps": len(times), "median_ms": statistics.median(times),
                                "p95_ms": p95(times), "max_ms": max(times)})
            problems = nb.widget_problems()
            context.close()
        if problems:
            raise SystemExit(f"widgets broke during the run: {problems}")
        kernel = _kernel_side_ms(data_root, configs, args.reps)

    print(f"\n{'interaction':<26} {'reps':>5} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'kernel-side ms':>15}")
    print("-" * 77)
    for r in results:
        k = kernel.get(r["interaction"])
        r["kernel_side_median_ms"] = k
        print(f"{r['interaction']:<26} {r['reps']:>5} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} "
              f"{r['max_ms']:>8.1f} {'' if k is None else f'{k:.1f}':>15}")
    timed = [r for r in results if "floor" not in r["interaction"]]
    worst = max(timed, key=lambda r: r["p95_ms"])
    ok = worst["p95_ms"] <= TARGET_MS
    print(f"\nverdict: {'PASS' if ok else 'FAIL'} — slowest p95 is {worst['interaction']} at "
          f"{worst['p95_ms']:.1f} ms ({'within' if ok else 'over'} the {TARGET_MS:.0f} ms target, "
          f"{n_records:,} records; {_chromium_version()})")
    if args.json:
        args.json.write_text(json.dumps({"records": n_records, "results": results}, indent=2), encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
