"""The fast NFKC gives exactly what ``unicodedata.normalize`` gives, on any text."""

from __future__ import annotations

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.intake.nfkc import nfkc

# Full-width forms, combining marks that compose with what folding yields, and CJK.
NEAR = "ＡＢａｂ０９，：？！（）　\u0301\u0308\u3099ｶﾞ①½ﬁ㈠小区路灯abc ,.?"


@settings(max_examples=500)
@given(st.text())
def test_any_text(text: str) -> None:
    assert nfkc(text) == unicodedata.normalize("NFKC", text)


@settings(max_examples=500)
@given(st.text(alphabet=NEAR, max_size=40))
@example("Ａ\u0301")  # a folded letter then a mark that composes with it
@example("小区门口的路灯坏了，晚上很黑。")
def test_text_near_the_folded_characters(text: str) -> None:
    assert nfkc(text) == unicodedata.normalize("NFKC", text)


def test_every_character_alone_and_after_a_full_width_letter() -> None:
    for code in range(0x110000):
        if 0xD800 <= code < 0xE000:
            continue
        for text in (chr(code), "Ｅ" + chr(code)):
            assert nfkc(text) == unicodedata.normalize("NFKC", text), hex(code)
