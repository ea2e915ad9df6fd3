"""core.db.json_document: the rows PostgreSQL's json_to_recordset reads, whatever the rows hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum

from siyu.core.db import json_document


class Kind(Enum):
    text = "text"


def test_dates_carry_their_offset_and_naive_ones_are_utc() -> None:
    naive = datetime(2026, 12, 5, 8, 30)
    beijing = datetime(2026, 12, 5, 16, 30, tzinfo=timezone(timedelta(hours=8)))
    rows = json.loads(json_document([{"at": naive}, {"at": beijing}, {"at": naive.replace(tzinfo=UTC)}], ["at"]))
    parsed = [datetime.fromisoformat(row["at"]) for row in rows]
    assert all(value.utcoffset() is not None for value in parsed)
    assert parsed[0] == parsed[1] == parsed[2]


def test_enums_decimals_and_nested_payloads_are_written_as_values() -> None:
    rows = json.loads(json_document([{"kind": Kind.text, "amount": Decimal("12.50"),
                                      "payload": {"text": {"content": "在吗？"}, "send_time": 1}}],
                                    ["kind", "amount", "payload"]))
    assert rows == [{"kind": "text", "amount": "12.50", "payload": {"text": {"content": "在吗？"}, "send_time": 1}}]


def test_a_lone_surrogate_in_a_payload_is_still_written() -> None:
    # json.loads accepts "\ud83d" alone (a half emoji from a client): orjson refuses it, the json module writes it.
    payload = json.loads('{"content": "hi \\ud83d"}')
    document = json_document([{"payload": payload, "at": datetime(2026, 12, 5, 8, 30)}], ["payload", "at"])
    row = json.loads(document)[0]
    assert row["payload"] == payload
    assert row["at"] == "2026-12-05T08:30:00+00:00"
