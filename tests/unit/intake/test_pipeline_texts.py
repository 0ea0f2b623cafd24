"""A group's compared texts normalized in one call are each appeal's ``text_of``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake import pipeline, repeats
from services.intake.pipeline import compared_texts

# Characters whose normalization depends on their neighbours or changes their length, and the
# join itself: a final sigma (its lower case looks at the next letter), combining marks (they
# compose with the letter before), full-width forms, compatibility ideographs and radicals
# (NFKC maps them onto unified ideographs), the dotted capital I (two characters in lower
# case), underscores and punctuation (not kept), line breaks, and the boilerplate phrases.
_PIECES = st.sampled_from(
    [
        "路灯不亮",
        "ΣΑΣ",
        "Σ",
        "e",
        "\u0301",
        "\u0308",
        "ｌｉｇｈｔ，",
        "\u3000",
        "\uf900",
        "\u2f00",
        "İ",
        "_",
        "，。！",
        "\n",
        pipeline._JOIN,
        "来电人反映",
        "诉求：",
        "请尽快处理",
        "13957123468",
        "ß",
        "ﬁ",
        "가",
        "\u1100",
        "\u1161",
    ]
)
_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=6).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_TEXT, _TEXT), max_size=12))
def test_compared_texts_are_each_text_of(pairs: list[tuple[str, str]]) -> None:
    assert compared_texts(pairs) == [repeats.text_of(t, c) for t, c in pairs]


def test_a_groups_texts_are_normalized_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """One ``normalize_text`` for a group's texts; texts holding the join are taken alone."""
    calls: list[str] = []
    real = repeats.normalize_text

    def counted(text: str) -> str:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(repeats, "normalize_text", counted)
    pairs = [("路灯不亮", f"北海街道塔山社区{n}号门口的路灯坏了，请尽快处理。") for n in range(50)]
    expected = [real(f"{t}{c}") for t, c in pairs]
    assert compared_texts(pairs) == expected
    assert len(calls) == 1
    calls.clear()
    joined = [*pairs, ("路灯", f"坏了{pipeline._JOIN}")]
    assert compared_texts(joined) == [*expected, real(f"路灯坏了{pipeline._JOIN}")]
    assert len(calls) == len(joined)  # one each, none joined
