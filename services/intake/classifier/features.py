"""Features of an appeal: character n-grams of title, content and closing clause, and cue words.

Each feature is prefixed by its block (``BLOCKS``): ``t:`` title, ``c:`` content, ``q:`` cue,
``e:`` closing clause. The cue words are data (``services/intake/data/cues.yaml``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cache
from importlib import resources

import yaml

from services.intake.nfkc import nfkc
from shared import taxonomy

_DATA = "services.intake.data"
CUES_FILE = "cues.yaml"

_CLAUSE = re.compile(r"[，,。！？!?；;\n]")
_CLOSING = re.compile(r"[，,。！？!?；;：:\n]")
_RUN = re.compile(r"[\u4e00-\u9fff]+|[a-z0-9]+")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_INTENT = frozenset({"17", "18"})
BLOCKS = "tcqe"
"""Feature blocks by prefix letter: title, content, cues, closing clause."""


def normalize(text: str) -> str:
    """NFKC (full-width → half-width), lower case, whitespace collapsed."""
    return " ".join(nfkc(text).lower().split())


def _ngrams(text: str, tag: str) -> list[str]:
    """Character unigrams and bigrams of each CJK run; Latin letters and digits as whole words."""
    out: list[str] = []
    for run in _RUN.findall(text):
        if _CJK.match(run):
            out.extend(tag + char for char in run)
            out.extend(tag + run[i : i + 2] for i in range(len(run) - 1))
        else:
            out.append(tag + run)
    return out


@cache
def cues() -> dict[str, tuple[str, ...]]:
    """The cue words of each leaf (and of a few top levels), from ``data/cues.yaml``."""
    text = resources.files(_DATA).joinpath(CUES_FILE).read_text("utf-8")
    # libyaml's loader when the wheel has it: the pure-Python one costs ~14 ms at start-up.
    loaded = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(loaded, dict):
        raise ValueError(f"{CUES_FILE}: expected a mapping of taxonomy code to cue words")
    result: dict[str, tuple[str, ...]] = {}
    for code, words in loaded.items():
        if not isinstance(code, str) or not taxonomy.is_known(code):
            raise ValueError(f"{CUES_FILE}: {code!r} is not a taxonomy code (quote it)")
        if len(code) == 4 and not taxonomy.get(code).is_leaf:
            raise ValueError(f"{CUES_FILE}: {code!r} is neither a leaf nor a top level")
        if (
            not isinstance(words, list)
            or not words
            or not all(isinstance(w, str) and w.strip() for w in words)
        ):
            raise ValueError(f"{CUES_FILE}: {code!r} needs a non-empty list of words")
        result[code] = tuple(words)
    return result


@cache
def _cue_index() -> tuple[dict[str, tuple[str, ...]], tuple[int, ...]]:
    """Cue word → the codes it is a cue for, and the distinct cue lengths (longest first)."""
    index: dict[str, list[str]] = defaultdict(list)
    for code, words in cues().items():
        for word in words:
            index[normalize(word)].append(code)
    lengths = tuple(sorted({len(word) for word in index}, reverse=True))
    return {word: tuple(codes) for word, codes in index.items()}, lengths


def _cue_words(text: str) -> set[str]:
    """The distinct cue words occurring in already normalized text."""
    index, lengths = _cue_index()
    found: set[str] = set()
    for size in lengths:
        for start in range(len(text) - size + 1):
            piece = text[start : start + size]
            if piece in index:
                found.add(piece)
    return found


def cue_hits(title: str, content: str = "") -> dict[str, int]:
    """How many cue words of each leaf (or top level) occur in the title plus in the content.

    What the citizen *wants* (to ask, to suggest, to thank) is said up front; the intent cues of
    categories 17 and 18 count only in the title and the content's opening clause, so that a
    complaint ending "建议尽快整改" is not taken for a suggestion.
    """
    return _cue_hits(normalize(title), normalize(content))


def _cue_hits(title: str, content: str) -> dict[str, int]:
    """``cue_hits`` of already normalized text."""
    index, _ = _cue_index()
    hits: dict[str, int] = defaultdict(int)
    for word in _cue_words(title):
        for code in index[word]:
            hits[code] += 1
    if content:
        opening = _CLAUSE.split(content, maxsplit=1)[0]
        for word in _cue_words(content):
            for code in index[word]:
                if code[:2] not in _INTENT or word in opening:
                    hits[code] += 1
    return dict(hits)


def features(title: str, content: str = "") -> list[str]:
    """The features of one appeal, each prefixed by its block: ``t:`` title, ``c:`` content,
    ``q:`` cue (leaf or top-level code), ``e:`` closing clause (and ``e:?`` for a question)."""
    title_n, content_n = normalize(title), normalize(content)
    bag = _ngrams(title_n, "t:") + _ngrams(content_n, "c:")
    for code, count in sorted(_cue_hits(title_n, content_n).items()):
        bag.extend(["q:" + code] * count)
        if len(code) == 4:
            bag.extend(["q:" + code[:2]] * count)
    clauses = [part for part in _CLOSING.split(content_n) if part.strip()]
    if clauses:
        bag.extend(_ngrams(clauses[-1], "e:"))
    if "?" in content_n:
        bag.append("e:?")
    return bag
