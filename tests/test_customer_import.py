"""Customer import: encodings, headers, whole-file validation, dedup, update/skip, API, CLI and wizard.

Every bad-input case of the issue is here: GBK without BOM, a file that is not a spreadsheet,
a missing name column, a 10 MB cell, one bad phone at row 9,731 of 10,000, duplicate rows,
formulas, the same import twice.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service
from siyu.customers.imports import service as imports
from siyu.customers.models import Customer, Friendship, Phone
from siyu.team.models import AuditEntry
from tests.conftest import viewer_of
from tests.test_pages import Console


@pytest.fixture
def console(client: TestClient) -> Console:
    return Console(client)


HEADER = "备注名,昵称,微信号,手机号,标签,描述,地区,来源\n"


def write_csv(tmp_path: Path, text: str, *, encoding: str = "utf-8", name: str = "friends.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def run(db: Session, path: Path, *, account_id: int | None, viewer: Viewer = SYSTEM,
        mode: imports.ImportMode = imports.ImportMode.update, dry_run: bool = False) -> imports.ImportResult:
    source = imports.open_source(path)
    result = imports.run_import(db, source=source, options=imports.ImportOptions(account_id=account_id, mode=mode),
                                viewer=viewer, filename=path.name, dry_run=dry_run)
    db.commit()
    return result


def customer_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Customer).where(Customer.merged_into_id.is_(None))) or 0


def errors_of(exc: pytest.ExceptionInfo[imports.ImportInvalid]) -> list[tuple[int, str, str]]:
    return [(e.row, e.column, e.message) for e in exc.value.errors]


# ---------------------------------------------------------------- encodings and formats


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_utf8_bom_and_gbk_files_read_the_same(db: Session, make: Any, tmp_path: Path, encoding: str) -> None:
    account = make.account()
    row = "王芳-宝妈,王芳,wangfang88,138 0013 8000,人群:宝妈、人群:白领,买过白茶,杭州,门店\n"
    path = write_csv(tmp_path, HEADER + row, encoding=encoding)
    assert imports.open_source(path).encoding in {"utf-8-sig", "gb18030"}
    result = run(db, path, account_id=account.id)
    assert result.counts.created == 1
    customer = db.scalar(select(Customer).where(Customer.wechat_id == "wangfang88"))
    assert customer is not None and customer.name == "王芳" and customer.city == "杭州" and customer.source == "门店"
    friendship = db.scalar(select(Friendship).where(Friendship.customer_id == customer.id))
    assert friendship is not None and friendship.remark_name == "王芳-宝妈" and friendship.description == "买过白茶"
    assert db.scalar(select(Phone.number).where(Phone.customer_id == customer.id)) == "13800138000"
    tags = {t.name for t in service.customer_tags(db, customer_ids=[customer.id])[customer.id]}
    assert {"宝妈", "白领"} <= tags


def test_xlsx_is_read_and_formulas_stay_text(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["备注名", "手机号", "描述"])
    sheet.append(["=HYPERLINK(\"http://evil\",\"点我\")", 13800138001, "=1+1"])
    path = tmp_path / "friends.xlsx"
    workbook.save(path)
    assert imports.open_source(path).kind == "xlsx"
    assert run(db, path, account_id=account.id).counts.created == 1
    friendship = db.scalar(select(Friendship).where(Friendship.account_id == account.id))
    assert friendship is not None
    assert friendship.remark_name == "=HYPERLINK(\"http://evil\",\"点我\")" and friendship.description == "=1+1"
    assert db.scalar(select(Phone.number).where(Phone.friendship_id == friendship.id)) == "13800138001"


def test_formula_cells_in_csv_are_imported_as_the_characters_written(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    path = write_csv(tmp_path, "备注名,描述\n\"=cmd|' /C calc'!A0\",+SUM(1)\n")
    run(db, path, account_id=account.id)
    friendship = db.scalar(select(Friendship).where(Friendship.account_id == account.id))
    assert friendship is not None
    assert (friendship.remark_name, friendship.description) == ("=cmd|' /C calc'!A0", "+SUM(1)")


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"%PDF-1.4\x00\x01binary",
                                     b"PK\x03\x04not really a zip"])
def test_a_file_that_is_not_a_spreadsheet_is_refused_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(content)
    with pytest.raises(imports.ImportInvalid) as exc:
        imports.open_source(path)
    assert errors_of(exc)[0][0] == 0
    assert "CSV" in exc.value.errors[0].message and "XLSX" in exc.value.errors[0].message


def test_empty_file_and_header_only_file(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    with pytest.raises(imports.ImportInvalid) as empty:
        imports.open_source(write_csv(tmp_path, "   \n", name="empty.csv"))
    assert empty.value.errors[0].message == "文件是空的"
    with pytest.raises(imports.ImportInvalid) as exc:
        run(db, write_csv(tmp_path, HEADER), account_id=account.id)
    assert "表头" in exc.value.errors[0].message or "header" in exc.value.errors[0].message


# ---------------------------------------------------------------- validation: nothing written on any error


def test_missing_name_column_is_reported_on_the_header_row(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    with pytest.raises(imports.ImportInvalid) as exc:
        run(db, write_csv(tmp_path, "手机号,地区\n13800138000,杭州\n"), account_id=account.id)
    assert [e[0] for e in errors_of(exc)] == [1]
    assert "备注名" in exc.value.errors[0].message
    assert customer_count(db) == 0


def test_a_10_mb_cell_is_reported_with_row_and_column(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    path = write_csv(tmp_path, "备注名,描述\n张三,正常\n李四," + "长" * (10 * 1024 * 1024 // 3) + "\n")
    with pytest.raises(imports.ImportInvalid) as exc:
        run(db, path, account_id=account.id)
    assert [(e[0], e[1]) for e in errors_of(exc)] == [(3, "描述")]
    assert customer_count(db) == 0


def test_one_bad_phone_at_row_9731_of_10000_writes_nothing(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    lines = ["备注名,手机号"]
    for row in range(2, 10_002):  # spreadsheet rows 2 … 10,001: 10,000 customers
        lines.append(f"顾客{row},{'1380000' if row == 9731 else 13_900_000_000 + row}")
    path = write_csv(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(imports.ImportInvalid) as exc:
        run(db, path, account_id=account.id)
    assert errors_of(exc) == [(9731, "手机号", "不是大陆手机号：1380000")]
    assert customer_count(db) == 0
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "import")) == 0


def test_every_bad_row_is_listed_not_just_the_first(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    path = write_csv(tmp_path, "备注名,手机号,标签,账号\n"
                               ",13800138000,,\n"  # row 2: no name
                               "李四,12345,,\n"  # row 3: bad phone
                               "王五,,无此组:无此标签,\n"  # row 4: unknown tag group
                               "赵六,,,不存在的账号\n")  # row 5: unknown account
    with pytest.raises(imports.ImportInvalid) as exc:
        run(db, path, account_id=account.id)
    where = [(row, column) for row, column, _ in errors_of(exc)]
    assert where == [(2, "备注名"), (3, "手机号"), (4, "标签"), (5, "账号")]
    assert exc.value.total == 4


def test_duplicate_rows_inside_one_file_name_both_rows(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    path = write_csv(tmp_path, "备注名,手机号\n张三,13800138000\n李四,13900139000\n张三丰,+86 138-0013-8000\n")
    with pytest.raises(imports.ImportInvalid) as exc:
        run(db, path, account_id=account.id)
    assert errors_of(exc) == [(4, "手机号", "与第 2 行是同一位客户（手机号相同）")]
    assert customer_count(db) == 0


def test_rows_name_their_account_and_an_operator_cannot_import_into_another_account(
        db: Session, make: Any, tmp_path: Path) -> None:
    mine, theirs = make.account(display_name="西湖店小满"), make.account(display_name="滨江店小乔")
    operator = make.user("operator", accounts=[mine])
    path = write_csv(tmp_path, "备注名,账号\n张三,西湖店小满\n李四,滨江店小乔\n")
    with pytest.raises(imports.ImportInvalid) as exc:
        run(db, path, account_id=None, viewer=viewer_of(operator))
    assert errors_of(exc) == [(3, "账号", "你负责的账号里没有「滨江店小乔」")]
    with pytest.raises(imports.ImportInvalid) as foreign:
        run(db, write_csv(tmp_path, "备注名\n张三\n", name="b.csv"), account_id=theirs.id, viewer=viewer_of(operator))
    assert errors_of(foreign)[0][:2] == (0, "") and str(theirs.id) in errors_of(foreign)[0][2]
    assert customer_count(db) == 0
    result = run(db, write_csv(tmp_path, "备注名,账号\n张三,西湖店小满\n", name="c.csv"), account_id=None,
                 viewer=viewer_of(operator))
    assert result.counts.created == 1


def test_service_staff_cannot_import(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    staff = make.user("service", accounts=[account])
    with pytest.raises(imports.Forbidden):
        run(db, write_csv(tmp_path, "备注名\n张三\n"), account_id=account.id, viewer=viewer_of(staff))


# ---------------------------------------------------------------- dedup, update and skip


def test_the_same_import_twice_creates_nothing_the_second_time(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    path = write_csv(tmp_path, HEADER + "王芳,王芳,wangfang88,13800138000,人群:宝妈,,杭州,\n"
                                        "只有名字,,,,,,,\n"
                                        "小李,李,lixiaoli,,,,,\n")
    first = run(db, path, account_id=account.id)
    assert (first.counts.created, first.counts.updated, first.counts.skipped) == (3, 0, 0)
    second = run(db, path, account_id=account.id)
    assert (second.counts.created, second.counts.updated, second.counts.skipped) == (0, 0, 3)
    assert customer_count(db) == 3


def test_dedup_order_external_id_then_phone_then_wechat_id(db: Session, make: Any, tmp_path: Path) -> None:
    store, online = make.account(), make.account()
    by_external = make.customer(store, name="甲")
    by_external.wecom_external_userid = "wmEXT001"
    db.commit()
    by_phone = make.customer(store, name="乙", phones=["13800138000"])
    by_wechat = make.customer(store, name="丙", wechat_id="bing_wx")
    path = write_csv(tmp_path, "昵称,企业微信ID,手机号,微信号,地区\n"
                               "甲的新名字,wmEXT001,,,北京\n"
                               "乙,,+8613800138000,,上海\n"
                               "丙,,,bing_wx,广州\n"
                               "丁,,,bing_wx2,深圳\n")
    result = run(db, path, account_id=store.id)
    assert (result.counts.created, result.counts.updated) == (1, 3)
    db.expire_all()
    assert [db.get(Customer, c.id).city for c in (by_external, by_phone, by_wechat)] == ["北京", "上海", "广州"]
    # Same WeChat id under another account is another person (WeChat ids are per account's view).
    again = run(db, write_csv(tmp_path, "昵称,微信号\n丙,bing_wx\n", name="online.csv"), account_id=online.id)
    assert again.counts.created == 1


def test_update_fills_empty_fields_adds_tags_and_account_but_keeps_values(db: Session, make: Any,
                                                                            tmp_path: Path) -> None:
    store, online = make.account(), make.account()
    customer = make.customer(store, name="王芳", phones=["13800138000"], city="杭州", tags=["人群:宝妈"])
    path = write_csv(tmp_path, "昵称,手机号,地区,职业,标签\n王芳芳,13800138000,上海,教师,人群:白领\n")
    result = run(db, path, account_id=online.id)
    assert result.counts.updated == 1
    db.expire_all()
    kept = db.get(Customer, customer.id)
    assert kept is not None and kept.city == "杭州" and kept.job == "教师" and kept.name == "王芳"
    tags = {t.name for t in service.customer_tags(db, customer_ids=[customer.id])[customer.id]}
    assert {"宝妈", "白领"} <= tags
    accounts = {f.account_id for f in db.scalars(select(Friendship).where(Friendship.customer_id == customer.id))}
    assert accounts == {store.id, online.id}


def test_skip_mode_leaves_existing_customers_untouched(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    customer = make.customer(account, name="王芳", phones=["13800138000"])
    path = write_csv(tmp_path, "昵称,手机号,地区\n王芳,13800138000,上海\n新人,13900139000,\n")
    result = run(db, path, account_id=account.id, mode=imports.ImportMode.skip)
    assert (result.counts.created, result.counts.updated, result.counts.skipped) == (1, 0, 1)
    db.expire_all()
    assert db.get(Customer, customer.id).city == ""  # type: ignore[union-attr]


def test_dry_run_counts_and_writes_nothing(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    make.customer(account, name="王芳", phones=["13800138000"])
    path = write_csv(tmp_path, "昵称,手机号,地区\n王芳,13800138000,上海\n新人,13900139000,\n")
    result = run(db, path, account_id=account.id, dry_run=True)
    assert (result.counts.created, result.counts.updated, result.dry_run) == (1, 1, True)
    assert customer_count(db) == 1


def test_an_import_is_audited_once_with_its_counts(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    run(db, write_csv(tmp_path, "备注名\n张三\n李四\n"), account_id=account.id)
    entries = list(db.scalars(select(AuditEntry).where(AuditEntry.action == "import")))
    assert len(entries) == 1 and entries[0].after["created"] == 2 and entries[0].summary == "friends.csv"


def test_imported_customers_are_found_by_search(db: Session, make: Any, tmp_path: Path) -> None:
    account = make.account()
    run(db, write_csv(tmp_path, "备注名,描述\n张三,喜欢大红袍的老客户\n"), account_id=account.id)
    page = service.list_customers(db, flt=service.CustomerFilter(q="大红袍"), viewer=SYSTEM)
    assert [c.name for c in page.items] == ["张三"]


def test_batches_in_separate_transactions_give_the_same_result(db: Session, make: Any, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.core import db as core_db

    account = make.account()
    monkeypatch.setattr(imports, "BATCH_ROWS", 7)
    lines = "\n".join(f"顾客{i},{13_900_000_000 + i}" for i in range(50))
    path = write_csv(tmp_path, "备注名,手机号\n" + lines + "\n")
    progress: list[tuple[int, int]] = []
    result = imports.run_in_batches(core_db.transaction, source=imports.open_source(path),
                                    options=imports.ImportOptions(account_id=account.id), viewer=SYSTEM,
                                    filename="friends.csv", progress=lambda done, total: progress.append((done, total)))
    assert result.counts.created == 50 and progress[0] == (0, 50) and progress[-1] == (50, 50)
    assert customer_count(db) == 50


# ---------------------------------------------------------------- API


def test_api_import_summary_dry_run_and_errors(client: TestClient, make: Any, admin_headers: dict[str, str],
                                               db: Session) -> None:
    account = make.account()
    good = "备注名,手机号\n张三,13800138000\n".encode("gbk")
    response = client.post("/api/v1/customers/import", headers=admin_headers,
                           data={"account_id": str(account.id), "dry_run": "true"},
                           files={"file": ("好友.csv", good, "text/csv")})
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 1, "updated": 0, "skipped": 0, "rows": 1, "dry_run": True}
    assert customer_count(db) == 0
    response = client.post("/api/v1/customers/import", headers=admin_headers, data={"account_id": str(account.id)},
                           files={"file": ("好友.csv", good, "text/csv")})
    assert response.json()["created"] == 1
    bad = "备注名,手机号\n李四,123\n".encode()
    response = client.post("/api/v1/customers/import", headers=admin_headers, data={"account_id": str(account.id)},
                           files={"file": ("bad.csv", bad, "text/csv")})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"row": 2, "column": "手机号", "message": "不是大陆手机号：123"}]


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def test_api_imports_an_xlsx_upload_whatever_its_name(client: TestClient, make: Any, admin_headers: dict[str, str],
                                                     db: Session) -> None:
    account = make.account()
    data = xlsx_bytes([["备注名", "手机号", "标签"], ["王芳-宝妈", 13800138000, "人群:宝妈"], ["=1+1", None, None]])
    # Stored uploads have no suffix, and the name a client sends may be anything: the content decides.
    for name in ("好友.xlsx", "export", "friends.csv"):
        response = client.post("/api/v1/customers/import", headers=admin_headers,
                               data={"account_id": str(account.id), "dry_run": "true"},
                               files={"file": (name, data, "application/octet-stream")})
        assert response.status_code == 200, response.text
        assert response.json()["created"] == 2
    response = client.post("/api/v1/customers/import", headers=admin_headers, data={"account_id": str(account.id)},
                           files={"file": ("好友.xlsx", data, "application/vnd.openxmlformats-officedocument."
                                                            "spreadsheetml.sheet")})
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 2, "updated": 0, "skipped": 0, "rows": 2, "dry_run": False}
    assert sorted(db.scalars(select(Friendship.remark_name))) == ["=1+1", "王芳-宝妈"]
    assert db.scalar(select(Phone.number)) == "13800138000"


def test_an_import_stopped_after_a_batch_resumes_and_writes_each_row_once(db: Session, make: Any, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.core import db as core_db

    account = make.account()
    monkeypatch.setattr(imports, "iter_batches", functools.partial(imports.iter_batches, size=7))
    lines = "\n".join(f"顾客{i},{13_900_000_000 + i}" for i in range(50))
    path = write_csv(tmp_path, "备注名,手机号\n" + lines + "\n")
    saved: dict[str, Any] = {}
    original, batches = imports.apply_batch, []

    def dies_in_the_fourth_batch(session: Session, **kwargs: Any) -> imports.Counts:
        batches.append(len(kwargs["rows"]))
        counts = original(session, **kwargs)
        if len(batches) == 4:
            raise RuntimeError("worker killed")  # its rows roll back with the position
        return counts

    def run_it(resume: dict[str, Any] | None) -> imports.ImportResult:
        return imports.run_in_batches(core_db.transaction, source=imports.open_source(path),
                                      options=imports.ImportOptions(account_id=account.id), viewer=SYSTEM,
                                      filename="friends.csv", resume=resume,
                                      checkpoint=lambda _session, state: saved.update(state))

    monkeypatch.setattr(imports, "apply_batch", dies_in_the_fourth_batch)
    with pytest.raises(RuntimeError):
        run_it(None)
    db.expire_all()
    assert customer_count(db) == 21 and saved["written"] == 21 and saved["created"] == 21
    monkeypatch.setattr(imports, "apply_batch", original)
    result = run_it(dict(saved))
    db.expire_all()
    assert (result.rows, result.counts.created, result.counts.updated) == (50, 50, 0)
    assert customer_count(db) == 50 and db.scalar(select(func.count()).select_from(Phone)) == 50
    assert saved["recorded"] is True
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "import")) == 1
    # Resumed once more after the audit (the worker died before the job said so): nothing is written twice.
    again = run_it(dict(saved))
    assert again.counts.created == 50 and customer_count(db) == 50
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "import")) == 1


def test_api_import_refuses_a_missing_file_and_a_picture(client: TestClient, make: Any,
                                                         admin_headers: dict[str, str]) -> None:
    account = make.account()
    response = client.post("/api/v1/customers/import", headers=admin_headers, data={"account_id": str(account.id)})
    assert response.status_code == 422 and "file" in response.text
    response = client.post("/api/v1/customers/import", headers=admin_headers, data={"account_id": str(account.id)},
                           files={"file": ("a.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")})
    assert response.status_code == 422 and response.json()["errors"][0]["row"] == 0


def test_api_column_mapping_overrides_headers(client: TestClient, make: Any, admin_headers: dict[str, str],
                                              db: Session) -> None:
    account = make.account()
    data = "客户,号码\n张三,13800138000\n".encode()
    response = client.post("/api/v1/customers/import", headers=admin_headers,
                           data={"account_id": str(account.id), "columns": '{"客户": "remark_name", "号码": "phone"}'},
                           files={"file": ("x.csv", data, "text/csv")})
    assert response.status_code == 200, response.text
    assert db.scalar(select(Phone.number)) == "13800138000"


def test_api_large_file_runs_as_a_job_with_progress(client: TestClient, make: Any, admin_headers: dict[str, str],
                                                    db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    account = make.account()
    monkeypatch.setattr(imports, "BACKGROUND_ROWS", 5)
    data = ("备注名\n" + "\n".join(f"顾客{i}" for i in range(20)) + "\n").encode()
    response = client.post("/api/v1/customers/import", headers=admin_headers, data={"account_id": str(account.id)},
                           files={"file": ("big.csv", data, "text/csv")})
    assert response.status_code == 202, response.text
    job = client.get(response.json()["job_url"], headers=admin_headers).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["created"] == 20 and job["done"] == job["total"] == 20
    assert customer_count(db) == 20


# ---------------------------------------------------------------- CLI


def test_cli_import_dry_run_errors_and_write(make: Any, tmp_path: Path, db: Session) -> None:
    from siyu.cli import app

    account = make.account()
    runner = CliRunner()
    bad = write_csv(tmp_path, "备注名,手机号\n张三,13800138000\n李四,999\n", name="bad.csv")
    result = runner.invoke(app, ["customers", "import", str(bad), "--account", str(account.id)])
    assert result.exit_code == 2 and "第 3 行" in result.output and "手机号" in result.output
    good = write_csv(tmp_path, "备注名,手机号\n张三,13800138000\n", name="good.csv", encoding="gbk")
    result = runner.invoke(app, ["customers", "import", str(good), "--account", str(account.id), "--dry-run"])
    assert result.exit_code == 0 and "试运行" in result.output
    assert customer_count(db) == 0
    result = runner.invoke(app, ["customers", "import", str(good), "--account", str(account.id)])
    assert result.exit_code == 0, result.output
    assert "新建 1" in result.output
    assert customer_count(db) == 1
    # It ran as a job (had the command been killed, a worker's sweep would finish it) and kept no file.
    from siyu.core.models import Job, StoredFile

    (job,) = db.scalars(select(Job))
    assert (job.kind, job.status, job.created_by_id) == ("customers.import", "succeeded", None)
    assert job.params["resume"]["written"] == 1 and job.task.endswith("import_customers")
    assert db.scalar(select(func.count()).select_from(StoredFile)) == 0


# ---------------------------------------------------------------- the console wizard


def test_wizard_upload_map_check_and_import(console: Console, make: Any, admin: Any, db: Session) -> None:
    account = make.account(display_name="西湖店小满")
    console.login(admin)
    page = console.get("/customers/import")
    assert page.status_code == 200 and "导入客户" in page.text and "西湖店小满" in page.text
    csv_bytes = "客户名,手机号,备注\n<script>x</script>,13800138000,老客\n".encode("gbk")
    page = console.post("/customers/import", {"account_id": str(account.id), "mode": "update"},
                        files={"file": ("好友.csv", io.BytesIO(csv_bytes), "text/csv")})
    assert page.status_code == 200, page.text
    assert "每一列对应哪个字段" in page.text and "&lt;script&gt;x&lt;/script&gt;" in page.text
    token = page.text.split("/customers/import/")[1].split("/check")[0]
    # 客户名 is not a known header: the check reports the missing name column; mapping it fixes that.
    report = console.post(f"/customers/import/{token}/check", {"account_id": str(account.id), "map_0": "",
                                                                "map_1": "phone", "map_2": "remark_name"})
    assert report.status_code == 200 and "全部 1 行都已通过检查" in report.text
    bad = console.post(f"/customers/import/{token}/check", {"account_id": str(account.id), "map_0": "name",
                                                             "map_1": "city", "map_2": "city"})
    assert bad.status_code == 422 and "没有导入任何数据" in bad.text and "已经从列" in bad.text
    done = console.post(f"/customers/import/{token}/run", {"account_id": str(account.id), "map_0": "name",
                                                            "map_1": "phone", "map_2": "remark_name"})
    assert done.status_code == 200 and "已导入 1 行" in done.text
    assert db.scalar(select(Customer.name)) == "<script>x</script>"
    # The upload is gone once imported.
    assert console.get(f"/customers/import/{token}").status_code == 404


def test_wizard_shows_every_error_and_someone_elses_upload_is_not_found(console: Console, make: Any, admin: Any,
                                                                        client: TestClient) -> None:
    account = make.account()
    console.login(admin)
    csv_bytes = "备注名,手机号\n张三,123\n李四,456\n".encode()
    page = console.post("/customers/import", {"account_id": str(account.id)},
                        files={"file": ("bad.csv", io.BytesIO(csv_bytes), "text/csv")})
    token = page.text.split("/customers/import/")[1].split("/check")[0]
    report = console.post(f"/customers/import/{token}/check", {"account_id": str(account.id), "map_0": "remark_name",
                                                                "map_1": "phone"})
    assert report.status_code == 422
    assert report.text.count('data-testid="import-error"') == 2 and 'data-row="3"' in report.text
    other = make.user("admin", username="other-admin")
    client.cookies.clear()
    Console(client).login(other)
    assert client.get(f"/customers/import/{token}").status_code == 404


def test_wizard_without_a_file_or_with_a_picture_says_so(console: Console, admin: Any) -> None:
    console.login(admin)
    page = console.post("/customers/import", {"mode": "update"})
    assert page.status_code == 422 and "请选择要上传的 CSV 或 XLSX 文件" in page.text
    page = console.post("/customers/import", {"mode": "update"},
                        files={"file": ("x.png", io.BytesIO(b"\x89PNG\r\n\x1a\n\x00\x00"), "image/png")})
    assert page.status_code == 422 and "这不是 CSV 或 XLSX 文件" in page.text
