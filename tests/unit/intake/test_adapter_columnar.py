"""A CSV file built a column at a time gives exactly the rows the row-by-row path gives: the same
drafts (values, types, the fields set) and the same errors, whatever the file holds."""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.adapters import PayloadError, parse_csv
from services.intake.adapters.batch import (
    BATCH_MAPPING,
    STANDARD_COLUMNS,
    BatchResult,
    _for_columns,
    _records,
    _rows,
)
from services.intake.adapters.columnar import columnar_drafts
from services.intake.canonical import TicketDraft
from services.intake.channels import Channel, get_channel
from services.intake.mapping import parse_mapping

PATROL = get_channel("grid-patrol-batch")  # standard columns
MEDIATION = get_channel("mediation-room")  # its own column names
# An enterprise channel whose mapping keeps a column under extra and maps its own codes.
ENTERPRISE = dataclasses.replace(
    PATROL,
    code="enterprise-sheet",
    time_limit_profile="enterprise_2115",
    mapping=parse_mapping(
        {
            "extra.inspector": "巡查员",
            "urgency": {"path": "级别", "values": {"1": "normal", "2": "urgent", "3": None}},
            "is_enterprise": "涉企",
            "longitude": "经度",
        },
        model=TicketDraft,
        where="test",
    ),
)
# Mappings this path leaves wholly to the row-by-row one: joined columns and defaults.
JOINED = dataclasses.replace(
    PATROL,
    code="joined-sheet",
    mapping=parse_mapping(
        {
            "content": {"paths": ["内容", "备注"], "join": "\n"},
            "urgency": {"path": "级别", "default": "urgent"},
        },
        model=TicketDraft,
        where="test",
        defaults={"category_code": "0102"},
    ),
)
CHANNELS = [PATROL, MEDIATION, ENTERPRISE, JOINED]

NAMES = sorted(
    {name for names in STANDARD_COLUMNS.values() for name in names}
    | {"备注", "巡查员", "级别", "涉企", "", "a.b", "申请人", "纠纷类别", "纠纷情况", "登记时间"}
)
VALUES = [
    "",
    " ",
    "\u3000",
    "\xa0x\xa0",
    "A1",
    "A2",
    "a\x00b",
    "\x1c",
    "x\x7f",
    "13812345678",
    "138 1234 5678",
    "+86-138-1234-5678",
    "12",
    "１３８１２３４５６７８",
    "110101199003074514",
    "11010119900307451x",
    "1101011990030745",
    "0102",
    "0107",
    "9999",
    "339902001001001",
    "339902001001999",
    "2026-11-02 09:00",
    "2026/11/02",
    "1899-01-01",
    "2999-01-01",
    "1764547200",
    "一般",
    "紧急",
    "特急",
    "urgent",
    "1",
    "2",
    "3",
    "是",
    "否",
    "120.5",
    "30.1",
    "200",
    "-91",
    "nan",
    "inf",
    "张三",
    "  padded  ",
    "line\nbreak",
    "a@b.c",
    "x" * 129,
    "长" * 65,
    "路" * 201,
    "地" * 501,
    "物业不作为。电梯常坏了三天，老人上下楼很困难！",
    "我的电话13812345678，身份证110101199003074514",
    "燃气泄漏！",
    "…",
]
ODD = st.one_of(
    st.sampled_from(VALUES),
    st.text(alphabet="ab1 \u3000\x00\x1c\t\n。！？5@", max_size=8),
)
# Values a column of that name usually holds, so that most rows are good ones.
USUAL = {
    **dict.fromkeys(STANDARD_COLUMNS["external_id"] + ("编号",), ("A1", "A2", "B7", "C9")),
    **dict.fromkeys(STANDARD_COLUMNS["citizen_phone"], ("13812345678", "0575-8812345", "")),
    **dict.fromkeys(STANDARD_COLUMNS["citizen_id_number"], ("110101199003074514", "")),
    **dict.fromkeys(STANDARD_COLUMNS["received_at"] + ("登记时间",), ("2026-11-02 09:00", "")),
    **dict.fromkeys(STANDARD_COLUMNS["category_code"], ("0102", "0107", "")),
    **dict.fromkeys(STANDARD_COLUMNS["grid_code"], ("339902001001001", "")),
    **dict.fromkeys(STANDARD_COLUMNS["urgency"] + ("级别",), ("一般", "紧急", "urgent", "1", "2")),
    **dict.fromkeys(STANDARD_COLUMNS["is_enterprise"] + ("涉企",), ("是", "否", "")),
    **dict.fromkeys(STANDARD_COLUMNS["longitude"] + STANDARD_COLUMNS["latitude"], ("30.1", "")),
}
TEXTS = ("物业不作为。电梯常坏了三天！", "路灯不亮", "张三", "我的电话13812345678", "燃气泄漏", "")
CONTENT_COLUMNS = ["内容", "诉求内容", "content", "纠纷情况"]


