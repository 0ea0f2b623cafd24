"""CSV and XLSX batch files: one appeal per row; bad rows are reported, good rows kept.

The header row names the columns. The documented columns (Chinese or English, any order; only a
content column is required) are in ``STANDARD_COLUMNS``; a channel's mapping may name its own
columns too (e.g. the petitions bureau's ``主要内容``), which are looked for first. Columns no
rule reads are kept in each draft's ``extra``. Row numbers are the spreadsheet's: the header is
row 1 of a CSV file; in a workbook, the row as Excel shows it. CSV files may be UTF-8 (with or
without BOM) or GB18030 (what Excel writes on a Chinese Windows).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from services.intake.adapters.columnar import columnar_drafts
from services.intake.adapters.common import preset_for, require_format
from services.intake.bodies import BodyTooLarge
from services.intake.canonical import TicketDraft
from services.intake.channels import Channel
from services.intake.errors import PayloadError
from services.intake.mapping import FieldMapping, apply_mapping, parse_mapping

MAX_ROWS = 10_000

STANDARD_COLUMNS: dict[str, tuple[str, ...]] = {
    "external_id": ("外部编号", "编号", "external_id"),
    "received_at": ("受理时间", "登记时间", "received_at"),
    "citizen_name": ("诉求人", "姓名", "citizen_name"),
    "citizen_phone": ("联系电话", "电话", "citizen_phone"),
    "citizen_id_number": ("身份证号", "证件号码", "citizen_id_number"),
    "title": ("标题", "诉求标题", "title"),
    "content": ("内容", "诉求内容", "content"),
    "address": ("地址", "事发地址", "address"),
    "longitude": ("经度", "longitude"),
    "latitude": ("纬度", "latitude"),
    "grid_code": ("网格编码", "grid_code"),
    "category_code": ("分类编码", "category_code"),
    "urgency": ("紧急程度", "urgency"),
    "is_enterprise": ("是否涉企", "is_enterprise"),
    "enterprise_name": ("企业名称", "enterprise_name"),
}
_URGENCY_VALUES = {
    "一般": "normal",
    "紧急": "urgent",
    "特急": "critical",
    "normal": "normal",
    "urgent": "urgent",
    "critical": "critical",
}

BATCH_MAPPING: FieldMapping = parse_mapping(
    {
        **{target: list(columns) for target, columns in STANDARD_COLUMNS.items()},
        "urgency": {"paths": list(STANDARD_COLUMNS["urgency"]), "values": _URGENCY_VALUES},
    },
    model=TicketDraft,
    where="batch",
)

BatchRow = tuple[int, TicketDraft | PayloadError]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Every data row of a batch file: its row number and its draft or what is wrong with it."""

    rows: tuple[BatchRow, ...]

    @property
    def drafts(self) -> tuple[tuple[int, TicketDraft], ...]:
        """The rows that became drafts."""
        return tuple((n, r) for n, r in self.rows if isinstance(r, TicketDraft))

    @property
    def errors(self) -> tuple[PayloadError, ...]:
        """What is wrong with each bad row (each error carries its row number)."""
        return tuple(r for _, r in self.rows if isinstance(r, PayloadError))


def _cell_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _header(cells: Sequence[Any], mapping: FieldMapping) -> list[str]:
    names = [_cell_text(c) for c in cells]
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise PayloadError("header", f"column {name!r} appears twice")
        seen.add(name)
    content = mapping.rule_for("content")
    if content is not None and not seen.intersection(content.paths):
        expected = " / ".join(content.paths)
        raise PayloadError("header", f"no content column (expected {expected})")
    return names


def _for_columns(mapping: FieldMapping, header: Sequence[str]) -> FieldMapping:
    """The mapping cut down to the file's columns: rows are flat, absent columns never match."""
    present = set(header)
    rules = []
    for rule in mapping.rules:
        paths = tuple(p for p in rule.paths if p in present)
        if paths:
            rules.append(dataclasses.replace(rule, paths=paths))
        elif rule.has_default:
            rules.append(rule)
    return FieldMapping(rules=tuple(rules), defaults=mapping.defaults)


def _row_outcome(
    number: int,
    cells: Sequence[Any],
    header: Sequence[str],
    mapping: FieldMapping,
    channel: Channel,
    preset: dict[str, Any],
) -> TicketDraft | PayloadError:
    """One data row's draft, or what is wrong with it (its row number on the error)."""
    unnamed = next(
        (
            i
            for i in range(len(cells))
            if (i >= len(header) or not header[i]) and _cell_text(cells[i])
        ),
        None,
    )
    if unnamed is not None:  # the value would be lost: say so instead
        message = "a value in a column the header row does not name; name it or remove it"
        return PayloadError(f"column {unnamed + 1}", message, row=number)
    row = {name: cells[i] for i, name in enumerate(header) if name and i < len(cells)}
    try:
        return apply_mapping(
            row,
            mapping,
            model=TicketDraft,
            channel_code=channel.code,
            tz=channel.tz,
            preset=preset,
        )
    except PayloadError as exc:
        return exc.at_row(number)


