"""Batch files: good rows are stored, each with its event; bad rows are reported by row number and
field and store nothing; a file sent again is answered with the first tickets."""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import time
import zipfile
from typing import Any

import orjson
import pytest
from openpyxl import Workbook

from services.intake import api, service
from services.intake import pipeline as pipeline_module
from services.intake.models import TICKETS, outbox_table
from shared.events import encode
from shared.events.base import encode_fields
from shared.events.intake import TicketReceived
from shared.outbox import RECORDS
from tests.integration.intake.support import IntakeEnv

CSV_CHANNEL = "grid-patrol-batch"
XLSX_CHANNEL = "enterprise-visit"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADER = ["外部编号", "诉求人", "联系电话", "标题", "内容", "地址", "分类编码", "紧急程度"]


def rows(env: IntakeEnv, n: int) -> list[list[str]]:
    return [
        [
            env.unique("row"),
            "张先生",
            env.phone(),
            f"巡查发现问题{i}",
            f"巡查发现第{i}处井盖缺失，位置在{env.address()}，已设置临时围挡。{env.unique()}",
            env.address(),
            "0101",
            "一般",
        ]
        for i in range(n)
    ]


def as_csv(header: list[str], body: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return buffer.getvalue().encode()


async def post_csv(env: IntakeEnv, data: bytes) -> Any:
    return await env.client.post(
        f"/channels/{CSV_CHANNEL}/tickets", content=data, headers={"content-type": "text/csv"}
    )


async def test_good_rows_are_stored_bad_rows_reported(env: IntakeEnv) -> None:
    body = rows(env, 6)
    body[1][3] = body[1][4] = ""  # neither title nor content: row 3
    body[3][2] = "not a phone"  # row 5
    body[4][6] = "9999"  # unknown category: row 6
    body[5][7] = "立刻"  # not an urgency: row 7
    before = await env.count(outbox_table)

    response = await post_csv(env, as_csv(HEADER, body))

    assert response.status_code == 207, response.text
    result = response.json()
    assert (result["rows"], result["created"], result["rejected"]) == (6, 2, 4)
    by_row = {r["row"]: r for r in result["results"]}
    assert [by_row[n]["status"] for n in (2, 3, 4, 5, 6, 7)] == [
        "created",
        "rejected",
        "created",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert by_row[3]["errors"][0] == {
        "field": "内容",
        "message": by_row[3]["errors"][0]["message"],
        "row": 3,
    }
    assert by_row[5]["errors"][0]["field"] == "联系电话"
    assert by_row[6]["errors"][0]["field"] == "分类编码"
    assert by_row[7]["errors"][0]["field"] == "紧急程度"
    created = [by_row[2]["ticket_id"], by_row[4]["ticket_id"]]
    assert await env.count(TICKETS, TICKETS.c.external_id.in_([r[0] for r in body])) == 2
    assert await env.count(outbox_table) == before + 2
    for ticket_id in created:
        assert len(await env.events(ticket_id)) == 1


async def test_a_row_received_in_the_future_is_rejected_naming_its_column(env: IntakeEnv) -> None:
    times = ["2026-11-02 09:00", "2100-01-01 09:00"]
    body = [[*row, when] for row, when in zip(rows(env, 2), times, strict=True)]
    response = await post_csv(env, as_csv([*HEADER, "受理时间"], body))
    assert response.status_code == 207, response.text
    good, bad = response.json()["results"]
    assert good["status"] == "created" and bad["status"] == "rejected"
    assert bad["errors"][0]["field"] == "受理时间" and "future" in bad["errors"][0]["message"]
    assert await env.count(TICKETS, TICKETS.c.external_id == body[1][0]) == 0


async def test_a_file_sent_again_is_answered_with_the_first_tickets(env: IntakeEnv) -> None:
    data = as_csv(HEADER, rows(env, 4))
    first = await post_csv(env, data)
    second = await post_csv(env, data)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["existing"] == 4 and second.json()["created"] == 0
    assert [r["ticket_id"] for r in first.json()["results"]] == [
        r["ticket_id"] for r in second.json()["results"]
    ]


async def test_rows_repeating_each_other_in_one_file_are_linked(env: IntakeEnv) -> None:
    body = rows(env, 3)
    body[1][2] = body[0][2]  # the same citizen twice
    response = await post_csv(env, as_csv(HEADER, body))
    first, second, third = response.json()["results"]
    stored = await env.ticket(second["ticket_id"])
    assert stored.repeat_of == first["ticket_id"] and stored.repeat_count == 1
    # The answer says so, row by row, as the single post does; and again when the file is resent.
    assert (second["repeat_of"], second["repeat_count"]) == (first["ticket_id"], 1)
    assert (first["repeat_of"], first["repeat_count"]) == (third["repeat_of"], 0) == (None, 0)
    assert {r["category_code"] for r in (first, second, third)} == {stored.category_code}
    again = await post_csv(env, as_csv(HEADER, body))
    assert [
        (r["status"], r["ticket_id"], r["category_code"], r["repeat_of"], r["repeat_count"])
        for r in again.json()["results"]
    ] == [
        ("existing", r["ticket_id"], r["category_code"], r["repeat_of"], r["repeat_count"])
        for r in (first, second, third)
    ]


async def test_a_row_sharing_every_key_with_an_earlier_row_counts_it_once(env: IntakeEnv) -> None:
    body = rows(env, 2)
    body[1][2], body[1][4], body[1][5] = body[0][2], body[0][4], body[0][5]  # citizen, text, place
    response = await post_csv(env, as_csv(HEADER, body))
    first, second = response.json()["results"]
    stored = await env.ticket(second["ticket_id"])
    assert stored.repeat_of == first["ticket_id"] and stored.repeat_count == 1


async def test_file_level_problems_name_the_file_or_header(env: IntakeEnv) -> None:
    no_content = await post_csv(env, as_csv(["外部编号", "标题"], [["a", "b"]]))
    empty = await post_csv(env, b"")
    all_bad = await post_csv(env, as_csv(HEADER, [["x", "", "", "", "", "", "", ""]]))
    assert no_content.status_code == 422 and no_content.json()["errors"][0]["field"] == "header"
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "file"
    assert all_bad.status_code == 422 and all_bad.json()["rejected"] == 1


async def test_too_many_rows_or_bytes_is_413(env: IntakeEnv) -> None:
    many = await post_csv(env, as_csv(HEADER, rows(env, 201)))  # the test app allows 200
    assert many.status_code == 413 and many.json()["field"] == "file"
    assert "rows" in many.json()["detail"]
    big = await post_csv(env, b"a" * (300 << 10))  # over the 256 KiB batch limit
    assert big.status_code == 413 and big.json()["field"] == "file"


async def test_an_xlsx_workbook_uploads_as_multipart(env: IntakeEnv) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append([*HEADER, "企业名称"])
    for row in rows(env, 3):
        sheet.append([*row, "枫桥机械厂"])
    buffer = io.BytesIO()
    book.save(buffer)

    response = await env.client.post(
        f"/channels/{XLSX_CHANNEL}/tickets",
        files={"file": ("visits.xlsx", buffer.getvalue(), "application/octet-stream")},
    )

    assert response.status_code == 201, response.text
    ticket_id = response.json()["results"][0]["ticket_id"]
    stored = await env.ticket(ticket_id)
    assert stored.is_enterprise and stored.time_limit_profile == "enterprise_2115"
    missing = await env.client.post(
        f"/channels/{XLSX_CHANNEL}/tickets", files={"other": ("x.xlsx", b"x", "text/plain")}
    )
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "file"


def workbook(
    header: list[str], body: list[list[str]], *, empty_cells: int = 0, styles: int = 0
) -> bytes:
    """An .xlsx file; ``empty_cells`` adds a row of that many empty ``<c/>`` cells and ``styles``
    that many cell formats (what hostile files use to make a small upload expand into a huge
    sheet or style table)."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(header)
    for row in body:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    if not empty_cells and not styles:
        return buffer.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dest:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                bomb = b'<row r="%d">' % (len(body) + 2) + b"<c/>" * empty_cells + b"</row>"
                data = data.replace(b"</sheetData>", bomb + b"</sheetData>")
            if item.filename == "xl/styles.xml":
                assert b"</cellXfs>" in data
                data = data.replace(b"</cellXfs>", b"<xf/>" * styles + b"</cellXfs>")
            dest.writestr(item, data)
    return out.getvalue()


async def post_xlsx(env: IntakeEnv, data: bytes) -> Any:
    return await env.client.post(
        f"/channels/{XLSX_CHANNEL}/tickets",
        content=data,
        headers={"content-type": XLSX_TYPE},
    )


async def test_a_small_workbook_that_expands_into_millions_of_cells_is_refused_quickly(
    env: IntakeEnv,
) -> None:
    bomb = workbook(HEADER, rows(env, 1), empty_cells=5_000_000)
    assert len(bomb) < 64 << 10  # about 24 KB on the wire, 20 MB of sheet unzipped
    loop = asyncio.get_running_loop()
    started = loop.time()
    health_latencies: list[float] = []
    probing = asyncio.Event()
    posted = asyncio.Event()

    async def probe_health() -> None:
        while not posted.is_set():
            asked = loop.time()
            probing.set()
            assert (await env.client.get("/healthz")).status_code == 200
            health_latencies.append(loop.time() - asked)
            await asyncio.sleep(0)  # an in-process request may never suspend: let others run

    prober = asyncio.create_task(probe_health())
    await probing.wait()  # a health check is under way while the file is posted
    try:
        refused = await post_xlsx(env, bomb)
    finally:
        posted.set()
        await prober
    assert refused.status_code == 413, refused.text
    assert refused.json()["field"] == "file (unzipped)", refused.text
    assert loop.time() - started < 10
    assert health_latencies and max(health_latencies) < 2  # the loop kept answering

    many = workbook(HEADER, rows(env, 1), empty_cells=env.settings.batch_max_cells)
    refused = await post_xlsx(env, many)
    assert refused.status_code == 413, refused.text
    assert refused.json()["field"] == "file" and "cells" in refused.json()["detail"]

    styled = workbook(HEADER, rows(env, 1), styles=250_000)
    refused = await post_xlsx(env, styled)
    assert refused.status_code == 413, refused.text
    assert refused.json()["field"] == "file (xl/styles.xml)", refused.text


async def test_a_file_without_data_rows_is_a_422_naming_the_file(env: IntakeEnv) -> None:
    for answer in (
        await post_xlsx(env, workbook(HEADER, [])),
        await post_csv(env, as_csv(HEADER, [])),
    ):
        assert answer.status_code == 422, answer.text
        (error,) = answer.json()["errors"]
        assert error["field"] == "file" and "no data rows" in error["message"]


async def test_batch_files_are_parsed_off_the_event_loop(
    env: IntakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the process's one parsing thread: files sent at once queue for it, none parses on the
    loop and no two side by side."""
    parsed_on: list[threading.Thread] = []
    parsing, most = [0], [0]
    for name in ("parse_csv", "parse_xlsx"):
        real = getattr(api, name)

        def spy(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            parsed_on.append(threading.current_thread())
            parsing[0] += 1
            most[0] = max(most[0], parsing[0])
            try:
                time.sleep(0.05)  # long enough that parses side by side would overlap
                return _real(*args, **kwargs)
            finally:
                parsing[0] -= 1

        monkeypatch.setattr(api, name, spy)
    answers = await asyncio.gather(
        *(post_csv(env, as_csv(HEADER, rows(env, 2))) for _ in range(4)),
        post_xlsx(env, workbook([*HEADER, "企业名称"], rows(env, 2))),
    )
    assert [a.status_code for a in answers] == [201] * 5
    assert len(parsed_on) == 5 and most[0] == 1
    assert len(set(parsed_on)) == 1 and parsed_on[0] is not threading.main_thread()
    assert parsed_on[0].name.startswith("batch-parse")


async def test_events_written_from_fields_are_the_validated_events(
    env: IntakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A varied file (PII in the text, control characters, repeats within the file and of a
    stored ticket) stores each row's event as the bytes the validated model would give."""
    written: list[tuple[dict[str, Any], Any]] = []

    def spy(cls: Any, fields: Any) -> Any:
        out = encode_fields(cls, fields)
        written.extend(zip(fields, out or [], strict=False))
        return out

    monkeypatch.setattr(pipeline_module, "encode_fields", spy)
    earlier = rows(env, 1)
    assert (await post_csv(env, as_csv(HEADER, earlier))).status_code == 201
    body = rows(env, 6)
    body[0][4] += "，我的电话13812345678，身份证110101199003074514"
    body[1][4] = "井盖\x00缺失" + body[1][4]
    body[2][2] = body[1][2]  # the same citizen as the row before: a repeat within the file
    body[3][2], body[3][4], body[3][5] = earlier[0][2], earlier[0][4], earlier[0][5]  # stored
    body[4][1] = "欧阳\x07娜娜"
    answer = await post_csv(env, as_csv(HEADER, body))
    assert answer.status_code == 201 and answer.json()["created"] == 6, answer.text
    assert len(written) == 7  # the earlier file's row and this file's six
    for fields, w in written:
        event = TicketReceived.model_validate(
            {**fields, "event_id": w.event_id, "occurred_at": w.occurred_at}
        )
        assert w.record == encode(event)
    stored = {e.event_id: e for e, _ in await env.events()}
    events = [stored[w.event_id] for _, w in written[1:]]
    assert all(isinstance(e, TicketReceived) for e in events)
    assert "13812345678" not in str(events[0]) and "110101199003074514" not in str(events[0])
    assert "\x00" not in events[1].content and "\x07" not in str(events[4])
    assert (events[2].repeat_of, events[3].repeat_of) == (
        events[1].ticket_id,
        written[0][0]["ticket_id"],
    )


def _scans(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    """The plan's nodes that read ``relation``."""
    own = [plan] if plan.get("Relation Name") == relation else []
    return own + [n for child in plan.get("Plans", ()) for n in _scans(child, relation)]


async def test_the_stored_ids_look_up_reads_the_files_ids_not_the_channels_tickets(
    env: IntakeEnv,
) -> None:
    if env.ctx.reader.dialect.name != "postgresql":
        pytest.skip("the driver's statement is PostgreSQL's")
    place = env.address()
    for _ in range(2):  # the channel holds some hundreds of tickets (at one place)
        body = [[env.unique("row"), *row[1:5], place, *row[6:]] for row in rows(env, 1) * 150]
        assert (await post_csv(env, as_csv(HEADER, body))).status_code == 201
    stored = rows(env, 2)
    assert (await post_csv(env, as_csv(HEADER, stored))).status_code == 201
    # A file's worth of ids, two of them stored.
    wanted = sorted([*(env.unique("absent") for _ in range(998)), stored[0][0], stored[1][0]])

    async with env.ctx.reader.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        found = await driver.fetch(service._POSTGRES_EXISTING, CSV_CHANNEL, wanted)
        explained = await driver.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + service._POSTGRES_EXISTING, CSV_CHANNEL, wanted
        )
        await conn.rollback()

    assert sorted(r["external_id"] for r in found) == sorted([stored[0][0], stored[1][0]])
    # SQLAlchemy's connection decodes JSON itself; a plain asyncpg one gives its text.
    plan = (orjson.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    # Each id found through the index by its own key: not every ticket of the channel read (a
    # sequential scan, or the index by its channel alone) and matched against the ids.
    scans = _scans(plan, "tickets")
    assert scans
    for scan in scans:
        condition = scan.get("Index Cond") or scan.get("Recheck Cond") or ""
        assert "external_id" in condition and "channel" in condition, scan


async def test_a_file_of_many_rows_is_stored_a_column_at_a_time(
    env: IntakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of ``COLUMNS_MIN_ROWS`` rows or more hands its tickets, outbox and audit rows to
    the committer a column at a time: each row is stored with its own values, its event and its
    audit row, as a small file's are."""
    made: list[int] = []
    by_columns = pipeline_module.Pipeline._columns

    def spy(self: Any, members: Any, verdicts: Any, *, now: Any) -> Any:
        made.append(len(members))
        return by_columns(self, members, verdicts, now=now)

    monkeypatch.setattr(pipeline_module.Pipeline, "_columns", spy)
    places = [env.address() for _ in range(4)]  # the test app's grids are few: rows share them
    body = [
        [
            env.unique("row"),
            "张先生",
            env.phone(),
            f"巡查发现问题{i}",
            f"第{i}处井盖缺失",
            place,
            "0101",
        ]
        for i, place in enumerate(
            places[i % 4] for i in range(pipeline_module.COLUMNS_MIN_ROWS + 6)
        )
    ]
    rows_before = await env.count(outbox_table)
    answer = await post_csv(env, as_csv(HEADER[:-1], body))
    assert answer.status_code == 201, answer.text
    assert made == [len(body)]
    # the file's events in one outbox row (a bundle), each event's record in it
    assert await env.count(outbox_table) == rows_before + 1
    assert await env.count(outbox_table, outbox_table.c[RECORDS] == len(body)) == 1
    results = answer.json()["results"]
    audit = env.ctx.outbox.audit
    assert audit is not None
    for row, result in zip(body, results, strict=True):
        stored = await env.ticket(result["ticket_id"])
        assert (stored.external_id, stored.citizen_phone, stored.title, stored.content) == (
            row[0],
            row[2],
            row[3],
            row[4],
        )
        assert (stored.status, stored.category_code, stored.repeat_of) == (
            "received",
            result["category_code"],
            result["repeat_of"],
        )
        assert stored.accepted_at == stored.status_at and stored.due_at is None
        ((event, outbox_row),) = await env.events(result["ticket_id"])
        assert isinstance(event, TicketReceived) and event.ticket_id == result["ticket_id"]
        assert event.title == row[3] and event.category_code == result["category_code"]
        assert (
            await env.count(
                audit, audit.c.event_id == str(event.event_id), audit.c.ticket_id == event.ticket_id
            )
            == 1
        )
        assert outbox_row["created_at"] is not None
