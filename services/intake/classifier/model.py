"""The model: block-weighted TF-IDF rows scored by folded leaf and top-level ridge classifiers.

Kept on numpy/scipy rather than scikit-learn: with the same features sklearn's FeatureUnion of
TfidfVectorizers and Ridge gives the same held-out accuracy but costs ~2 ms per ``classify``
against ~0.3 ms here, is slower per batch of 1,000 (0.17 against 0.13 ms an appeal), fits
slower and adds ~0.9 s of import at start-up (docs/classification.md has the numbers).

Deterministic: rows are sorted by id before fitting, the fit is a closed-form solve, features and
labels are in sorted order, ties go to the lower code.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from services.intake.classifier.features import BLOCKS, features
from services.intake.classifier.labelled import LabelledAppeal

if TYPE_CHECKING:
    from numpy.typing import NDArray

OTHER = "1901"
_TOKEN_OK = re.compile(r"[\u4e00-\u9fffA-Za-z]")

Appeal = tuple[str, str]
"""An appeal's ``(title, content)``."""


@dataclass(frozen=True, slots=True)
class ClassifierConfig:
    """The model's knobs; the defaults were chosen by cross-validation on the train rows."""

    title_weight: float = 1.0
    content_weight: float = 1.0
    cue_weight: float = 0.4
    closing_weight: float = 0.5
    top_level_weight: float = 1.5
    ridge_alpha: float = 1.0
    min_df: int = 2
    temperature: float = 0.2
    min_confidence: float = 0.2

    def block_weights(self) -> NDArray[np.float64]:
        """The weight of each feature block, in ``BLOCKS`` order."""
        return np.array(
            [self.title_weight, self.content_weight, self.cue_weight, self.closing_weight]
        )


@dataclass(frozen=True, slots=True)
class Alternative:
    """A candidate leaf and its probability."""

    code: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Classification:
    """The chosen leaf (or ``1901``), its top level, how sure, and the runners-up."""

    code: str
    top_level: str
    confidence: float
    top_level_confidence: float
    alternatives: tuple[Alternative, ...] = ()
    low_confidence: bool = False


_NOTHING = Classification(OTHER, OTHER[:2], 0.0, 0.0, (), low_confidence=True)


@dataclass(frozen=True, eq=False)
class LinearModel:
    """Block-weighted TF-IDF features scored by folded leaf and top-level ridge classifiers."""

    config: ClassifierConfig
    labels: tuple[str, ...]
    vocabulary: dict[str, int]
    idf: NDArray[np.float64]
    blocks: NDArray[np.intp]  # each feature's block, an index into ``BLOCKS``
    weights: NDArray[np.float64]  # (features, labels)
    bias: NDArray[np.float64]  # (labels,)
    top_of: NDArray[np.intp]  # (labels,): each leaf's top level, an index into the top levels

    @classmethod
    def train(cls, rows: Sequence[LabelledAppeal], config: ClassifierConfig) -> LinearModel:
        """Fit the leaf and top-level classifiers on labelled rows (their order does not matter)."""
        ordered = sorted(rows, key=lambda row: row.id)
        bags = [features(row.title, row.content) for row in ordered]
        frequency: Counter[str] = Counter()
        for bag in bags:
            frequency.update(set(bag))
        kept = sorted(f for f, n in frequency.items() if n >= config.min_df)
        vocabulary = {feature: i for i, feature in enumerate(kept)}
        total = len(ordered)
        idf = np.array([math.log((1 + total) / (1 + frequency[f])) + 1 for f in kept])
        blocks = np.array([BLOCKS.index(f[0]) for f in kept], dtype=np.intp)
        matrix = _matrix(bags, vocabulary, idf, blocks, config.block_weights())

        labels = tuple(sorted({row.category_code for row in ordered}))
        tops = tuple(sorted({row.top_level for row in ordered}))
        leaf_index = {label: i for i, label in enumerate(labels)}
        top_index = {top: i for i, top in enumerate(tops)}
        # One-vs-rest targets (+1 for the row's class, -1 for every other), leaves then top levels.
        targets = -np.ones((total, len(labels) + len(tops)))
        rows_at = np.arange(total)
        targets[rows_at, [leaf_index[row.category_code] for row in ordered]] = 1.0
        targets[rows_at, [len(labels) + top_index[row.top_level] for row in ordered]] = 1.0
        coef, intercept = _ridge(matrix, targets, config.ridge_alpha)
        top_of = np.array([top_index[label[:2]] for label in labels], dtype=np.intp)
        top_columns = len(labels) + top_of
        weights = coef[:, : len(labels)] + config.top_level_weight * coef[:, top_columns]
        bias = intercept[: len(labels)] + config.top_level_weight * intercept[top_columns]
        return cls(
            config=config,
            labels=labels,
            vocabulary=vocabulary,
            idf=idf,
            blocks=blocks,
            weights=np.ascontiguousarray(weights),
            bias=bias,
            top_of=top_of,
        )

    def scores(self, appeals: Sequence[Appeal]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """One row of leaf scores per appeal, and whether the appeal had any known feature."""
        bags = [features(title, content) for title, content in appeals]
        matrix = _matrix(bags, self.vocabulary, self.idf, self.blocks, self.config.block_weights())
        known = np.diff(matrix.indptr) > 0
        return np.asarray(matrix @ self.weights) + self.bias, known

    def classify_many(self, appeals: Iterable[Appeal | str]) -> list[Classification]:
        """Classify many appeals at once (a plain string is taken as the content)."""
        pairs = [("", item) if isinstance(item, str) else item for item in appeals]
        if not pairs:
            return []
        scores, known = self.scores(pairs)
        peak = scores.max(axis=1, keepdims=True)
        weights = np.exp((scores - peak) / self.config.temperature)
        probabilities = weights / weights.sum(axis=1, keepdims=True)
        top_probabilities = np.zeros((len(pairs), int(self.top_of.max()) + 1))
        np.add.at(top_probabilities.T, self.top_of, probabilities.T)
        # stable sort on -p: equal probabilities keep label (code) order
        ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :4]
        results = []
        for i, (title, content) in enumerate(pairs):
            if not known[i] or not _TOKEN_OK.search(title + content):
                results.append(_NOTHING)
                continue
            order = ranked[i]
            leaf = self.labels[order[0]]
            leaf_p = round(float(probabilities[i, order[0]]), 4)
            top_p = round(float(top_probabilities[i, self.top_of[order[0]]]), 4)
            alternatives = tuple(
                Alternative(self.labels[j], round(float(probabilities[i, j]), 4)) for j in order[1:]
            )
            if top_p < self.config.min_confidence:
                guess = (Alternative(leaf, leaf_p), *alternatives[:2])
                results.append(Classification(OTHER, OTHER[:2], leaf_p, top_p, guess, True))
            else:
                results.append(Classification(leaf, leaf[:2], leaf_p, top_p, alternatives))
        return results

    def classify(self, title: str, content: str = "") -> Classification:
        """The best leaf for one appeal, or ``1901`` when unsure (same as a batch of one)."""
        return self.classify_many([(title, content)])[0]