def _first_rows_only(rows: Iterable[BatchRow], mapping: FieldMapping) -> BatchResult:
    """The rows in order, each repeat of an earlier row's external id an error naming it."""
    out: list[BatchRow] = []
    first_row_of: dict[str, int] = {}
    for number, outcome in rows:
        if isinstance(outcome, TicketDraft) and outcome.external_id is not None:
            earlier = first_row_of.setdefault(outcome.external_id, number)
            if earlier != number:
                source = (mapping.rule_for("external_id") or BATCH_MAPPING.rules[0]).paths[0]
                message = f"duplicate external id {outcome.external_id!r} (first on row {earlier})"
                out.append((number, PayloadError(source, message, row=number)))
                continue
        out.append((number, outcome))
    return BatchResult(rows=tuple(out))


def _records(
    records: Iterable[tuple[int, Sequence[Any]]], mapping: FieldMapping, *, max_rows: int
) -> tuple[list[str], list[tuple[int, Sequence[Any]]]]:
    """The header (checked against ``mapping``) and the data rows, blank rows left out."""
    header: list[str] | None = None
    body: list[tuple[int, Sequence[Any]]] = []
    for number, cells in records:
        # A row whose first cell is text with something in it is not blank (CSV's rows, nearly
        # always): the first cell that ``any`` would have looked at decides it without a call.
        first = cells[0] if cells else None
        if not (type(first) is str and first and not first.isspace()) and not any(
            _cell_text(c) for c in cells
        ):
            continue
        if header is None:
            try:
                header = _header(cells, mapping)
            except PayloadError as exc:
                raise exc.at_row(number) from None
            continue
        if len(body) >= max_rows:
            raise PayloadError("file", f"more than {max_rows} rows; split the file")
        body.append((number, cells))
    if header is None:
        raise PayloadError("file", "the file has no header row")
    if not body:
        raise PayloadError("file", "the file has no data rows, only its header row")
    return header, body


def _rows(
    records: Iterable[tuple[int, Sequence[Any]]],
    channel: Channel,
    *,
    max_rows: int,
    columnar: bool = False,
) -> BatchResult:
    """Every data row's draft or error. With ``columnar`` (rows of text cells, as CSV gives),
    the rows are built a column at a time (``columnar_drafts``); a row that path does not take
    is built alone, as always."""
    mapping = BATCH_MAPPING.extended(channel.mapping)
    preset = preset_for(channel)
    header, body = _records(records, mapping, max_rows=max_rows)
    mapping = _for_columns(mapping, header)
    built = columnar_drafts(body, header, mapping, channel, preset) if columnar else {}
    return _first_rows_only(
        (
            (number, _row_outcome(number, cells, header, mapping, channel, preset))
            if (draft := built.get(i)) is None
            else (number, draft)
            for i, (number, cells) in enumerate(body)
        ),
        mapping,
    )


