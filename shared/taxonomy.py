"""The appeal category taxonomy: codes are a contract shared by every service."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class Category:
    """One node of the taxonomy: a two-digit top-level code or a four-digit leaf code."""

    code: str
    parent: str | None
    name_zh: str
    name_en: str

    @property
    def top_level(self) -> str:
        """The two-digit top-level code this category belongs to."""
        return self.code[:2]

    @property
    def is_leaf(self) -> bool:
        return self.parent is not None


@cache
def categories() -> dict[str, Category]:
    """Every category by code, in file order."""
    text = resources.files("shared.data").joinpath("taxonomy.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines())
    return {
        row["code"]: Category(row["code"], row["parent"] or None, row["name_zh"], row["name_en"])
        for row in rows
    }


def get(code: str) -> Category:
    """The category with this code; KeyError names the unknown code."""
    try:
        return categories()[code]
    except KeyError:
        raise KeyError(f"unknown category code {code!r}") from None


def is_known(code: str) -> bool:
    return code in categories()


def leaves() -> list[Category]:
    return [c for c in categories().values() if c.is_leaf]


def top_levels() -> list[Category]:
    return [c for c in categories().values() if not c.is_leaf]


def children(code: str) -> list[Category]:
    return [c for c in categories().values() if c.parent == code]
