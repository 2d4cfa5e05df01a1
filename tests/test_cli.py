"""``cqia-nb``: ``validate`` / ``stats`` output and exit codes; the ``--config FILE --set KEY=VALUE``
convention of ``filter`` and ``build`` (old flags map onto the same keys); ``filter``, ``build`` and
``train`` with an output folder that cannot be written (read-only, under a file, a full disk): one
line, exit 2, nothing half-written. ``train`` and ``eval`` have their other tests in tests/train and
tests/eval."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import jsonl, make_record

from cqia_nb.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cqia_nb.cli", *args], capture_output=True, text=True)


def test_validate_lists_problems_and_exits_1(tmp_path: Path, capsys):
    f = tmp_path / "zhihu" / "a.jsonl"
    f.parent.mkdir()
    f.write_bytes(jsonl([make_record()]) + b"{bad\n" + jsonl([make_record(domain="x")]))
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("zhihu/a.jsonl:2: -: malformed JSON")
    assert out[1].startswith("zhihu/a.jsonl:3: domain: expected a list of strings")
    assert out[-1] == "1 records loaded, 2 problems"


def test_validate_clean_exits_0_and_usage_errors_exit_2(tmp_path: Path):
    f = tmp_path / "x.jsonl"
    f.write_bytes(jsonl([make_record(), make_record()]))
    ok = run("validate", str(f))
    assert ok.returncode == 0 and ok.stdout.splitlines() == ["2 records loaded, 0 problems"]
    missing = run("validate", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    assert run("validate").returncode == 2
    assert run("frobnicate").returncode == 2


def test_validate_normalises_null_input_instead_of_rejecting(tmp_path: Path):
    f = tmp_path / "x.jsonl"
    f.write_bytes(jsonl([make_record(input=None), {"instruction": "问", "output": "答"}]))
    r = run("validate", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == 'x.jsonl: input: null: loaded as "" in 1 record(s) (first at line 1)'
    assert lines[-1] == "2 records loaded, 0 problems, 2 normalised (missing or null optional fields loaded as empty)"


def test_stats_prints_per_config_table(tmp_path: Path, capsys):
    for cfg, n in (("xhs", 2), ("zhihu", 3)):
        (tmp_path / cfg).mkdir()
        (tmp_path / cfg / "a.jsonl").write_bytes(jsonl([make_record()] * n))
    assert main(["stats", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in lines if l.startswith("| ")}
    assert rows["xhs"][:3] == ["1", "0", "2"] and rows["zhihu"][:3] == ["1", "0", "3"]
    assert rows["(total)"][0] == "2" and rows["(total)"][2] == "5"


@pytest.mark.realdata
def test_validate_real_copy(real_data):
    r = run("validate", str(real_data))
    lines = r.stdout.splitlines()
    assert r.returncode == 1
    assert lines[-1] == "17971 records loaded, 4 problems"
    assert all("Git LFS pointer" in l for l in lines[:-1]) and len(lines) == 5


# ----------------------------------------------------------------------------- filter: --config + --set

RECIPE = """\
name: small
steps:
  - filter: length
    label: output_length
    field: output
    min_chars: 1
  - filter: special_chars
    max_ratio: 0.25
  - filter: url
