"""Campaigns (群发): plan a mass send within the send quota, create its WeCom tasks once, read back
what happened, and measure what it earned.

**Planning** is set-based, so a 200,000-customer segment is a handful of statements: the segment's
ids (the one compiler, through the customer filter), a seeded random hold-out, each customer's
sending account (one read of the active friendships, chosen in one pass), the quota
(``sends.check``: one aggregate that reads back only the customers already at the limit, from the
ledger's index of open reservations), the A/B split, and chunks of at most ``TASK_MAX_CUSTOMERS``
per sending account and copy, cut in one pass; the tasks are one batched INSERT, the recipients one
``INSERT … SELECT`` per chunk and group, the reservations one ``INSERT … SELECT`` in id order. Creating
the campaign **reserves** the sends in the ledger (``sends.reserve``) in the same transaction as
the recipients and chunks — before any task exists — so customers over quota are left out and
listed, never discovered afterwards as WeCom's status 3.

**Creating tasks**: a chunk is claimed (pending → creating) and committed before WeCom is asked,
and the claim is a conditional UPDATE, so two workers never send one chunk and a customer (in
exactly one chunk: the recipient row is unique per campaign) is never in two tasks. A busy WeCom
(45009 …) is waited out by the client; still busy, the chunk goes back to pending for the next run.
An answer lost after WeCom may have acted is never repeated (``maybe_created``). A personal
account's chunk becomes its operator's task list (maintenance tasks of kind ``campaign``).

**Numbers**: 送达率 delivered / targeted; 互动率 delivered customers who wrote to us (inbox) or
engaged with our moments within 48 h; buyers and revenue of orders within ``window_days`` of the
delivery whose last campaign touch was this one; beside the hold-out, the share who bought in the
window from the send, so the lift is measured; deletions within 48 h. Per variant.
"""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    Integer,
    Interval,
    String,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from siyu.accounts.models import Account, AccountKind, AccountStatus
from siyu.campaigns import attachments as campaign_attachments
from siyu.campaigns import rewards
from siyu.campaigns.models import (
    ENGAGED_WITHIN_HOURS,
    HOLDOUT_MAX,
    HOLDOUT_MIN,
    REMINDERS_PER_DAY,
    TASK_MAX_CUSTOMERS,
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    CampaignTask,
    RecipientGroup,
    RecipientStatus,
    TaskChannel,
    TaskState,
)
from siyu.campaigns.schemas import CampaignEdit, CampaignIn
from siyu.core import jobs
from siyu.core.db import among, integers_of, utcnow
from siyu.core.errors import Conflict, Forbidden, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.settings import local_zone
from siyu.core.spreadsheet import neutralise
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import variables
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Touch, TouchKind
from siyu.library import service as library
from siyu.sends import service as sends
from siyu.sends.models import SendSource

BATCH = 5000
PAGE = 50
# A personal account's task the operator skipped (with their reason, when given): the message was not sent.
OPERATOR_SKIPPED = N_("The operator skipped the task; it was not sent")
OPERATOR_SKIPPED_BECAUSE = N_("The operator skipped the task; it was not sent (reason: {reason})")
# Still not ticked off when the results are read after ``send_results.GIVE_UP_AFTER``: the recipient, and the task.
NOT_TICKED_OFF = N_("The operator did not tick the task off within {days} days; counted as not sent")
TASK_EXPIRED = N_("Not ticked off within {days} days of the mass send: no longer waited for")


class CampaignNotFound(NotFound):
    pass


def ref_of(campaign_id: int) -> str:
    """The ledger's reference of a campaign's sends."""
    return f"campaign:{campaign_id}"


def _may_write(viewer: Viewer) -> None:
    if viewer.role not in ("admin", "planner"):
        raise Forbidden("Only administrators and planners send campaigns")


# ---------------------------------------------------------------- the copy


def check_copy(session: Session, data: CampaignIn | CampaignEdit, *, materials: Sequence[int] = (),
               coupon: bool = False) -> None:
    """Customer-safe variables only, and only those the same for a whole task: one task carries one text
    to up to 10,000 customers, so {称呼} cannot be filled per customer; {账号} is the sending account.
    With a coupon batch, {券码} too (personal accounts' task lists only: ``campaigns.rewards``)."""
    from siyu.wecom.client import MASS_SEND_TEXT_BYTES

    coupon = coupon or bool(getattr(data, "coupon_batch_id", None))
    allowed = (variables.ACCOUNT, variables.COUPON) if coupon else (variables.ACCOUNT,)
    for name in ("text", "text_b"):
        text = getattr(data, name, None) or ""
        variables.check_outgoing(text, field=name, allowed=allowed)
        if len(text.encode("utf-8")) > MASS_SEND_TEXT_BYTES:
            raise Invalid("The text is longer than WeCom accepts ({limit} bytes)", field=name,
                          limit=MASS_SEND_TEXT_BYTES)
    if isinstance(data, CampaignIn):
        if not data.text.strip() and not materials:
            raise Invalid("Write the text or pick at least one material", field="text")
        if len(materials) > library.MAX_ATTACHMENTS:
            raise Invalid("At most {n} attachments", field="material_ids", n=library.MAX_ATTACHMENTS)
        found = library.get_materials(session, materials)
        if len(found) != len(set(materials)):
            raise Invalid("A material was not found or was retired", field="material_ids")
        if data.holdout_percent and not HOLDOUT_MIN <= data.holdout_percent <= HOLDOUT_MAX:
            raise Invalid("The hold-out is 0, or between {low} and {high} per cent", field="holdout_percent",
                          low=HOLDOUT_MIN, high=HOLDOUT_MAX)


def text_for(text: str, account_name: str) -> str:
    """The task's text: {账号} filled; {券码} kept for each customer's line (``campaigns.rewards``)."""
    return variables.render(text, variables.Values(account=account_name, coupon=rewards.CODE_VARIABLE))


# ---------------------------------------------------------------- planning


@dataclass
class Plan:
    segment_size: int = 0
    holdout: list[int] = field(default_factory=list)
    over_quota: dict[int, str] = field(default_factory=dict)
    unreachable: list[int] = field(default_factory=list)
    # (account id, variant) → customer ids, each sending account's customers in id order
    sending: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    channels: dict[int, str] = field(default_factory=dict)  # account id → TaskChannel
    accounts: dict[int, int] = field(default_factory=dict)  # customer id → sending account
    coupons: rewards.CouponCheck | None = None  # the coupon batch's pool against the customers sent to

    @property
    def targeted(self) -> int:
        return sum(len(v) for v in self.sending.values())

    def variant_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for (_account, variant), ids in self.sending.items():
            counts[variant] += len(ids)
        return dict(counts)

    def chunks(self) -> list[tuple[int, str, int, list[int]]]:
        """(account, variant, chunk number, customer ids): at most TASK_MAX_CUSTOMERS each (W:92135)."""
        out = []
        for (account_id, variant), ids in sorted(self.sending.items()):
            for n, start in enumerate(range(0, len(ids), TASK_MAX_CUSTOMERS)):
                out.append((account_id, variant, n, ids[start:start + TASK_MAX_CUSTOMERS]))
        return out


