"""``KEY=VALUE`` assignments from the command line, values parsed as YAML.

One parser for every ``--set`` / ``-p`` flag (``cqia-nb notebooks -p``, ``cqia-nb filter|build|train|
eval … --set``), so ``true``, ``3e-4``, ``[q_proj, v_proj]`` and ``null`` mean the same everywhere.
Callers word the error for their own flag and add their own post-processing (the notebooks
command resolves existing paths, for instance).

Around it, what every stage's ``--config FILE --set KEY=VALUE`` needs, once: reading a YAML
mapping (:func:`read_yaml_mapping`, errors name the file and line), dotted overrides into nested
mappings and list items (:func:`apply_overrides`: ``format.max_length=512``,
``steps.special_chars.max_ratio=0.3``, ``steps.3.max_ratio=0.3``), and a config dataclass from a
mapping with unknown-key errors and "did you mean" hints (:func:`config_from_mapping`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# PyYAML follows YAML 1.1, where ``3e-4`` (no dot) is a string; on a command line it is a number.
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class AssignmentError(ValueError):
    """A ``KEY=VALUE`` item that cannot be parsed; ``item`` is the offending text."""

    def __init__(self, item: str, reason: str) -> None:
        super().__init__(f"{item!r}: {reason}")
        self.item = item
        self.reason = reason


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["lora_r=16", "packing=true", "x="]`` -> ``{"lora_r": 16, "packing": True, "x": None}``.

    Keys are stripped; values are parsed with ``yaml.safe_load`` (an empty value is None; ``3e-4``
    is read as the number, not as YAML 1.1's string). A later
    item overrides an earlier one with the same key. Raises ``AssignmentError`` for an item
    without ``=`` or with a value that is not valid YAML.
    """
    import yaml

    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise AssignmentError(it, "expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            value = yaml.safe_load(v) if v.strip() else None
        except yaml.YAMLError as e:
            raise AssignmentError(it, f"the value is not valid YAML ({str(e).splitlines()[0]}); quote it") from None
        if isinstance(value, str) and v.strip()[:1] not in "'\"" and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)
        out[k.strip()] = value
    return out


# ----------------------------------------------------------------------------- config files

#: Keys that name an item of a list of mappings in a dotted override, in this order (a filter
#: step's ``label`` before its ``filter``; a build subset's or mixture's ``name``; a mixture part's
#: ``subset``).
ITEM_KEYS = ("label", "name", "filter", "transform", "subset")


class ConfigError(ValueError):
    """A config file, a ``--set`` override or a key that cannot work; the message says what to change."""