"""


@pytest.fixture
def filter_input(tmp_path: Path) -> Path:
    src = tmp_path / "in" / "x.jsonl"
    src.parent.mkdir()
    src.write_bytes(jsonl([make_record(), make_record(output="详见 http://x.cn"), make_record(output="是的"),
                           make_record(output="😀" * 20 + "好"), make_record(output="短")]))
    return src


def _filter(args: list[str], capsys) -> tuple[int, list[str]]:
    rc = main(["filter", *args])
    cap = capsys.readouterr()
    return rc, [x for x in (cap.out + cap.err).splitlines() if not x.startswith("outputs:")]


def test_filter_set_equals_the_positional_form(tmp_path, filter_input, capsys, monkeypatch):
    monkeypatch.setenv("CQIA_CACHE_DIR", str(tmp_path / "cache"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    old, new = tmp_path / "old", tmp_path / "new"
    rc_old, out_old = _filter(["--config", str(recipe), str(filter_input), str(old)], capsys)
    rc_new, out_new = _filter(["--config", str(recipe), "--set", f"input={filter_input}", "--set", f"out_dir={new}"],
                              capsys)
    assert rc_old == rc_new == 0 and out_old == out_new and out_old[-1] == "5 in, 3 kept, 2 dropped"
    for name in ("kept.jsonl", "dropped.jsonl"):  # (steps.csv holds timings)
        assert (old / name).read_bytes() == (new / name).read_bytes(), name
    # input/out_dir may sit in the recipe itself
    inrecipe = tmp_path / "r2.yaml"
    inrecipe.write_text(RECIPE + f"input: {filter_input}\nout_dir: {tmp_path / 'third'}\n", encoding="utf-8")
    assert _filter(["--config", str(inrecipe)], capsys) == (0, out_old)


def test_filter_set_reaches_a_step_by_name_or_position(tmp_path, filter_input, capsys, monkeypatch):
    monkeypatch.setenv("CQIA_CACHE_DIR", str(tmp_path / "cache"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    edited = tmp_path / "edited.yaml"
    edited.write_text(RECIPE.replace("max_ratio: 0.25", "max_ratio: 0.9").replace("min_chars: 1", "min_chars: 3"),
                      encoding="utf-8")
    base = ["--set", f"input={filter_input}"]
    want = _filter(["--config", str(edited), *base, "--set", f"out_dir={tmp_path / 'a'}"], capsys)
    assert want[0] == 0 and want[1][-1] == "5 in, 2 kept, 3 dropped"  # the stricter length, the laxer ratio
    by_name = _filter(["--config", str(recipe), *base, "--set", "steps.special_chars.max_ratio=0.9",
                       "--set", "steps.output_length.min_chars=3", "--set", f"out_dir={tmp_path / 'b'}"], capsys)
    by_pos = _filter(["--config", str(recipe), *base, "--set", "steps.2.max_ratio=0.9",
                      "--set", "steps.1.min_chars=3", "--set", f"out_dir={tmp_path / 'c'}"], capsys)
    assert by_name == by_pos == want
    assert (tmp_path / "a" / "kept.jsonl").read_bytes() == (tmp_path / "b" / "kept.jsonl").read_bytes()


def test_filter_unknown_step_key_or_parameter_fails_with_a_hint(tmp_path, filter_input, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    out = tmp_path / "out"
    base = ["--config", str(recipe), "--set", f"input={filter_input}", "--set", f"out_dir={out}"]
    rc, lines = _filter([*base, "--set", "steps.special_char.max_ratio=0.3"], capsys)
    assert rc == 2
    assert ("no step 'special_char' in steps (did you mean 'special_chars'?); steps (position name): "
            "1 output_length, 2 special_chars, 3 url") in lines[-1]
    rc, lines = _filter([*base, "--set", "stepz.url.x=1"], capsys)
    assert rc == 2 and "unknown key(s) 'stepz' (did you mean 'steps'?); valid keys: address, engine, input, name, out_dir, spill_dir, steps, streaming" in lines[-1]
    rc, lines = _filter([*base, "--set", "steps.url.max_cont=1"], capsys)
    assert rc == 2 and "step 3 (url): filter 'url' has no parameter(s) ['max_cont'] (did you mean 'max_count'?)" in "".join(lines)
    assert not out.exists()  # nothing written
    rc, lines = _filter(["--config", str(recipe), str(filter_input)], capsys)
    assert rc == 2 and "give INPUT and OUT_DIR both" in lines[-1]
    rc, lines = _filter(["--config", str(recipe)], capsys)
    assert rc == 2 and "no out_dir: add --set out_dir=DIR" in lines[-1]


# ----------------------------------------------------------------------------- build: --config + --set

SPEC = """\
name: cli
seed: 2
builtin: [config.ruozhiba]
mixtures:
  - name: mix
    parts: [{subset: group.law, tokens: 2000}, {subset: config.ruozhiba, tokens: 2000}]
