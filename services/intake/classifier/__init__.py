"""Category classification of Chinese appeal text into the taxonomy's leaf codes.

Method (see docs/classification.md): each appeal becomes four blocks of features — the
character unigrams and bigrams of its title, those of its content, the cue words of
``data/cues.yaml`` that it contains, and the character n-grams of its closing clause — each block
TF-IDF weighted (sublinear term frequency), scaled to unit length and then by its block weight.
Two one-vs-rest ridge classifiers are fitted at first use on the *train* rows of
``data/appeals_labelled.csv``: one over the leaves and one over the top levels. A leaf's score is
its own score plus ``top_level_weight`` times its top level's; both are folded into one weight
matrix, so scoring a batch of appeals is one sparse-by-dense matrix product. The best leaf wins and
gives the top level. Confidence is a softmax over the scores; below ``min_confidence`` for the top
level the answer is ``1901`` (other appeals) with the model's guess kept as the first alternative.

Fitting takes a fraction of a second (numpy and scipy only), so the service calls ``warm_up()`` at
start-up; prediction is a fraction of a millisecond per appeal, less in batches
(``classify_many``). Modules: ``features`` (text → features, the cue words), ``model`` (the
ridge model and its decision), ``labelled`` (the labelled set). Cross-validation, held-out
scoring, cost measurement and the docs' results block are offline: ``tools/classifier_report.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from services.intake.classifier.features import BLOCKS, cue_hits, cues, features, normalize
from services.intake.classifier.labelled import (
    HELDOUT_FILE,
    LABELLED_FILE,
    LabelledAppeal,
    heldout_rows,
    load_labelled,
    train_rows,
)
from services.intake.classifier.model import (
    OTHER,
    Alternative,
    Appeal,
    Classification,
    ClassifierConfig,
    LinearModel,
)

__all__ = [
    "BLOCKS",
    "HELDOUT_FILE",
    "LABELLED_FILE",
    "OTHER",
    "Alternative",
    "Appeal",
    "Classification",
    "ClassifierConfig",
    "LabelledAppeal",
    "LinearModel",
    "classify",
    "classify_many",
    "cue_hits",
    "cues",
    "default_model",
    "features",
    "heldout_rows",
    "load_labelled",
    "normalize",
    "train_rows",
    "warm_up",
]


@cache
def default_model() -> LinearModel:
    """The model trained on the train split with the default config (built on first use)."""
    return LinearModel.train(train_rows(), ClassifierConfig())


def classify(title: str, content: str = "") -> Classification:
    """Classify an appeal's title and content into a taxonomy leaf (``1901`` when unsure)."""
    return default_model().classify(title, content)


def classify_many(appeals: Iterable[Appeal | str]) -> list[Classification]:
    """Classify many ``(title, content)`` pairs (or plain texts) at once; same answers as
    ``classify`` one by one, at a fraction of the cost per appeal."""
    return default_model().classify_many(appeals)


def warm_up() -> None:
    """Train the default model now (call at service start-up)."""
    default_model().classify("路灯不亮", "小区门口路灯坏了")
