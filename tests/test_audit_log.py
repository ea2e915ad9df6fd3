"""The audit log in the operator's words: labels for every code written, names kept at write
time, filters by actor, object kind, action and dates, paging and a bounded CSV export."""

from __future__ import annotations

import codecs
import csv
import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.settings import local_today
from siyu.core.viewer import SYSTEM
from siyu.team import audit_labels
from siyu.team import service as team_service
from siyu.team.models import AuditEntry, User
from siyu.team.schemas import UserIn, UserUpdate
from tests.conftest import TEST_PASSWORD, Factory, viewer_of
from tests.test_pages import Console

SRC = Path(__file__).resolve().parent.parent / "src" / "siyu"
LITERAL = re.compile(r"""(["'])([a-z_]+)\1""")


def _call_text(text: str, start: int) -> str:
    """The text of a call from its opening parenthesis to the matching one."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    return text[start:]


def _written_codes() -> tuple[set[str], set[str]]:
    """Every action and object kind a writer in src/ passes to ``record_audit`` (or the groups'
    ``_audit(session, action, kind, …)`` wrapper) as a literal, including both arms of ``x if c else y``."""
    actions: set[str] = set()
    kinds: set[str] = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for found in re.finditer(r"\brecord_audit\(", text):
            call = _call_text(text, found.end() - 1)
            if call.startswith("(\n    session: Session"):
                continue  # the definition
            for key, into in (("action", actions), ("entity_type", kinds)):
                arg = re.search(rf"\b{key}=(.+?)(?:,\s*\w+=|\)$)", call, re.S)
                assert arg is not None, f"{path}: a record_audit call without {key}="
                into.update(m.group(2) for m in LITERAL.finditer(arg.group(1)))
        for found in re.finditer(r"\b_audit\(session, ", text):
            call = _call_text(text, found.end() - len("session, ") - 1)
            literals = [m.group(2) for m in LITERAL.finditer(call)]
            actions.add(literals[0])
            kinds.add(literals[1])
        for found in re.finditer(r"\b_audit_order\(session, viewer, ", text):  # the orders' wrapper
            call = _call_text(text, found.end() - len("session, viewer, ") - 1)
            actions.add(next(m.group(2) for m in LITERAL.finditer(call)))
            kinds.add("order")
    return actions, kinds


def test_every_action_and_object_kind_written_anywhere_in_src_has_a_label() -> None:
    actions, kinds = _written_codes()
    assert {"create", "update", "enable", "alert", "export", "merge"} <= actions  # the scan finds them
    assert {"channel", "autoreply_rule", "customers", "tag_group", "export_policy", "audit"} <= kinds
    assert sorted(actions - set(audit_labels.ACTIONS)) == []
    assert sorted(kinds - set(audit_labels.KINDS)) == []


def test_a_role_change_reads_with_the_actors_display_name_field_labels_and_role_names(
        db: Session, make: Factory) -> None:
    boss = team_service.create_user(db, data=UserIn(username="boss", display_name="周经理", password=TEST_PASSWORD,
                                                    role="admin"), actor=SYSTEM)  # type: ignore[arg-type]
    worker = make.user("operator", username="xiaoman")
    team_service.update_user(db, user_id=worker.id, data=UserUpdate(role="planner"),  # type: ignore[arg-type]
                             actor=viewer_of(boss))
    db.commit()
    entry = db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert entry is not None
    described = audit_labels.describe(entry)
    assert (described.actor, described.action, described.kind, described.name) == ("周经理", "修改", "用户", "xiaoman")
    assert described.url == "/users"
    # Only what changed, by its label, with values as the pages show them.
    assert [(c.label, c.before, c.after) for c in described.changes] == [("角色", "运维", "策划")]


def test_a_removed_actor_and_object_still_read_by_the_names_stored_with_the_entry(db: Session, make: Factory) -> None:
    temp = team_service.create_user(db, data=UserIn(username="temp", display_name="临时工小李", password=TEST_PASSWORD,
                                                    role="admin"), actor=SYSTEM)  # type: ignore[arg-type]
    account = make.account(display_name="山野茶舍·西湖店")
    channel_entry = team_service.record_audit(db, actor=viewer_of(temp), action="delete", entity_type="channel",
                                              entity_id=999, entity_name="门店海报", summary="")
    db.commit()
    db.execute(update(AuditEntry).where(AuditEntry.user_id == temp.id).values(user_id=None))
    db.delete(db.get(User, temp.id))
    db.commit()
    described = audit_labels.describe(channel_entry)
    assert (described.actor, described.action, described.name) == ("临时工小李", "删除", "门店海报")
    assert described.url == "/channels/999"
    assert account.display_name  # the account (a user's other data) untouched


def test_entries_written_before_and_unknown_codes_still_render_raw(db: Session, admin: Any,
                                                                   client: TestClient) -> None:
    db.add_all([
        AuditEntry(actor="old", action="frobnicate", entity_type="gizmo", entity_id="7", summary="",
                   after={"weird_field": "x"}),
        AuditEntry(actor="system", action="alert", entity_type="channel", entity_id="3",
                   summary="门店海报: coupon pool empty"),
        AuditEntry(actor="system", action="enable", entity_type="autoreply_account", entity_id="2",
                   summary="all auto-replies of this account"),
    ])
    db.commit()
    page = Console(client).login(admin).get("/audit")
    assert page.status_code == 200
    text = page.text[page.text.index('data-testid="audit-table"'):]
    for shown in ("frobnicate", "gizmo", "#7", "weird_field", "发出告警", "门店海报: 券码已发完", "账号自动回复",
                  "该账号的全部自动回复", "启用"):
        assert shown in text, shown
    for raw in ("coupon pool empty", "autoreply_account", "all auto-replies"):
        assert raw not in text, raw
    assert 'href="/channels/3"' in text


def _entry(db: Session, *, user: Any, action: str, kind: str, name: str, days_ago: int = 0) -> AuditEntry:
    entry = team_service.record_audit(db, actor=viewer_of(user), action=action, entity_type=kind,
                                      entity_id=1, entity_name=name, summary=name)
    db.flush()
    entry.at = utcnow() - timedelta(days=days_ago)
    db.commit()
    return entry


def test_the_page_filters_by_actor_kind_action_and_dates_and_pages_with_the_filters(
        db: Session, make: Factory, admin: Any, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.team import routes as team_routes

    operator = make.user("operator", username="xiaoman")
    _entry(db, user=operator, action="update", kind="channel", name="门店海报")
    _entry(db, user=operator, action="export", kind="customers", name="导出甲")
    _entry(db, user=operator, action="update", kind="channel", name="十天前的渠道", days_ago=10)
    _entry(db, user=admin, action="update", kind="channel", name="管理员的渠道")
    console = Console(client).login(admin)

    def names(url: str) -> list[str]:
        response = console.get(url)
        assert response.status_code == 200, response.text
        return re.findall(r'data-testid="audit-object">.*?(?:<a href="[^"]*">)?([^<>]+?)(?:</a>)?</td>', response.text,
                          re.S)

    mine = names(f"/audit?user_id={operator.id}")
    assert "门店海报" in " ".join(mine) and "管理员的渠道" not in " ".join(mine)
    only_channels = " ".join(names(f"/audit?user_id={operator.id}&entity_type=channel&action=update"))
    assert "门店海报" in only_channels and "导出甲" not in only_channels and "十天前的渠道" in only_channels
    today = local_today()
    recent = " ".join(names(f"/audit?user_id={operator.id}&entity_type=channel&since={today - timedelta(days=3)}"))
    assert "门店海报" in recent and "十天前的渠道" not in recent
    old = " ".join(names(f"/audit?entity_type=channel&until={today - timedelta(days=5)}"))
    assert old.strip() == "十天前的渠道"
    # The date inputs are real date inputs; a bad date is answered in Chinese, not with a 500.
    page = console.get("/audit")
    assert 'type="date" id="audit-since"' in page.text and 'id="audit-actor"' in page.text
    bad = console.get("/audit?since=2026-13-40")
    assert bad.status_code == 422 and "不是有效日期" in bad.text
    reversed_dates = console.get("/audit?since=2026-05-02&until=2026-05-01")
    assert reversed_dates.status_code == 422 and "开始日期晚于结束日期" in reversed_dates.text
    # Paging keeps the filters.
    monkeypatch.setattr(team_routes, "AUDIT_PAGE_SIZE", 1)
    first = console.get(f"/audit?user_id={operator.id}&entity_type=channel")
    link = re.search(r'href="(/audit\?[^"]*cursor=[^"]*)" data-testid="next-page"', first.text)
    assert link is not None
    second = console.get(link.group(1).replace("&amp;", "&"))
    assert "门店海报" in second.text and "十天前的渠道" not in second.text and "管理员的渠道" not in second.text


def test_the_csv_export_holds_the_filtered_log_in_words_is_bounded_and_is_itself_audited(
        db: Session, make: Factory, admin: Any, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    operator = make.user("operator", username="xiaoman")
    _entry(db, user=operator, action="update", kind="channel", name="=HYPERLINK(1)")
    _entry(db, user=operator, action="enable", kind="autoreply_rule", name="欢迎语")
    _entry(db, user=admin, action="update", kind="channel", name="管理员的渠道")
    console = Console(client).login(admin)
    response = console.get(f"/audit/export.csv?user_id={operator.id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith(codecs.BOM_UTF8)
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0] == ["时间", "操作人", "操作", "对象类型", "对象", "摘要", "改动"]
    assert [(r[1], r[2], r[3], r[4]) for r in rows[1:]] == [("xiaoman", "启用", "自动回复规则", "欢迎语"),
                                                          ("xiaoman", "修改", "渠道", "'=HYPERLINK(1)")]
    (exported,) = db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "audit")).all()
    assert exported.action == "export" and exported.user_id == admin.id
    assert exported.after == {"filter": {"user_id": str(operator.id)}, "rows": 2, "format": "csv"}
    monkeypatch.setattr(team_service, "AUDIT_EXPORT_MAX_ROWS", 2)
    monkeypatch.setattr(team_service, "AUDIT_EXPORT_BATCH", 1)
    bounded = list(csv.reader(io.StringIO(console.get("/audit/export.csv").content.decode("utf-8-sig"))))
    assert len(bounded) == 3  # the header and the newest two
    assert Console(TestClient(client.app)).login(operator).get("/audit/export.csv").status_code == 403


def test_the_api_filters_and_carries_labels(db: Session, make: Factory, admin_headers: dict[str, str],
                                            client: TestClient) -> None:
    operator = make.user("operator", username="xiaoman")
    _entry(db, user=operator, action="enable", kind="autoreply_rule", name="欢迎语")
    _entry(db, user=operator, action="update", kind="channel", name="门店海报")
    response = client.get("/api/v1/audit", params={"action": "enable", "user_id": operator.id},
                          headers=admin_headers)
    assert response.status_code == 200
    (item,) = response.json()["items"]
    assert (item["action_label"], item["entity_label"], item["entity_name"], item["url"]) == (
        "启用", "自动回复规则", "欢迎语", "/autoreply/1")
    assert client.get("/api/v1/audit", params={"until": "soon"}, headers=admin_headers).status_code == 422


def test_connection_entries_name_settings_by_their_labels_never_their_keys(db: Session) -> None:
    saved = AuditEntry(actor="admin", action="update", entity_type="wecom_connection", summary="corp_id, secret",
                       after={"changed": ["corp_id", "secret"]})
    tested = AuditEntry(actor="admin", action="test", entity_type="wecom_connection", summary="test connection: ok",
                        after={"ok": True})
    failed = AuditEntry(actor="admin", action="test", entity_type="mp_connection", summary="test connection: 40001")
    db.add_all([saved, tested, failed])
    db.commit()
    described = audit_labels.describe(saved)
    assert (described.kind, described.action, described.summary) == ("企业微信连接", "修改", "企业 ID、Secret")
    assert [(c.label, c.after) for c in described.changes] == [("修改的设置", "企业 ID、Secret")]
    assert audit_labels.describe(tested).summary == "连接测试：成功"
    assert [(c.label, c.after) for c in audit_labels.describe(tested).changes] == [("成功", "是")]
    assert audit_labels.describe(failed).summary == "连接测试：40001"


def test_report_exports_read_their_period_in_words() -> None:
    channel_report = AuditEntry(actor="a", action="export", entity_type="channel_report", entity_id="",
                                entity_name="", summary="30 days, csv", before=None, after=None, user_id=None)
    service_report = AuditEntry(actor="a", action="export", entity_type="service_report", entity_id="",
                                entity_name="", summary="7 days", before=None, after=None, user_id=None)
    assert audit_labels.describe(channel_report).summary == "近 30 天，CSV"
    assert audit_labels.describe(service_report).summary == "近 7 天"