exports: [jsonl, trl, card]
"""


def _build(args: list[str], capsys, out: Path) -> tuple[int, list[str]]:
    rc = main(["build", *args])
    cap = capsys.readouterr()
    return rc, [x.replace(f"  {out.as_posix()}/", "  OUT/") for x in cap.out.splitlines()] or cap.err.splitlines()


def test_build_set_equals_the_old_flags(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    old, new = tmp_path / "old", tmp_path / "new"
    a = _build(["--spec", str(spec), "--seed", "7", "--input", "bundled", str(old)], capsys, old)
    b = _build(["--config", str(spec), "--set", "seed=7", "--set", "input=bundled", "--set", f"out_dir={new}"],
               capsys, new)
    assert a[0] == b[0] == 0 and a[1] == b[1] and len(a[1]) > 4
    assert all(re.fullmatch(r"[0-9a-f]{64}  OUT/.+", x) for x in a[1])
    c = _build(["--config", str(spec), "--set", f"out_dir={tmp_path / 'c'}"], capsys, tmp_path / "c")
    assert c[0] == 0 and c[1] != a[1]  # seed 2, from the spec: other samples
    card = (new / "README.md").read_text(encoding="utf-8")
    assert f"cqia-nb build --config {spec.as_posix()} --set seed=7 --set input=bundled --set out_dir=OUT_DIR" in card


def test_build_dotted_set_into_a_mixture_and_the_format(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    edited = tmp_path / "edited.yaml"
    edited.write_text(SPEC.replace("tokens: 2000}, {subset: config.ruozhiba, tokens: 2000}",
                                   "tokens: 1000}, {subset: config.ruozhiba, tokens: 2000}")
                      + "format: {max_length: 300}\n", encoding="utf-8")
    a = _build(["--config", str(edited), "--set", f"out_dir={tmp_path / 'a'}"], capsys, tmp_path / "a")
    b = _build(["--config", str(spec), "--set", "mixtures.mix.parts.group.law.tokens=1000",
                "--set", "format.max_length=300", "--set", f"out_dir={tmp_path / 'b'}"], capsys, tmp_path / "b")
    data = lambda r: [x for x in r[1] if not x.endswith("OUT/README.md")]  # noqa: E731 (the card names the file)
    assert a[0] == b[0] == 0 and data(a) == data(b) and len(data(a)) > 4
    plain = _build(["--config", str(spec), "--set", f"out_dir={tmp_path / 'p'}"], capsys, tmp_path / "p")
    assert data(plain) != data(a)


def test_build_unknown_keys_fail_with_a_hint(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    out = tmp_path / "out"
    rc, err = _build(["--config", str(spec), "--set", "sed=3", str(out)], capsys, out)
    assert rc == 2 and "unknown key(s) 'sed' (did you mean 'seed'?)" in err[-1]
    rc, err = _build(["--config", str(spec), "--set", "format.max_lenght=3", str(out)], capsys, out)
    assert rc == 2 and "format: unknown key(s) 'max_lenght' (did you mean 'max_length'?)" in err[-1]
    rc, err = _build(["--config", str(spec), "--set", "mixtures.mixx.size=3", str(out)], capsys, out)
    assert rc == 2 and "no mixture 'mixx' in mixtures (did you mean 'mix'?); mixtures (position name): 1 mix" in err[-1]
    rc, err = _build(["--config", str(spec)], capsys, out)
    assert rc == 2 and "no out_dir" in err[-1]
    assert not out.exists()
def test_every_pipeline_subcommand_takes_config_and_set():
    from cqia_nb.cli import build_parser

    ap = build_parser()
    subs = ap._subparsers._group_actions[0].choices
    evals = subs["eval"]._subparsers._group_actions[0].choices
    for name, p in [*((n, subs[n]) for n in ("filter", "build", "train")), ("eval mc", evals["mc"]),
                    ("eval belle", evals["belle"])]:
        opts = {s for a in p._actions for s in a.option_strings}
        assert {"--config", "--set"} <= opts, name


# ----------------------------------------------------------------------------- outputs that cannot be written

ROOT = Path(__file__).resolve().parent.parent
FILTER_RECIPE = "steps:\n  - filter: empty_output\n"
BUILD_SPEC = "name: t\nseed: 1\nbuiltin: [config.ruozhiba]\nsplit: {validation: 0.2}\n"


def _argv(cmd: str, folder: Path, out: Path) -> list[str]:
    """cqia-nb arguments that write into ``out`` (recipes written to ``folder``)."""
    if cmd == "filter":
        (folder / "recipe.yaml").write_text(FILTER_RECIPE, encoding="utf-8")
        return ["filter", "--config", str(folder / "recipe.yaml"), "bundled", str(out)]
    if cmd == "build":
        (folder / "spec.yaml").write_text(BUILD_SPEC, encoding="utf-8")
        return ["build", "--config", str(folder / "spec.yaml"), "--set", "input=bundled", "--set", f"out_dir={out}"]
    return ["train", "--config", str(ROOT / "recipes" / "train-cpu-tiny.yaml"), "--set", f"output_dir={out}",
            "--set", "max_steps=1", "--set", "tiny_pretrain_steps=0", "--set", "eval_steps=null",
            "--set", "val_fraction=0"]


def _one_clear_line(stderr: str, cmd: str, path: Path, reason: str) -> None:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"cqia-nb {cmd}: cannot write {path}: {reason}; "), lines[0]


@pytest.mark.parametrize("cmd", ["filter", "build", "train"])
def test_read_only_output_folder_exits_2_with_one_line(unprivileged, cmd):
    ro = unprivileged.folder("ro", 0o555)
    home = unprivileged.folder("work")
    r = unprivileged.run([sys.executable, "-m", "cqia_nb.cli", *_argv(cmd, home, ro / "out")])
    assert r.returncode == 2, r.stdout + r.stderr
    _one_clear_line(r.stderr, cmd, ro if cmd == "build" else ro / "out", "permission denied")
    assert "choose a folder you can write to" in r.stderr
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("cmd", ["filter", "build", "train"])
def test_output_path_under_a_file_exits_2_with_one_line(tmp_path, capsys, cmd):
    (tmp_path / "notes.txt").write_text("not a folder")
    out = tmp_path / "notes.txt" / "out"
    assert main(_argv(cmd, tmp_path, out)) == 2
    err = capsys.readouterr().err
    if cmd == "build":  # build checks OUT_DIR's parent first (OUT_DIR itself is made only when complete)
        _one_clear_line(err, cmd, out.parent, "it is a file, not a folder")
    else:
        _one_clear_line(err, cmd, out, f"{tmp_path / 'notes.txt'} is a file, not a folder")


def test_full_disk_in_filter_keeps_the_previous_outputs(tmp_path, capsys, monkeypatch):
    # ENOSPC simulated: the last output (steps.csv) fails after the others were written.
    import errno

    import polars as pl

    out = tmp_path / "out"
    assert main(_argv("filter", tmp_path, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "kept.jsonl").write_bytes(b"previous run\n")
    before["kept.jsonl"] = b"previous run\n"
    capsys.readouterr()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_csv", full)
    assert main(_argv("filter", tmp_path, out)) == 2
    _one_clear_line(capsys.readouterr().err, "filter", out, "no space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-written, no staging left


def test_full_disk_in_build_leaves_no_folder(tmp_path, capsys, monkeypatch):
    import errno

    import cqia_nb.build.exports as E

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(E, "write_card", full)  # the card is written last, after every export
    out = tmp_path / "out"
    assert main(_argv("build", tmp_path, out)) == 2
    _one_clear_line(capsys.readouterr().err, "build", out, "no space left on device")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def _tiny_tmpfs(size: str) -> list[str] | None:
    """argv prefix that runs a command in a private mount namespace with a tmpfs of ``size`` mounted
    on the folder given as the prefix's last argument; None where that is not allowed (no root,
    no CAP_SYS_ADMIN, no unshare)."""
    import shutil

    if os.name != "posix" or not shutil.which("unshare"):
        return None
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c",
            f'mount -t tmpfs -o size={size} tmpfs "$0" && "$@"; rc=$?; '
            'echo "LEFT:$(cd "$0" && find . -mindepth 1 | sort | tr "\\n" " ")"; exit $rc']


@pytest.mark.parametrize("cmd, size", [("filter", "96k"), ("build", "96k"), ("train", "256k")])
def test_full_disk_on_a_real_tiny_tmpfs(tmp_path, cmd, size):
    prefix = _tiny_tmpfs(size)
    if prefix is None:
        pytest.skip("a real full disk needs `unshare -m` and mount (root with CAP_SYS_ADMIN); "
                    "the monkeypatched ENOSPC tests above cover the same path")
    disk = tmp_path / "disk"
    disk.mkdir()
    argv = _argv(cmd, tmp_path, disk / "out")
    r = subprocess.run([*prefix, str(disk), sys.executable, "-m", "cqia_nb.cli", *argv],
                       capture_output=True, text=True, cwd=str(ROOT))
    assert r.returncode == 2, r.stdout + r.stderr
    _one_clear_line(r.stderr, cmd, disk / "out", "no space left on device")
    left = r.stdout.rsplit("LEFT:", 1)[1].split()
    if cmd == "train":  # the small files written whole before the model; no checkpoint, no model, no temp file
        assert set(left) <= {"./out", "./out/train_config.yaml", "./out/data_issues.jsonl", "./out/metrics.jsonl"}, left
    else:
        assert left == (["./out"] if cmd == "filter" else []), left  # filter: the empty folder it checked first
