"""个人微信二维码续期: a task on 今日任务 before a personal account's own QR code lapses.

A personal account's channel landing page (``/c/<key>``) shows the account's own WeChat QR image
(uploaded with the date it stops working) only until that date. So that new friends keep arriving,
the daily task job (``maintenance.jobs.run_daily``) asks here for one renewal task per account whose
QR expires within ``RENEWAL_NOTICE_DAYS`` or has expired: for the account's operators (the task is on
the account; the owner's list, and every operator of the account sees it).

One task per account and expiry date: the expiry is the task's ``ref_id`` (``date.toordinal()``), so
running the job again creates nothing twice; an open task from an earlier day moves to today (the
list shows the day's tasks), a snoozed one waits for its day, and one skipped is not made again for
the same expiry. Saving a new QR image or expiry date (``accounts.service.update_account``) closes
the account's open renewal tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind, AccountStatus
from siyu.core.db import utcnow
from siyu.core.i18n import _
from siyu.core.settings import local_today
from siyu.maintenance.models import Task, TaskKind, TaskStatus

# Days before the expiry date the renewal task appears (a product choice: time to regenerate the code
# on the phone and upload it before the landing page stops showing it).
RENEWAL_NOTICE_DAYS = 3
# Above routine check-ins and a waiting chat: without the QR a channel adds no friend to this account.
RENEWAL_PRIORITY = 450
OPEN = (TaskStatus.open.value, TaskStatus.snoozed.value)


@dataclass
class RenewalResult:
    created: int = 0
    carried: int = 0  # open tasks of an earlier day moved to today


def expiry_ref(expires_on: date) -> int:
    """The task's ``ref_id``: the expiry date it was made for."""
    return expires_on.toordinal()


def due_accounts(session: Session, *, today: date) -> list[Account]:
    """Active personal accounts with a QR image that expires within the notice days or has expired."""
    horizon = date.fromordinal(today.toordinal() + RENEWAL_NOTICE_DAYS)
    return list(session.scalars(select(Account).where(
        Account.kind == AccountKind.personal.value, Account.status == AccountStatus.active.value,
        Account.qr_image_url != "", Account.qr_expires_on.is_not(None), Account.qr_expires_on <= horizon)
        .order_by(Account.id)))


def task_text(account: Account, *, today: date) -> str:
    expires = account.qr_expires_on
    assert expires is not None
    if expires < today:
        return _("The WeChat QR code of {account} expired on {day}: make a new one on the phone and upload it",
                 account=account.display_name, day=expires.isoformat())
    return _("The WeChat QR code of {account} expires on {day}: make a new one on the phone and upload it",
             account=account.display_name, day=expires.isoformat())


def make_renewal_tasks(session: Session, *, today: date | None = None, now: datetime | None = None) -> RenewalResult:
    """One renewal task per due account and expiry date (idempotent; see the module's doc)."""
    now = now or utcnow()
    today = today or local_today()
    result = RenewalResult()
    accounts = due_accounts(session, today=today)
    if not accounts:
        return result
    existing: dict[tuple[int, int | None], list[Task]] = {}
    for task in session.scalars(select(Task).where(Task.kind == TaskKind.account_qr.value,
                                                   Task.account_id.in_([a.id for a in accounts]))):
        existing.setdefault((task.account_id, task.ref_id), []).append(task)
    for account in accounts:
        assert account.qr_expires_on is not None
        ref = expiry_ref(account.qr_expires_on)
        overdue = max(0, (today - account.qr_expires_on).days)
        tasks = existing.get((account.id, ref), [])
        if tasks:
            for task in tasks:  # at most one is open; a finished one means: handled for this expiry
                if task.status == TaskStatus.open.value and task.day < today:
                    task.day, task.overdue_days = today, overdue
                    task.detail = task_text(account, today=today)[:255]
                    result.carried += 1
            continue
        session.add(Task(kind=TaskKind.account_qr.value, customer_id=None, account_id=account.id,
                         operator_id=account.owner_user_id, day=today, priority=RENEWAL_PRIORITY,
                         overdue_days=overdue, status=TaskStatus.open.value,
                         detail=task_text(account, today=today)[:255], ref_id=ref, created_at=now))
        result.created += 1
    session.flush()
    return result


def close_tasks(session: Session, *, account_id: int) -> int:
    """A new QR image or expiry date was saved: the account's open renewal tasks are answered."""
    closed = session.execute(update(Task).where(
        Task.kind == TaskKind.account_qr.value, Task.account_id == account_id, Task.status.in_(OPEN))
        .values(status=TaskStatus.closed.value, finished_at=utcnow()).execution_options(synchronize_session="fetch"))
    return int(getattr(closed, "rowcount", 0) or 0)
