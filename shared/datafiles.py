"""Loading YAML data files (routing rules, org charts, profiles, calendars) with errors that name
the entry and the field at fault."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from shared.errors import DomainError, describe_problem


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a data file was refused: which entry, which field, what is wrong."""

    entry: str | None  # e.g. "rule 'repeat-task-force'"; None for the file as a whole
    field: str  # dotted path inside the entry, e.g. "match.categories[1]"
    message: str

    def __str__(self) -> str:
        if self.entry and self.field:
            return f"{self.entry} field {self.field}: {self.message}"
        if self.entry:
            return f"{self.entry}: {self.message}"
        if self.field:
            return f"field {self.field}: {self.message}"
        return f"the file {self.message}"


class DataFileError(DomainError, ValueError):
    """A data file refused as a whole; ``problems`` lists every reason, the message the first."""

    kind = "data file"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        first = str(self.problems[0]) if self.problems else "refused"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{self.kind} refused: {first}{more}")

    def body(self) -> dict[str, Any]:
        return {**super().body(), "problems": [describe_problem(p) for p in self.problems]}


def packaged_text(package: str, name: str) -> str:
    """The text of a data file shipped inside ``package`` (e.g. ``shared.data``)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def parse_yaml(text: str, error: type[DataFileError]) -> dict[str, Any]:
    """Parse a YAML mapping, or raise ``error`` naming the line and column that broke."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise error([Problem(None, "", f"does not parse at {where}: {problem}")]) from None
    except RecursionError:
        # PyYAML composes nested collections recursively: a few kilobytes of "[[[[" or "{a: {a:"
        # exhaust the interpreter's stack. No data file of ours nests more than a few levels.
        raise error(
            [Problem(None, "", "does not parse: its collections are nested too deeply")]
        ) from None
    if not isinstance(document, dict):
        raise error([Problem(None, "", "must hold a mapping at the top level")])
    return document


def entry_label(raw: Any, section: str, index: int, noun: str, key: str) -> str:
    """How to name entry ``index`` of ``section``: by its id when it has one, else by position."""
    try:
        ident = raw[section][index][key]
    except (KeyError, IndexError, TypeError):
        ident = None
    return f"{noun} {ident!r}" if isinstance(ident, str) else f"{noun} #{index + 1}"


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problems_from_validation(
    exc: ValidationError, raw: Any, *, section: str, noun: str, key: str
) -> list[Problem]:
    """Turn pydantic's errors into problems that name the entry and the field at fault."""
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = err["msg"].removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == section:
            # A list section names its entry by ``key``; a mapping section by the mapping key.
            if isinstance(loc[1], int):
                label = entry_label(raw, section, loc[1], noun, key)
            else:
                label = f"{noun} {loc[1]!r}"
            problems.append(Problem(label, _dotted(loc[2:]), message))
        else:
            problems.append(Problem(None, _dotted(loc), message))
    return problems
