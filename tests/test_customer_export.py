"""Customer export: CSV with BOM and XLSX, the list's filters and scope, masked phones,
neutralised formulas, audit, large exports as a job with an owner-only download, the CLI,
and export → import round trips."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from siyu.core import storage
from siyu.core.db import utcnow
from siyu.core.errors import Invalid
from siyu.core.models import Job, JobStatus
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import jobs as customers_jobs
from siyu.customers import service
from siyu.customers.exports import policy as export_policy
from siyu.customers.exports import service as exports
from siyu.customers.exports.service import HEADERS, ExportFormat
from siyu.customers.imports import service as imports
from siyu.customers.models import Friendship
from siyu.customers.schemas import CustomerUpdate
from siyu.customers.service import CustomerFilter
from siyu.team.models import AuditEntry, Role
from tests.conftest import Factory, viewer_of
from tests.test_pages import HTMX, Console

COL = {header: index for index, header in enumerate(HEADERS)}


def export_bytes(db: Session, viewer: Viewer, fmt: ExportFormat = ExportFormat.csv, **flt: Any) -> tuple[bytes, int]:
    out = io.BytesIO()
    rows = exports.write_export(db, flt=CustomerFilter(**flt), viewer=viewer, fmt=fmt, out=out)
    return out.getvalue(), rows


def csv_rows(data: bytes) -> list[list[str]]:
    assert data.startswith(codecs.BOM_UTF8), "Excel needs the BOM to read UTF-8"
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def xlsx_rows(data: bytes) -> list[list[Any]]:
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    try:
        return [["" if v is None else v for v in row] for row in book.worksheets[0].iter_rows(values_only=True)]
    finally:
        book.close()


def by_name(rows: list[list[Any]]) -> dict[str, list[Any]]:
    return {row[COL["昵称"]]: row for row in rows[1:]}


def exported(db: Session, viewer: Viewer, **flt: Any) -> dict[str, list[Any]]:
    data, _count = export_bytes(db, viewer, **flt)
    return by_name(csv_rows(data))


def add_friend(db: Session, customer: Any, account: Any, *, remark: str, phones: list[str]) -> None:
    service.add_friendship(db, customer_id=customer.id, account_id=account.id, viewer=SYSTEM, remark_name=remark)
    service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                            data=CustomerUpdate(account_id=account.id, phones=phones))
    db.commit()


def audits(db: Session) -> list[AuditEntry]:
    db.expire_all()
    return list(db.scalars(select(AuditEntry).where(AuditEntry.action == "export").order_by(AuditEntry.id)))


# ---------------------------------------------------------------- files


def test_csv_has_a_bom_chinese_headers_the_import_reads_and_one_row_per_customer(db: Session, make: Factory) -> None:
    account = make.account(display_name="山野茶舍·杭州")
    make.customer(account, name="林晓", remark_name="林晓-爱喝龙井", wechat_id="linxiao88", city="杭州",
                  source="门店", gender="女", job="教师", description="喜欢明前龙井，周末来店",
                  phones=["+86 138-1234-5678"], tags=["人群:宝妈", "来源:门店"])
    data, count = export_bytes(db, SYSTEM)
    assert count == 1
    rows = csv_rows(data)
    assert rows[0] == list(HEADERS)
    row = by_name(rows)["林晓"]
    assert row[COL["备注名"]] == "林晓-爱喝龙井"
    assert row[COL["手机号"]] == "13812345678"  # stored +8613812345678, written as the import writes it
    assert row[COL["标签"]] == "来源:门店、人群:宝妈"  # manual tags only, 组:标签 in the groups' order
    assert row[COL["账号"]] == "山野茶舍·杭州"
    assert row[COL["描述"]] == "喜欢明前龙井，周末来店"
    assert (row[COL["地区"]], row[COL["来源"]], row[COL["性别"]], row[COL["职业"]]) == ("杭州", "门店", "女", "教师")
    assert row[COL["阶段"]] == "流量"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", row[COL["添加时间"]])
    # Every column the import reads is recognised from its header; the others are ignored by it.
    mapping = imports.detect_mapping(rows[0])
    assert {h: k for h, k in zip(rows[0], mapping, strict=True) if k} == {
        c.header: ("phone" if c.key == "phones" else c.key) for c in exports.COLUMNS if c.imported}
    assert all(not k for h, k in zip(rows[0], mapping, strict=True)
               if not next(c for c in exports.COLUMNS if c.header == h).imported)


def test_xlsx_opens_with_openpyxl_and_holds_the_rows(db: Session, make: Factory) -> None:
    account = make.account()
    for n in range(3):
        make.customer(account, name=f"客户{n}", phones=[f"1391234000{n}"])
    data, count = export_bytes(db, SYSTEM, ExportFormat.xlsx)
    assert count == 3
    rows = xlsx_rows(data)
    assert rows[0] == list(HEADERS)
    assert sorted(by_name(rows)) == ["客户0", "客户1", "客户2"]
    assert by_name(rows)["客户1"][COL["手机号"]] == "13912340001"  # text, not a number Excel rounds


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_cells_that_look_like_formulas_are_exported_neutralised(db: Session, make: Factory,
                                                                fmt: ExportFormat) -> None:
    account = make.account(display_name="=cmd|' /C calc'!A0")
    make.customer(account, name="+1", remark_name='=HYPERLINK("http://evil.example","点我领券")',
                  description="-2+3", city="@SUM(A1)", source="\t=1+1", job="\r=1+1", wechat_id="#N/A",
                  phones=["13812345678"])
    data, _count = export_bytes(db, SYSTEM, fmt)
    rows = csv_rows(data) if fmt is ExportFormat.csv else xlsx_rows(data)
    row = rows[1]
    assert row[COL["备注名"]] == '\'=HYPERLINK("http://evil.example","点我领券")'
    assert row[COL["昵称"]] == "'+1"
    assert row[COL["描述"]] == "'-2+3"
    assert row[COL["地区"]] == "'@SUM(A1)"
    assert row[COL["来源"]] == "'\t=1+1"
    assert row[COL["职业"]] == ("'\r=1+1" if fmt is ExportFormat.csv else "'\n=1+1")  # XML reads CR back as LF
    assert row[COL["账号"]] == str(account.id)  # a name the import would not find again: the id instead
    for cell in row:
        assert not (isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r")), cell
    if fmt is ExportFormat.xlsx:
        book = openpyxl.load_workbook(io.BytesIO(data), data_only=False)
        types = {cell.data_type for line in book.active.iter_rows() for cell in line}
        assert "f" not in types and "e" not in types  # no formula cell, no error cell (#N/A stays text)


def test_characters_xml_cannot_hold_do_not_break_the_xlsx(db: Session, make: Factory) -> None:
    account = make.account()
    customer = make.customer(account, name="小\x07林", remark_name="\x01=1+1")
    # Longer than Excel's cell limit (written past the API's limit, as a sync could).
    db.execute(update(Friendship).where(Friendship.customer_id == customer.id).values(description="a" * 40000))
    db.commit()
    data, _count = export_bytes(db, SYSTEM, ExportFormat.xlsx)
    row = xlsx_rows(data)[1]
    assert row[COL["昵称"]] == "小林"
    assert row[COL["备注名"]] == "'=1+1"  # cleaned first, then neutralised
    assert len(row[COL["描述"]]) == exports.XLSX_CELL_MAX


# ---------------------------------------------------------------- scope, phones, filters


def test_phones_are_masked_for_a_role_that_may_not_see_them_and_shown_to_admin(db: Session, make: Factory) -> None:
    account = make.account()
    make.customer(account, name="林晓", phones=["+86 138-1234-5678", "13900001111"])
    service_user = make.user("service", accounts=[account])
    admin = make.user("admin")
    assert viewer_of(service_user).may_see_phones is False
    masked = exported(db, viewer_of(service_user))["林晓"][COL["手机号"]]
    assert masked == "138****5678、139****1111"
    assert "12345678" not in masked and "00001111" not in masked
    assert exported(db, viewer_of(admin))["林晓"][COL["手机号"]] == "13812345678、13900001111"


def test_an_operator_gets_only_their_accounts_customers_and_their_remark_cards(db: Session, make: Factory) -> None:
    mine, theirs = make.account(display_name="我的号"), make.account(display_name="别人的号")
    make.customer(mine, name="只在我这", phones=["13800000001"])
    make.customer(theirs, name="只在别人那", phones=["13800000002"])
    shared = make.customer(mine, name="两边都加了", remark_name="我的备注", phones=["13800000003"])
    add_friend(db, shared, theirs, remark="别人的秘密备注", phones=["13800000004"])
    operator = viewer_of(make.user("operator", accounts=[mine]))

    data, count = export_bytes(db, operator)
    text = data.decode("utf-8-sig")
    rows = by_name(csv_rows(data))
    assert count == 2 and sorted(rows) == ["两边都加了", "只在我这"]
    row = rows["两边都加了"]
    assert (row[COL["备注名"]], row[COL["手机号"]], row[COL["账号"]]) == ("我的备注", "13800000003", "我的号")
    assert row[COL["其他账号"]] == ""
    for leaked in ("只在别人那", "别人的秘密备注", "13800000002", "13800000004", "别人的号"):
        assert leaked not in text
    # Asking for the other account's customers: refused as the list refuses it, nothing exported.
    with pytest.raises(Invalid) as refused:
        export_bytes(db, operator, account_id=theirs.id)
    assert refused.value.field == "account_id"
    with pytest.raises(Invalid):
        service.list_customers(db, flt=CustomerFilter(account_id=theirs.id), viewer=operator)


def test_an_operator_asking_for_another_accounts_customers_over_http_gets_none(
        db: Session, make: Factory, client: TestClient, token_for: Callable[[Any], dict[str, str]]) -> None:
    mine, theirs = make.account(), make.account()
    make.customer(mine, name="我的客户")
    make.customer(theirs, name="别人的客户", remark_name="别人的秘密备注")
    user = make.user("operator", accounts=[mine])
    api = client.get(f"/api/v1/customers/export?account_id={theirs.id}", headers=token_for(user))
    assert api.status_code == 422
    assert "别人的" not in api.text
    console = Console(client).login(user)
    page = console.get(f"/customers/export.csv?account_id={theirs.id}")
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
    assert "别人的" not in page.text
    listed = console.get(f"/customers?account_id={theirs.id}")  # the list answers the same
    assert listed.status_code == 422
    assert audits(db) == []  # nothing was exported
    own = client.get(f"/api/v1/customers/export?account_id={mine.id}", headers=token_for(user))
    assert own.status_code == 200
    assert sorted(by_name(csv_rows(own.content))) == ["我的客户"]


def test_filters_are_honoured_tag_stage_search_and_account(db: Session, make: Factory) -> None:
    a, b = make.account(), make.account()
    mum = make.customer(a, name="宝妈甲", tags=["人群:宝妈"], remark_name="喜欢白茶的宝妈")
    make.customer(a, name="白领乙", tags=["人群:白领"])
    chatty = make.customer(b, name="常聊丙", tags=["人群:宝妈", "来源:门店"])
    for _ in range(3):
        make.touch(chatty, "chat", content="问了新茶")
    db.refresh(chatty)
    mum_tag = next(t for g in service.list_tag_groups(db) for t in g.tags if t.name == "宝妈")

    assert sorted(exported(db, SYSTEM, tag_names=["人群:宝妈"])) == ["宝妈甲", "常聊丙"]
    assert sorted(exported(db, SYSTEM, tag_ids=[mum_tag.id])) == ["宝妈甲", "常聊丙"]
    assert sorted(exported(db, SYSTEM, tag_names=["人群:宝妈", "来源:门店"])) == ["常聊丙"]  # AND across groups
    assert chatty.stage != "traffic"
    assert sorted(exported(db, SYSTEM, stage=chatty.stage)) == ["常聊丙"]
    assert sorted(exported(db, SYSTEM, stage="traffic")) == ["宝妈甲", "白领乙"]
    assert sorted(exported(db, SYSTEM, q="白茶")) == ["宝妈甲"]
    assert sorted(exported(db, SYSTEM, account_id=b.id)) == ["常聊丙"]
    assert mum.id in {row[COL["客户ID"]] and int(row[COL["客户ID"]]) for row in exported(db, SYSTEM).values()}
    with pytest.raises(Invalid):
        exported(db, SYSTEM, stage="vip")
    with pytest.raises(Invalid):
        exported(db, SYSTEM, sort="random")


def test_a_customer_on_several_accounts_is_one_row_with_the_filtered_accounts_card(db: Session,
                                                                                    make: Factory) -> None:
    a, b = make.account(display_name="一号"), make.account(display_name="二号")
    customer = make.customer(a, name="两边", remark_name="一号的备注", phones=["13800000001"])
    add_friend(db, customer, b, remark="二号的备注", phones=["13800000002"])
    everything = exported(db, SYSTEM)["两边"]
    card = (everything[COL["账号"]], everything[COL["备注名"]], everything[COL["其他账号"]])
    assert card == ("一号", "一号的备注", "二号")
    assert everything[COL["手机号"]] == "13800000001、13800000002"
    of_b = exported(db, SYSTEM, account_id=b.id)["两边"]
    assert (of_b[COL["账号"]], of_b[COL["备注名"]], of_b[COL["其他账号"]]) == ("二号", "二号的备注", "一号")


def test_export_walks_every_batch_once_in_a_stable_order(db: Session, make: Factory,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    account = make.account()
    ids = make.bulk_customers(account, 45)
    monkeypatch.setattr(exports, "BATCH_ROWS", 7)
    seen: list[int] = []
    for batch in exports.iter_rows(db, flt=CustomerFilter(), viewer=SYSTEM, batch_size=7):
        assert len(batch) <= 7
        assert len(db.identity_map) == 0  # nothing kept between batches
        seen.extend(int(row[COL["客户ID"]]) for row in batch)
    assert sorted(seen) == ids and len(seen) == len(set(seen))


# ---------------------------------------------------------------- audit


def test_every_export_is_audited_once_with_its_filter_and_row_count(
        db: Session, make: Factory, client: TestClient, token_for: Callable[[Any], dict[str, str]]) -> None:
    account = make.account()
    make.customer(account, name="宝妈甲", tags=["人群:宝妈"])
    make.customer(account, name="别的")
    user = make.user("operator", accounts=[account])
    response = client.get("/api/v1/customers/export", params={"format": "xlsx", "tag": "人群:宝妈", "q": "宝妈"},
                          headers=token_for(user))
    assert response.status_code == 200
    assert response.headers["content-type"] == ExportFormat.xlsx.media_type
    assert response.headers["cache-control"] == "no-store"
    assert 'filename="customers-' in response.headers["content-disposition"]
    assert sorted(by_name(xlsx_rows(response.content))) == ["宝妈甲"]
    (entry,) = audits(db)
    assert (entry.actor, entry.user_id, entry.entity_type) == (user.username, user.id, "customers")
    assert entry.after is not None
    assert entry.after["rows"] == 1 and entry.after["format"] == "xlsx" and entry.after["via"] == "api"
    assert entry.after["filter"] == {"q": "宝妈", "tag_names": ["人群:宝妈"]}
    # An operator exports with phones masked unless an administrator allows full phones.
    assert entry.after["phones_masked"] is True and entry.after["phones_included"] is False
    assert entry.entity_name == ""  # a list, not one object: the summary says what it was


# ---------------------------------------------------------------- console


def test_the_list_page_offers_the_export_of_its_filters_and_it_downloads(db: Session, make: Factory,
                                                                        client: TestClient) -> None:
    account = make.account()
    make.customer(account, name="宝妈甲", tags=["人群:宝妈"])
    make.customer(account, name="白领乙", tags=["人群:白领"])
    tag = next(t for g in service.list_tag_groups(db) for t in g.tags if t.name == "宝妈")
    console = Console(client).login(make.user("planner"))
    page = console.get(f"/customers?tag={tag.id}&stage=traffic")
    assert page.status_code == 200
    links = re.findall(r'href="(/customers/export\.(?:csv|xlsx)[^"]*)"', page.text)
    assert len(links) == 2
    csv_link = next(link for link in links if ".csv" in link).replace("&amp;", "&")
    assert f"tag={tag.id}" in csv_link and "stage=traffic" in csv_link
    download = console.get(csv_link)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert sorted(by_name(csv_rows(download.content))) == ["宝妈甲"]
    xlsx = console.get(next(link for link in links if ".xlsx" in link).replace("&amp;", "&"))
    assert sorted(by_name(xlsx_rows(xlsx.content))) == ["宝妈甲"]
    assert [e.after["via"] for e in audits(db) if e.after] == ["console", "console"]
    # Filtering swaps only the results (htmx): the buttons there carry the new filters.
    swapped = console.get("/customers?stage=traffic&q=白领", headers={**HTMX, "hx-target": "results"})
    assert 'href="/customers/export.xlsx?q=%E7%99%BD%E9%A2%86&amp;stage=traffic"' in swapped.text
    audit_page = Console(TestClient(client.app)).login(make.user("admin")).get("/audit")
    assert "导出 1 位客户（CSV）" in audit_page.text
    # The list's own date fields and sort come through too; a bad one is answered as the list answers it.
    assert console.get("/customers/export.csv?last_touch_after=2024-13-01").status_code == 422
    assert console.get("/customers/export.csv?sort=created").status_code == 200


def test_service_staff_may_not_export_until_an_admin_allows_it_and_then_only_masked(
        db: Session, make: Factory, client: TestClient) -> None:
    account, other = make.account(), make.account()
    make.customer(account, name="林晓", phones=["13812345678"])
    make.customer(other, name="别人的", phones=["13900000000"])
    console = Console(client).login(make.user("service", accounts=[account]))
    refused = console.get("/customers/export.csv")
    assert refused.status_code == 403
    assert "无权导出客户" in refused.text
    assert audits(db) == []
    export_policy.set_policy(db, rights={"service": "full"}, actor=viewer_of(make.user("admin")))
    db.commit()
    response = console.get("/customers/export.csv")
    assert response.status_code == 200
    rows = by_name(csv_rows(response.content))
    assert list(rows) == ["林晓"]
    # Full phones allowed to the role, but 客服 never see phones in full: still masked.
    assert rows["林晓"][COL["手机号"]] == "138****5678"
    assert [e.after["phones_masked"] for e in audits(db) if e.entity_type == "customers"] == [True]  # type: ignore[index]


def test_an_operator_exports_full_phones_only_when_an_admin_allows_it(db: Session, make: Factory,
                                                                     client: TestClient) -> None:
    account = make.account()
    make.customer(account, name="林晓", phones=["13812345678"])
    console = Console(client).login(make.user("operator", accounts=[account]))
    masked = by_name(csv_rows(console.get("/customers/export.csv").content))
    assert masked["林晓"][COL["手机号"]] == "138****5678"
    admin = Console(TestClient(client.app)).login(make.user("admin"))
    form = admin.get("/settings/exports")
    assert form.status_code == 200 and "导出权限" in form.text
    saved = admin.post("/settings/exports", data={"planner": "masked", "operator": "full", "service": "none"})
    assert saved.status_code == 303
    assert export_policy.get_policy(db)[Role.operator] is export_policy.ExportRight.full
    full = by_name(csv_rows(console.get("/customers/export.csv").content))
    assert full["林晓"][COL["手机号"]] == "13812345678"
    entries = [e for e in audits(db) if e.entity_type == "customers"]
    assert [e.after["phones_included"] for e in entries] == [False, True]  # type: ignore[index]
    (change,) = db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "export_policy")).all()
    assert change.before == {"planner": "masked", "operator": "masked", "service": "none"}
    assert change.after == {"planner": "masked", "operator": "full", "service": "none"}
    bad = admin.post("/settings/exports", data={"operator": "everything"})
    assert bad.status_code == 422 and "未知的导出权限" in bad.text
    operator_page = console.get("/settings/exports")
    assert operator_page.status_code == 403


# ---------------------------------------------------------------- large exports: a job, an owner-only file


def _job(db: Session, job_id: int) -> Job:
    db.expire_all()
    job = db.get(Job, job_id)
    assert job is not None
    return job


def test_a_large_export_runs_as_a_job_whose_file_only_its_owner_downloads(
        db: Session, make: Factory, client: TestClient, token_for: Callable[[Any], dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports, "DIRECT_ROWS", 5)
    account = make.account()
    make.bulk_customers(account, 12)
    owner = make.user("operator", accounts=[account])
    colleague = make.user("operator", accounts=[account])
    admin = make.user("admin")

    console = Console(client).login(owner)
    started = console.get("/customers/export.csv", follow_redirects=False)
    assert started.status_code == 303
    job_id = int(started.headers["location"].rsplit("/", 1)[1])
    job = _job(db, job_id)
    assert job.status == JobStatus.succeeded, job.error
    assert job.kind == "customers.export" and job.created_by_id == owner.id
    assert job.result is not None and job.result["exported"] == 12
    link = job.result["download_url"]
    assert re.fullmatch(r"/customers/exports/[0-9a-f]{32}", link)
    job_page = console.get(f"/jobs/{job_id}")
    assert link in job_page.text

    download = console.get(link)
    assert download.status_code == 200 and download.headers["cache-control"] == "no-store"
    assert len(csv_rows(download.content)) == 13
    # Personal data: nobody else gets the file, not even an administrator who can see the job.
    for other in (colleague, admin):
        assert Console(TestClient(client.app)).login(other).get(link).status_code == 404
        assert client.get(job.result["api_download_url"], headers=token_for(other)).status_code == 404
    assert client.get(job.result["api_download_url"], headers=token_for(owner)).status_code == 200
    assert console.get("/customers/exports/../../siyu.db").status_code == 404
    assert console.get("/customers/exports/" + "0" * 32).status_code == 404
    (entry,) = audits(db)
    assert entry.after is not None and entry.after["rows"] == 12 and entry.user_id == owner.id

    # After a day the file is gone.
    token = link.rsplit("/", 1)[1]
    _age_stored(db, f"exports/{token}", exports.EXPORT_TTL_SECONDS + 1)
    expired = console.get(link)
    assert expired.status_code == 404
    assert not storage.exists(f"exports/{token}")


def test_a_large_api_export_answers_202_with_the_job(
        db: Session, make: Factory, client: TestClient, token_for: Callable[[Any], dict[str, str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports, "DIRECT_ROWS", 2)
    account = make.account()
    make.bulk_customers(account, 4)
    headers = token_for(make.user("planner"))
    response = client.get("/api/v1/customers/export?format=xlsx", headers=headers)
    assert response.status_code == 202
    job = client.get(response.json()["job_url"], headers=headers).json()
    assert job["status"] == "succeeded" and job["result"]["exported"] == 4
    file = client.get(job["result"]["api_download_url"], headers=headers)
    assert file.headers["content-type"] == ExportFormat.xlsx.media_type
    assert len(xlsx_rows(file.content)) == 5
    assert client.get("/api/v1/customers/export?format=pdf", headers=headers).status_code == 422


def test_old_exports_are_swept(db: Session, make: Factory) -> None:
    account = make.account()
    make.customer(account, name="林晓")
    admin = viewer_of(make.user("admin"))
    old = exports.store_export(db, flt=CustomerFilter(), viewer=admin, fmt=ExportFormat.csv, via="test")
    _age_stored(db, old.key, exports.EXPORT_TTL_SECONDS + 10)
    fresh = exports.store_export(db, flt=CustomerFilter(), viewer=admin, fmt=ExportFormat.xlsx, via="test")
    assert not storage.exists(old.key)
    assert exports.get_export(fresh.token, viewer=admin).rows == 1


def _age_stored(db: Session, key: str, seconds: int) -> None:
    from siyu.core.models import StoredFile

    db.execute(update(StoredFile).where(StoredFile.key == key).values(
        created_at=utcnow() - timedelta(seconds=seconds)))
    db.commit()


# ---------------------------------------------------------------- CLI


def test_the_cli_writes_the_file_as_the_system_and_audits_it(db: Session, make: Factory, tmp_path: Path) -> None:
    from siyu.cli import app

    a, b = make.account(), make.account()
    make.customer(a, name="宝妈甲", tags=["人群:宝妈"])
    make.customer(b, name="宝妈乙", tags=["人群:宝妈"])
    make.customer(a, name="白领丙", tags=["人群:白领"])
    target = tmp_path / "宝妈.xlsx"
    result = CliRunner().invoke(app, ["customers", "export", str(target), "--tag", "人群:宝妈",
                                      "--account", str(a.id)])
    assert result.exit_code == 0, result.output
    assert "1" in result.output
    assert sorted(by_name(xlsx_rows(target.read_bytes()))) == ["宝妈甲"]
    as_csv = tmp_path / "all.txt"
    result = CliRunner().invoke(app, ["customers", "export", str(as_csv), "--format", "csv", "--q", "宝妈"])
    assert result.exit_code == 0, result.output
    assert sorted(by_name(csv_rows(as_csv.read_bytes()))) == ["宝妈乙", "宝妈甲"]
    assert [(e.actor, e.after["via"]) for e in audits(db) if e.after] == [("system", "cli"), ("system", "cli")]
    unknown = CliRunner().invoke(app, ["customers", "export", str(tmp_path / "x.pdf")])
    assert unknown.exit_code == 2 and not (tmp_path / "x.pdf").exists()
    bad_stage = CliRunner().invoke(app, ["customers", "export", str(tmp_path / "y.csv"), "--stage", "vip"])
    assert bad_stage.exit_code == 2 and not (tmp_path / "y.csv").exists()
    assert not list(tmp_path.glob(".*.part"))


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_an_exported_file_imports_back_without_creating_anyone(db: Session, make: Factory, tmp_path: Path,
                                                               fmt: ExportFormat) -> None:
    a, b = make.account(display_name="山野茶舍·杭州"), make.account(display_name="山野茶舍·上海")
    make.customer(a, name="林晓", remark_name="林晓-爱喝龙井", wechat_id="linxiao88", city="杭州", source="门店",
                  phones=["+86 138-1234-5678"], tags=["人群:宝妈", "来源:门店"], description="周末来店")
    make.customer(a, name="王芳", remark_name="王芳-白茶")  # only a name: found again by account + remark
    make.customer(b, name="赵六")  # no remark: by account + nickname
    make.customer(b, name="张三", remark_name="=HYPERLINK(1)", phones=["13900000000"])  # neutralised, found by phone
    shared = make.customer(a, name="两边", remark_name="杭州的备注", phones=["13700000000"])
    add_friend(db, shared, b, remark="上海的备注", phones=["13600000000"])
    for _ in range(2):
        make.touch(shared, "chat")  # computed tags (沟通次数) are not exported as tags
    path = tmp_path / f"customers.{fmt.value}"
    with path.open("wb") as out:
        exports.write_export(db, flt=CustomerFilter(), viewer=SYSTEM, fmt=fmt, out=out)
    before = service.count_all_customers(db)
    result = imports.run_import(db, source=imports.open_source(path), viewer=SYSTEM, filename=path.name,
                                options=imports.ImportOptions(mode=imports.ImportMode.skip))
    db.commit()
    assert (result.rows, result.counts.created, result.counts.skipped) == (5, 0, 5)
    assert service.count_all_customers(db) == before
    # With update too, nothing new: every row is found and has nothing to add.
    again = imports.run_import(db, source=imports.open_source(path), viewer=SYSTEM, filename=path.name,
                               options=imports.ImportOptions(mode=imports.ImportMode.update))
    assert again.counts.created == 0


def test_a_file_exported_with_masked_phones_imports_back_by_its_other_keys(db: Session, make: Factory,
                                                                         tmp_path: Path) -> None:
    import dataclasses

    shop = make.account(display_name="山野茶舍·杭州")
    make.customer(shop, name="张三", remark_name="=HYPERLINK(1)", phones=["13900000000"])  # neutralised, masked
    make.customer(shop, name="李四", remark_name="-李四", phones=["13800000000"], wechat_id="lisi")
    path = tmp_path / "masked.csv"
    with path.open("wb") as out:
        exports.write_export(db, flt=CustomerFilter(), viewer=dataclasses.replace(SYSTEM, may_see_phones=False),
                             fmt=ExportFormat.csv, out=out)
    text = path.read_text(encoding="utf-8-sig")
    assert "139****0000" in text and "'=HYPERLINK(1)" in text and "13900000000" not in text
    result = imports.run_import(db, source=imports.open_source(path), viewer=SYSTEM, filename=path.name,
                                options=imports.ImportOptions(mode=imports.ImportMode.update))
    db.commit()
    assert (result.rows, result.counts.created) == (2, 0)  # found by account + remark, and by WeChat ID
    remarks = set(db.scalars(select(Friendship.remark_name)))
    assert remarks == {"=HYPERLINK(1)", "-李四"}  # read back as written, not with the export's quote


def test_an_export_job_whose_filter_no_longer_fits_fails_with_the_reason_and_no_file(db: Session,
                                                                                    make: Factory) -> None:
    from siyu.customers import jobs as customers_jobs

    mine, theirs = make.account(), make.account()
    make.customer(theirs, name="别人的客户")
    user = make.user("operator", accounts=[mine])
    before = _stored_keys(db)
    # The account was taken away between the click and the job (here: never theirs).
    job_id = customers_jobs.submit_export(db, flt=CustomerFilter(account_id=theirs.id), fmt=ExportFormat.csv,
                                          actor=viewer_of(user), total=10, via="console")
    db.commit()
    job = _job(db, job_id)
    assert job.status in (JobStatus.retrying, JobStatus.failed)
    assert job.error.startswith("RuntimeError") and str(theirs.id) in job.error
    assert job.result is None
    assert audits(db) == []
    assert _stored_keys(db) == before


def _stored_keys(db: Session) -> set[str]:
    from siyu.core.models import StoredFile

    return set(db.scalars(select(StoredFile.key)))


def test_more_than_a_few_hundred_rows_go_to_a_job_with_progress_that_applies_the_role_setting(
        db: Session, make: Factory, client: TestClient) -> None:
    assert exports.DIRECT_ROWS == 500  # "over a few hundred rows": the job threshold
    account = make.account()
    make.bulk_customers(account, exports.DIRECT_ROWS)
    make.customer(account, name="林晓", phones=["13812345678"])
    owner = make.user("operator", accounts=[account])
    console = Console(client).login(owner)
    started = console.get("/customers/export.csv", follow_redirects=False)
    assert started.status_code == 303
    job = _job(db, int(started.headers["location"].rsplit("/", 1)[1]))
    assert job.status == JobStatus.succeeded, job.error
    assert (job.done, job.total) == (501, 501)  # the job page's progress bar reads these
    rows = by_name(csv_rows(console.get(job.result["download_url"]).content))  # type: ignore[index]
    assert rows["林晓"][COL["手机号"]] == "138****5678"  # an operator's job is masked like a download
    (entry,) = audits(db)
    assert entry.after is not None and entry.after["rows"] == 501 and entry.after["phones_included"] is False
    # A role refused after it asked: the job says why and writes no file.
    make.customer(account, name="另一个")
    server = make.user("service", accounts=[account])
    submitted = customers_jobs.submit_export(db, flt=CustomerFilter(), fmt=ExportFormat.csv,
                                             actor=viewer_of(server), total=502, via="console")
    db.commit()
    refused = _job(db, submitted)
    assert refused.status in (JobStatus.retrying, JobStatus.failed) and "无权导出客户" in (refused.error or "")
    assert len(audits(db)) == 1  # no file, no second export entry
