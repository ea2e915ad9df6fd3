"""A campaign's coupons: one code of the attached batch for each customer the campaign sends to.

Why it is shaped this way: the codes are drawn through ``coupons.service.issue`` — the one pool,
drawn exactly once, written on each customer's timeline — when the send is planned and recorded,
in the same transaction as the recipients and the quota reservations. So the pool is checked
*before* anything is created (the dry run shows the shortfall), a pool too small refuses the
whole send with the numbers, and a pool drained by another issue between the check and the draw
rolls the campaign back: never a send where some recipients got a code and others did not.
Only the customers sent to get one — the hold-out, the over-quota and the unreachable do not (the
hold-out measures what the campaign, coupon included, earned). A customer who already holds a
code of the batch gets the same one again, not a second.

``{券码}`` fills with each customer's code where a message goes to one customer: a personal
account's task list (one line per customer). A WeCom 群发 task carries one text to up to 10,000
customers (W:92135), so a copy naming ``{券码}`` is refused for customers sent through WeCom; those
customers still get their code on their timeline, redeemable by an order naming it.

A code goes back to the pool (``release_undelivered`` → ``coupons.service.release``) when Siyu knows
the message never reached its customer: cancelled before its task was created (or, on a personal
account, before the operator ticked it off), stopped in WeCom (``cancel_groupmsg_send``) with the
results read right after the stop saying the member had not sent it, refused by WeCom (the task
failed, or the customer was not the member's contact), not sent by WeCom (not a contact, the
receive limit, or still not sent by the member when the results are read after the three days members
are waited for: ``service.results_due``), or skipped by the operator of a personal account's task list.
It stays when the customer may have seen it: delivered, still waiting, unknown
(WeCom's answer was lost, or it could not confirm a stop), redeemed, drawn by anything but a campaign, or
named in another campaign of the batch that did not fail for them — and when a personal account's
task list carried the code ({券码}) to the operator before the cancel or the three days' end without a
tick, since a message sent by hand and not ticked off cannot be told from one never sent. It is worked
out from the rows alone, so a job run twice (or a cancel beside the results job) takes a code back once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from siyu.core.db import among
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.coupons import service as coupons_service
from siyu.coupons.models import CouponBatch, CouponBatchCode, IssuedVia
from siyu.customers import variables

CODE_VARIABLE = "{" + variables.COUPON + "}"
EXPIRED = N_("campaign.coupons.expired {name} {day}")
RELEASED = N_("campaign.coupons.released {name}")
SHORT = N_("campaign.coupons.short {name} {needed} {free}")
WECOM_VARIABLE = N_("campaign.coupons.wecom_variable {n}")


@dataclass
class CouponCheck:
    """What a send with a coupon batch needs from the pool, and whether it can be given."""

    batch_id: int
    batch_name: str = ""
    needed: int = 0  # customers sent to who hold no code of the batch yet
    free: int = 0  # codes left in the pool
    problem: str = ""  # the msgid of why the send cannot go (shown by the dry run, raised by the send)
    params: dict[str, object] = field(default_factory=dict)

    @property
    def error(self) -> str:
        return _(self.problem, **self.params) if self.problem else ""


def uses_code(*texts: str) -> bool:
    return any(CODE_VARIABLE in (t or "") for t in texts)


def check(session: Session, *, batch_id: int, customer_ids: Sequence[int], wecom_customers: int, at: datetime,
          texts: Sequence[str]) -> CouponCheck:
    """The pool against the customers the plan sends to (read only)."""
    try:
        batch = coupons_service.get_batch(session, batch_id=batch_id)
    except NotFound as exc:
        raise Invalid("Coupon batch {batch_id} not found", field="coupon_batch_id", batch_id=batch_id) from exc
    result = CouponCheck(batch_id=batch.id, batch_name=batch.name)
    ids = list(dict.fromkeys(int(c) for c in customer_ids))
    held = int(session.scalar(select(func.count()).select_from(CouponBatchCode).where(
        CouponBatchCode.batch_id == batch.id, among(session, CouponBatchCode.customer_id, ids))) or 0) if ids else 0
    result.needed = len(ids) - held
    result.free = int(session.scalar(select(func.count()).select_from(CouponBatchCode).where(
        CouponBatchCode.batch_id == batch.id, CouponBatchCode.customer_id.is_(None))) or 0)
    if batch.valid_until < at.astimezone(local_zone()).date():
        result.problem, result.params = EXPIRED, {"name": batch.name, "day": batch.valid_until.isoformat()}
    elif result.needed > result.free:
        result.problem, result.params = SHORT, {"name": batch.name, "needed": result.needed, "free": result.free}
    elif wecom_customers and uses_code(*texts):
        result.problem, result.params = WECOM_VARIABLE, {"n": wecom_customers}
    return result


def refuse(found: CouponCheck) -> None:
    if found.problem:
        raise Invalid(found.problem, field="coupon_batch_id", **found.params)


def issue(session: Session, *, batch_id: int, customer_ids: Sequence[int], at: datetime, viewer: Viewer) -> int:
    """One code for each customer (through the one pool); all or none — a short pool raises and the caller's
    transaction (the whole campaign) rolls back. How many codes were drawn now."""
    if not customer_ids:
        return 0
    result = coupons_service.issue(session, batch_id, customer_ids, via=IssuedVia.campaign.value, viewer=viewer,
                                   at=at)
    if result.short:
        batch = session.get_one(CouponBatch, batch_id)
        raise Invalid(SHORT, field="coupon_batch_id", name=batch.name, needed=result.issued + len(result.short),
                      free=result.issued)
    return result.issued


def codes_of(session: Session, *, batch_id: int, customer_ids: Sequence[int]) -> dict[int, str]:
    """customer id → their code of the batch."""
    ids = list(customer_ids)
    if not ids:
        return {}
    return {int(c): str(code) for c, code in session.execute(
        select(CouponBatchCode.customer_id, CouponBatchCode.code).where(
            CouponBatchCode.batch_id == batch_id, among(session, CouponBatchCode.customer_id, ids))) if c is not None}


def figures(session: Session, *, campaign_id: int, batch_id: int) -> tuple[int, int]:
    """(codes the campaign's recipients hold of the batch, how many of them were redeemed by an order)."""
    from siyu.campaigns.models import CampaignRecipient, RecipientGroup

    sent = select(CampaignRecipient.customer_id).where(CampaignRecipient.campaign_id == campaign_id,
                                                       CampaignRecipient.grp == RecipientGroup.send.value)
    row = session.execute(select(func.count(), func.count(CouponBatchCode.redeemed_at)).where(
        CouponBatchCode.batch_id == batch_id, CouponBatchCode.customer_id.in_(sent))).one()
    return int(row[0]), int(row[1])


def release_undelivered(session: Session, *, campaign_id: int, viewer: Viewer, at: datetime | None = None) -> int:
    """Take back the codes of the campaign's recipients the message never reached (see the module's note).
    How many went back to the pool now; nothing the second time."""
    from siyu.campaigns.models import (
        Campaign,
        CampaignRecipient,
        CampaignTask,
        RecipientGroup,
        RecipientStatus,
        TaskChannel,
        TaskState,
    )
    from siyu.maintenance.models import Task, TaskKind, TaskStatus

    campaign = session.get_one(Campaign, campaign_id)
    if campaign.coupon_batch_id is None:
        return 0
    batch_id = campaign.coupon_batch_id
    never = [RecipientStatus.cancelled.value, RecipientStatus.failed.value, RecipientStatus.not_friend.value,
             RecipientStatus.limit.value]
    other, other_task, other_campaign = (aliased(CampaignRecipient), aliased(CampaignTask), aliased(Campaign))
    copy = case((other.variant == "B", other_campaign.text_b), else_=other_campaign.text)
    # Failed on a task list: skipped by its operator (not sent, so the code goes back), or not ticked off in time.
    skipped_by_operator = exists().where(Task.kind == TaskKind.campaign.value, Task.ref_id == other.campaign_id,
                                         Task.customer_id == other.customer_id, Task.account_id == other.account_id,
                                         Task.status == TaskStatus.skipped.value, Task.finished_by_id.is_not(None))
    not_ticked = and_(other.status == RecipientStatus.failed.value, ~skipped_by_operator)
    handed_by_hand = and_(or_(other.status == RecipientStatus.cancelled.value, not_ticked),
                          other_task.channel == TaskChannel.personal.value,
                          other_task.state == TaskState.created.value, copy.contains(CODE_VARIABLE))
    may_have_seen = exists(select(other.id).join(other_campaign, other_campaign.id == other.campaign_id)
                           .outerjoin(other_task, other_task.id == other.task_id)
                           .where(other_campaign.coupon_batch_id == batch_id,
                                  other.customer_id == CouponBatchCode.customer_id,
                                  other.grp == RecipientGroup.send.value,
                                  or_(other.status.not_in(never), handed_by_hand)))
    never_got = select(CampaignRecipient.customer_id).where(
        CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.grp == RecipientGroup.send.value,
        CampaignRecipient.status.in_(never))
    ids = [int(c) for c in session.scalars(select(CouponBatchCode.customer_id).where(
        CouponBatchCode.batch_id == batch_id, CouponBatchCode.issued_via == IssuedVia.campaign.value,
        CouponBatchCode.redeemed_at.is_(None), CouponBatchCode.customer_id.in_(never_got), ~may_have_seen))
           if c is not None]
    if not ids:
        return 0
    freed = coupons_service.release(session, batch_id, ids, via=IssuedVia.campaign.value,
                                    reason=_(RELEASED, name=campaign.name), ref=f"campaign:{campaign.id}",
                                    viewer=viewer, at=at)
    return len(freed)