def cells(name: str) -> st.SearchStrategy[str]:
    usual = st.sampled_from(USUAL.get(name, TEXTS))
    return st.one_of(usual, usual, usual, usual, usual, ODD)


def csv_bytes(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def row_by_row(data: bytes, channel: Channel) -> BatchResult:
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    return _rows(enumerate(reader, start=1), channel, max_rows=10_000)


def outcome(call: Any) -> Any:
    """What a parse gives, comparable field by field (types and the fields set included)."""
    try:
        result = call()
    except PayloadError as exc:
        return ("file error", exc.as_dict())
    out = []
    for number, row in result.rows:
        if isinstance(row, TicketDraft):
            fields = [(k, type(v), v) for k, v in row.__dict__.items()]
            extra = list(row.extra.items())
            out.append((number, fields, extra, sorted(row.model_fields_set)))
        else:
            out.append((number, row.as_dict()))
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    channel=st.sampled_from(CHANNELS),
    content=st.sampled_from(CONTENT_COLUMNS),
    others=st.lists(st.sampled_from(NAMES), max_size=14),
    data=st.data(),
)
def test_columns_give_the_rows_the_row_path_gives(
    channel: Channel, content: str, others: list[str], data: st.DataObject
) -> None:
    header = data.draw(st.permutations(list(dict.fromkeys([content, *others]))))
    whole = st.tuples(*(cells(name) for name in header)).map(list)
    ragged = st.lists(ODD, min_size=max(0, len(header) - 1), max_size=len(header) + 1)
    rows = data.draw(st.lists(st.one_of(whole, whole, whole, ragged), min_size=1, max_size=8))
    body = csv_bytes([header, *rows])
    assert outcome(lambda: parse_csv(body, channel)) == outcome(lambda: row_by_row(body, channel))


def test_a_varied_file_is_equal_and_mostly_columnar() -> None:
    header = ["编号", "受理时间", "诉求人", "联系电话", "身份证号", "标题", "内容", "地址"]
    header += ["网格编码", "分类编码", "紧急程度", "企业名称", "经度", "纬度", "巡查员", ""]
    good = [
        "G{n}",
        "2026-11-02 09:{n:02d}",
        "张三",
        "1381234{n:04d}",
        "110101199003074514",
        "路灯不亮",
        "小区门口路灯坏了，电话13812345678",
        "枫桥市越城区北海街道塔山社区",
        "339902001001001",
        "0102",
        "紧急",
        "",
        "120.5",
        "30.1",
        "网格员{n}",
        "",
    ]
    rows = [[cell.format(n=n) for cell in good] for n in range(40)]
    rows[3][6] = "内容\x00有控制字符"  # left to the row path, which drops the character
    rows[5][3] = "12"  # too short a phone: the row's error
    rows[7][0] = "G6"  # a repeat of row 8's external id (G6 is on the eighth data row)
    rows[9][9] = "9999"  # unknown category
    rows[11][15] = "stray"  # a value in the unnamed column
    rows[13][12] = ""  # longitude without latitude
    rows[15][5] = ""  # no title: derived from the content
    rows[17][11] = "某某公司"  # names its enterprise: an enterprise appeal
    rows[19] = rows[19][:8]  # a short row
    body = csv_bytes([header, *rows])
    new = outcome(lambda: parse_csv(body, PATROL))
    assert new == outcome(lambda: row_by_row(body, PATROL))
    # Five errors: the phone, the category, the unnamed value, half a pair, the repeat.
    assert sum(isinstance(r[1], list) for r in new) == 35
    full = BATCH_MAPPING.extended(PATROL.mapping)
    names, records = _records(
        enumerate(csv.reader(io.StringIO(body.decode(), newline="")), start=1),
        full,
        max_rows=100,
    )
    built = columnar_drafts(records, names, _for_columns(full, names), PATROL, {})
    # Every row but the six it leaves to the row path (control character, short phone, unknown
    # category, unnamed value, half a coordinate pair, short row) is built by columns.
    assert len(built) == 40 - 6
