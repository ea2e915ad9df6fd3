"""A personal account's own WeChat QR code gets a renewal task on 今日任务 before it lapses: one task per
account and expiry date, made by the daily task job, shown to the account's operators on /today, and
closed when the operator uploads the new QR code on the account's QR page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts import qr_renewal
from siyu.accounts import service as accounts_service
from siyu.accounts.schemas import AccountUpdate
from siyu.core.settings import local_today
from siyu.maintenance import jobs as maintenance_jobs
from siyu.maintenance import service as maintenance_service
from siyu.maintenance.models import Task, TaskKind, TaskStatus
from tests.conftest import SYSTEM, viewer_of
from tests.test_pages import Console

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _personal(make: Any, *, expires_in: int | None, owner: Any = None, name: str = "山野茶舍·小满") -> Any:
    today = local_today()
    return make.account(display_name=name, kind="personal", wecom_userid=None, qr_image_url="/media/persona/qr.png",
                        qr_expires_on=None if expires_in is None else today + timedelta(days=expires_in),
                        owner_user_id=owner.id if owner else None)


def _renewals(db: Session, account: Any) -> list[Task]:
    return list(db.scalars(select(Task).where(Task.kind == TaskKind.account_qr.value, Task.account_id == account.id)
                           .order_by(Task.id)))


def test_a_task_names_the_account_when_its_qr_expires_within_three_days_or_has_expired(
        db: Session, make: Any) -> None:
    operator = make.user()
    soon = _personal(make, expires_in=qr_renewal.RENEWAL_NOTICE_DAYS, owner=operator)
    lapsed = _personal(make, expires_in=-2, name="山野茶舍·阿竹")
    later = _personal(make, expires_in=qr_renewal.RENEWAL_NOTICE_DAYS + 1, name="山野茶舍·远")
    undated = _personal(make, expires_in=None, name="山野茶舍·无期")
    wecom = make.account()

    result = qr_renewal.make_renewal_tasks(db)
    db.commit()

    assert result.created == 2
    [task] = _renewals(db, soon)
    assert task.customer_id is None and task.operator_id == operator.id and task.status == TaskStatus.open.value
    assert task.day == local_today() and task.ref_id == qr_renewal.expiry_ref(soon.qr_expires_on)
    assert "「山野茶舍·小满」" in task.detail and "将于" in task.detail
    [expired] = _renewals(db, lapsed)
    assert "「山野茶舍·阿竹」" in expired.detail and "已于" in expired.detail and expired.overdue_days == 2
    assert _renewals(db, later) == [] and _renewals(db, undated) == [] and _renewals(db, wecom) == []


def test_the_daily_job_twice_makes_one_task_and_carries_an_open_one_to_the_next_day(db: Session, make: Any) -> None:
    account = _personal(make, expires_in=1)
    first = maintenance_jobs.run_daily(db, service=maintenance_service)
    second = maintenance_jobs.run_daily(db, service=maintenance_service)
    db.commit()
    assert first["qr_renewal"] == {"created": 1, "carried": 0}
    assert second["qr_renewal"] == {"created": 0, "carried": 0}
    assert len(_renewals(db, account)) == 1

    # Tomorrow the open task moves to that day's list (never a second task for the same expiry).
    tomorrow = local_today() + timedelta(days=1)
    again = qr_renewal.make_renewal_tasks(db, today=tomorrow)
    db.commit()
    [task] = _renewals(db, account)
    assert (again.created, again.carried) == (0, 1) and task.day == tomorrow

    # Skipped by the operator: not made again for this expiry.
    maintenance_service.skip_task(db, task_id=task.id, reason="换了新手机", viewer=SYSTEM)
    db.commit()
    assert qr_renewal.make_renewal_tasks(db, today=tomorrow).created == 0


def test_a_new_expiry_closes_the_open_task_and_the_next_lapse_gets_its_own(db: Session, make: Any) -> None:
    account = _personal(make, expires_in=0)
    qr_renewal.make_renewal_tasks(db)
    accounts_service.update_account(db, account_id=account.id, data=AccountUpdate(
        qr_expires_on=local_today() + timedelta(days=2)), actor=SYSTEM)
    db.commit()
    [closed] = _renewals(db, account)
    assert closed.status == TaskStatus.closed.value and closed.finished_at is not None

    assert qr_renewal.make_renewal_tasks(db).created == 1  # the new date is within the notice days too
    db.commit()
    assert [t.status for t in _renewals(db, account)] == [TaskStatus.closed.value, TaskStatus.open.value]


def test_an_operator_sees_the_task_on_today_and_closes_it_by_uploading_the_new_qr(
        client: TestClient, db: Session, make: Any) -> None:
    operator = make.user()
    account = _personal(make, expires_in=2, owner=operator)
    team_user = make.user(accounts=[account])  # the account's operator (it is on their accounts)
    maintenance_jobs.run_daily(db, service=maintenance_service)
    db.commit()
    console = Console(client).login(team_user)

    page = console.get("/today")
    assert page.status_code == 200
    assert 'data-kind="account_qr"' in page.text and "「山野茶舍·小满」的个人微信二维码将于" in page.text
    assert "更新个人号二维码" in page.text and f'href="/accounts/{account.id}/qr"' in page.text

    # "Done" is not how it ends: the upload answers it.
    [task] = _renewals(db, account)
    done = console.post(f"/today/{task.id}/done", {"note": ""})
    assert done.status_code in (303, 422)
    db.expire_all()
    assert _renewals(db, account)[0].status == TaskStatus.open.value

    form = console.get(f"/accounts/{account.id}/qr")
    assert form.status_code == 200 and 'data-testid="qr-form"' in form.text
    bad = console.post(f"/accounts/{account.id}/qr", {"qr_expires_on": "2020-01-01"},
                       files={"qr_image": ("qr.png", PNG, "image/png")})
    assert bad.status_code == 422 and "该日期已过" in bad.text

    new_day = local_today() + timedelta(days=7)
    saved = console.post(f"/accounts/{account.id}/qr", {"qr_expires_on": new_day.isoformat()},
                         files={"qr_image": ("qr.png", PNG, "image/png")})
    assert saved.status_code == 303, saved.text
    db.expire_all()
    [task] = _renewals(db, account)
    assert task.status == TaskStatus.closed.value
    refreshed = accounts_service.get_account(db, account_id=account.id, viewer=viewer_of(team_user))
    assert refreshed.qr_expires_on == new_day and refreshed.qr_image_url != "/media/persona/qr.png"
    assert 'data-kind="account_qr"' not in console.get("/today").text


def test_another_operator_cannot_open_the_qr_page_of_an_account_not_theirs(
        client: TestClient, make: Any) -> None:
    account = _personal(make, expires_in=2)
    stranger = make.user(accounts=[make.account()])
    console = Console(client).login(stranger)
    assert console.get(f"/accounts/{account.id}/qr").status_code == 404
    assert console.post(f"/accounts/{account.id}/qr", {"qr_expires_on": local_today().isoformat()}).status_code == 404
