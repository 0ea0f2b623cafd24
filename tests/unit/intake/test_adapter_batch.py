"""CSV and XLSX batches: good rows kept, each bad row reported with its number and reason."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import datetime, timedelta
from typing import Any

import pytest
from openpyxl import Workbook

from services.intake.adapters import PayloadError, parse_csv, parse_xlsx
from services.intake.adapters.batch import STANDARD_COLUMNS
from services.intake.canonical import TicketDraft
from services.intake.channels import get_channel

LETTERS = get_channel("petition-letters")  # csv, standard columns
PATROL = get_channel("grid-patrol-batch")  # csv, standard columns
MEDIATION = get_channel("mediation-room")  # csv, its own column names
TRANSFERS = get_channel("petition-national-transfer")  # xlsx, its own column names
VISITS = get_channel("enterprise-visit")  # xlsx, enterprise channel


def csv_bytes(rows: list[list[Any]], encoding: str = "utf-8-sig") -> bytes:
    """A CSV file as Excel would save it."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode(encoding)


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    """An XLSX workbook with one sheet."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


HEADER = ["编号", "受理时间", "姓名", "联系电话", "内容", "紧急程度", "网格编码", "备注"]


def test_good_and_bad_rows_are_reported_by_row_number() -> None:
    rows = [
        HEADER,
        [
            "A1",
            "2026-11-02 09:00",
            "马秀英",
            "13588345678",
            "物业不作为。电梯常坏",
            "一般",
            "339902001001001",
            "x",
        ],
        ["A2", "2026-11-02 09:30", "钟家明", "call me", "宅基地纠纷", "", "", ""],
        [],
        ["A3", "yesterday", "", "", "路灯不亮", "", "", ""],
        ["A4", "", "", "", "", "", "", "备注而已"],
        ["A5", "", "", "", "楼道堆物", "特急", "", ""],
        ["A1", "", "", "", "重复的编号", "", "", ""],
    ]
    result = parse_csv(csv_bytes(rows), PATROL)
    assert [n for n, _ in result.drafts] == [2, 7]
    good = result.drafts[0][1]
    assert (good.title, good.urgency, good.grid_code) == ("物业不作为", "normal", "339902001001001")
    assert good.extra == {"备注": "x"}
    assert result.drafts[1][1].urgency == "critical"
    problems = {e.row: (e.field, e.message) for e in result.errors}
    assert set(problems) == {3, 5, 6, 8}
    assert problems[3][0] == "联系电话"
    assert problems[5][0] == "受理时间"
    assert problems[6][0] == "内容"
    assert "first on row 2" in problems[8][1]
    assert "row 3, 联系电话" in str(next(e for e in result.errors if e.row == 3))


def test_gb18030_csv_from_excel_on_chinese_windows() -> None:
    data = csv_bytes([["标题", "内容"], ["停水", "整栋楼没水"]], encoding="gb18030")
    ((number, draft),) = parse_csv(data, LETTERS).drafts
    assert (number, draft.title, draft.content) == (2, "停水", "整栋楼没水")


def test_english_column_names_work_too() -> None:
    data = csv_bytes([["title", "content", "citizen_phone"], ["停水", "没水", "13812345678"]])
    assert parse_csv(data, LETTERS).drafts[0][1].citizen_phone == "13812345678"


def test_every_documented_column_has_a_chinese_and_an_english_name() -> None:
    assert STANDARD_COLUMNS
    for target, names in STANDARD_COLUMNS.items():
        assert target in names
        assert any("\u4e00" <= ch <= "\u9fff" for name in names for ch in name)
        assert target in TicketDraft.model_fields


def test_channel_specific_columns_replace_the_standard_ones() -> None:
    rows = [
        ["编号", "纠纷类别", "纠纷情况", "联系电话"],
        ["TJ1", "邻里纠纷", "楼上漏水", "13605881234"],
    ]
    draft = parse_csv(csv_bytes(rows), MEDIATION).drafts[0][1]
    assert (draft.external_id, draft.title, draft.content) == ("TJ1", "邻里纠纷", "楼上漏水")


def test_rows_of_blank_cells_are_skipped_whatever_their_first_cell() -> None:
    """Blank is every cell empty or whitespace (an ideographic space too); a row whose first
    cell is blank but another is not is a row like any other, numbered where it stands."""
    rows = [
        HEADER,
        ["", "", "", "", "", "", "", ""],
        [" ", "\u3000", "\t", "", "", "", "", ""],
        ["\u3000", "", "", "", "路灯不亮", "", "", ""],
        ["", "", "", "", "", "", "", "备注而已"],
        ["B1", "", "", "", "楼道堆物", "", "", ""],
    ]
    result = parse_csv(csv_bytes(rows), PATROL, max_rows=3)
    assert [n for n, _ in result.drafts] == [4, 6]
    assert [(e.row, e.field) for e in result.errors] == [(5, "内容")]
    with pytest.raises(PayloadError, match="more than 2 rows"):
        parse_csv(csv_bytes(rows), PATROL, max_rows=2)


@pytest.mark.parametrize(
    ("rows", "field", "row"),
    [
        ([["姓名", "电话"], ["张三", "138"]], "header", 1),
        ([["内容", "内容"], ["a", "b"]], "header", 1),
        ([[], ["", ""]], "file", None),
    ],
)
def test_file_level_problems_raise(rows: list[list[Any]], field: str, row: int | None) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_csv(csv_bytes(rows), LETTERS)
    assert (caught.value.field, caught.value.row) == (field, row)


def test_undecodable_csv_and_row_limit() -> None:
    with pytest.raises(PayloadError, match="UTF-8 or GB18030"):
        parse_csv(b"\xff\xfe\x00\x81\x30", LETTERS)
    rows = [["内容"], *[[f"第{i}件"] for i in range(5)]]
    with pytest.raises(PayloadError, match="more than 4 rows"):
        parse_csv(csv_bytes(rows), LETTERS, max_rows=4)
    assert len(parse_csv(csv_bytes(rows), LETTERS, max_rows=5).drafts) == 5


def test_xlsx_with_channel_columns_numbers_and_dates() -> None:
    header: list[Any] = [
        "信访件编号",
        "登记日期",
        "信访人",
        "证件号码",
        "联系电话",
        "信访目的",
        "主要内容",
    ]
    rows: list[list[Any]] = [
        header,
        ["X1", datetime(2025, 12, 4), "卢某", None, 13905711234, "房屋漏水", "屋顶漏水三年"],
        ["X2", datetime(2025, 12, 4), "齐某", "3301061990", None, "排污", "河水发黑"],
    ]
    result = parse_xlsx(xlsx_bytes(rows), TRANSFERS)
    ((number, draft),) = result.drafts
    assert number == 2
    assert draft.citizen_phone == "13905711234"  # an Excel number, not 13905711234.0
    assert draft.received_at is not None and draft.received_at.utcoffset() is not None
    (error,) = result.errors
    assert (error.row, error.field) == (3, "证件号码")


def test_xlsx_rows_keep_the_sheet_s_row_numbers() -> None:
    rows: list[list[Any]] = [[None], ["内容", "标题"], [None, None], ["河道垃圾多", "河道垃圾"]]
    ((number, draft),) = parse_xlsx(xlsx_bytes(rows), get_channel("media-exposure")).drafts
    assert number == 4
    assert draft.content == "河道垃圾多"


def test_enterprise_batch_rows_are_enterprise_appeals() -> None:
    rows = [["企业名称", "问题描述"], ["某公司", "用电增容慢"]]
    assert parse_xlsx(xlsx_bytes(rows), VISITS).drafts[0][1].is_enterprise is True


def test_not_a_workbook() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_xlsx(b"PK\x03\x04 not really a zip", TRANSFERS)
    assert caught.value.field == "file"


def test_a_damaged_sheet_is_a_file_error_not_a_crash() -> None:
    data = xlsx_bytes([["内容", "标题"], ["河道垃圾多", "河道垃圾"]])
    source, damaged = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(damaged, "w") as out:
        for name in source.namelist():
            broken = name == "xl/worksheets/sheet1.xml"
            out.writestr(
                name, b"<worksheet><sheetData><row r='1'><c" if broken else source.read(name)
            )
    with pytest.raises(PayloadError) as caught:
        parse_xlsx(damaged.getvalue(), TRANSFERS)
    assert caught.value.field == "file"


def test_a_duration_cell_is_kept_as_text() -> None:
    rows: list[list[Any]] = [
        ["内容", "标题", "时长"],
        ["河道垃圾多", "河道垃圾", timedelta(hours=26)],
    ]
    ((_, draft),) = parse_xlsx(xlsx_bytes(rows), get_channel("media-exposure")).drafts
    assert draft.extra == {"时长": "1 day, 2:00:00"}


def test_a_value_in_a_column_without_a_header_is_a_row_error() -> None:
    rows = [
        ["内容", "标题", ""],
        ["河道垃圾多", "河道垃圾", "", "多出来的"],
        ["井盖缺失", "井盖", ""],
    ]
    result = parse_csv(csv_bytes(rows), PATROL)
    (error,) = result.errors
    assert (error.row, error.field) == (2, "column 4")
    assert [n for n, _ in result.drafts] == [3]
