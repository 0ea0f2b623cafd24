"""The compared text less its non-word characters, by replacing each distinct one, is the join
of its word runs: what ``normalize_text`` and ``normalize_address`` gave before."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake import repeats
from shared.nfkc import nfkc

_RUNS = re.compile(r"[^\W_]+", re.UNICODE)

# Word characters, ``_``, punctuation and spaces of several scripts, more distinct non-word
# characters than the replacements the fast way makes before it hands the rest on.
_CHARS = (
    st.sampled_from(list("路灯不亮abcΣß_，。！？、,.!?;: \n\t-_/（）《》【】“”…—·①²½"))
    | st.characters()
)
_TEXT = st.lists(_CHARS, max_size=80).map("".join)


@settings(max_examples=1000, deadline=None)
@given(_TEXT)
def test_the_text_less_its_non_word_characters_is_the_join_of_its_word_runs(text: str) -> None:
    assert repeats._text_only(text) == "".join(_RUNS.findall(text))


def test_a_text_of_many_distinct_non_word_characters_is_still_the_join_of_its_runs() -> None:
    text = "".join(f"字{chr(0x2000 + i)}" for i in range(64)) + "_末"
    assert repeats._text_only(text) == "字" * 64 + "末"


@settings(max_examples=500, deadline=None)
@given(_TEXT, _TEXT)
def test_the_compared_text_and_the_address_key_are_as_before(title: str, content: str) -> None:
    folded = nfkc(f"{title}{content}").lower()
    assert repeats.text_of(title, content) == "".join(
        _RUNS.findall(repeats._BOILERPLATE.sub("", folded))
    )
    compact = "".join(_RUNS.findall(nfkc(content).lower()))
    expected = (
        (repeats._ADMIN_PREFIX.sub("", compact, count=1) or compact or None) if content else None
    )
    assert repeats.normalize_address(content) == expected
