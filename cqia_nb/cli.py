"""``cqia-nb``: the pipeline's stages from the shell (the notebooks call the same functions)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from cqia_nb import build as subsets
from cqia_nb import runner as nbs
from cqia_nb.build import exports
from cqia_nb.core.atomic import OutputError, check_writable
from cqia_nb.core.distributed import current_shard
from cqia_nb.core.overrides import AssignmentError, ConfigError, add_config_options, cli_overrides, parse_assignments
from cqia_nb.data.load import LoadConfig, config_counts, format_notes, format_problems, load
from cqia_nb.eval import mc as ev
from cqia_nb.eval import sweep as sweeps
from cqia_nb.eval.belle import cli as open_eval
from cqia_nb.filter.framework import FilterRun, run_pipeline
from cqia_nb.filter.outputs import write_outputs
from cqia_nb.filter.ray_engine import run_ray
from cqia_nb.filter.streaming import STREAM_ABOVE_BYTES, Source, parquet_files, run_streaming
from cqia_nb.train import cli as train_mod


def _load(path: str):

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the CLI prints every problem itself
        return load(LoadConfig(source=path))


def cmd_validate(args: argparse.Namespace) -> int:

    res = _load(args.path)
    if res.problems.height:
        print(format_problems(res.problems))
    if res.notes.height:  # missing or null optional fields, loaded as empty values
        print(format_notes(res.notes))
    norm = f", {res.n_normalized} normalised (missing or null optional fields loaded as empty)" if res.n_normalized else ""
    print(f"{res.n_loaded} records loaded, {res.problems.height} problems{norm}")
    return 0 if res.problems.height == 0 else 1


def cmd_stats(args: argparse.Namespace) -> int:
    import polars as pl

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

    try:
        parsed = parse_assignments(items)
    except AssignmentError as e:
        raise SystemExit(f"cqia-nb notebooks: -p expects NAME=VALUE, got {e.item!r} ({e.reason})") from None
    out: dict[str, object] = {}
    for k, value in parsed.items():
        # Paths are given relative to the shell; notebooks run inside notebooks/.
        if isinstance(value, str) and value not in ("auto", "bundled", "hub", "tiny") and Path(value).exists():
            value = str(Path(value).resolve())
        out[k] = value
    return out


def cmd_notebooks(args: argparse.Namespace) -> int:

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
    """The records of INPUT: 'bundled', a COIG-CQIA folder/file, a parquet file or folder of
    parquet shards, or a previous run's folder (its kept.parquet), as a streaming Source (parquet
    read by row groups; the rest through the loader) and the LoadResult when the loader read it."""
    p = Path(source)
    files = parquet_files(p) if source != "bundled" else None
    if files is not None:
        return Source(files=files, label=source), None
    if source != "bundled" and not p.exists():
        raise FileNotFoundError(f"{source}: no such file or folder; INPUT is a COIG-CQIA folder or .jsonl file, "
                                "'bundled', parquet shards, or a kept.parquet from a previous `cqia-nb filter` run")
    res = _load(source)
    if res.n_loaded == 0:
        raise ValueError(f"{source}: no records could be loaded ({res.problems.height} problems; "
                         f"run `cqia-nb validate {source}`)")
    return Source(frame=res.frame, label=source), res


def _positional_paths(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, str | None]:
    """The older positional INPUT / OUT_DIR, as the config keys they stand for."""
    given = [getattr(args, n) for n in names]
    if any(v is not None for v in given) and any(v is None for v in given):
        raise ConfigError(f"give {' and '.join(n.upper() for n in names)} both, or neither and "
                          + " ".join(f"--set {n}=…" for n in names))
    return dict(zip(names, given))


def cmd_filter(args: argparse.Namespace) -> int:
    import polars as pl

    flags = {**_positional_paths(args, ("input", "out_dir")), "streaming": args.streaming, "engine": args.engine,
             "address": args.address}
    run = FilterRun.from_yaml(args.config, cli_overrides(flags, args.overrides))
    config = run.pipeline
    config.build()  # a bad recipe fails here, before the input is read
    if run.out_dir is None:
        raise ConfigError("no out_dir: add --set out_dir=DIR (or give INPUT OUT_DIR)")
    check_writable(run.out_dir)  # before the run; the outputs are written, then renamed into place
    source, res = _filter_input(run.input)
    if res is not None and res.problems.height:
        print(f"note: {res.problems.height} problems in the input, {res.n_rejected} records not loaded "
              f"(run `cqia-nb validate {run.input}`)")
    streaming = run.streaming if run.streaming is not None else source.nbytes > STREAM_ABOVE_BYTES
    if run.engine == "ray":
        result = ray_run = run_ray(source, config, address=run.address, out_dir=run.out_dir)
        paths = ray_run.paths
        print(f"ray: {ray_run.nodes} node(s), {ray_run.seconds:.1f} s ({ray_run.timings.get('connect', 0):.1f} s to "
              f"{'connect' if run.address else 'start a local instance'})")
        for step in ray_run.in_driver_steps:
            print(f"ray: {step} has no stream protocol: the records reaching it were collected on the driver")
    elif streaming:
        result = run_streaming(source, config, run.out_dir, spill_dir=run.spill_dir, progress=sys.stderr.isatty())
        paths = result.paths
        for step, b in result.index_bytes.items():
            print(f"streaming: {step} kept {b:.0f} bytes a record for its decision (spilled to disk)")
        if result.resumed:
            print(f"streaming: resumed after the {result.resumed} stage(s) an earlier run of this recipe had finished")
        for step in result.in_memory_steps:
            print(f"streaming: {step} has no stream protocol: the records reaching it were read into memory")
    else:
        result = run_pipeline(source.read_all(), config)
        paths = write_outputs(result, run.out_dir)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="MARKDOWN", tbl_width_chars=200):
        print(result.steps.drop("seconds").with_columns(pl.all().cast(pl.String)))
    print(f"outputs: {', '.join(sorted(p.name for p in paths.values()))} in {run.out_dir}")
    print(result.summary())
    return 0


def cmd_build(args: argparse.Namespace) -> int:

    flags = {"seed": args.seed, "input": args.input, "out_dir": args.out_dir, "streaming": args.streaming}
    # a bad spec fails here, before the input is read
    spec = subsets.BuildSpec.from_yaml(args.config, cli_overrides(flags, args.overrides, error=subsets.SpecError))
    if spec.out_dir is None:
        raise ConfigError("no out_dir: add --set out_dir=DIR (or give OUT_DIR)")
    out = Path(spec.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: OUT_DIR exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not args.force:
            raise ValueError(f"{out}: OUT_DIR is not empty; choose a new folder or pass --force to replace "
                             "a previous build there")
        if not (out / exports.MANIFEST).is_file():
            raise ValueError(f"{out}: --force replaces only a previous build (with {exports.MANIFEST}); "
                             "this folder holds something else")
    check_writable(out.parent)  # before the build; export_all replaces a previous build only once complete
    source = spec.input or "bundled"
    streaming = spec.streaming
    if streaming is None and subsets.input_bytes(source) > STREAM_ABOVE_BYTES:
        streaming = True
        print(f"note: streaming (the input's parquet files exceed {STREAM_ABOVE_BYTES / 2**30:g} GiB; "
              "--no-streaming to hold them in memory)", file=sys.stderr)
    if streaming:
        build = subsets.run_build_streaming(spec, spill_dir=spec.spill_dir or out.parent,
                                            **({"batch_rows": spec.batch_rows} if spec.batch_rows else {}))
    else:
        build = subsets.run_build(spec)
    if build.contamination is None and build.contamination_note:
        print(f"note: contamination check {build.contamination_note}", file=sys.stderr)
    try:
        hashes = exports.export_all(build, out)
    finally:
        if streaming:
            build.close()  # type: ignore[attr-defined]
    for rel, digest in hashes.items():
        print(f"{digest}  {(out / rel).as_posix()}")
    return 0


#: the older per-setting flags of `eval mc`, each the config key it stands for
MC_FLAG_KEYS = ("model", "benchmark", "data", "shots", "dev", "answers", "out", "subjects", "limit", "batch_size",
                "mode", "prompt_style", "chat", "max_new_tokens", "max_length", "mapping", "device", "seed",
                "bootstrap")


def cmd_eval_mc(args: argparse.Namespace) -> int:

    flags = {k: getattr(args, k) for k in MC_FLAG_KEYS}
    config = ev.MCRunConfig.from_yaml(args.config, cli_overrides(flags, args.overrides),
                                      defaults={"progress": sys.stderr.isatty()})
    shard = current_shard(config.device)
    result = ev.run_mc(config, shard=shard)
    if shard.is_main:  # several processes: one report
        print(result.report())  # its last line: overall accuracy X.XXXX on N questions
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import polars as pl

    config = sweeps.SweepConfig.from_yaml(args.config, args.overrides)  # a bad recipe fails before any work
    out = Path(args.out or f"build/sweep/{config.name}")
    res = sweeps.run_sweep(config, out, source=args.input, filter_dir=args.filter_dir, data_source=args.data_source,
                           progress=args.progress, stop_after=args.stop_after, store=not args.no_store)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="MARKDOWN", tbl_width_chars=250, float_precision=3):
        if res.runs:
            print("## runs")
            print(res.run_table())
        if res.pending:
            print(f"{len(res.pending)} runs pending (--stop-after); run the same command again to continue")
            return 0
        print("## ranking by the mean held-out loss over all subsets (t interval over seeds)")
        print(res.ranking("heldout:mean"))
        print("## seed-to-seed spread vs between-subset spread")
        print(res.noise())
    store = res.store or "the default results store"
    print(f"{len(res.trained)} runs trained, {len(res.skipped)} finished before; results in {out} and {store}")
    return 0


def _add_eval_parsers(sub) -> argparse._SubParsersAction:
    """``cqia-nb eval KIND``; returns the group so that further kinds can be added to it."""
    p = sub.add_parser("eval", help="evaluate a model: `eval mc` multiple-choice benchmarks, `eval belle` open questions")
    kinds = p.add_subparsers(dest="eval_kind", required=True, metavar="KIND")

    mc = kinds.add_parser("mc", help="C-Eval / CMMLU / SafetyBench multiple choice; prints accuracy per subject "
                                     "and category, last line `overall accuracy X.XXXX on N questions`",
                          description="cqia-nb eval mc [--config RECIPE] [--set KEY=VALUE ...]: keys are "
                                      "MCRunConfig's and MCConfig's (model, benchmark, data, shots, subjects, limit, "
                                      "out, device, ...; see recipes/eval-ceval.yaml); each older flag below sets "
                                      "the key of its name.")
    add_config_options(mc, required=False,
                       config_help="an eval recipe, e.g. recipes/eval-ceval.yaml, eval-cmmlu.yaml, eval-safetybench.yaml")
    mc.add_argument("--model", metavar="PATH",
                    help="= --set model=PATH: a local model folder (safetensors; no remote code), a hub name in the "
                         "local cache, or 'tiny' (the cpu-tiny model)")
    mc.add_argument("--benchmark", choices=["ceval", "cmmlu", "safetybench"], help="= --set benchmark=NAME")
    mc.add_argument("--data", metavar="DIR",
                    help="= --set data=DIR: folder of per-subject CSVs (e.g. ../shared/benchmarks/ceval/val), or "
                         "SafetyBench's JSON file")
    mc.add_argument("--shots", type=int, metavar="K", help="k-shot examples from the dev split (default 0)")
    mc.add_argument("--dev", metavar="DIR", help="few-shot pool (default: a dev/ folder beside --data; "
                                                 "SafetyBench: dev_zh.json beside the file)")
    mc.add_argument("--answers", metavar="FILE", help="SafetyBench answer key for a test file (test_answers_zh*.json)")
    mc.add_argument("--out", metavar="FILE", help="write one JSON line per question (prediction, option scores)")
    mc.add_argument("--subjects", metavar="A,B", help="only these subjects (SafetyBench: categories), comma-separated")
    mc.add_argument("--limit", type=int, metavar="N", help="only the first N questions of each subject")
    mc.add_argument("--batch-size", type=int, metavar="B", help="default 16")
    mc.add_argument("--mode", choices=["loglikelihood", "generate"],
                    help="score the option letters (default) or generate and extract a letter (chat models)")
    mc.add_argument("--prompt-style", choices=["harness", "upstream"],
                    help="lm-evaluation-harness's prompts (default) or the benchmark authors' scripts'")
    mc.add_argument("--chat", action="store_true", default=None,
                    help="wrap each prompt in the tokenizer's chat template")
    mc.add_argument("--max-new-tokens", type=int, metavar="N", help="generate mode: reply length (default 32)")
    mc.add_argument("--max-length", type=int, metavar="N", help="context length (default: the model's)")
    mc.add_argument("--mapping", metavar="FILE", help="subject_mapping.json / categories.py when not beside --data")
    mc.add_argument("--device", help="cpu, cuda, ... (default cpu)")
    mc.add_argument("--seed", type=int, help="bootstrap seed (default 0)")
    mc.add_argument("--bootstrap", type=int, metavar="N", help="bootstrap replicates (default 1000)")
    mc.set_defaults(func=cmd_eval_mc)

    belle = kinds.add_parser("belle", help="BELLE-EVAL open questions: generate answers (cached), score them with "
                                           "an LLM judge (or --overlap offline), append to the results store")
    open_eval.configure_parser(belle).set_defaults(func=open_eval.run_cli)
    return kinds


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

    p = sub.add_parser("filter", help="run a filter recipe; writes kept/dropped (.parquet, .jsonl) and steps.csv",
                       description="cqia-nb filter --config RECIPE [--set KEY=VALUE ...]: keys are the recipe's "
                                   "(name, steps) plus input ('bundled', a COIG-CQIA folder or .jsonl file, or a "
                                   "kept.parquet from a previous run; default bundled) and out_dir (created).")
    add_config_options(p, config_help="a YAML recipe, e.g. recipes/filter-default.yaml")
    p.add_argument("input", metavar="INPUT", nargs="?", help="older form of --set input=INPUT")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", help="older form of --set out_dir=OUT_DIR")
    p.add_argument("--streaming", dest="streaming", action="store_const", const=True, default=None,
                   help="one batch in memory at a time, spilling to disk (same outputs); default: when the "
                        "input's parquet files exceed 2 GiB (--set streaming=true/false, spill_dir=DIR)")
    p.add_argument("--no-streaming", dest="streaming", action="store_const", const=False,
                   help="hold every record in memory, whatever the input's size")
    p.add_argument("--engine", choices=["local", "ray"], default=None,
                   help="= --set engine=NAME: 'local' (default) runs here; 'ray' runs the recipe on Ray Data "
                        "(same outputs; pip install 'cqia-notebooks[ray]')")
    p.add_argument("--address", metavar="ADDR", default=None,
                   help="= --set address=ADDR: the Ray cluster for --engine ray, 'auto' (the one `ray start` "
                        "started here) or HOST:PORT; default: start a local Ray instance on every core")
    p.set_defaults(func=cmd_filter)

    p = sub.add_parser("build", help="build subsets and mixtures from a spec; writes every export format and "
                                     "prints `SHA256  path` per file",
                       description="cqia-nb build --config SPEC [--set KEY=VALUE ...] [--force]: keys are the "
                                   "spec's (seed, input, subsets, mixtures, split, format, ...) plus out_dir "
                                   "(created; must be new or empty).")
    add_config_options(p, config_help="a YAML build spec, e.g. recipes/subsets-paper.yaml (--spec: the older name)",
                       aliases=("--spec",))
    p.add_argument("--seed", type=int, metavar="S", help="older form of --set seed=S")
    p.add_argument("--input", metavar="INPUT", help="older form of --set input=INPUT")
    p.add_argument("--force", action="store_true", help="replace a previous build in out_dir")
    p.add_argument("--streaming", dest="streaming", action="store_const", const=True, default=None,
                   help="one batch of records in memory at a time, the formatted records spilled to disk beside "
                        "OUT_DIR (same output files); default: when the input's parquet files exceed 2 GiB "
                        "(--set streaming=true/false, spill_dir=DIR, batch_rows=N)")
    p.add_argument("--no-streaming", dest="streaming", action="store_const", const=False,
                   help="hold every record in memory, whatever the input's size")
    p.add_argument("out_dir", metavar="OUT_DIR", nargs="?", help="older form of --set out_dir=OUT_DIR")
    p.set_defaults(func=cmd_build)

    _add_eval_parsers(sub)  # `eval mc`; further `eval` kinds are added in _add_eval_parsers

    p = sub.add_parser("sweep", help="tune one model per subset and seed on an equal token budget, evaluate each on "
                                     "every subset's held-out split and the benchmarks (resumable)")
    add_config_options(p, config_help="a sweep recipe, e.g. recipes/sweep-cpu-tiny.yaml, or its name (cpu-tiny, cpu, "
                                      "gpu); --set profile=yi-6b-qlora runs it with a GPU recipe")
    p.add_argument("--out", metavar="DIR", help="the sweep's folder (default build/sweep/<name>); a rerun continues it")
    p.add_argument("--input", default="auto", metavar="INPUT",
                   help="'auto' (a `cqia-nb filter` output in --filter-dir, else filter --data-source here) or 'bundled'")
    p.add_argument("--filter-dir", default="build/02_filter", metavar="DIR", help="notebook 02's output folder")
    p.add_argument("--data-source", default="auto", metavar="SRC", help="the records to filter when there is no filter output")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N newly trained runs (continue later)")
    p.add_argument("--no-store", action="store_true", help="do not append to the results store")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("train", help="fine-tune (full / LoRA / QLoRA) from a recipe; same as python -m cqia_nb.train")
    train_mod.add_cli_arguments(p)
    p.set_defaults(func=train_mod.run_cli)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, OutputError) as e:  # OutputError: "cannot write PATH: why; what to do"
        print(f"cqia-nb {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
