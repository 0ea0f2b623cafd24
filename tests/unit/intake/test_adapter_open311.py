"""The Open311 adapter refuses what GeoReport v2 would not take: a service group as the service,
a location that is blank or only an ``address_id``, a ``media_url`` that is not a web address."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from services.intake.adapters import PayloadError, parse_open311
from services.intake.channels import get_channel
from shared import taxonomy

OPEN311 = get_channel("open311-public-api")


def post(**changes: Any) -> Any:
    """A GeoReport v2 POST /requests form with the given changes (None drops a field)."""
    fields: dict[str, Any] = {
        "service_code": "0102",
        "lat": "30.27",
        "long": "120.15",
        "description": "路灯不亮",
    }
    fields.update(changes)
    body = {k: v for k, v in fields.items() if v is not None}
    return parse_open311(urlencode(body, doseq=True).encode(), OPEN311)


def refused(**changes: Any) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        post(**changes)
    return caught.value


def test_a_service_group_is_not_a_service() -> None:
    group = taxonomy.top_levels()[0].code
    error = refused(service_code=group)
    assert error.field == "service_code"
    assert group in error.message and taxonomy.children(group)[0].code in error.message


def test_every_leaf_is_a_service() -> None:
    assert taxonomy.leaves()
    for leaf in taxonomy.leaves():
        assert post(service_code=leaf.code).category_code == leaf.code


def test_a_blank_address_string_is_no_location() -> None:
    error = refused(lat=None, long=None, address_string="   ")
    assert error.field == "lat"


def test_a_blank_address_string_next_to_a_point_is_ignored() -> None:
    draft = post(address_string=" \t ")
    assert not draft.address and (draft.latitude, draft.longitude) == (30.27, 120.15)


def test_an_address_id_alone_is_refused() -> None:
    error = refused(lat=None, long=None, address_id="A-17")
    assert error.field == "address_id"
    assert "cannot be resolved" in error.message
    assert "lat" in error.message and "address_string" in error.message


def test_an_address_id_with_a_location_is_kept() -> None:
    draft = post(lat=None, long=None, address_string="延安路1号", address_id=" A-17 ")
    assert draft.extra["address_id"] == "A-17"
    assert post(address_id="A-18").extra["address_id"] == "A-18"


def test_a_blank_address_id_is_not_kept() -> None:
    assert "address_id" not in post(address_id="  ").extra


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "ftp://files.example.cn/p.jpg",
        "data:image/png;base64,AAAA",
        "file:///etc/passwd",
        "https://",
        "//cdn.example.cn/p.jpg",
        "photo.jpg",
    ],
)
def test_media_url_must_be_a_web_address(url: str) -> None:
    error = refused(media_url=url)
    assert error.field == "media_url"


@pytest.mark.parametrize(
    "url", ["https://ssp.example.cn/p/9931.jpg", "HTTP://cg.example.cn/media/1842.jpg?x=1"]
)
def test_web_media_urls_are_kept(url: str) -> None:
    assert post(media_url=f" {url} ").extra["media_url"] == url


def test_an_empty_media_url_is_no_media() -> None:
    assert "media_url" not in post(media_url="").extra