def did_you_mean(word: Any, candidates: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``candidates`` (difflib), or ``""``."""
    near = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def unknown_keys_message(unknown: Iterable[Any], known: Iterable[Any], what: str = "key") -> str:
    """``unknown key(s) 'lr' (did you mean 'learning_rate'?); valid keys: a, b, …``."""
    known = sorted(str(k) for k in known)
    parts = [f"{u!r}{did_you_mean(u, known)}" for u in sorted(unknown, key=str)]
    return f"unknown {what}(s) {', '.join(parts)}; valid {what}s: {', '.join(known)}"


def read_yaml_mapping(path: str | Path, *, what: str = "config", error: type[Exception] = ConfigError,
                      missing_hint: str = "", locate: Callable[[str, int], str] | None = None) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (an empty file is ``{}``).

    A missing file raises ``FileNotFoundError`` (``"<path>: <what> not found<missing_hint>"``); a YAML
    syntax error raises ``error`` naming the file and the line (``locate(text, line)`` may add where
    that line is, e.g. " (in step 2)"); anything but a mapping at the top raises ``error`` too.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: {what} not found{missing_hint}")
    text = p.read_text(encoding="utf-8")
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line if mark is not None else None
        at = f" at line {line + 1}" if line is not None else ""
        extra = locate(text, line) if locate is not None and line is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{p}: not valid YAML{at}{extra}: {problem}; check indentation and quote values "
                    "containing ':' or '#'") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise error(f"{p}: a {what} is a mapping of `key: value` settings, got {type(d).__name__}")
    return d


def _item_names(items: list[Any], item_keys: Sequence[str]) -> tuple[list[str], list[set[str]]]:
    """Per item: its name (the first of ``item_keys`` it has, repeats suffixed "#2", "#3"; else its
    1-based position) and every name it answers to."""
    seen: dict[str, int] = {}
    names, aliases = [], []
    for i, it in enumerate(items, start=1):
        own = [it[k] for k in item_keys if isinstance(it, dict) and isinstance(it.get(k), str)]
        if own:
            n = seen.get(own[0], 0) + 1
            seen[own[0]] = n
            names.append(own[0] if n == 1 else f"{own[0]}#{n}")
        else:
            names.append(str(i))
        aliases.append(set(own))
    return names, aliases


def _find_item(items: list[Any], rest: list[str], key: str, list_key: str, flag: str, error: type[Exception],
               item_keys: Sequence[str]) -> tuple[int, int]:
    """(index into ``items``, number of dotted parts its name took) for the item ``rest`` starts with."""
    names, aliases = _item_names(items, item_keys)
    word = list_key.rsplit(".", 1)[-1]
    word = word[:-1] if word.endswith("s") and len(word) > 1 else word
    # a name may contain dots (``group.exams``): the longest name that leaves a key to set wins
    for j in [*range(len(rest) - 1, 0, -1), len(rest)]:
        cand = ".".join(rest[:j])
        if cand in names:
            return names.index(cand), j
        hits = [i for i, a in enumerate(aliases) if cand in a]
        if len(hits) == 1:
            return hits[0], j
        if len(hits) > 1:
            raise error(f"{flag} {key}: {cand!r} names {len(hits)} {word}s in {list_key} "
                        f"({', '.join(names[i] for i in hits)}); use one of these names or a position")
    first = rest[0]
    if first.lstrip("-").isdigit():
        pos = int(first)
        if 1 <= pos <= len(items):
            return pos - 1, 1
        raise error(f"{flag} {key}: {list_key} has {len(items)} {word}s, numbered from 1; no {word} {pos}")
    listing = ", ".join(f"{i} {n}" for i, n in enumerate(names, start=1))
    raise error(f"{flag} {key}: no {word} {first!r} in {list_key}"
                f"{did_you_mean(first, [*names, *set().union(*aliases)])}; "
                f"{word}s (position name): {listing}")


def set_dotted(mapping: dict[str, Any], key: str, value: Any, *, flag: str = "--set",
               error: type[Exception] = ConfigError, item_keys: Sequence[str] = ITEM_KEYS) -> None:
    """Set ``key`` (dotted: ``format.max_length``) to ``value`` in ``mapping``, in place.

    Missing mappings on the way are created (the config's own check then rejects a key it does not
    know). In a list, an item is addressed by its name (see ``ITEM_KEYS``: a filter step's label
    or filter name, ``steps.special_chars.max_ratio``) or by its 1-based position (``steps.3``); an
    unknown item fails at once, listing the items with a "did you mean" hint.
    """
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise error(f"{flag} {key!r}: empty key or key part")
    node: Any = mapping
    i, path = 0, []
    while True:
        part = parts[i]
        last = i == len(parts) - 1
        if isinstance(node, dict):
            if last:
                node[part] = value
                return
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, (dict, list)):
                raise error(f"{flag} {key}: {'.'.join([*path, part])} is {nxt!r}, not a mapping or a list; "
                            f"set it whole with {flag} {'.'.join([*path, part])}=…")
            node, i, path = nxt, i + 1, [*path, part]
        elif isinstance(node, list):
            idx, used = _find_item(node, parts[i:], key, ".".join(path), flag, error, item_keys)
            if i + used == len(parts):
                node[idx] = value
                return
            item = node[idx]
            if not isinstance(item, (dict, list)):
                raise error(f"{flag} {key}: item {idx + 1} of {'.'.join(path)} is {item!r}, not a mapping")
            node, i, path = item, i + used, [*path, *parts[i:i + used]]
        else:  # pragma: no cover - guarded above
            raise error(f"{flag} {key}: cannot set inside {node!r}")


def apply_overrides(mapping: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any] = (), *,
                    flag: str = "--set", error: type[Exception] = ConfigError,
                    item_keys: Sequence[str] = ITEM_KEYS) -> dict[str, Any]:
    """A deep copy of ``mapping`` with ``overrides`` applied in order: ``KEY=VALUE`` strings
    (values parsed as YAML by :func:`parse_assignments`) or an already parsed mapping. Keys are
    dotted paths (:func:`set_dotted`)."""
    if isinstance(overrides, Mapping):
        items = dict(overrides)
    else:
        try:
            items = parse_assignments(list(overrides))
        except AssignmentError as e:
            raise error(f"{flag} {e.item!r}: expected key=value ({e.reason})") from None
    out = copy.deepcopy(dict(mapping))
    for k, v in items.items():
        set_dotted(out, k, v, flag=flag, error=error, item_keys=item_keys)
    return out


def config_from_mapping(cls: type[T], mapping: Mapping[str, Any], *, where: str = "config",
                        error: type[Exception] = ConfigError, renamed: Mapping[str, str] | None = None,
                        renamed_why: str = "", parts: Mapping[str, type] | None = None) -> T:
    """``cls(**mapping)`` for a config dataclass, with clear errors for what cannot work.

    * a key in ``renamed`` (old name -> new name) fails naming the new key;
    * an unknown key fails with the valid keys and a "did you mean" hint;
    * a missing required key (a field without default) fails naming it;
    * ``parts``: fields of ``cls`` that are themselves config dataclasses whose keys sit flat in the
      mapping (``MCRunConfig.mc`` from ``shots``, ``mode``, …); a key that both ``cls`` and a part
      (or two parts) have goes to each. A part class with a ``from_dict(d, where)`` classmethod is
      built with it.

    Errors raised by ``cls`` itself (``__post_init__``) come out as ``error`` prefixed with ``where``.
    """
    d = dict(mapping)
    parts = dict(parts or {})
    for old, new in (renamed or {}).items():
        if old in d:
            raise error(f"{where}: {old} was renamed {new}{renamed_why}; write {new}: {d[old]!r}")
    own = [f for f in dataclasses.fields(cls) if f.init and f.name not in parts]  # type: ignore[arg-type]
    part_keys = {name: [f.name for f in dataclasses.fields(p) if f.init] for name, p in parts.items()}
    known = {f.name for f in own} | {k for ks in part_keys.values() for k in ks}
    unknown = set(d) - known
    if unknown:
        raise error(f"{where}: {unknown_keys_message(unknown, known)}")
    missing = [f.name for f in own if f.name not in d and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise error(f"{where}: missing required key(s) {', '.join(missing)}")
    kwargs = {f.name: d[f.name] for f in own if f.name in d}

    def build(make: Callable[..., Any], kw: dict[str, Any]) -> Any:
        try:
            return make(**kw)
        except (TypeError, ValueError) as e:
            raise error(str(e) if str(e).startswith(f"{where}:") else f"{where}: {e}") from e

    for name, pcls in parts.items():
        sub = {k: d[k] for k in part_keys[name] if k in d}
        from_dict = getattr(pcls, "from_dict", None)
        # a part with its own from_dict words its errors itself (naming ``where``)
        kwargs[name] = from_dict(sub, where) if callable(from_dict) else build(pcls, sub)
    return build(cls, kwargs)


# ----------------------------------------------------------------------------- the command line

SET_HELP = ("override a setting of the config, value parsed as YAML; dotted keys reach into mappings and "
            "list items (steps.special_chars.max_ratio=0.3, steps.6.max_ratio=0.3); repeatable")


def add_config_options(parser: Any, *, config_help: str, required: bool = True, aliases: Sequence[str] = ()) -> Any:
    """``--config FILE`` (``aliases``: older names of the same option) and repeatable ``--set KEY=VALUE``
    (into ``args.overrides``) on an ``argparse`` parser: every pipeline subcommand takes these two."""
    parser.add_argument("--config", *aliases, dest="config", required=required, metavar="FILE", help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    return parser


def cli_overrides(flags: Mapping[str, Any], sets: Sequence[str], *, flag: str = "--set",
                  error: type[Exception] = ConfigError) -> dict[str, Any]:
    """One ordered mapping of overrides: the older per-setting flags that were given (value not None),
    then the ``--set`` items, so a ``--set`` wins over a flag and both over the file."""
    try:
        parsed = parse_assignments(list(sets))
    except AssignmentError as e:
        raise error(f"{flag} {e.item!r}: expected key=value ({e.reason})") from None
    out = {k: v for k, v in flags.items() if v is not None}
    for k, v in parsed.items():
        out.pop(k, None)  # keep the order: this --set comes after every flag
        out[k] = v
    return out
