"""The labelled appeals: train rows the model learns from, held-out rows it is scored on."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

from shared import taxonomy

_DATA = "services.intake.data"
LABELLED_FILE = "appeals_labelled.csv"
HELDOUT_FILE = "appeals_heldout.csv"


@dataclass(frozen=True, slots=True)
class LabelledAppeal:
    """One row of the labelled set."""

    id: str
    category_code: str
    split: str
    title: str
    content: str

    @property
    def top_level(self) -> str:
        """The row's top-level code."""
        return self.category_code[:2]


def data_text(name: str) -> str:
    """The text of one of intake's data files."""
    return resources.files(_DATA).joinpath(name).read_text("utf-8")


def load_labelled(text: str | None = None) -> list[LabelledAppeal]:
    """The labelled appeals: the train file then the held-out file, unless ``text`` is given."""
    if text is None:
        return load_labelled(data_text(LABELLED_FILE)) + load_labelled(data_text(HELDOUT_FILE))
    rows = [LabelledAppeal(**row) for row in csv.DictReader(text.splitlines())]
    for row in rows:
        if not taxonomy.is_known(row.category_code) or not taxonomy.get(row.category_code).is_leaf:
            raise ValueError(f"{row.id}: {row.category_code!r} is not a taxonomy leaf")
        if row.split not in ("train", "heldout"):
            raise ValueError(f"{row.id}: split {row.split!r} is neither train nor heldout")
    return rows


def train_rows() -> list[LabelledAppeal]:
    """The rows the shipped model learns from (never the held-out ones)."""
    return [row for row in load_labelled() if row.split == "train"]


def heldout_rows() -> list[LabelledAppeal]:
    """The held-out rows: scored once the model is frozen, never used to tune it."""
    return [row for row in load_labelled() if row.split == "heldout"]