def segment_ids(session: Session, segment_id: int, viewer: Viewer) -> list[int]:
    """The segment's customers as this viewer may see them, through the one compiler."""
    from siyu.customers import service as customers_service
    from siyu.segments import service as segments_service

    segment = segments_service.get_segment(session, segment_id=segment_id, viewer=viewer)
    if segment.broken:
        raise Invalid(segments_service.broken_message(segment), field="segment_id")
    clauses = customers_service._filter_clauses(session, segments_service.segment_filter(segment), viewer)
    return [int(i) for i in session.scalars(select(Customer.id).where(*clauses).order_by(Customer.id))]


def _rank(kind: str, userid: str | None, external: str | None) -> tuple[int, str] | None:
    """How a customer is reached from one of its accounts: a WeCom member first, then a personal account."""
    if kind == AccountKind.wecom.value:
        if not userid or not external:
            return None  # WeCom can only send to a customer it knows, from a member it knows
        return 0, TaskChannel.wecom.value
    if kind == AccountKind.personal.value:
        return 1, TaskChannel.personal.value
    return None  # 公众号 / 微信客服 accounts take no 群发 to a segment


def _choose(rows: Iterator[Any] | Sequence[Any]) -> tuple[list[int], dict[int, int], dict[int, str]]:
    """From rows (customer, account, kind, userid, external) ordered by customer, then the friendship's age:
    the customers in order, each one's sending account (the best rank, the earliest friendship first),
    and each chosen account's channel — one pass."""
    ids: list[int] = []
    chosen: dict[int, int] = {}
    ranks: dict[int, int] = {}
    channels: dict[int, str] = {}
    last = None
    for customer_id, account_id, kind, userid, external in rows:
        if customer_id != last:
            ids.append(int(customer_id))
            last = customer_id
        if account_id is None:
            continue
        ranked = _rank(kind, userid, external)
        if ranked is None:
            continue
        rank, channel = ranked
        if customer_id not in ranks or rank < ranks[customer_id]:
            ranks[customer_id], chosen[int(customer_id)] = rank, int(account_id)
            channels[int(account_id)] = channel
    return ids, chosen, {a: channels[a] for a in set(chosen.values())}


def senders(session: Session, ids: Sequence[int], viewer: Viewer) -> tuple[dict[int, int], dict[int, str]]:
    """Each customer's sending account: a WeCom member when the customer has a WeCom id, else a personal
    account, the earliest friendship first; and each such account's channel."""
    if not ids:
        return {}, {}
    query = (select(Friendship.customer_id, Friendship.account_id, Account.kind, Account.wecom_userid,
                    Customer.wecom_external_userid)
             .join(Account, Account.id == Friendship.account_id)
             .join(Customer, Customer.id == Friendship.customer_id)
             .where(among(session, Friendship.customer_id, list(ids)),
                    Friendship.status == FriendshipStatus.active.value,
                    Account.status == AccountStatus.active.value)
             .order_by(Friendship.customer_id, Friendship.added_at, Friendship.id))
    if not viewer.sees_all_accounts:
        query = query.where(Friendship.account_id.in_(sorted(viewer.account_ids) or [-1]))
    _ids, chosen, channels = _choose(session.execute(query))
    return chosen, channels


def plan(session: Session, *, data: CampaignIn, viewer: Viewer, at: datetime, seed: int,
         quota: bool = True) -> Plan:
    """Who is held out, over quota, unreachable, and which task each of the others is in — read only.

    ``quota=False`` leaves the quota to the caller's ``sends.reserve`` (which checks it under the ledger's
    lock anyway): a send that is recorded counts each period once, not twice."""
    ids = segment_ids(session, data.segment_id, viewer)
    result = Plan(segment_size=len(ids))
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not a secret
    if data.holdout_percent and ids:
        size = max(1, round(len(ids) * data.holdout_percent / 100))
        held = set(rng.sample(ids, size))
        result.holdout = sorted(held)
        ids = [i for i in ids if i not in held]
    accounts, result.channels = senders(session, ids, viewer)
    result.unreachable = [i for i in ids if i not in accounts]
    allowed = [i for i in ids if i in accounts]
    if quota:
        checked = sends.check(session, allowed, at)
        result.over_quota, allowed = checked.refused, checked.allowed
    split = bool(data.text_b.strip())
    for customer_id in allowed:
        variant = "B" if split and rng.random() < 0.5 else "A"
        result.sending.setdefault((accounts[customer_id], variant), []).append(customer_id)
    result.accounts = accounts
    return result


# ---------------------------------------------------------------- creating a campaign


def create_campaign(session: Session, *, data: CampaignIn, viewer: Viewer,
                    now: datetime | None = None) -> tuple[Campaign | None, Plan]:
    """Plan the send; unless ``dry_run``, record it: the campaign, its recipients and chunks, and the
    ledger's reservations — all in the caller's transaction, before any WeCom task exists."""
    _may_write(viewer)
    now = now or utcnow()
    at = data.scheduled_at or now
    if at.tzinfo is None:
        at = at.replace(tzinfo=local_zone())
    if at < now - timedelta(minutes=5):
        raise Invalid("The send time is in the past", field="scheduled_at")
    materials = list(dict.fromkeys(data.material_ids))
    check_copy(session, data, materials=materials)
    seed = random.SystemRandom().randrange(1, 2**31)
    planned = plan(session, data=data, viewer=viewer, at=at, seed=seed, quota=data.dry_run)
    if data.coupon_batch_id is not None and data.dry_run:
        planned.coupons = _coupon_check(session, data, planned, at)
    if data.dry_run:
        return None, planned
    if not planned.targeted and not planned.holdout:
        raise Invalid("Nobody in this segment can be sent to", field="segment_id")
    campaign = Campaign(name=data.name.strip(), segment_id=data.segment_id, text=data.text, text_b=data.text_b,
                        material_ids=materials, coupon_batch_id=data.coupon_batch_id,
                        holdout_percent=data.holdout_percent,
                        window_days=data.window_days, seed=seed, scheduled_at=at,
                        status=CampaignStatus.scheduled.value, created_by_id=viewer.user_id, created_at=now)
    session.add(campaign)
    session.flush()
    reservation = sends.reserve(session, sorted(c for ids in planned.sending.values() for c in ids), at,
                                source=SendSource.campaign, ref=ref_of(campaign.id))
    if reservation.refused:  # another send took their last message since the plan was read
        planned.over_quota.update(reservation.refused)
        planned.sending = {k: [c for c in v if c not in reservation.refused] for k, v in planned.sending.items()}
        planned.sending = {k: v for k, v in planned.sending.items() if v}
    if data.coupon_batch_id is not None:  # against the customers actually sent to: refused before any row
        planned.coupons = _coupon_check(session, data, planned, at)
        rewards.refuse(planned.coupons)
    _write_plan(session, campaign, planned)
    if data.coupon_batch_id is not None:  # all or nothing, in this transaction (campaigns.rewards)
        rewards.issue(session, batch_id=data.coupon_batch_id, viewer=viewer, at=now,
                      customer_ids=[c for ids in planned.sending.values() for c in ids])
    from siyu.team.service import record_audit

    record_audit(session, actor=viewer, action="create", entity_type="campaign", entity_id=campaign.id,
                 after={"name": campaign.name, "segment_id": data.segment_id, "targeted": planned.targeted,
                        "over_quota": len(planned.over_quota), "holdout": len(planned.holdout)})
    if at <= now + timedelta(seconds=30):
        campaign.status = CampaignStatus.sending.value
        jobs.enqueue_after_commit(session, "campaigns.jobs.send_campaign", campaign.id)
    return campaign, planned


