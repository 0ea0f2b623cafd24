"""The monthly ranking and the red / yellow lists.

Composite = (w_response × sign-for on time + w_resolution × resolution rate + w_satisfaction ×
satisfaction rate) ÷ 100, the weights a named version of ``data/weights.yaml``. A unit whose
sample (the smaller of its sign-for and callback denominators) is under the minimum is listed as
"insufficient data" and never ranked. Red: the bottom N ranked, and any under the red threshold;
yellow: the N above those, and any under the yellow threshold (both from configuration).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.evaluation.metrics_registry import BY_ID
from services.evaluation.queries import Filters, PeriodOut, Sums, label
from shared.datafiles import (
    DataFileError,
    Problem,
    packaged_text,
    parse_yaml,
    problems_from_validation,
)
from shared.errors import Invalid

COMPONENTS = {
    "response": "sign_for_on_time",
    "resolution": "resolution",
    "satisfaction": "satisfaction",
}


class WeightsError(DataFileError):
    """The weights file was refused."""

    kind = "ranking weights"


class Weights(BaseModel):
    """One published version of the weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    note: str = ""
    response: float = Field(ge=0)
    resolution: float = Field(ge=0)
    satisfaction: float = Field(ge=0)

    @model_validator(mode="after")
    def _hundred(self) -> Weights:
        if abs(self.response + self.resolution + self.satisfaction - 100) > 1e-9:
            raise ValueError(f"weights of {self.version} do not add up to 100")
        return self


class WeightsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    versions: list[Weights]


@cache
def weight_versions() -> dict[str, Weights]:
    """Every weights version in the packaged file, in file order."""
    raw = parse_yaml(packaged_text("services.evaluation.data", "weights.yaml"), WeightsError)
    try:
        parsed = WeightsFile.model_validate(raw)
    except ValidationError as exc:
        problems = problems_from_validation(exc, raw, section="", noun="", key="")
        raise WeightsError(problems or [Problem(None, "", str(exc))]) from None
    return {w.version: w for w in parsed.versions}


def weights(version: str | None) -> Weights:
    """The named version, or the newest one."""
    versions = weight_versions()
    if version is None:
        return list(versions.values())[-1]
    if version not in versions:
        raise Invalid(
            f"unknown weights version {version!r}; one of {', '.join(versions)}", field="weights"
        )
    return versions[version]


class Ranked(BaseModel):
    rank: int
    key: str
    label_zh: str | None = None
    label_en: str | None = None
    composite: float
    components: dict[str, float]
    sample_size: int
    list: Literal["red", "yellow"] | None = None


class Unranked(BaseModel):
    key: str
    label_zh: str | None = None
    label_en: str | None = None
    sample_size: int
    reason: str = "insufficient data"


class Ranking(BaseModel):
    """A ranking names its period, filters, unit, weights version and minimum sample."""

    period: PeriodOut
    filters: dict[str, object]
    unit: str
    weights: Weights
    min_sample: int
    ranked: list[Ranked]
    insufficient: list[Unranked]
    red: list[str]
    yellow: list[str]


def rank(
    groups: Mapping[str, Sums],
    *,
    period: PeriodOut,
    filters: Filters,
    unit: str,
    weights: Weights,
    min_sample: int,
    basic_weight: float,
    red_bottom_n: int,
    red_below: float | None,
    yellow_bottom_n: int,
    yellow_below: float | None,
) -> Ranking:
    """Rank the units of ``groups`` (summed counters per unit)."""
    scored: list[tuple[float, str, dict[str, float], int]] = []
    insufficient: list[Unranked] = []
    for key, s in sorted(groups.items()):
        if not key:
            continue  # cells with no unit (mediation cases, unknown areas)
        components: dict[str, float] = {}
        for name, metric_id in COMPONENTS.items():
            value = BY_ID[metric_id].value(s.counters, basic_weight=basic_weight)
            if value is not None:
                components[name] = value
        sample = min(s.counters["sign_due"], s.counters["callbacks"])
        zh, en = label(unit, key)
        if sample < min_sample or len(components) < len(COMPONENTS):
            insufficient.append(Unranked(key=key, label_zh=zh, label_en=en, sample_size=sample))
            continue
        composite = round(
            sum(getattr(weights, name) * value for name, value in components.items()) / 100, 6
        )
        scored.append((composite, key, components, sample))
    scored.sort(key=lambda item: (-item[0], item[1]))
    ranked = []
    for position, (composite, key, components, sample) in enumerate(scored, start=1):
        zh, en = label(unit, key)
        ranked.append(
            Ranked(
                rank=position,
                key=key,
                label_zh=zh,
                label_en=en,
                composite=composite,
                components=components,
                sample_size=sample,
            )
        )
    red: list[str] = []
    yellow: list[str] = []
    n = len(ranked)
    for r in ranked:
        from_bottom = n - r.rank  # 0 for the last
        if from_bottom < red_bottom_n or (red_below is not None and r.composite < red_below):
            r.list = "red"
            red.append(r.key)
        elif from_bottom < red_bottom_n + yellow_bottom_n or (
            yellow_below is not None and r.composite < yellow_below
        ):
            r.list = "yellow"
            yellow.append(r.key)
    return Ranking(
        period=period,
        filters=filters.stated(),
        unit=unit,
        weights=weights,
        min_sample=min_sample,
        ranked=ranked,
        insufficient=insufficient,
        red=red,
        yellow=yellow,
    )
