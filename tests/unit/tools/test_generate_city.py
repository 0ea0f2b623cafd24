"""The demo city generator: the committed JSON is exactly what it writes."""

from __future__ import annotations

import json

from tools import generate_city


def test_committed_json_is_what_the_generator_writes_and_is_small() -> None:
    text = generate_city.data_path().read_text(encoding="utf-8")
    assert text == generate_city.render(generate_city.generate())
    assert len(text.encode()) < 2_000_000
    assert json.loads(text)["city"] == "339900"
    assert generate_city.main(["--check"]) == 0
