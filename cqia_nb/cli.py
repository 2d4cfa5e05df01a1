"""``cqia-nb``: the pipeline's stages from the shell (the notebooks call the same functions)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence


def _load(path: str):
    from cqia_nb.data import LoadConfig, load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CLI prints every problem itself
        return load(LoadConfig(source=path))


def cmd_validate(args: argparse.Namespace) -> int:
    from cqia_nb.data import format_problems

    res = _load(args.path)
    if res.problems.height:
        print(format_problems(res.problems))
    print(f"{res.n_loaded} records loaded, {res.problems.height} problems")
    return 0 if res.problems.height == 0 else 1


def cmd_stats(args: argparse.Namespace) -> int:
    import polars as pl

    from cqia_nb.data import config_counts

    res = _load(args.path)
    table = config_counts(res.frame, res.files)
    total = pl.DataFrame({"config": ["(total)"], "files": [table["files"].sum()], "records": [res.n_loaded]})
    table = pl.concat([table, total], how="diagonal_relaxed")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="MARKDOWN", tbl_width_chars=200):
        print(table.with_columns(pl.all().cast(pl.String).fill_null("")))
    if res.problems.height:
        print(f"{res.problems.height} problems (run `cqia-nb validate {args.path}` to list them)")
    return 0


def _parse_params(items: list[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"cqia-nb notebooks: -p expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        value = yaml.safe_load(v)
        # Paths are given relative to the shell; notebooks run inside notebooks/.
        if isinstance(value, str) and value not in ("auto", "bundled", "hub", "tiny") and Path(value).exists():
            value = str(Path(value).resolve())
        out[k] = value
    return out


def cmd_notebooks(args: argparse.Namespace) -> int:
    from cqia_nb import notebooks as nbs

    params = _parse_params(args.param or [])
    if args.refresh_checked:
        # The committed form is the default run: bundled data, tiny profile, no overrides.
        if params:
            raise SystemExit("cqia-nb notebooks: --refresh-checked runs the default parameters only")
        out = Path("build/refresh")
        reports = nbs.run_all(nbs.RunConfig(out_dir=out, only=tuple(args.only or ())))
        for r in reports:
            if r.error:
                print(f"{r.notebook}: FAILED {r.error}", file=sys.stderr)
                return 1
            nbs.refresh_checked(nbs.notebooks_dir() / r.notebook, r.output)
            print(f"{r.notebook}: checked outputs stored ({r.seconds:.1f} s)")
        return 0
    reports = nbs.run_all(nbs.RunConfig(out_dir=Path(args.out), parameters=params,
                                        figures_dir=Path(args.figures) if args.figures else None,
                                        only=tuple(args.only or ())))
    for r in reports:
        status = f"{r.seconds:7.1f} s" if not r.error else "FAILED"
        print(f"{r.notebook:40} {status}  -> {r.output}")
        if r.error:
            print(r.error, file=sys.stderr)
            return 1
    total = sum(r.seconds for r in reports)
    print(f"{len(reports)} notebooks in {total:.1f} s, peak kernel RSS {nbs.peak_child_rss_mib():.0f} MiB; "
          f"figures in {Path(args.figures or nbs.notebooks_dir().parent / 'figures')}")
    return 0


def _filter_input(source: str):
    """A frame from INPUT: 'bundled', a COIG-CQIA folder/file, or a previous run's kept.parquet
    (or its folder)."""
    from cqia_nb.filters import read_kept

    p = Path(source)
    if source != "bundled" and (p.suffix == ".parquet" or (p.is_dir() and (p / "kept.parquet").is_file())):
        return read_kept(p), None
    if source != "bundled" and not p.exists():
        raise FileNotFoundError(f"{source}: no such file or folder; INPUT is a COIG-CQIA folder or .jsonl file, "
                                "'bundled', or a kept.parquet from a previous `cqia-nb filter` run")
    res = _load(source)
    if res.n_loaded == 0:
        raise ValueError(f"{source}: no records could be loaded ({res.problems.height} problems; "
                         f"run `cqia-nb validate {source}`)")
    return res.frame, res


def cmd_filter(args: argparse.Namespace) -> int:
    import polars as pl

    from cqia_nb.filters import PipelineConfig, run_pipeline, write_outputs

    config = PipelineConfig.from_yaml(args.config)
    config.build()  # a bad recipe fails here, before the input is read
    frame, res = _filter_input(args.input)
    if res is not None and res.problems.height:
        print(f"note: {res.problems.height} problems in the input, {res.n_rejected} records not loaded "
              f"(run `cqia-nb validate {args.input}`)")
    result = run_pipeline(frame, config)
    paths = write_outputs(result, args.out_dir)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="MARKDOWN", tbl_width_chars=200):
        print(result.steps.drop("seconds").with_columns(pl.all().cast(pl.String)))
    print(f"outputs: {', '.join(sorted(p.name for p in paths.values()))} in {args.out_dir}")
    print(result.summary())
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from cqia_nb import exports, subsets

    spec = subsets.BuildSpec.from_yaml(args.spec)  # a bad spec fails here, before the input is read
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: OUT_DIR exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not args.force:
            raise ValueError(f"{out}: OUT_DIR is not empty; choose a new folder or pass --force to replace "
                             "a previous build there")
        if not (out / exports.MANIFEST).is_file():
            raise ValueError(f"{out}: --force replaces only a previous build (with {exports.MANIFEST}); "
                             "this folder holds something else")
        import shutil

        shutil.rmtree(out)
    build = subsets.run_build(spec, seed=args.seed, input=args.input)
    if build.contamination is None and build.contamination_note:
        print(f"note: contamination check {build.contamination_note}", file=sys.stderr)
    hashes = exports.export_all(build, out)
    for rel, digest in hashes.items():
        print(f"{digest}  {(out / rel).as_posix()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cqia-nb", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a COIG-CQIA file or folder; one line per problem")
    p.add_argument("path", help="a .jsonl file or a folder in the Hugging Face layout ('bundled' for ours)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("stats", help="per-config counts table")
    p.add_argument("path", help="a .jsonl file, a folder in the HF layout, or 'bundled'")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("notebooks", help="execute the numbered notebooks top to bottom")
    p.add_argument("--out", default="build/executed", help="folder for the executed copies")
    p.add_argument("--figures", help="folder for figures (default: figures/)")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="override a parameters-cell value, e.g. -p DATA_SOURCE=../shared/coig-cqia")
    p.add_argument("--only", action="append", metavar="PREFIX", help="run only notebooks starting so (e.g. 01)")
    p.add_argument("--refresh-checked", action="store_true",
                   help="re-run on the defaults and store outputs of NBVAL_CHECK_OUTPUT cells only")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("filter", help="run a filter recipe; writes kept/dropped (.parquet, .jsonl) and steps.csv")
    p.add_argument("--config", required=True, metavar="RECIPE", help="a YAML recipe, e.g. recipes/filter-default.yaml")
    p.add_argument("input", metavar="INPUT",
                   help="a COIG-CQIA folder or .jsonl file, 'bundled', or a kept.parquet from a previous run")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder for the outputs (created)")
    p.set_defaults(func=cmd_filter)

    p = sub.add_parser("build", help="build subsets and mixtures from a spec; writes every export format and "
                                     "prints `SHA256  path` per file")
    p.add_argument("--spec", required=True, metavar="SPEC", help="a YAML build spec, e.g. recipes/subsets-paper.yaml")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default: the spec's `seed:`)")
    p.add_argument("--input", metavar="INPUT", help="'bundled', a COIG-CQIA folder, or a `cqia-nb filter` output "
                                                    "folder with kept.parquet (default: the spec's `input:`)")
    p.add_argument("--force", action="store_true", help="replace a previous build in OUT_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder for the outputs (created; must be new or empty)")
    p.set_defaults(func=cmd_build)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"cqia-nb {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