def decode_csv(data: bytes | str) -> str:
    """CSV text from UTF-8 (BOM or not) or GB18030 bytes."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise PayloadError("file", "not UTF-8 or GB18030 text")


def parse_csv(data: bytes | str, channel: Channel, *, max_rows: int = MAX_ROWS) -> BatchResult:
    """Appeals from a CSV batch file (comma-separated, header row first)."""
    require_format(channel, "csv")
    reader = csv.reader(io.StringIO(decode_csv(data), newline=""))
    try:
        return _rows(enumerate(reader, start=1), channel, max_rows=max_rows, columnar=True)
    except csv.Error as exc:
        raise PayloadError("file", f"malformed CSV near record {reader.line_num}: {exc}") from None


def _xlsx_records(data: bytes) -> Iterator[tuple[int, Sequence[Any]]]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        with warnings.catch_warnings():
            # Workbooks not written by Excel lack a default style; openpyxl says so, harmlessly.
            warnings.simplefilter("ignore", UserWarning)
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, *_BROKEN_SHEET) as exc:
        raise PayloadError("file", f"not an .xlsx workbook ({exc.__class__.__name__})") from None
    try:
        sheet = book.worksheets[0]
        rows = sheet.iter_rows()
        while True:
            try:  # a sheet is parsed as it is read: a broken one fails here, not at load
                row = next(rows)
            except StopIteration:
                return
            except _BROKEN_SHEET as exc:
                raise PayloadError(
                    "file", f"the workbook's first sheet cannot be read ({exc.__class__.__name__})"
                ) from None
            cells = [cell.value for cell in row]
            number = next((c.row for c in row if getattr(c, "row", None)), None)
            if number is not None:
                yield number, cells
    finally:
        book.close()


# What openpyxl raises on a damaged sheet; SyntaxError covers the XML parsers' ParseError
# (ElementTree's and lxml's both derive from it).
_BROKEN_SHEET = (SyntaxError, KeyError, OSError, ValueError, TypeError, zipfile.BadZipFile)


MAX_UNZIPPED_BYTES = 128 << 20
MAX_CELLS = 1_000_000
_CHUNK = 1 << 20


# A workbook's other parts (styles, workbook, relationships, themes) hold hundreds to tens of
# thousands of elements (Excel allows 64,000 cell formats); openpyxl builds an object for each.
MAX_OTHER_PART_TAGS = 200_000


def _check_workbook_size(data: bytes, *, max_unzipped_bytes: int, max_cells: int) -> None:
    """BodyTooLarge before parsing when the workbook unzips past ``max_unzipped_bytes``, its
    sheets hold more than ``max_cells`` cells, or another part more markup than a real workbook
    has (openpyxl would build an object for every one of them).

    The sizes a zip declares bound what it yields (zipfile stops at the declared size and
    fails the CRC check beyond), so they are summed first; tags are counted while streaming
    each part, without building anything.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PayloadError("file", f"not an .xlsx workbook ({exc.__class__.__name__})") from None
    with archive:
        entries = archive.infolist()
        unzipped = sum(e.file_size for e in entries)
        if unzipped > max_unzipped_bytes:
            raise BodyTooLarge("file (unzipped)", limit=max_unzipped_bytes, size=unzipped)
        cells = 0
        for entry in entries:
            name = entry.filename
            if not name.endswith((".xml", ".rels")):
                continue  # images and other binaries are not parsed
            try:
                if name.startswith("xl/worksheets/"):
                    cells = _count_tags(archive, entry, cells, _cell_tags, max_cells, "cells")
                else:  # shared strings: a string has a few tags, and needs a cell to be used
                    shared = name == "xl/sharedStrings.xml"
                    limit = 4 * max_cells if shared else MAX_OTHER_PART_TAGS
                    _count_tags(archive, entry, 0, _any_tag, limit, "tags", part=name)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                raise PayloadError(
                    "file", f"a part of the workbook cannot be read ({type(exc).__name__})"
                ) from None


def _cell_tags(head: bytes) -> tuple[bytes, ...]:
    """A sheet's ``<c>`` start tags, under the sheet's namespace prefix if it has one."""
    root = _SHEET_ROOT.search(head)
    prefix = (root.group(1) if root else None) or b""
    return tuple(b"<" + prefix + b"c" + bytes([end]) for end in b" \t\r\n/>")


def _any_tag(_head: bytes) -> tuple[bytes, ...]:
    """Every tag, opening or closing: at least as many as the elements."""
    return (b"<",)


def _count_tags(
    archive: zipfile.ZipFile,
    entry: zipfile.ZipInfo,
    counted: int,
    tags_of: Callable[[bytes], tuple[bytes, ...]],
    limit: int,
    unit: str,
    *,
    part: str | None = None,
) -> int:
    """``counted`` plus the tags of one part; BodyTooLarge (naming the part, if given) as soon
    as the total passes ``limit``."""
    carry = b""
    tags: tuple[bytes, ...] = ()
    with archive.open(entry) as stream:
        while chunk := stream.read(_CHUNK):
            buffer = carry + chunk
            tags = tags or tags_of(buffer)
            counted += sum(buffer.count(tag) for tag in tags)
            if counted > limit:
                field = f"file ({part})" if part else "file"
                raise BodyTooLarge(field, limit=limit, size=None, unit=unit)
            # A tag cut by the chunk's end is counted with the next chunk; none lies wholly in
            # the carried bytes, which are shorter than a tag.
            carry = buffer[len(buffer) - len(tags[0]) + 1 :]
    return counted


_SHEET_ROOT = re.compile(rb"<([A-Za-z_][\w.-]*:)?worksheet\b")


def parse_xlsx(
    data: bytes,
    channel: Channel,
    *,
    max_rows: int = MAX_ROWS,
    max_unzipped_bytes: int = MAX_UNZIPPED_BYTES,
    max_cells: int = MAX_CELLS,
) -> BatchResult:
    """Appeals from an XLSX batch file (first sheet, header row first)."""
    require_format(channel, "xlsx")
    _check_workbook_size(data, max_unzipped_bytes=max_unzipped_bytes, max_cells=max_cells)
    return _rows(_xlsx_records(data), channel, max_rows=max_rows)