def _ridge(
    matrix: sparse.csr_matrix, targets: NDArray[np.float64], alpha: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Ridge regression of every target column at once, solved in its dual form.

    With far fewer rows (about a thousand) than features (about ten thousand) the dual is one
    dense ``rows × rows`` solve: ``w = Xᵀ(XXᵀ + 1 + αI)⁻¹y``, where the ``+ 1`` is a constant
    feature whose weight is the (equally regularized) intercept.
    """
    gram = (matrix @ matrix.T).toarray() + 1.0
    gram[np.diag_indices_from(gram)] += alpha
    dual = np.linalg.solve(gram, targets)
    return np.asarray(matrix.T @ dual), dual.sum(axis=0)


def _matrix(
    bags: Sequence[Sequence[str]],
    vocabulary: dict[str, int],
    idf: NDArray[np.float64],
    blocks: NDArray[np.intp],
    block_weights: NDArray[np.float64],
) -> sparse.csr_matrix:
    """Rows of block-wise sublinear TF-IDF, each block scaled to unit length times its weight.

    A row's values depend on that row alone (and are summed in the same order), so an appeal
    gets bit-for-bit the same row whether it is featurized alone or in a batch.
    """
    lookup = vocabulary.get
    columns: list[int] = []
    counts: list[int] = []
    sizes: list[int] = []
    for bag in bags:
        counted = Counter(bag)
        columns.extend([lookup(feature, -1) for feature in counted])
        counts.extend(counted.values())
        sizes.append(len(counted))
    all_columns = np.array(columns, dtype=np.intp)
    known = all_columns >= 0
    rows_at = np.repeat(np.arange(len(bags)), sizes)[known]
    cols = all_columns[known]
    values = (1.0 + np.log(np.array(counts, dtype=np.float64)[known])) * idf[cols]
    block_of = blocks[cols]
    cell = rows_at * len(block_weights) + block_of
    norms = np.sqrt(
        np.bincount(cell, weights=values * values, minlength=len(bags) * len(block_weights))
    )
    values *= block_weights[block_of] / norms[cell]
    order = np.lexsort((cols, rows_at))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows_at, minlength=len(bags)))))
    return sparse.csr_matrix(
        (values[order], cols[order].astype(np.int32), indptr),
        shape=(len(bags), len(vocabulary)),
    )
