"""Offline evaluation of intake's classifier: cross-validation, held-out scoring, cost, docs.

``python -m tools.classifier_report --cv`` runs 5-fold cross-validation on the train rows (tune
with it, never with the held-out rows); ``--evaluate`` scores the frozen model on the held-out rows
of ``data/appeals_heldout.csv``; ``--write-docs`` refreshes the results block of
docs/classification.md. The service never imports this module.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.intake.classifier import (
    HELDOUT_FILE,
    Classification,
    ClassifierConfig,
    LabelledAppeal,
    LinearModel,
    default_model,
    heldout_rows,
    train_rows,
)
from services.intake.classifier.labelled import data_text
from shared import taxonomy


def heldout_digest() -> str:
    """SHA-256 of the held-out file, quoted in the docs next to the score it produced."""
    return hashlib.sha256(data_text(HELDOUT_FILE).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Accuracy of a model on some rows."""

    rows: int
    top_level_correct: int
    leaf_correct: int
    fell_back: int
    per_top_level: dict[str, tuple[int, int]]
    confusions: tuple[tuple[str, str, str], ...]

    @property
    def top_level_accuracy(self) -> float:
        """Share of rows whose top-level category was right."""
        return self.top_level_correct / self.rows if self.rows else 0.0

    @property
    def leaf_accuracy(self) -> float:
        """Share of rows whose leaf category was right."""
        return self.leaf_correct / self.rows if self.rows else 0.0


def _score(pairs: Iterable[tuple[LabelledAppeal, Classification]]) -> Evaluation:
    total = top_ok = leaf_ok = fell_back = 0
    per_top: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    confusions: list[tuple[str, str, str]] = []
    for row, result in pairs:
        total += 1
        per_top[row.top_level][1] += 1
        fell_back += result.low_confidence
        if result.top_level == row.top_level:
            top_ok += 1
            per_top[row.top_level][0] += 1
        else:
            confusions.append((row.id, row.category_code, result.code))
        leaf_ok += result.code == row.category_code
    return Evaluation(
        rows=total,
        top_level_correct=top_ok,
        leaf_correct=leaf_ok,
        fell_back=fell_back,
        per_top_level={k: (v[0], v[1]) for k, v in sorted(per_top.items())},
        confusions=tuple(sorted(confusions)),
    )


def evaluate(model: LinearModel, rows: Sequence[LabelledAppeal]) -> Evaluation:
    """Score the model's predictions against the labels."""
    results = model.classify_many([(row.title, row.content) for row in rows])
    return _score(zip(rows, results, strict=True))


def cross_validation(
    rows: Sequence[LabelledAppeal], config: ClassifierConfig, *, folds: int = 5
) -> Evaluation:
    """Every row scored by a model trained on the other folds (row ``i`` by id is in fold
    ``i % folds``)."""
    ordered = sorted(rows, key=lambda r: r.id)
    pairs: list[tuple[LabelledAppeal, Classification]] = []
    for k in range(folds):
        held = [r for i, r in enumerate(ordered) if i % folds == k]
        fit = [r for i, r in enumerate(ordered) if i % folds != k]
        model = LinearModel.train(fit, config)
        results = model.classify_many([(r.title, r.content) for r in held])
        pairs.extend(zip(held, results, strict=True))
    return _score(pairs)


def cross_validate(
    rows: Sequence[LabelledAppeal], config: ClassifierConfig, *, folds: int = 5
) -> tuple[float, float]:
    """Top-level and leaf accuracy over k folds of the given (train) rows."""
    result = cross_validation(rows, config, folds=folds)
    return result.top_level_accuracy, result.leaf_accuracy


@dataclass(frozen=True, slots=True)
class Cost:
    """Measured costs of the default model on this machine."""

    train_s: float
    single_ms: float
    batch_ms: float
    batch_size: int