def _coupon_check(session: Session, data: CampaignIn, planned: Plan, at: datetime) -> rewards.CouponCheck:
    sending = [c for ids in planned.sending.values() for c in ids]
    wecom = sum(len(ids) for (account, _v), ids in planned.sending.items()
                if planned.channels.get(account) == TaskChannel.wecom.value)
    assert data.coupon_batch_id is not None
    return rewards.check(session, batch_id=data.coupon_batch_id, customer_ids=sending, wecom_customers=wecom, at=at,
                         texts=(data.text, data.text_b))


def _write_plan(session: Session, campaign: Campaign, planned: Plan) -> None:
    """The chunks, then every recipient: one ``INSERT … SELECT`` per group of rows that differ only in the
    customer (a chunk, the hold-out, the unreachable, the over-quota customers of one reason)."""
    table = cast(Table, CampaignRecipient.__table__)
    columns = ["campaign_id", "customer_id", "account_id", "task_id", "grp", "variant", "status", "reason",
               "delivered_at"]

    def add(ids: Sequence[int], *, account_id: int | None, task_id: int | None, grp: RecipientGroup,
            variant: str, status: RecipientStatus, reason: str = "") -> None:
        if not ids:
            return
        source = integers_of(session, ids)
        session.execute(insert(table).from_select(columns, select(
            literal(campaign.id, Integer()), source.c.value, literal(account_id, Integer()),
            literal(task_id, Integer()), literal(grp.value, String()), literal(variant, String()),
            literal(status.value, String()), literal(reason[:255], String()), null())))

    chunks = planned.chunks()
    tasks = [CampaignTask(campaign_id=campaign.id, account_id=account_id, variant=variant, chunk=n,
                          channel=planned.channels[account_id], state=TaskState.pending.value, size=len(ids),
                          reminders=[]) for account_id, variant, n, ids in chunks]
    session.add_all(tasks)
    session.flush()  # every chunk's task in one batched INSERT
    for task, (account_id, variant, _n, ids) in zip(tasks, chunks, strict=True):
        add(ids, account_id=account_id, task_id=task.id, grp=RecipientGroup.send, variant=variant,
            status=RecipientStatus.planned)
    left = RecipientStatus.left_out
    add(planned.holdout, account_id=None, task_id=None, grp=RecipientGroup.holdout, variant="", status=left)
    by_reason: dict[tuple[str, int | None], list[int]] = defaultdict(list)
    for customer_id, reason in planned.over_quota.items():
        by_reason[(reason, planned.accounts.get(customer_id))].append(customer_id)
    for (reason, sender), ids in sorted(by_reason.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        add(sorted(ids), account_id=sender, task_id=None, grp=RecipientGroup.over_quota, variant="",
            status=left, reason=reason)
    add(planned.unreachable, account_id=None, task_id=None, grp=RecipientGroup.unreachable, variant="",
        status=left, reason=_("No active friendship on an account that can send to this customer"))


# ---------------------------------------------------------------- reading


def list_campaigns(session: Session, *, viewer: Viewer, limit: int = 100) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(limit)))


