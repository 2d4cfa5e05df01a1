"""The ``judge`` filter: an LLM judge's score per record (``cqia_nb.models.judge``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from cqia_nb.filter.framework import Filter, register
from cqia_nb.models.judge import JudgeConfig, judge_frame


@register
@dataclass
class JudgeFilter(Filter):
    """An LLM judge's 1–10 score (``cqia_nb.models.judge``): drop records scoring below ``min_score``.

    Records whose judging failed (endpoint down, timeout, unparseable reply …) are *kept*, with a
    null value and the error kind as detail, and a warning counts them. ``options`` passes any
    other ``JudgeConfig`` field (concurrency, max_retries, score_pattern, prompt_template …).
    The last run's full results (raw replies, errors, attempts) are in ``last_results``.
    """

    name: ClassVar[str] = "judge"
    description: ClassVar[str] = "LLM judge score 1-10: value >= min_score keeps; failures kept"
    threshold_fields: ClassVar[tuple[str, ...]] = ("min_score",)

    min_score: float = 6.0
    backend: str = "openai"
    base_url: str | None = None
    model: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 3
    concurrency: int = 4
    cache: bool = True
    cache_path: str | None = None
    progress: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # An API key given in the options is kept out of repr() and params() (run records).
        self.options = dict(self.options or {})
        self._api_key = self.options.pop("api_key", None)

    def config(self):

        kw: dict[str, Any] = dict(backend=self.backend, base_url=self.base_url, timeout_s=self.timeout_s,
                                  max_retries=self.max_retries, concurrency=self.concurrency,
                                  cache=self.cache, cache_path=self.cache_path, progress=self.progress)
        if self.model is not None:
            kw["model"] = self.model
        kw.update(self.options)
        if self._api_key:
            kw["api_key"] = self._api_key
        return JudgeConfig(**kw)

    def measure(self, frame: pl.DataFrame) -> pl.Series:

        res = judge_frame(frame, self.config())
        self.last_results = res
        failed = res.filter(pl.col("error").is_not_null())
        if failed.height:
            kinds = ", ".join(f"{k} {n}" for k, n in failed.group_by("error").len().sort("error").iter_rows())
            warnings.warn(f"judge: {failed.height} of {res.height} record(s) could not be judged ({kinds}); "
                          "they are kept with a null score — see JudgeFilter.last_results", stacklevel=2)
        return res["score"].rename(self.name)

    def keep(self, values: pl.Series) -> pl.Series:
        return (values >= self.min_score).fill_null(True)

    def details(self, frame: pl.DataFrame, values: pl.Series) -> pl.Series | None:
        res = getattr(self, "last_results", None)
        if res is None or res.height != frame.height:
            return None
        return res.select(pl.coalesce(pl.col("error"), pl.col("reason").str.slice(0, 200)).alias("detail"))["detail"]