def measure_cost(rows: Sequence[LabelledAppeal], *, batch_size: int = 1000) -> Cost:
    """Training time, and the per-appeal cost of ``classify`` and of ``classify_many``."""
    started = time.perf_counter()
    model = LinearModel.train(rows, ClassifierConfig())
    train_s = time.perf_counter() - started
    appeals = [(r.title, r.content) for r in rows]
    batch = (appeals * (batch_size // len(appeals) + 1))[:batch_size]
    model.classify_many(batch[:10])
    started = time.perf_counter()
    for title, content in batch:
        model.classify(title, content)
    single_ms = (time.perf_counter() - started) * 1000 / len(batch)
    started = time.perf_counter()
    model.classify_many(batch)
    batch_ms = (time.perf_counter() - started) * 1000 / len(batch)
    return Cost(train_s, single_ms, batch_ms, len(batch))


def results_markdown(
    result: Evaluation,
    *,
    heldout: Sequence[LabelledAppeal],
    train: int,
    cv: Evaluation,
    cost: Cost,
    digest: str,
) -> str:
    """The measured-results block of docs/classification.md."""
    names = {c.code: c.name_zh for c in taxonomy.top_levels()}
    titles = {row.id: row.title for row in heldout}
    lines = [
        f"Held-out rows: **{result.rows}** in `{HELDOUT_FILE}` (SHA-256 `{digest[:16]}`); "
        f"train rows: {train}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| top-level accuracy (held-out, scored once) | **{result.top_level_accuracy:.1%}** "
        f"({result.top_level_correct}/{result.rows}) |",
        f"| leaf accuracy (held-out, scored once) | **{result.leaf_accuracy:.1%}** "
        f"({result.leaf_correct}/{result.rows}) |",
        f"| answered 1901 for low confidence (held-out) | {result.fell_back} |",
        f"| 5-fold CV on train rows: top level / leaf | {cv.top_level_accuracy:.1%} / "
        f"{cv.leaf_accuracy:.1%} |",
        f"| training (start-up, after imports) | {cost.train_s:.2f} s |",
        f"| `classify`, per appeal | {cost.single_ms:.3f} ms |",
        f"| `classify_many` of {cost.batch_size}, per appeal | {cost.batch_ms:.3f} ms |",
        "",
        "Per top-level category (correct/total):",
        "",
        "| code | category | held-out | 5-fold CV (train) |",
        "|---|---|---|---|",
    ]
    for code, (ok, n) in result.per_top_level.items():
        cv_ok, cv_n = cv.per_top_level.get(code, (0, 0))
        lines.append(f"| {code} | {names.get(code, '?')} | {ok}/{n} | {cv_ok}/{cv_n} |")
    lines += ["", "Top-level misses (held-out): id, label → prediction, title:", ""]
    lines += [
        f"- {rid}: {label} → {pred} {titles.get(rid, '')}" for rid, label, pred in result.confusions
    ] or ["- none"]
    return "\n".join(lines)


DOCS = Path(__file__).resolve().parents[1] / "docs" / "classification.md"
_START, _END = "<!-- results:start -->", "<!-- results:end -->"


def write_docs(block: str) -> None:
    """Replace the results block of docs/classification.md."""
    text = DOCS.read_text("utf-8")
    head, _, rest = text.partition(_START)
    _, _, tail = rest.partition(_END)
    DOCS.write_text(f"{head}{_START}\n{block}\n{_END}{tail}", "utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--cv`` (train folds), ``--evaluate`` (held-out), ``--write-docs``."""
    parser = argparse.ArgumentParser(prog="python -m tools.classifier_report")
    parser.add_argument("--cv", action="store_true", help="5-fold CV on the train rows only")
    parser.add_argument("--evaluate", action="store_true", help="accuracy on the held-out rows")
    parser.add_argument("--write-docs", action="store_true", help="update docs/classification.md")
    args = parser.parse_args(argv)
    train = train_rows()
    cv = cross_validation(train, ClassifierConfig())
    print(
        f"5-fold CV on {len(train)} train rows: top level {cv.top_level_accuracy:.1%}, "
        f"leaf {cv.leaf_accuracy:.1%}"
    )
    if not (args.evaluate or args.write_docs):
        names = {c.code: c.name_zh for c in taxonomy.top_levels()}
        for code, (ok, n) in cv.per_top_level.items():
            print(f"  {code} {names.get(code, '?')}: {ok}/{n}")
        return 0
    heldout = heldout_rows()
    result = evaluate(default_model(), heldout)
    block = results_markdown(
        result,
        heldout=heldout,
        train=len(train),
        cv=cv,
        cost=measure_cost(train),
        digest=heldout_digest(),
    )
    print(block)
    if args.write_docs:
        write_docs(block)
        print(f"\nwrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
