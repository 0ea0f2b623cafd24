"""NFKC for Chinese appeal text, without paying for a full normalization on every call (intake's
classifier and repeat detection, dispatch's keyword rules).

Chinese text is almost never NFKC as typed: its full-width punctuation (，：？) and spaces fold
to ASCII. ``unicodedata.normalize`` then normalizes the whole text (~25 µs for 200 characters);
folding just those characters first, by their own compatibility decomposition, leaves text that
the quick check passes (~4 µs). The result is the same: NFKC composes the full compatibility
decomposition, and a character replaced by its own decomposition decomposes to the same.

The fold replaces each distinct full-width character found with ``str.replace`` (a text holds a
few distinct ones, its commas many times): a ``re.sub`` with a Python callback paid a call for
every occurrence, about half of the whole function's time on a typical appeal.
"""

from __future__ import annotations

import re
import unicodedata

# Full-width ASCII forms and the ideographic space: each decomposes to one ASCII character.
_FULL_WIDTH = re.compile("[\uff01-\uff5e\u3000]")
_FOLD = {chr(c): unicodedata.normalize("NFKD", chr(c)) for c in [*range(0xFF01, 0xFF5F), 0x3000]}


def nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)``, faster on typical Chinese text."""
    if unicodedata.is_normalized("NFKC", text):
        return text
    folded = text
    for char in set(_FULL_WIDTH.findall(text)):
        folded = folded.replace(char, _FOLD[char])
    if folded is not text and unicodedata.is_normalized("NFKC", folded):
        return folded
    return unicodedata.normalize("NFKC", folded)
