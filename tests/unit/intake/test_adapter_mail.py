"""E-mail adapter: MIME messages become one appeal plus attachment blobs."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage

import pytest

from services.intake.adapters import PayloadError, parse_email
from services.intake.adapters.mail import html_to_text
from services.intake.channels import get_channel

MAILBOX = get_channel("hotline-12345-email")


def message(
    *,
    subject: str | None = "反映小区水压不足",
    sender: str | None = "方志远 <fangzy@qq.com>",
    body: str | None = "七楼以上没水。\n联系电话：13905715566",
    charset: str = "utf-8",
) -> EmailMessage:
    """A plain-text citizen e-mail."""
    msg = EmailMessage()
    if sender is not None:
        msg["From"] = sender
    msg["To"] = "12345@gov.example.cn"
    if subject is not None:
        msg["Subject"] = subject
    msg["Date"] = "Tue, 16 Dec 2025 08:30:00 +0800"
    msg["Message-ID"] = "<abc@qq.com>"
    if body is not None:
        msg.set_content(body, charset=charset)
    return msg


def test_plain_message() -> None:
    result = parse_email(message().as_bytes(), MAILBOX)
    draft = result.draft
    assert draft.title == "反映小区水压不足"
    assert draft.content.startswith("七楼以上没水")
    assert (draft.citizen_name, draft.citizen_email) == ("方志远", "fangzy@qq.com")
    assert draft.citizen_phone == "13905715566"
    assert draft.external_id == "abc@qq.com"
    assert (
        draft.received_at is not None
        and draft.received_at.isoformat() == "2025-12-16T08:30:00+08:00"
    )
    assert draft.extra == {"mailbox": ["12345@gov.example.cn"]}
    assert result.attachments == ()


def test_a_date_header_in_the_future_gives_way_to_the_arrival_time() -> None:
    msg = message()
    msg.replace_header("Date", "Fri, 01 Jan 2100 08:00:00 +0800")  # the sender's clock is off
    assert parse_email(msg.as_bytes(), MAILBOX).draft.received_at is None


def test_reply_prefixes_are_dropped_and_gb18030_bodies_decode() -> None:
    msg = message(subject="Re: 回复：反映小区水压不足", charset="gb18030")
    assert parse_email(msg.as_bytes(), MAILBOX).draft.title == "反映小区水压不足"


def test_attachments_are_metadata_on_the_draft_and_bytes_alongside() -> None:
    msg = message()
    photo = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4
    msg.add_attachment(photo, maintype="image", subtype="jpeg", filename="积水照片.jpg")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="说明.pdf")
    result = parse_email(msg.as_bytes(), MAILBOX)
    metas = result.draft.attachments
    assert [m.filename for m in metas] == ["积水照片.jpg", "说明.pdf"]
    assert metas[0].content_type == "image/jpeg"
    assert metas[0].size == len(photo)
    assert metas[0].sha256 == hashlib.sha256(photo).hexdigest()
    assert [blob.meta for blob in result.attachments] == list(metas)
    assert result.attachments[0].data == photo


def test_an_attachment_with_an_odd_content_type_is_kept_as_octet_stream() -> None:
    msg = message()
    msg.add_attachment(b"x", maintype="application", subtype="pdf", filename="说明.pdf")
    raw = msg.as_bytes().replace(b"application/pdf", b"application/x%y(z)")
    (meta,) = parse_email(raw, MAILBOX).draft.attachments
    assert (meta.filename, meta.content_type) == ("说明.pdf", "application/octet-stream")


def test_a_long_sender_name_is_cut_not_refused() -> None:
    msg = message(sender=f"{'很长的名字' * 20} <fangzy@qq.com>")
    draft = parse_email(msg.as_bytes(), MAILBOX).draft
    assert draft.citizen_name is not None and draft.citizen_name.startswith("很长的名字")
    assert len(draft.citizen_name) == 64  # (header folding may put spaces between the words)


def test_html_only_message_becomes_text() -> None:
    msg = message(body=None)
    msg.set_content(
        "<html><style>p{}</style><p>区长您好！</p><p>门口<b>堵车</b>&amp;乱停</p></html>",
        subtype="html",
    )
    content = parse_email(msg.as_bytes(), MAILBOX).draft.content
    assert content == "区长您好！\n门口堵车&乱停"


def test_alternative_prefers_plain_text() -> None:
    msg = message(body="纯文本正文")
    msg.add_alternative("<p>HTML正文</p>", subtype="html")
    assert parse_email(msg.as_bytes(), MAILBOX).draft.content == "纯文本正文"


def test_subject_only_or_body_only() -> None:
    assert parse_email(message(body=None).as_bytes(), MAILBOX).draft.content == "反映小区水压不足"
    no_subject = parse_email(message(subject=None, body="井盖丢了。快来").as_bytes(), MAILBOX)
    assert no_subject.draft.title == "井盖丢了"


def test_sender_without_a_display_name_takes_a_labelled_name() -> None:
    msg = message(sender="someone@126.com", body="姓名：李四\n路灯不亮")
    assert parse_email(msg.as_bytes(), MAILBOX).draft.citizen_name == "李四"


def test_a_broken_date_header_does_not_refuse_the_mail() -> None:
    msg = message()
    msg.replace_header("Date", "sometime last week")
    assert parse_email(msg.as_bytes(), MAILBOX).draft.received_at is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (message(sender=None).as_bytes(), "From"),
        (message(sender="nobody").as_bytes(), "From"),
        (message(subject=None, body=None).as_bytes(), "body"),
        (b"", "message"),
    ],
)
def test_bad_messages_name_the_header(raw: bytes, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_email(raw, MAILBOX)
    assert caught.value.field == field


def test_very_long_message_ids_are_hashed_to_a_stable_id() -> None:
    msg = message()
    msg.replace_header("Message-ID", "<" + "x" * 300 + "@example.com>")
    first = parse_email(msg.as_bytes(), MAILBOX).draft.external_id
    assert first is not None and first.startswith("sha256:") and len(first) <= 128
    assert parse_email(msg.as_bytes(), MAILBOX).draft.external_id == first


def test_html_to_text_skips_scripts() -> None:
    assert html_to_text("<script>alert(1)</script><div>a</div><div>b<br>c</div>") == "a\nb\nc"