def get_campaign(session: Session, *, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignNotFound("Campaign not found")
    return campaign


def tasks_of(session: Session, campaign_id: int) -> list[CampaignTask]:
    return list(session.scalars(select(CampaignTask).where(CampaignTask.campaign_id == campaign_id)
                                .order_by(CampaignTask.account_id, CampaignTask.variant, CampaignTask.chunk)))


# ---------------------------------------------------------------- edit, copy


def update_campaign(session: Session, *, campaign_id: int, data: CampaignEdit, viewer: Viewer) -> Campaign:
    """Only a campaign not sent yet may change (its name and copy): a sent one is refused — copy it."""
    _may_write(viewer)
    campaign = get_campaign(session, campaign_id=campaign_id)
    if campaign.status != CampaignStatus.scheduled.value:
        raise Conflict("This campaign was already sent and cannot be edited; copy it to send a new one")
    check_copy(session, data, coupon=campaign.coupon_batch_id is not None)
    if rewards.uses_code(data.text or "", data.text_b or "") and session.scalar(select(CampaignTask.id).where(
            CampaignTask.campaign_id == campaign.id, CampaignTask.channel == TaskChannel.wecom.value).limit(1)):
        raise Invalid(rewards.WECOM_VARIABLE, field="text", n=int(session.scalar(
            select(func.count()).select_from(CampaignRecipient).join(
                CampaignTask, CampaignTask.id == CampaignRecipient.task_id)
            .where(CampaignRecipient.campaign_id == campaign.id,
                   CampaignTask.channel == TaskChannel.wecom.value)) or 0))
    if data.text_b is not None and bool(data.text_b.strip()) != bool(campaign.text_b.strip()):
        raise Invalid("Adding or removing the B copy changes the split: copy the campaign instead", field="text_b")
    before = {"name": campaign.name, "text": campaign.text, "text_b": campaign.text_b}
    for name in ("name", "text", "text_b"):
        value = getattr(data, name)
        if value is not None:
            setattr(campaign, name, value.strip() if name == "name" else value)
    if not campaign.text.strip() and not campaign.material_ids:
        raise Invalid("Write the text or pick at least one material", field="text")
    from siyu.team.service import record_audit

    record_audit(session, actor=viewer, action="update", entity_type="campaign", entity_id=campaign.id,
                 before=before, after={"name": campaign.name, "text": campaign.text, "text_b": campaign.text_b})
    return campaign


def copy_values(campaign: Campaign) -> dict[str, Any]:
    """A sent campaign's settings for a new one (复制)."""
    return {"name": _("{name} (copy)", name=campaign.name)[:128], "segment_id": campaign.segment_id or "",
            "text": campaign.text, "text_b": campaign.text_b,
            "material_ids": ",".join(str(i) for i in campaign.material_ids or []),
            "holdout_percent": campaign.holdout_percent, "window_days": campaign.window_days, "scheduled_at": "",
            "coupon_batch_id": campaign.coupon_batch_id or ""}


# ---------------------------------------------------------------- creating the tasks


@dataclass
class SendRun:
    created: int = 0
    personal: int = 0
    busy: int = 0
    failed: int = 0
    uncertain: int = 0


def _claim(session: Session, task_id: int) -> bool:
    result = session.execute(update(CampaignTask).where(CampaignTask.id == task_id,
                                                        CampaignTask.state == TaskState.pending.value)
                             .values(state=TaskState.creating.value, attempts=CampaignTask.attempts + 1),
                             execution_options={"synchronize_session": False})
    return bool(getattr(result, "rowcount", 0))


def _set_recipients(session: Session, task_id: int, status: RecipientStatus, *, reason: str = "",
                    only: Sequence[int] | None = None) -> None:
    query = update(CampaignRecipient).where(CampaignRecipient.task_id == task_id)
    if only is not None:
        query = query.where(among(session, CampaignRecipient.customer_id, list(only)))
    session.execute(query.values(status=status.value, reason=reason[:255]),
                    execution_options={"synchronize_session": False})


def due_campaigns(session: Session, *, now: datetime | None = None) -> list[int]:
    now = now or utcnow()
    return [int(i) for i in session.scalars(select(Campaign.id).where(or_(
        and_(Campaign.status == CampaignStatus.scheduled.value, Campaign.scheduled_at <= now),
        Campaign.status == CampaignStatus.sending.value)).order_by(Campaign.id))]


def send_campaign(session: Session, campaign_id: int, *, api: Any = None, now: datetime | None = None,
                  commit: bool = True) -> SendRun:
    """Create the campaign's pending tasks: WeCom tasks through ``add_msg_template`` (one per chunk, claimed
    and committed first) and personal accounts' task lists. Idempotent; run again after a busy WeCom."""
    from siyu.wecom.client import WecomApiError

    now = now or utcnow()
    run = SendRun()
    campaign = get_campaign(session, campaign_id=campaign_id)
    if campaign.status == CampaignStatus.cancelled.value or campaign.status == CampaignStatus.sent.value:
        return run
    if campaign.status == CampaignStatus.scheduled.value:
        if campaign.scheduled_at > now:
            return run
        campaign.status = CampaignStatus.sending.value
    attachments: list[dict[str, Any]] | None = None  # built for the run's first WeCom task (campaigns.attachments)
    unavailable: campaign_attachments.AttachmentUnavailable | None = None
    names = {a.id: (a.display_name, a.wecom_userid or "") for a in session.scalars(select(Account).where(
        Account.id.in_(select(CampaignTask.account_id).where(CampaignTask.campaign_id == campaign_id))))}
    pending = [t.id for t in session.scalars(select(CampaignTask).where(
        CampaignTask.campaign_id == campaign_id, CampaignTask.state == TaskState.pending.value)
        .order_by(CampaignTask.id))]
    for task_id in pending:
        task = session.get(CampaignTask, task_id)
        assert task is not None
        name, userid = names.get(task.account_id, ("", ""))
        text = text_for(campaign.text_b if task.variant == "B" else campaign.text, name)
        if task.channel == TaskChannel.personal.value:
            if _claim(session, task.id):
                session.refresh(task)
                _personal_tasks(session, campaign, task, text, now=now)
                run.personal += 1
            continue
        if api is None:
            api = _api(session)
            if api is None:
                session.execute(update(CampaignTask).where(CampaignTask.id == task.id)
                                .values(error=_("WeCom is not connected: the tasks wait until it is")))
                continue
        if attachments is None and unavailable is None:
            try:
                attachments = campaign_attachments.for_wecom(session, api, campaign.material_ids or [], now=now)
            except campaign_attachments.AttachmentUnavailable as exc:
                unavailable = exc
        if unavailable is not None:
            if _attachment_unavailable(session, campaign, task, unavailable):
                run.busy += 1
            else:
                run.failed += 1
            if commit:
                session.commit()
            continue
        if not _claim(session, task.id):
            continue
        if commit:
            session.commit()  # the claim is durable before WeCom hears of it: one task per chunk, ever
        externals = dict(session.execute(
            select(Customer.wecom_external_userid, Customer.id).join(
                CampaignRecipient, CampaignRecipient.customer_id == Customer.id)
            .where(CampaignRecipient.task_id == task_id)).all())
        session.refresh(task)  # the claim's UPDATE bypassed the identity map
        try:
            answer = api.create_mass_send(sender=userid, text=text, chat_type="single",
                                          external_userids=sorted(str(e) for e in externals if e),
                                          attachments=attachments or None)
        except WecomApiError as exc:
            if exc.retryable:  # WeCom created nothing: the same chunk is asked again on the next run
                task.state, task.error = TaskState.pending.value, exc.display()
                run.busy += 1
            elif exc.errcode is None:  # the answer was lost after WeCom may have acted: never repeated
                task.state, task.error = TaskState.maybe_created.value, exc.display()
                _set_recipients(session, task.id, RecipientStatus.unknown, reason=exc.display())
                run.uncertain += 1
            else:
                task.state, task.error = TaskState.failed.value, exc.display()
                _set_recipients(session, task.id, RecipientStatus.failed, reason=exc.display())
                sends.release(session, source=SendSource.campaign, ref=ref_of(campaign.id),
                              target_ids=list(externals.values()))
                run.failed += 1
            if commit:
                session.commit()
            continue
        task.state, task.msgid, task.error = TaskState.created.value, str(answer.get("msgid", "")), ""
        _set_recipients(session, task.id, RecipientStatus.waiting)
        refused = [externals[e] for e in answer.get("fail_list", []) if e in externals]
        if refused:
            _set_recipients(session, task.id, RecipientStatus.not_friend, only=refused,
                            reason=_("The customer is not (or no longer) a WeCom contact of this account's member"))
            sends.release(session, source=SendSource.campaign, ref=ref_of(campaign.id), target_ids=refused)
        run.created += 1
        if commit:
            session.commit()
    left = session.scalar(select(func.count()).select_from(CampaignTask).where(
        CampaignTask.campaign_id == campaign_id,
        CampaignTask.state.in_([TaskState.pending.value, TaskState.creating.value])))
    campaign = get_campaign(session, campaign_id=campaign_id)
    if not left and campaign.status == CampaignStatus.sending.value:
        campaign.status, campaign.sent_at = CampaignStatus.sent.value, now
    session.flush()
    rewards.release_undelivered(session, campaign_id=campaign_id, viewer=SYSTEM, at=now)  # WeCom refused them
    return run


def _attachment_unavailable(session: Session, campaign: Campaign, task: CampaignTask,
                            exc: campaign_attachments.AttachmentUnavailable) -> bool:
    """A material could not be attached: the task waits for the next run (True) or fails with the reason."""
    if exc.retryable:
        task.error = str(exc)
        return True
    task.state, task.error = TaskState.failed.value, str(exc)
    _set_recipients(session, task.id, RecipientStatus.failed, reason=str(exc))
    sends.release(session, source=SendSource.campaign, ref=ref_of(campaign.id), target_ids=[
        int(c) for c in session.scalars(select(CampaignRecipient.customer_id)
                                        .where(CampaignRecipient.task_id == task.id))])
    return False


def _api(session: Session) -> Any:
    from siyu.wecom.client import WecomNotConfigured, client_for

    try:
        return client_for(session)
    except WecomNotConfigured:
        return None


def _personal_tasks(session: Session, campaign: Campaign, task: CampaignTask, text: str, *,
                    now: datetime) -> None:
    """A personal account's chunk: one maintenance task per customer with the copy, ticked off in the sidebar."""
    from siyu.maintenance import service as maintenance_service
    from siyu.maintenance.models import TaskKind

    ids = [int(i) for i in session.scalars(select(CampaignRecipient.customer_id)
                                           .where(CampaignRecipient.task_id == task.id))]
    detail = _("Mass send 「{name}」: {text}", name=campaign.name, text=text)
    codes = rewards.codes_of(session, batch_id=campaign.coupon_batch_id, customer_ids=ids) \
        if campaign.coupon_batch_id is not None and rewards.uses_code(text) else {}
    day = now.astimezone(local_zone()).date()
    for start in range(0, len(ids), BATCH):
        maintenance_service.add_tasks(session, [{
            "customer_id": c, "account_id": task.account_id, "ref_id": campaign.id,
            "detail": detail.replace(rewards.CODE_VARIABLE, codes.get(c, "")) if codes else detail}
            for c in ids[start:start + BATCH]], kind=TaskKind.campaign, day=day, now=now)
    task.state = TaskState.created.value
    _set_recipients(session, task.id, RecipientStatus.waiting)


# ---------------------------------------------------------------- results, reminders, cancel


@dataclass
class ResultsRun:
    read: int = 0
    delivered: int = 0
    busy: bool = False


def read_results(session: Session, campaign_id: int, *, api: Any = None, now: datetime | None = None) -> ResultsRun:
    """WeCom's per-customer results of each created task (``get_groupmsg_send_result``, read through
    ``wecom.send_results``) and the operators' ticked-off or skipped tasks, into each recipient's delivery status;
    the coupon codes of those not sent to go back to the pool (``rewards.release_undelivered``).

    Read once more after ``send_results.GIVE_UP_AFTER`` (``results_due``): a customer WeCom still reports as
    not sent then was never sent by the member (failed, ``send_results.NEVER_SENT``), so their code goes back
    too instead of staying reserved for a message that is not coming; a personal account's task still not
    ticked off then is closed and its customer failed the same way (``_personal_done``)."""
    from siyu.wecom import send_results

    now = now or utcnow()
    run = ResultsRun()
    campaign = get_campaign(session, campaign_id=campaign_id)
    expired = _expired(campaign, now)
    tasks = [t for t in tasks_of(session, campaign_id) if t.state == TaskState.created.value]
    wecom_tasks = [t for t in tasks if t.channel == TaskChannel.wecom.value and t.msgid]
    if wecom_tasks:
        api = api or _api(session)
    if wecom_tasks and api is not None:
        userids = dict(session.execute(select(Account.id, Account.wecom_userid).where(
            Account.id.in_({t.account_id for t in wecom_tasks}))).all())
        keys = {(t.msgid, str(userids.get(t.account_id) or "")): t for t in wecom_tasks}
        answers = send_results.read(api, list(keys))
        run.busy = len(answers) < len(keys)
        for key, answer in answers.items():
            task = keys[key]
            if isinstance(answer, Exception):
                task.error = answer.display() if hasattr(answer, "display") else str(answer)
                continue
            run.read += 1
            run.delivered += _apply_results(session, task, answer, expired=expired)
    run.delivered += _personal_done(session, campaign, tasks, now=now, expired=expired)
    if not (expired and run.busy):  # the read after the window: again on the next run until WeCom answers
        campaign.results_read_at = now
    session.flush()
    rewards.release_undelivered(session, campaign_id=campaign.id, viewer=SYSTEM, at=now)
    return run


def _personal_done(session: Session, campaign: Campaign, tasks: Sequence[CampaignTask], *, now: datetime,
                   expired: bool = False) -> int:
    """The operators' answers on personal accounts' chunks, for the customers still waiting: a task ticked off
    is delivered; one skipped is failed with the operator's reason (its code goes back:
    ``rewards.release_undelivered``). ``expired`` (the read after ``send_results.GIVE_UP_AFTER``, as for WeCom):
    a task still open or snoozed leaves the operator's list, skipped, and its customer is failed — so nobody
    waits forever and a late tick cannot turn it into sent. How many were delivered now."""
    from siyu.maintenance.models import Task, TaskKind, TaskStatus
    from siyu.wecom import send_results

    personal = [t.id for t in tasks if t.channel == TaskChannel.personal.value]
    if not personal:
        return 0
    answered = session.execute(
        select(CampaignRecipient.id, Task.status, Task.finished_at, Task.skip_reason).join(
            Task, and_(Task.customer_id == CampaignRecipient.customer_id,
                       Task.account_id == CampaignRecipient.account_id, Task.kind == TaskKind.campaign.value,
                       Task.ref_id == campaign.id))
        .where(CampaignRecipient.task_id.in_(personal),
               Task.status.in_([TaskStatus.done.value, TaskStatus.skipped.value]),
               CampaignRecipient.status == RecipientStatus.waiting.value)).all()
    changes: list[tuple[int, RecipientStatus, str, datetime | None]] = []
    for rid, status, at, skip_reason in answered:
        if status == TaskStatus.done.value:
            changes.append((rid, RecipientStatus.delivered, "", at or now))
        else:
            changes.append((rid, RecipientStatus.failed,
                            _(OPERATOR_SKIPPED_BECAUSE, reason=skip_reason) if skip_reason else _(OPERATOR_SKIPPED),
                            None))
    _bulk_status(session, changes)
    if expired:
        days = send_results.GIVE_UP_AFTER.days
        session.execute(update(Task).where(
            Task.kind == TaskKind.campaign.value, Task.ref_id == campaign.id,
            Task.status.in_([TaskStatus.open.value, TaskStatus.snoozed.value]))
            .values(status=TaskStatus.skipped.value, skip_reason=_(TASK_EXPIRED, days=days)[:255], finished_at=now),
            execution_options={"synchronize_session": False})
        session.execute(update(CampaignRecipient).where(
            CampaignRecipient.task_id.in_(personal), CampaignRecipient.status == RecipientStatus.waiting.value)
            .values(status=RecipientStatus.failed.value, reason=_(NOT_TICKED_OFF, days=days)[:255]),
            execution_options={"synchronize_session": False})
    return sum(1 for c in changes if c[1] is RecipientStatus.delivered)


def _expired(campaign: Campaign, now: datetime) -> bool:
    """Sent longer ago than members are waited for (``send_results.GIVE_UP_AFTER``)."""
    from siyu.wecom import send_results

    return campaign.sent_at is not None and now - campaign.sent_at >= send_results.GIVE_UP_AFTER


def _apply_results(session: Session, task: CampaignTask, rows: list[dict[str, Any]], *,
                   expired: bool = False) -> int:
    """WeCom's answer for one task into its recipients' statuses; ``expired``: one still not sent never was."""
    from siyu.wecom import send_results

    by_external = {str(r.get("external_userid") or ""): r for r in rows}
    recipients = session.execute(select(CampaignRecipient.id, Customer.wecom_external_userid,
                                        CampaignRecipient.status).join(
        Customer, Customer.id == CampaignRecipient.customer_id).where(CampaignRecipient.task_id == task.id)).all()
    changes: list[tuple[int, RecipientStatus, str, datetime | None]] = []
    sent_times = []
    for rid, external, current in recipients:
        row = by_external.get(str(external or ""))
        if row is None:
            continue
        status = int(row.get("status", 0) or 0)
        when = int(row.get("send_time", 0) or 0)
        if status != 0 and when:
            sent_times.append(when)
        if status == send_results.SENT and current != RecipientStatus.delivered.value:
            changes.append((rid, RecipientStatus.delivered, "",
                            datetime.fromtimestamp(when, UTC) if when else utcnow()))
        elif status == send_results.NOT_A_FRIEND and current != RecipientStatus.not_friend.value:
            changes.append((rid, RecipientStatus.not_friend, _(send_results.NOT_A_CONTACT), None))
        elif status == send_results.RECEIVE_LIMIT and current != RecipientStatus.limit.value:
            changes.append((rid, RecipientStatus.limit, _(send_results.LIMIT_REACHED), None))
        elif status == send_results.NOT_SENT_YET and expired and current == RecipientStatus.waiting.value:
            changes.append((rid, RecipientStatus.failed, _(send_results.NEVER_SENT), None))
    if sent_times and task.member_sent_at is None:
        task.member_sent_at = datetime.fromtimestamp(min(sent_times), UTC)
    _bulk_status(session, changes)
    return sum(1 for c in changes if c[1] is RecipientStatus.delivered)


def _bulk_status(session: Session, changes: Sequence[tuple[int, RecipientStatus, str, datetime | None]]) -> None:
    """Set-based: one UPDATE per (status, reason, time) — a member's task is sent to its customers at one
    moment, so 200,000 results are a few dozen statements, not 200,000 parameter sets."""
    groups: dict[tuple[str, str, datetime | None], list[int]] = defaultdict(list)
    for rid, status, reason, at in changes:
        groups[(status.value, reason[:255], at)].append(rid)
    for (new_status, reason, at), ids in groups.items():
        for start in range(0, len(ids), 50_000):
            session.execute(update(CampaignRecipient).where(
                CampaignRecipient.id.in_(select(integers_of(session, ids[start:start + 50_000]).c.value)))
                .values(status=new_status, reason=reason, delivered_at=at),
                execution_options={"synchronize_session": False})


def remind(session: Session, *, campaign_id: int, viewer: Viewer, api: Any = None,
           now: datetime | None = None) -> int:
    """Remind the members who have not sent their task yet (W:97610: at most 3 per task in 24 h)."""
    from siyu.wecom.client import WecomApiError

    _may_write(viewer)
    now = now or utcnow()
    stamp = int(now.timestamp())
    waiting = set(session.scalars(select(CampaignRecipient.task_id).where(
        CampaignRecipient.campaign_id == campaign_id,
        CampaignRecipient.status == RecipientStatus.waiting.value).distinct()))
    tasks = [t for t in tasks_of(session, campaign_id) if t.id in waiting and t.channel == TaskChannel.wecom.value
             and t.state == TaskState.created.value and t.msgid]
    if not tasks:
        raise Invalid("No member has a task waiting to be sent")
    api = api or _api(session)
    if api is None:
        raise Invalid("WeCom is not connected")
    reminded = 0
    for task in tasks:
        recent = [int(t) for t in task.reminders or [] if stamp - int(t) < 86400]
        if len(recent) >= REMINDERS_PER_DAY:
            continue
        try:
            api.remind_mass_send(task.msgid)
        except WecomApiError as exc:
            task.error = exc.display()
            continue
        task.reminders = [*recent, stamp]
        reminded += 1
    if not reminded:
        raise Invalid("Every waiting member was already reminded {n} times in the last 24 hours",
                      n=REMINDERS_PER_DAY)
    return reminded


def cancel(session: Session, *, campaign_id: int, viewer: Viewer, api: Any = None,
           now: datetime | None = None) -> int:
    """Stop what members have not sent (W:97611), drop the tasks not created, give the quota back, and the
    coupon codes of the customers it will now never reach (``rewards.release_undelivered``).

    A WeCom task stopped is read back at once: a member may have sent it before the stop, so those
    customers are delivered (and keep their code); the others are cancelled. A task WeCom could not be
    asked to stop, or whose results could not be read, leaves its waiting customers unknown — the member
    may still have sent it — and so does a chunk being created at that moment. How many customers will
    not get it."""
    from siyu.maintenance.models import Task, TaskKind, TaskStatus
    from siyu.wecom import send_results
    from siyu.wecom.client import WecomApiError

    _may_write(viewer)
    now = now or utcnow()
    campaign = get_campaign(session, campaign_id=campaign_id)
    if campaign.status == CampaignStatus.cancelled.value:
        return 0
    tasks = tasks_of(session, campaign_id)
    created = [t for t in tasks if t.channel == TaskChannel.wecom.value and t.state == TaskState.created.value]
    if created:
        api = api or _api(session)
    stopped_at_wecom: list[CampaignTask] = []
    for task in created:
        if api is None:
            break
        try:
            api.cancel_mass_send(task.msgid)
        except WecomApiError as exc:
            task.error = exc.display()
            continue
        stopped_at_wecom.append(task)
    settled = {t.id for t in tasks if t.channel == TaskChannel.personal.value}
    if stopped_at_wecom:  # who got it before the stop
        userids = dict(session.execute(select(Account.id, Account.wecom_userid).where(
            Account.id.in_({t.account_id for t in stopped_at_wecom}))).all())
        keys = {(t.msgid, str(userids.get(t.account_id) or "")): t for t in stopped_at_wecom}
        for key, answer in send_results.read(api, list(keys)).items():
            task = keys[key]
            if isinstance(answer, Exception):
                task.error = answer.display() if hasattr(answer, "display") else str(answer)
                continue
            _apply_results(session, task, answer)
            settled.add(task.id)
    _personal_done(session, campaign, tasks, now=now)
    creating = [t.id for t in tasks if t.state == TaskState.creating.value]
    for task in tasks:
        if task.state in (TaskState.pending.value, TaskState.creating.value):
            task.state = TaskState.cancelled.value
    open_statuses = [RecipientStatus.planned.value, RecipientStatus.waiting.value]
    uncertain = (or_(CampaignRecipient.task_id.in_(creating), and_(
        CampaignRecipient.status == RecipientStatus.waiting.value, CampaignRecipient.task_id.not_in(settled)))
        if settled else or_(CampaignRecipient.task_id.in_(creating),
                            CampaignRecipient.status == RecipientStatus.waiting.value))
    session.execute(update(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status.in_(open_statuses), uncertain)
        .values(status=RecipientStatus.unknown.value,
                reason=_("Stopped, but WeCom could not confirm the member had not sent it")),
        execution_options={"synchronize_session": False})
    stopped = [int(c) for c in session.scalars(select(CampaignRecipient.customer_id).where(
        CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status.in_(open_statuses)))]
    session.execute(update(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status.in_(open_statuses))
        .values(status=RecipientStatus.cancelled.value), execution_options={"synchronize_session": False})
    sends.release(session, source=SendSource.campaign, ref=ref_of(campaign_id), target_ids=stopped)
    session.execute(update(Task).where(Task.kind == TaskKind.campaign.value, Task.ref_id == campaign_id,
                                       Task.status == TaskStatus.open.value)
                    .values(status=TaskStatus.skipped.value, skip_reason=_("The campaign was cancelled")),
                    execution_options={"synchronize_session": False})
    before = campaign.status
    campaign.status = CampaignStatus.cancelled.value
    session.flush()
    released = rewards.release_undelivered(session, campaign_id=campaign.id, viewer=viewer, at=now)
    from siyu.team.service import record_audit

    record_audit(session, actor=viewer, action="update", entity_type="campaign", entity_id=campaign.id,
                 before={"status": before}, after={"status": "cancelled", "stopped": len(stopped),
                                                   "coupons_released": released})
    return len(stopped)


# ---------------------------------------------------------------- the numbers


STEPS = ("targeted", "delivered", "engaged", "buyers", "deleted", "holdout", "holdout_buyers", "over_quota",
         "unreachable")


def _conditions(session: Session, campaign: Campaign) -> dict[str, Any]:
    """Each step as a condition on ``CampaignRecipient`` (correlated EXISTS on indexed columns)."""
    from siyu.inbox.models import Conversation, Direction, Message
    from siyu.orders.models import COUNTED_STATUSES, Order

    r = CampaignRecipient
    # Typed as intervals: the column's own type would bind a timedelta as a timestamp (PostgreSQL).
    within = literal(timedelta(hours=ENGAGED_WITHIN_HOURS), Interval())
    window_days = timedelta(days=campaign.window_days)
    window = literal(window_days, Interval())
    start = campaign.sent_at or campaign.scheduled_at
    delivered = r.status == RecipientStatus.delivered.value
    wrote = exists().where(Conversation.customer_id == r.customer_id, Message.conversation_id == Conversation.id,
                           Message.direction == Direction.inbound.value, Message.sent_at >= r.delivered_at,
                           Message.sent_at <= r.delivered_at + within)
    liked = exists().where(Touch.customer_id == r.customer_id, Touch.kind == TouchKind.moments_engaged.value,
                           Touch.occurred_at >= r.delivered_at, Touch.occurred_at <= r.delivered_at + within)
    later = aliased(CampaignRecipient)
    counted = [s.value for s in COUNTED_STATUSES]
    attributed = and_(Order.customer_id == r.customer_id, Order.status.in_(counted),
                      Order.paid_at >= r.delivered_at, Order.paid_at <= r.delivered_at + window,
                      ~exists().where(later.customer_id == r.customer_id, later.campaign_id != r.campaign_id,
                                      later.delivered_at > r.delivered_at, later.delivered_at <= Order.paid_at))
    in_window = and_(Order.customer_id == r.customer_id, Order.status.in_(counted), Order.paid_at >= start,
                     Order.paid_at <= start + window_days)
    deleted = exists().where(Friendship.customer_id == r.customer_id, Friendship.account_id == r.account_id,
                             Friendship.status == FriendshipStatus.deleted.value,
                             Friendship.removed_at >= r.delivered_at, Friendship.removed_at <= r.delivered_at + within)
    # Wall-clock arithmetic on SQLite's stored text does not compare; use bound values where the clock is fixed.
    if session.get_bind().dialect.name == "sqlite":
        hours = f"+{ENGAGED_WITHIN_HOURS} hours"
        days = f"+{campaign.window_days} days"
        plus48 = func.strftime("%Y-%m-%d %H:%M:%f", r.delivered_at, hours)
        plus_n = func.strftime("%Y-%m-%d %H:%M:%f", r.delivered_at, days)
        wrote = exists().where(Conversation.customer_id == r.customer_id, Message.conversation_id == Conversation.id,
                               Message.direction == Direction.inbound.value, Message.sent_at >= r.delivered_at,
                               Message.sent_at <= plus48)
        liked = exists().where(Touch.customer_id == r.customer_id, Touch.kind == TouchKind.moments_engaged.value,
                               Touch.occurred_at >= r.delivered_at, Touch.occurred_at <= plus48)
        attributed = and_(Order.customer_id == r.customer_id, Order.status.in_(counted),
                          Order.paid_at >= r.delivered_at, Order.paid_at <= plus_n,
                          ~exists().where(later.customer_id == r.customer_id, later.campaign_id != r.campaign_id,
                                          later.delivered_at > r.delivered_at, later.delivered_at <= Order.paid_at))
        deleted = exists().where(Friendship.customer_id == r.customer_id, Friendship.account_id == r.account_id,
                                 Friendship.status == FriendshipStatus.deleted.value,
                                 Friendship.removed_at >= r.delivered_at, Friendship.removed_at <= plus48)
    return {
        "targeted": r.grp == RecipientGroup.send.value,
        "delivered": delivered,
        "engaged": and_(delivered, or_(wrote, liked)),
        "buyers": and_(delivered, exists().where(attributed)),
        "deleted": and_(delivered, deleted),
        "holdout": r.grp == RecipientGroup.holdout.value,
        "holdout_buyers": and_(r.grp == RecipientGroup.holdout.value, exists().where(in_window)),
        "sent_buyers_in_window": and_(r.grp == RecipientGroup.send.value, exists().where(in_window)),
        "over_quota": r.grp == RecipientGroup.over_quota.value,
        "unreachable": r.grp == RecipientGroup.unreachable.value,
        "_attributed": attributed,
    }


@dataclass
class Figures:
    targeted: int = 0
    delivered: int = 0
    engaged: int = 0
    buyers: int = 0
    revenue: Decimal = Decimal("0")
    deleted: int = 0
    holdout: int = 0
    holdout_buyers: int = 0
    sent_buyers_in_window: int = 0
    over_quota: int = 0
    unreachable: int = 0

    @staticmethod
    def _rate(part: int, whole: int) -> float | None:
        return round(100 * part / whole, 1) if whole else None

    @property
    def delivery_rate(self) -> float | None:
        return self._rate(self.delivered, self.targeted)

    @property
    def engagement_rate(self) -> float | None:
        return self._rate(self.engaged, self.delivered)

    @property
    def buy_rate(self) -> float | None:
        """Share of the targeted who bought in the window from the send (no attribution: for the lift)."""
        return self._rate(self.sent_buyers_in_window, self.targeted)

    @property
    def holdout_rate(self) -> float | None:
        return self._rate(self.holdout_buyers, self.holdout)

    @property
    def lift(self) -> float | None:
        """Percentage points the sent customers bought more than the held-out ones."""
        if self.buy_rate is None or self.holdout_rate is None:
            return None
        return round(self.buy_rate - self.holdout_rate, 1)


def numbers(session: Session, campaign: Campaign) -> dict[str, Figures]:
    """The campaign's figures: "all", and per variant ("A", "B") where the copy was split."""
    from siyu.orders.models import Order

    r = CampaignRecipient
    conditions = _conditions(session, campaign)
    names = [n for n in conditions if not n.startswith("_")]
    columns = [func.sum(case((conditions[n], 1), else_=0)).label(n) for n in names]
    figures: dict[str, Figures] = {"all": Figures()}
    for row in session.execute(select(r.variant, *columns).where(r.campaign_id == campaign.id)
                               .group_by(r.variant)).mappings():
        variant = str(row["variant"] or "")
        target = figures.setdefault(variant, Figures()) if variant else None
        for name in names:
            value = int(row[name] or 0)
            setattr(figures["all"], name, getattr(figures["all"], name) + value)
            if target is not None:
                setattr(target, name, getattr(target, name) + value)
    revenue = session.execute(
        select(r.variant, func.coalesce(func.sum(Order.amount - Order.refunded_amount), 0))
        .select_from(r).join(Order, conditions["_attributed"])
        .where(r.campaign_id == campaign.id, r.status == RecipientStatus.delivered.value)
        .group_by(r.variant)).all()
    for variant, total in revenue:
        amount = Decimal(str(total or 0)).quantize(Decimal("0.01"))
        figures["all"].revenue += amount
        if variant:
            figures.setdefault(str(variant), Figures()).revenue += amount
    for variant in ("A", "B"):  # the hold-out is the variants' shared baseline
        if variant in figures:
            figures[variant].holdout, figures[variant].holdout_buyers = figures["all"].holdout, \
                figures["all"].holdout_buyers
    if not campaign.text_b.strip():
        figures.pop("B", None)
        figures.pop("A", None)
    return figures


def summary_counts(session: Session, campaign_ids: Sequence[int]) -> dict[int, Figures]:
    return {cid: numbers(session, get_campaign(session, campaign_id=cid))["all"] for cid in campaign_ids}


def step_query(session: Session, campaign: Campaign, step: str, viewer: Viewer) -> Any:
    """The recipients at one step of the funnel, as this viewer may see them."""
    if step not in STEPS:
        raise Invalid("Unknown step", field="step")
    r = CampaignRecipient
    query = (select(r, Customer.name, Account.display_name).join(Customer, Customer.id == r.customer_id)
             .outerjoin(Account, Account.id == r.account_id)
             .where(r.campaign_id == campaign.id, _conditions(session, campaign)[step]).order_by(r.id))
    if not viewer.sees_all_accounts:
        query = query.where(exists().where(Friendship.customer_id == r.customer_id,
                                           Friendship.account_id.in_(sorted(viewer.account_ids) or [-1])))
    return query


def step_page(session: Session, campaign: Campaign, step: str, viewer: Viewer, *, after: int = 0,
              limit: int = PAGE) -> list[Any]:
    query = step_query(session, campaign, step, viewer).where(CampaignRecipient.id > after).limit(limit)
    return list(session.execute(query).all())


def export_rows(session: Session, campaign: Campaign, step: str, viewer: Viewer) -> Iterator[str]:
    """The customers of one step as CSV (UTF-8 with BOM; formula-like cells neutralised), streamed."""
    from siyu.campaigns.models import RECIPIENT_STATUS_LABELS

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([_("Customer ID"), _("Name"), _("Account"), _("Variant"), _("Status"), _("Reason"),
                     _("Delivered at")])
    yield "\ufeff" + buffer.getvalue()
    after = 0
    while True:
        rows = step_page(session, campaign, step, viewer, after=after, limit=2000)
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for recipient, name, account in rows:
            label = RECIPIENT_STATUS_LABELS.get(RecipientStatus(recipient.status))
            writer.writerow([recipient.customer_id, neutralise(viewer.text(name or "")), neutralise(account or ""),
                             recipient.variant, _(label) if label else recipient.status,
                             neutralise(recipient.reason or ""),
                             recipient.delivered_at.isoformat() if recipient.delivered_at else ""])
        after = rows[-1][0].id
        yield buffer.getvalue()


def results_due(session: Session, *, now: datetime | None = None) -> list[int]:
    """Campaigns whose results are still worth reading: sent within the last three days
    (``send_results.GIVE_UP_AFTER``), and once more after that, when what members never sent is failed."""
    from siyu.wecom import send_results

    now = now or utcnow()
    window = send_results.GIVE_UP_AFTER
    due = []
    for campaign_id, sent_at, read_at in session.execute(select(Campaign.id, Campaign.sent_at, Campaign.results_read_at)
                                                         .where(Campaign.status == CampaignStatus.sent.value)):
        if sent_at is not None and (sent_at >= now - window or read_at is None or read_at < sent_at + window):
            due.append(int(campaign_id))
    return due


__all__ = ["Plan", "cancel", "create_campaign", "numbers", "plan", "read_results", "remind",
           "send_campaign", "update_campaign"]


IN_PROGRESS_DAYS = 7  # a sent campaign stays "running" while its results (48 h) and its buying window come in


def in_progress(session: Session, *, now: datetime | None = None, limit: int = 10) -> list[tuple[Campaign, int]]:
    """Campaigns running — scheduled, sending, or sent within ``IN_PROGRESS_DAYS`` — each with the number of
    customers it targets (one grouped count; the full figures are on the campaign's page)."""
    since = (now or utcnow()) - timedelta(days=IN_PROGRESS_DAYS)
    campaigns = list(session.scalars(select(Campaign).where(or_(
        Campaign.status.in_([CampaignStatus.scheduled.value, CampaignStatus.sending.value]),
        and_(Campaign.status == CampaignStatus.sent.value, Campaign.sent_at >= since)))
        .order_by(Campaign.scheduled_at.desc()).limit(limit)))
    counts = dict(session.execute(
        select(CampaignRecipient.campaign_id, func.count())
        .where(CampaignRecipient.campaign_id.in_([c.id for c in campaigns]),
               CampaignRecipient.status != RecipientStatus.left_out.value)
        .group_by(CampaignRecipient.campaign_id)).tuples().all()) if campaigns else {}
    return [(c, int(counts.get(c.id, 0))) for c in campaigns]
