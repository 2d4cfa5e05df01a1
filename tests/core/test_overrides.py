"""cqia_nb.core.overrides: the --config FILE --set KEY=VALUE machinery every subcommand shares."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cqia_nb.core.overrides import (
    ConfigError,
    apply_overrides,
    config_from_mapping,
    did_you_mean,
    read_yaml_mapping,
    unknown_keys_message,
)

RECIPE = {
    "name": "r",
    "format": {"template": "chatml", "max_length": 256},
    "steps": [
        {"filter": "traditional", "convert": True},
        {"filter": "length", "label": "output_length", "field": "output", "min_chars": 1},
        {"filter": "length", "label": "prompt_length", "field": "instruction+input", "min_chars": 2},
        {"filter": "special_chars", "max_ratio": 0.25},
        {"filter": "url"},
        {"filter": "url", "field": "instruction"},
        {"transform": "to_simplified"},
    ],
    "parts": [{"subset": "group.exams", "ratio": 0.5}, {"subset": "config.zhihu", "ratio": 0.5}],
}


# ----------------------------------------------------------------------------- reading a file

def test_read_yaml_mapping(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("a: 1\nb: {c: [1, 2]}\n", encoding="utf-8")
    assert read_yaml_mapping(p) == {"a": 1, "b": {"c": [1, 2]}}
    (tmp_path / "empty.yaml").write_text("# nothing\n", encoding="utf-8")
    assert read_yaml_mapping(tmp_path / "empty.yaml") == {}


def test_read_yaml_mapping_errors_name_the_file_and_line(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml: recipe not found \(see recipes/\)"):
        read_yaml_mapping(tmp_path / "nope.yaml", what="recipe", missing_hint=" (see recipes/)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb:\n  - x\n   c: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line 4 \(here\): "):
        read_yaml_mapping(bad, locate=lambda text, line: " (here)" if line == 3 else "")
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list\.yaml: a config is a mapping .* got list"):
        read_yaml_mapping(lst)

    class MyError(ValueError):
        pass

    with pytest.raises(MyError):  # each stage raises its own error type
        read_yaml_mapping(bad, error=MyError)


# ----------------------------------------------------------------------------- dotted overrides

def test_plain_and_nested_keys_values_parsed_as_yaml():
    out = apply_overrides(RECIPE, ["name=x", "format.max_length=512", "format.system=null", "new.deep.key=[1, 2]"])
    assert out["name"] == "x"
    assert out["format"] == {"template": "chatml", "max_length": 512, "system": None}
    assert out["new"] == {"deep": {"key": [1, 2]}}  # created: the config's own check judges the key
    assert RECIPE["format"]["max_length"] == 256  # the input is not changed


def test_overrides_as_a_parsed_mapping_and_later_items_win():
    assert apply_overrides({"a": 1}, {"a": 2, "b.c": 3}) == {"a": 2, "b": {"c": 3}}
    assert apply_overrides({"a": 1}, ["a=2", "a=3"]) == {"a": 3}


def test_list_items_by_label_filter_name_or_position():
    out = apply_overrides(RECIPE, ["steps.special_chars.max_ratio=0.3", "steps.output_length.min_chars=5",
                                   "steps.1.convert=false", "steps.to_simplified.field=output"])
    steps = out["steps"]
    assert steps[3] == {"filter": "special_chars", "max_ratio": 0.3}
    assert steps[1]["min_chars"] == 5 and steps[2]["min_chars"] == 2
    assert steps[0]["convert"] is False
    assert steps[6] == {"transform": "to_simplified", "field": "output"}
    # positions are 1-based, as the filter's step numbers; repeats are "#2" as in steps.csv
    assert apply_overrides(RECIPE, ["steps.4.max_ratio=0.1"])["steps"][3]["max_ratio"] == 0.1
    out = apply_overrides(RECIPE, ["steps.url#2.field=output"])["steps"]
    assert out[4] == {"filter": "url"} and out[5] == {"filter": "url", "field": "output"}
    # a name with dots (build subsets such as group.exams)
    assert apply_overrides(RECIPE, ["parts.group.exams.ratio=0.7"])["parts"][0]["ratio"] == 0.7
    # a whole item replaced
    assert apply_overrides(RECIPE, ["steps.url={filter: html}"])["steps"][4] == {"filter": "html"}


def test_unknown_step_lists_the_steps_with_a_hint():
    with pytest.raises(ConfigError) as e:
        apply_overrides(RECIPE, ["steps.specal_chars.max_ratio=0.3"])
    msg = str(e.value)
    assert "--set steps.specal_chars.max_ratio: no step 'specal_chars' in steps (did you mean 'special_chars'?)" in msg
    assert "1 traditional, 2 output_length, 3 prompt_length, 4 special_chars, 5 url, 6 url#2, 7 to_simplified" in msg
    with pytest.raises(ConfigError, match=r"'length' names 2 steps in steps \(output_length, prompt_length\)"):
        apply_overrides(RECIPE, ["steps.length.min_chars=3"])
    with pytest.raises(ConfigError, match=r"steps has 7 steps, numbered from 1; no step 8"):
        apply_overrides(RECIPE, ["steps.8.max_ratio=0.3"])
    with pytest.raises(ConfigError, match=r"no step 0"):
        apply_overrides(RECIPE, ["steps.0.max_ratio=0.3"])


def test_bad_override_items():
    with pytest.raises(ConfigError, match=r"--set 'novalue': expected key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match=r"name is 'r', not a mapping or a list"):
        apply_overrides(RECIPE, ["name.x=1"])
    with pytest.raises(ConfigError, match="empty key"):
        apply_overrides(RECIPE, ["format..x=1"])


# ----------------------------------------------------------------------------- dataclasses

@dataclasses.dataclass
class Inner:
    shots: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0, got {self.shots}")


@dataclasses.dataclass
class Outer:
    model: str
    seed: int = 1
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_config_from_mapping_with_flat_parts():
    c = config_from_mapping(Outer, {"model": "m", "shots": 3, "seed": 7}, parts={"inner": Inner})
    assert c == Outer("m", 7, Inner(3, 7))  # a key both have goes to both
    assert config_from_mapping(Outer, {"model": "m"}, parts={"inner": Inner}) == Outer("m")


def test_config_from_mapping_errors():
    with pytest.raises(ConfigError, match=r"x\.yaml: unknown key\(s\) 'shot' \(did you mean 'shots'\?\); "
                                          r"valid keys: model, seed, shots"):
        config_from_mapping(Outer, {"model": "m", "shot": 1}, where="x.yaml", parts={"inner": Inner})
    with pytest.raises(ConfigError, match=r"missing required key\(s\) model"):
        config_from_mapping(Outer, {}, parts={"inner": Inner})
    with pytest.raises(ConfigError, match=r"cfg: shots must be >= 0, got -1"):
        config_from_mapping(Outer, {"model": "m", "shots": -1}, where="cfg", parts={"inner": Inner})
    with pytest.raises(ConfigError, match=r"cfg: epochs was renamed seed \(why\); write seed: 3"):
        config_from_mapping(Outer, {"model": "m", "epochs": 3}, where="cfg", renamed={"epochs": "seed"},
                            renamed_why=" (why)")


def test_hints():
    assert did_you_mean("lerning_rate", ["learning_rate", "seed"]) == " (did you mean 'learning_rate'?)"
    assert did_you_mean("zzz", ["learning_rate"]) == ""
    assert unknown_keys_message(["b2", "zz"], ["a", "b"]) == "unknown key(s) 'b2' (did you mean 'b'?), 'zz'; valid keys: a, b"
