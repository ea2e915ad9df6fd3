"""客户SOP service: write a SOP (each edit a new version), enrol customers when its trigger fires, run due steps.

Why it is built this way:

* **Who enters** is one query per trigger kind (``_trigger_query``) on the tables that already hold the
  fact — channel adds, customer tags, the stored stage, the orders' purchase facts, the last touch,
  the birthday field — filtered by the SOP's audience, compiled by the one segment compiler. The
  hooks that already exist call it for the customers that just changed (``customers.service``'s touch
  listener after every timeline write and computed-facts refresh, ``orders.facts.on_facts_changed``
  after purchases), and the periodic job calls it for everyone (time-based triggers, and anything a
  hook missed). Enrolments are unique per (SOP, customer, occurrence) and written with
  ``ON CONFLICT DO NOTHING``, so the hook and the job never enrol one customer twice.
* **What each gets** is written when they enter: one ``SopStepRun`` per step (and per repetition of an
  "every Monday" step) with its due time. The job claims a due row with a conditional UPDATE (pending →
  done, or → sending for a WeCom message), so running it twice does nothing twice.
* **A WeCom message** is reserved against the customer's quota in the one ledger (``sends.service``)
  before anything is created; over quota it becomes a task for the operator, and the run says so. The
  claim (status ``sending``) is committed before WeCom is called: a crash after the call leaves the
  row ``sending``, and the next run marks it "answer lost, not sent again" — never a second message.
* **Early exits** (bought, replied, deleted us) are checked by the hooks and again before every step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, literal, null, select, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind
from siyu.core.db import among, dialect_insert, utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.settings import local_zone
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service as customers_service
from siyu.customers import variables
from siyu.customers.models import (
    Customer,
    CustomerTag,
    CustomField,
    CustomFieldValue,
    Friendship,
    FriendshipStatus,
    Tag,
    Touch,
    TouchKind,
)
from siyu.library import service as library_service
from siyu.segments.compiler import compile_tree
from siyu.segments.schemas import parse_tree
from siyu.sends import service as sends
from siyu.sends.models import SendSource
from siyu.sops.models import (
    OUTCOME_LABELS,
    EnrolmentStatus,
    ExitKind,
    RunOutcome,
    RunStatus,
    Sop,
    SopEnrolment,
    SopStatus,
    SopStepRun,
    SopVersion,
    StepKind,
    TriggerKind,
)
from siyu.sops.schemas import SopIn, parse_when
from siyu.team import service as team_service
from siyu.wecom.client import MASS_SEND_TEXT_BYTES

BIRTHDAY_KEYS = ("birthday",)  # the custom date field read by the birthday trigger (as maintenance reads it)
SENDING_LEASE = timedelta(minutes=10)  # a claim older than this without an answer: the worker died mid-call
RUN_BATCH = 500
# WeCom messages are claimed, reserved and committed this many at a time before their calls: a worker that
# dies mid-chunk leaves at most this many "answer lost, not sent again" (never one sent twice).
SEND_CHUNK = 50
ENROL_BATCH = 1000
EDITING_ROLES = ("admin", "planner")
NO_SERVER_SEND = N_("A personal account has no server send: send it by hand")


# Why an enrolment ended early, in the timeline's words.
END_LABELS = {ExitKind.purchase.value: N_("The customer bought"), ExitKind.reply.value: N_("The customer replied"),
              ExitKind.deleted.value: N_("The customer deleted us"), "stopped": N_("The SOP was stopped"),
              "merged": N_("Merged into another customer already in this SOP")}


class SopNotFound(NotFound):
    pass


class EnrolmentNotFound(NotFound):
    pass


# ---------------------------------------------------------------- writing a SOP


def _may_edit(viewer: Viewer) -> None:
    if viewer.role not in EDITING_ROLES:
        raise Forbidden("Only administrators and planners may write SOPs")


def _validated(session: Session, data: SopIn, viewer: Viewer) -> dict[str, Any]:
    """The version's stored shape, after every check a save needs (all refused in Chinese, with the field)."""
    trigger = data.trigger
    needs = {TriggerKind.channel: ("trigger.channel_ids", trigger.channel_ids),
             TriggerKind.tag: ("trigger.tag_ids", trigger.tag_ids),
             TriggerKind.stage: ("trigger.stages", trigger.stages),
             TriggerKind.no_touch: ("trigger.days", trigger.days)}
    if trigger.kind in needs and not needs[trigger.kind][1]:
        raise Invalid("This trigger needs its channels, tags, stages or days", field=needs[trigger.kind][0])
    if trigger.kind is TriggerKind.channel:
        from siyu.channels.models import Channel

        found = set(session.scalars(select(Channel.id).where(Channel.id.in_(trigger.channel_ids))))
        missing = [i for i in trigger.channel_ids if i not in found]
        if missing:
            raise Invalid("Channel {id} does not exist", field="trigger.channel_ids", id=missing[0])
    if trigger.kind is TriggerKind.tag:
        found = set(session.scalars(select(Tag.id).where(Tag.id.in_(trigger.tag_ids))))
        missing = [i for i in trigger.tag_ids if i not in found]
        if missing:
            raise Invalid("Tag {id} does not exist", field="trigger.tag_ids", id=missing[0])
    if data.conditions is not None:
        compile_tree(session, data.conditions, viewer=viewer)  # refuses deleted tags, fields, …
    steps = []
    for index, step in enumerate(data.steps):
        when = parse_when(step.at)
        where = f"steps.{index}"
        if step.kind in (StepKind.task, StepKind.send):
            library_service.check_script_choice(session, step.script_id, field_name=f"{where}.script_id")
            _check_step_materials(session, step.material_ids, kind=step.kind, field=f"{where}.material_ids")
            if not step.text and step.script_id is None and not (step.kind is StepKind.send and step.material_ids):
                raise Invalid("Step {n} needs its text", field=f"{where}.text", n=index + 1)
            # A script the operator sends and a message WeCom sends both reach the customer: safe variables only
            # (a library script was checked so when it was saved).
            variables.check_outgoing(step.text, field=f"{where}.text")
            if step.kind is StepKind.send and len(step.text.encode("utf-8")) > MASS_SEND_TEXT_BYTES:
                raise Invalid("A WeCom message is at most 4000 bytes (about 1300 Chinese characters)",
                              field=f"{where}.text")
        if step.kind is StepKind.coupon:
            from siyu.coupons import service as coupons_service

            try:
                coupons_service.get_batch(session, batch_id=step.coupon_batch_id or 0)
            except NotFound as exc:
                raise Invalid("Step {n} needs a coupon batch that exists", field=f"{where}.coupon_batch_id",
                              n=index + 1) from exc
        if step.kind is StepKind.tag:
            tag = session.get(Tag, step.tag_id) if step.tag_id else None
            if tag is None:
                raise Invalid("Step {n} needs a tag that exists", field=f"{where}.tag_id", n=index + 1)
            if tag.group.is_computed:
                raise Invalid("Tags of group {group} are computed and cannot be edited", field=f"{where}.tag_id",
                              group=tag.group.name)
        steps.append({**step.model_dump(mode="json"), **when})
    return {"trigger": trigger.model_dump(mode="json"),
            "conditions": data.conditions.model_dump(mode="json") if data.conditions is not None else None,
            "steps": steps, "exits": sorted({e.value for e in data.exits})}


def _check_step_materials(session: Session, ids: Sequence[int], *, kind: StepKind, field: str) -> None:
    """Materials of a step exist and are active; a WeCom message carries links, images and mini-program cards
    only (add_msg_template's attachments, W:92135), a task anything the operator can send by hand."""
    found = {m.id: m for m in library_service.get_materials(session, ids)}
    for material_id in ids:
        material = found.get(material_id)
        if material is None:
            raise Invalid("Material {id} not found or retired", field=field, id=material_id)
        if kind is StepKind.send and material.kind not in library_service.WELCOME_KINDS:
            raise Invalid("A WeCom message carries links, images and mini-program cards; {title} is a file",
                          field=field, title=material.title)


def step_text(session: Session, step: dict[str, Any], scripts: dict[int, str] | None = None) -> str:
    """A step's text before variables are filled: its own, else its library script's (while active)."""
    if step.get("text"):
        return str(step["text"])
    script_id = step.get("script_id")
    if not script_id:
        return ""
    if scripts is not None:
        if int(script_id) not in scripts:
            scripts[int(script_id)] = library_service.script_text(session, int(script_id))
        return scripts[int(script_id)]
    return library_service.script_text(session, int(script_id))


def create_sop(session: Session, *, data: SopIn, viewer: Viewer, now: datetime | None = None) -> Sop:
    """A running SOP with its first version; triggers from now on enrol customers."""
    _may_edit(viewer)
    shape = _validated(session, data, viewer)
    now = now or utcnow()
    sop = Sop(name=data.name.strip(), status=SopStatus.running.value, started_at=now, created_by_id=viewer.user_id,
              created_at=now)
    session.add(sop)
    session.flush()
    version = SopVersion(sop_id=sop.id, number=1, created_by_id=viewer.user_id, created_at=now, **shape)
    session.add(version)
    session.flush()
    sop.version_id = version.id
    team_service.record_audit(session, actor=viewer, action="create", entity_type="sop", entity_id=sop.id,
                              summary=sop.name, after={"version": 1, **shape})
    session.flush()
    return sop


def update_sop(session: Session, *, sop_id: int, data: SopIn, viewer: Viewer, now: datetime | None = None) -> Sop:
    """An edit is a new version: new enrolments follow it, running ones finish on the version they entered."""
    _may_edit(viewer)
    sop = get_sop(session, sop_id=sop_id)
    if sop.status == SopStatus.stopped.value:
        raise Invalid("A stopped SOP cannot be edited; copy it into a new one")
    shape = _validated(session, data, viewer)
    before = current_version(session, sop)
    number = before.number + 1
    version = SopVersion(sop_id=sop.id, number=number, created_by_id=viewer.user_id, created_at=now or utcnow(),
                         **shape)
    session.add(version)
    session.flush()
    sop.version_id = version.id
    old_name = sop.name
    sop.name = data.name.strip()
    team_service.record_audit(session, actor=viewer, action="update", entity_type="sop", entity_id=sop.id,
                              summary=sop.name,
                              before={"name": old_name, "version": before.number, "steps": before.steps},
                              after={"name": sop.name, "version": number, **shape})
    session.flush()
    return sop


def set_status(session: Session, *, sop_id: int, status: SopStatus, viewer: Viewer,
               now: datetime | None = None) -> Sop:
    """Pause (nothing enters, no step runs), resume, or stop for good (running enrolments end)."""
    _may_edit(viewer)
    sop = get_sop(session, sop_id=sop_id)
    now = now or utcnow()
    if sop.status == SopStatus.stopped.value:
        raise Invalid("This SOP is stopped for good")
    if sop.status == status.value:
        return sop
    before = sop.status
    sop.status = status.value
    if status is SopStatus.stopped:
        active = list(session.scalars(select(SopEnrolment.id).where(
            SopEnrolment.sop_id == sop.id, SopEnrolment.status == EnrolmentStatus.active.value)))
        _end(session, active, status=EnrolmentStatus.stopped, reason="stopped", outcome=RunOutcome.stopped, now=now)
    action = {SopStatus.paused: "pause", SopStatus.running: "enable", SopStatus.stopped: "disable"}[status]
    team_service.record_audit(session, actor=viewer, action=action, entity_type="sop", entity_id=sop.id,
                              summary=sop.name, before={"status": before}, after={"status": status.value})
    session.flush()
    return sop


# ---------------------------------------------------------------- reading


def get_sop(session: Session, *, sop_id: int) -> Sop:
    sop = session.get(Sop, sop_id)
    if sop is None:
        raise SopNotFound("SOP not found")
    return sop


def current_version(session: Session, sop: Sop) -> SopVersion:
    version = session.get(SopVersion, sop.version_id) if sop.version_id is not None else None
    if version is None:
        raise SopNotFound("SOP not found")
    return version


def list_sops(session: Session) -> list[Sop]:
    return list(session.scalars(select(Sop).order_by(Sop.id.desc())))


def enrolment_counts(session: Session, *, viewer: Viewer, sop_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Enrolments per SOP and status, on the accounts the viewer may see."""
    if not sop_ids:
        return {}
    query = (select(SopEnrolment.sop_id, SopEnrolment.status, func.count())
             .where(SopEnrolment.sop_id.in_(list(sop_ids))).group_by(SopEnrolment.sop_id, SopEnrolment.status))
    if not viewer.sees_all_accounts:
        query = query.where(SopEnrolment.account_id.in_(sorted(viewer.account_ids)))
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sop_id, status, n in session.execute(query):
        counts[int(sop_id)][str(status)] += int(n)
    return counts


def list_enrolments(session: Session, *, sop_id: int, viewer: Viewer, status: str = "", limit: int = 50,
                    after_id: int | None = None) -> list[SopEnrolment]:
    """A SOP's enrolments on the viewer's accounts, newest first."""
    get_sop(session, sop_id=sop_id)
    query = select(SopEnrolment).where(SopEnrolment.sop_id == sop_id)
    if not viewer.sees_all_accounts:
        query = query.where(SopEnrolment.account_id.in_(sorted(viewer.account_ids)))
    if status:
        query = query.where(SopEnrolment.status == status)
    if after_id is not None:
        query = query.where(SopEnrolment.id < after_id)
    return list(session.scalars(query.order_by(SopEnrolment.id.desc()).limit(limit)))


def get_enrolment(session: Session, *, enrolment_id: int, viewer: Viewer) -> SopEnrolment:
    """One enrolment; another account's is 404, as for a customer."""
    enrolment = session.get(SopEnrolment, enrolment_id)
    if enrolment is None or not viewer.can_see_account(enrolment.account_id):
        raise EnrolmentNotFound("Enrolment not found")
    return enrolment


def step_runs(session: Session, enrolment_ids: Sequence[int]) -> dict[int, list[SopStepRun]]:
    found: dict[int, list[SopStepRun]] = defaultdict(list)
    if enrolment_ids:
        for run in session.scalars(select(SopStepRun).where(SopStepRun.enrolment_id.in_(list(enrolment_ids)))
                                   .order_by(SopStepRun.due_at, SopStepRun.step_index, SopStepRun.seq)):
            found[run.enrolment_id].append(run)
    return found


# ---------------------------------------------------------------- when each step is due


def step_times(steps: Sequence[dict[str, Any]], anchor_at: datetime) -> list[tuple[int, int, datetime]]:
    """(step index, repetition, due time) of every step for a customer who entered at ``anchor_at``.

    "day N HH:MM" is that local time N days after the trigger's local day (a time already past when
    they enter runs at once); "every Monday HH:MM" is the next Monday at that time, then weekly."""
    zone = local_zone()
    local = anchor_at.astimezone(zone)
    found = []
    for index, step in enumerate(steps):
        at = time(int(step.get("hour", 9)), int(step.get("minute", 0)))
        if step.get("weekday") is None:
            due = datetime.combine(local.date() + timedelta(days=int(step.get("day") or 0)), at, tzinfo=zone)
            found.append((index, 0, max(due, anchor_at)))
            continue
        ahead = (int(step["weekday"]) - local.weekday()) % 7
        first = datetime.combine(local.date() + timedelta(days=ahead), at, tzinfo=zone)
        if first < anchor_at:
            first += timedelta(days=7)
        for seq in range(int(step.get("times", 1))):
            found.append((index, seq, first + timedelta(days=7 * seq)))
    return found


# ---------------------------------------------------------------- who enters


@dataclass(frozen=True)
class Entry:
    customer_id: int
    account_id: int | None
    anchor_at: datetime
    occurrence: str


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, time(), tzinfo=local_zone())
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _trigger_query(session: Session, version: SopVersion, *, since: datetime, now: datetime) -> Any:
    """(customer, account or NULL, the trigger's moment, occurrence) for everyone the trigger fires for
    since ``since`` — before the audience filter (applied by the caller on ``customer``)."""
    trigger = version.trigger
    kind = TriggerKind(trigger["kind"])
    empty = literal("")
    if kind is TriggerKind.channel:
        from siyu.channels.models import ChannelAdd

        return (select(ChannelAdd.customer_id.label("customer_id"), ChannelAdd.account_id.label("account_id"),
                       ChannelAdd.added_at.label("anchor_at"), empty.label("occurrence"))
                .where(ChannelAdd.channel_id.in_([int(i) for i in trigger["channel_ids"]]),
                       ChannelAdd.added_at >= since, ChannelAdd.added_at <= now))
    if kind is TriggerKind.tag:
        return (select(CustomerTag.customer_id.label("customer_id"), null().label("account_id"),
                       CustomerTag.created_at.label("anchor_at"), empty.label("occurrence"))
                .where(CustomerTag.tag_id.in_([int(i) for i in trigger["tag_ids"]]),
                       CustomerTag.created_at >= since, CustomerTag.created_at <= now))
    if kind is TriggerKind.stage:
        # The stored stage is current, not a history: whoever is at the stage and has not been through this
        # SOP enters (the dry run shows how many that is when the SOP starts).
        return (select(Customer.id.label("customer_id"), null().label("account_id"),
                       null().label("anchor_at"), empty.label("occurrence"))
                .where(Customer.stage.in_([str(s) for s in trigger["stages"]])))
    if kind is TriggerKind.purchase:
        from siyu.orders.models import CustomerPurchaseFacts as Facts

        return (select(Facts.customer_id.label("customer_id"), null().label("account_id"),
                       Facts.last_purchase_at.label("anchor_at"), empty.label("occurrence"))
                .where(Facts.last_purchase_at >= since, Facts.last_purchase_at <= now))
    if kind is TriggerKind.no_touch:
        lapsed = now - timedelta(days=int(trigger["days"]))
        # One enrolment per lapse: the occurrence is the day of the touch they have been silent since.
        return (select(Customer.id.label("customer_id"), null().label("account_id"),
                       null().label("anchor_at"), empty.label("occurrence"),
                       Customer.last_touch_at.label("last_touch_at"))
                .where(Customer.last_touch_at < lapsed))
    # Birthday: the custom date field's month and day are today's (local), once a year.
    today = now.astimezone(local_zone()).date()
    month_day = today.strftime("%m-%d")
    return (select(CustomFieldValue.customer_id.label("customer_id"), null().label("account_id"),
                   null().label("anchor_at"), literal(str(today.year)).label("occurrence"))
            .join(CustomField, CustomField.id == CustomFieldValue.field_id)
            .where(CustomField.key.in_(BIRTHDAY_KEYS),
                   func.substr(CustomFieldValue.value, func.length(CustomFieldValue.value) - 4) == month_day))


def candidates(session: Session, *, sop: Sop, version: SopVersion, now: datetime, since: datetime | None = None,
               customer_ids: Sequence[int] | None = None, viewer: Viewer = SYSTEM,
               limit: int | None = None) -> list[Entry]:
    """Who the trigger fires for (since ``since``, default the SOP's start), in the audience, not yet enrolled
    for this occurrence nor in the middle of this SOP, with the account they go through."""
    since = since or sop.started_at
    query = _trigger_query(session, version, since=since, now=now)
    sub = query.subquery()
    selected = select(sub.c.customer_id, sub.c.account_id, sub.c.anchor_at, sub.c.occurrence,
                      *([sub.c.last_touch_at] if "last_touch_at" in sub.c else []))
    selected = selected.join(Customer, Customer.id == sub.c.customer_id).where(Customer.merged_into_id.is_(None))
    if version.conditions:
        selected = selected.where(compile_tree(session, parse_tree(version.conditions), viewer=SYSTEM,
                                               now=now).clause)
    busy = select(SopEnrolment.id).where(SopEnrolment.sop_id == sop.id, SopEnrolment.customer_id == sub.c.customer_id,
                                         SopEnrolment.status == EnrolmentStatus.active.value)
    selected = selected.where(~busy.exists())
    # Already through this SOP for this firing: the same occurrence, or (a lapse) enrolled since the last touch.
    # In SQL, so the periodic job does not fetch everyone who finished the SOP every five minutes.
    mine = [SopEnrolment.sop_id == sop.id, SopEnrolment.customer_id == sub.c.customer_id]
    if "last_touch_at" in sub.c:
        seen = select(SopEnrolment.id).where(*mine, SopEnrolment.anchor_at >= sub.c.last_touch_at)
    else:
        seen = select(SopEnrolment.id).where(*mine, SopEnrolment.occurrence == sub.c.occurrence)
    selected = selected.where(~seen.exists())
    if customer_ids is not None:
        ids = sorted(set(customer_ids))
        if not ids:
            return []
        selected = selected.where(among(session, sub.c.customer_id, ids))
    if limit is not None:
        selected = selected.order_by(sub.c.customer_id).limit(limit * 4)
    found: dict[int, Entry] = {}
    for row in session.execute(selected):
        occurrence = str(row.occurrence)
        if "last_touch_at" in row._fields and row.last_touch_at is not None:
            occurrence = _aware(row.last_touch_at).astimezone(local_zone()).date().isoformat()
        entry = Entry(int(row.customer_id), int(row.account_id) if row.account_id is not None else None,
                      _aware(row.anchor_at) if row.anchor_at is not None else now, occurrence)
        if entry.customer_id not in found or entry.anchor_at < found[entry.customer_id].anchor_at:
            found[entry.customer_id] = entry  # the first firing counts (one enrolment per customer at a time)
    entries = list(found.values())
    if entries:
        done: set[tuple[int, str]] = set()
        ids = sorted(found)
        for start in range(0, len(ids), ENROL_BATCH):
            done.update((int(c), str(o)) for c, o in session.execute(
                select(SopEnrolment.customer_id, SopEnrolment.occurrence).where(
                    SopEnrolment.sop_id == sop.id, SopEnrolment.customer_id.in_(ids[start:start + ENROL_BATCH]))))
        entries = [e for e in entries if (e.customer_id, e.occurrence) not in done]
    entries = _with_accounts(session, entries, viewer=viewer)
    entries.sort(key=lambda e: e.customer_id)
    return entries[:limit] if limit is not None else entries


def _with_accounts(session: Session, entries: list[Entry], *, viewer: Viewer) -> list[Entry]:
    """The account each customer goes through: the trigger's (a channel add), else their active friendship
    added last. Customers with no active friendship (on an account the viewer may see) are left out."""
    ids = sorted({e.customer_id for e in entries})
    active: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
    for start in range(0, len(ids), ENROL_BATCH):
        for c, a, added in session.execute(
                select(Friendship.customer_id, Friendship.account_id, Friendship.added_at)
                .where(Friendship.customer_id.in_(ids[start:start + ENROL_BATCH]),
                       Friendship.status == FriendshipStatus.active.value)):
            if viewer.can_see_account(int(a)):
                active[int(c)].append((int(a), _aware(added)))
    kept = []
    for entry in entries:
        friends = active.get(entry.customer_id, [])
        accounts = {a for a, _at in friends}
        if entry.account_id is not None:
            if entry.account_id in accounts:
                kept.append(entry)
            continue
        if friends:
            account = max(friends, key=lambda f: (f[1], f[0]))[0]
            kept.append(Entry(entry.customer_id, account, entry.anchor_at, entry.occurrence))
    return kept


def enrol(session: Session, *, sop: Sop, now: datetime | None = None, customer_ids: Sequence[int] | None = None,
          since: datetime | None = None) -> int:
    """Enrol whoever the running SOP's trigger fired for (these customers only, when given); how many entered.

    Idempotent: the unique (SOP, customer, occurrence) key and ON CONFLICT DO NOTHING enrol once."""
    if sop.status != SopStatus.running.value:
        return 0
    now = now or utcnow()
    version = current_version(session, sop)
    entries = candidates(session, sop=sop, version=version, now=now, since=since, customer_ids=customer_ids)
    return insert_enrolments(session, sop=sop, version=version, entries=entries, now=now)


def insert_enrolments(session: Session, *, sop: Sop, version: SopVersion, entries: Sequence[Entry],
                      now: datetime) -> int:
    """Write these enrolments (each with its account), their step runs and their timeline entries."""
    if not entries:
        return 0
    table = cast(Table, SopEnrolment.__table__)
    entered = 0
    for start in range(0, len(entries), ENROL_BATCH):
        chunk = entries[start:start + ENROL_BATCH]
        rows = [{"sop_id": sop.id, "version_id": version.id, "customer_id": e.customer_id,
                 "account_id": e.account_id, "occurrence": e.occurrence[:32], "anchor_at": e.anchor_at,
                 "status": EnrolmentStatus.active.value, "exit_reason": "", "created_at": now, "finished_at": None}
                for e in chunk]
        inserted = session.connection().execute(
            dialect_insert(session, table).on_conflict_do_nothing(index_elements=["sop_id", "customer_id",
                                                                                  "occurrence"])
            .returning(table.c.id, table.c.customer_id, table.c.account_id, table.c.anchor_at), rows).all()
        runs = []
        touches = []
        for enrolment_id, customer_id, account_id, anchor_at in inserted:
            for index, seq, due in step_times(version.steps, _aware(anchor_at)):
                runs.append({"enrolment_id": enrolment_id, "sop_id": sop.id, "step_index": index, "seq": seq,
                             "due_at": due, "status": RunStatus.pending.value, "outcome": "", "detail": "",
                             "task_id": None, "msgid": "", "claimed_at": None, "ran_at": None})
            touches.append(_touch_row(customer_id, account_id, now, {
                "event": "sop_enrolled", "sop_id": sop.id, "sop": sop.name, "version": version.number,
                "enrolment_id": enrolment_id}, content=""))
        if runs:
            session.connection().execute(cast(Table, SopStepRun.__table__).insert(), runs)
        if touches:
            session.connection().execute(cast(Table, Touch.__table__).insert(), touches)
        entered += len(inserted)
    return entered


def _touch_row(customer_id: int, account_id: int | None, at: datetime, details: dict[str, Any],
               content: str) -> dict[str, Any]:
    return {"customer_id": customer_id, "account_id": account_id, "user_id": None, "kind": TouchKind.system.value,
            "content": content, "amount": None, "details": details, "occurred_at": at, "created_at": at,
            "dedupe_key": None}


def running_sops(session: Session, kinds: Iterable[TriggerKind] | None = None) -> list[tuple[Sop, SopVersion]]:
    query = (select(Sop, SopVersion).join(SopVersion, SopVersion.id == Sop.version_id)
             .where(Sop.status == SopStatus.running.value).order_by(Sop.id))
    wanted = {k.value for k in kinds} if kinds is not None else None
    return [(sop, version) for sop, version in session.execute(query).tuples()
            if wanted is None or version.trigger.get("kind") in wanted]


# ---------------------------------------------------------------- early exits and ends


def _end(session: Session, enrolment_ids: Sequence[int], *, status: EnrolmentStatus, reason: str,
         outcome: RunOutcome, now: datetime) -> int:
    """End these active enrolments: pending steps cancelled (with why), a timeline entry each."""
    ids = sorted(set(enrolment_ids))
    if not ids:
        return 0
    ended = 0
    for start in range(0, len(ids), ENROL_BATCH):
        chunk = ids[start:start + ENROL_BATCH]
        rows = session.execute(
            select(SopEnrolment.id, SopEnrolment.customer_id, SopEnrolment.account_id, SopEnrolment.sop_id, Sop.name)
            .join(Sop, Sop.id == SopEnrolment.sop_id)
            .where(SopEnrolment.id.in_(chunk), SopEnrolment.status == EnrolmentStatus.active.value)).all()
        if not rows:
            continue
        mine = [r.id for r in rows]
        session.execute(update(SopEnrolment).where(SopEnrolment.id.in_(mine),
                                                   SopEnrolment.status == EnrolmentStatus.active.value)
                        .values(status=status.value, exit_reason=reason, finished_at=now),
                        execution_options={"synchronize_session": False})
        session.execute(update(SopStepRun).where(SopStepRun.enrolment_id.in_(mine),
                                                 SopStepRun.status == RunStatus.pending.value)
                        .values(status=RunStatus.cancelled.value, outcome=outcome.value, ran_at=now),
                        execution_options={"synchronize_session": False})
        event = "sop_stopped" if status is EnrolmentStatus.stopped else "sop_exited"
        session.connection().execute(cast(Table, Touch.__table__).insert(), [
            _touch_row(r.customer_id, r.account_id, now, {"event": event, "sop_id": r.sop_id, "sop": r.name,
                                                           "reason": reason, "enrolment_id": r.id,
                                                           "label": _(END_LABELS.get(reason, reason))}, content="")
            for r in rows])
        ended += len(rows)
    return ended


def check_exits(session: Session, *, customer_ids: Sequence[int] | None = None,
                enrolment_ids: Sequence[int] | None = None, now: datetime | None = None) -> int:
    """End active enrolments whose customer bought, replied or deleted us since entering (per version's exits)."""
    now = now or utcnow()
    query = (select(SopEnrolment.id, SopEnrolment.customer_id, SopEnrolment.account_id, SopEnrolment.created_at,
                    SopVersion.exits)
             .join(SopVersion, SopVersion.id == SopEnrolment.version_id)
             .where(SopEnrolment.status == EnrolmentStatus.active.value))
    if customer_ids is not None:
        if not customer_ids:
            return 0
        query = query.where(among(session, SopEnrolment.customer_id, sorted(set(customer_ids))))
    if enrolment_ids is not None:
        if not enrolment_ids:
            return 0
        query = query.where(among(session, SopEnrolment.id, sorted(set(enrolment_ids))))
    rows = [r for r in session.execute(query).all() if r.exits]
    if not rows:
        return 0
    ids = sorted({int(r.customer_id) for r in rows})
    from siyu.inbox.models import Conversation
    from siyu.orders.models import CustomerPurchaseFacts as Facts

    bought: dict[int, datetime] = {}
    replied: dict[int, datetime] = {}
    friends: dict[tuple[int, int], str] = {}
    for start in range(0, len(ids), ENROL_BATCH):
        chunk = ids[start:start + ENROL_BATCH]
        bought.update({int(c): _aware(at) for c, at in session.execute(
            select(Facts.customer_id, Facts.last_purchase_at).where(Facts.customer_id.in_(chunk),
                                                                    Facts.last_purchase_at.is_not(None)))})
        replied.update({int(cast(int, c)): _aware(at) for c, at in session.execute(
            select(Conversation.customer_id, func.max(Conversation.last_inbound_at))
            .where(Conversation.customer_id.in_(chunk), Conversation.last_inbound_at.is_not(None))
            .group_by(Conversation.customer_id))})
        friends.update({(int(c), int(a)): str(s) for c, a, s in session.execute(
            select(Friendship.customer_id, Friendship.account_id, Friendship.status)
            .where(Friendship.customer_id.in_(chunk)))})
    by_reason: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        entered = _aware(row.created_at)
        exits = set(row.exits)
        if ExitKind.deleted.value in exits and friends.get((row.customer_id, row.account_id)) != \
                FriendshipStatus.active.value:
            by_reason[ExitKind.deleted.value].append(row.id)
        elif ExitKind.purchase.value in exits and row.customer_id in bought and bought[row.customer_id] > entered:
            by_reason[ExitKind.purchase.value].append(row.id)
        elif ExitKind.reply.value in exits and row.customer_id in replied and replied[row.customer_id] > entered:
            by_reason[ExitKind.reply.value].append(row.id)
    return sum(_end(session, found, status=EnrolmentStatus.exited, reason=reason, outcome=RunOutcome.exited,
                    now=now) for reason, found in by_reason.items())


def _complete_finished(session: Session, enrolment_ids: Sequence[int], now: datetime) -> None:
    """Enrolments with no step left pending or sending are completed."""
    ids = sorted(set(enrolment_ids))
    if not ids:
        return
    open_ids = set(session.scalars(select(SopStepRun.enrolment_id).where(
        SopStepRun.enrolment_id.in_(ids), SopStepRun.status.in_([RunStatus.pending.value, RunStatus.sending.value]))
        .distinct()))
    finished = [i for i in ids if i not in open_ids]
    if finished:
        session.execute(update(SopEnrolment).where(SopEnrolment.id.in_(finished),
                                                   SopEnrolment.status == EnrolmentStatus.active.value)
                        .values(status=EnrolmentStatus.completed.value, finished_at=now),
                        execution_options={"synchronize_session": False})


# ---------------------------------------------------------------- the hooks


def touches_written(session: Session, customer_ids: list[int]) -> None:
    """Touch listener: these customers changed (a channel add, a tag, a stage, a message) — enrol and exit."""
    sops = running_sops(session, (TriggerKind.channel, TriggerKind.tag, TriggerKind.stage))
    if sops:
        now = utcnow()
        for sop, _version in sops:
            enrol(session, sop=sop, now=now, customer_ids=customer_ids)
    if session.scalar(select(SopEnrolment.id).where(
            among(session, SopEnrolment.customer_id, sorted(set(customer_ids))),
            SopEnrolment.status == EnrolmentStatus.active.value).limit(1)) is not None:
        check_exits(session, customer_ids=customer_ids)


def facts_changed(session: Session, customer_ids: list[int]) -> None:
    """Purchase-facts listener: purchases enrol into purchase SOPs and end enrolments that exit on purchase."""
    now = utcnow()
    check_exits(session, customer_ids=customer_ids, now=now)
    for sop, _version in running_sops(session, (TriggerKind.purchase,)):
        enrol(session, sop=sop, now=now, customer_ids=customer_ids)


def register() -> None:
    """Listen to the customers' and orders' hooks (idempotent)."""
    from siyu.orders import facts as purchase_facts
    from siyu.orders import service as _orders  # noqa: F401  (a purchase typed on a timeline becomes an order,
    # and so purchase facts, only once orders.service listens to customers' purchase touches)

    customers_service.on_touches_written(touches_written)
    if facts_changed not in purchase_facts._listeners:
        purchase_facts.on_facts_changed(facts_changed)


register()


# ---------------------------------------------------------------- the merge hook


def repoint_enrolments(session: Session, *, source_ids: list[int], target_id: int,
                       now: datetime | None = None) -> list[list[int]]:
    """A merge keeps one enrolment per SOP: the kept customer's own, else the earliest source's.

    Returns [[enrolment id, former customer id]] of the enrolments moved to the kept customer (an undo
    moves them back); the duplicates end with the reason "merged"."""
    now = now or utcnow()
    rows = session.execute(select(SopEnrolment.id, SopEnrolment.sop_id, SopEnrolment.customer_id,
                                  SopEnrolment.occurrence, SopEnrolment.status)
                           .where(SopEnrolment.customer_id.in_([target_id, *source_ids]))
                           .order_by(SopEnrolment.id)).all()
    taken_keys = {(r.sop_id, r.occurrence) for r in rows if r.customer_id == target_id}
    active_sops = {r.sop_id for r in rows if r.customer_id == target_id and r.status == EnrolmentStatus.active.value}
    moved: list[list[int]] = []
    duplicates: list[int] = []
    for row in rows:
        if row.customer_id == target_id:
            continue
        active = row.status == EnrolmentStatus.active.value
        if (row.sop_id, row.occurrence) in taken_keys or (active and row.sop_id in active_sops):
            if active:
                duplicates.append(row.id)
            continue
        moved.append([int(row.id), int(row.customer_id)])
        taken_keys.add((row.sop_id, row.occurrence))
        if active:
            active_sops.add(row.sop_id)
    _end(session, duplicates, status=EnrolmentStatus.stopped, reason="merged", outcome=RunOutcome.stopped, now=now)
    for enrolment_id, _former in moved:
        session.execute(update(SopEnrolment).where(SopEnrolment.id == enrolment_id).values(customer_id=target_id),
                        execution_options={"synchronize_session": False})
    return moved


def restore_enrolments(session: Session, *, moved: list[Any], target_id: int) -> None:
    """Undo of a merge: each moved enrolment back to its former customer."""
    for enrolment_id, former in moved:
        session.execute(update(SopEnrolment).where(SopEnrolment.id == int(enrolment_id),
                                                   SopEnrolment.customer_id == target_id)
                        .values(customer_id=int(former)), execution_options={"synchronize_session": False})


# ---------------------------------------------------------------- running due steps


@dataclass
class RunResult:
    entered: int = 0
    ran: int = 0
    by_outcome: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _claim(session: Session, run_id: int, *, to: RunStatus, now: datetime) -> bool:
    result = session.execute(update(SopStepRun).where(SopStepRun.id == run_id,
                                                      SopStepRun.status == RunStatus.pending.value)
                             .values(status=to.value, claimed_at=now),
                             execution_options={"synchronize_session": False})
    return int(getattr(result, "rowcount", 0) or 0) == 1


def _finish(session: Session, run_id: int, *, outcome: RunOutcome, now: datetime, detail: str = "",
            task_id: int | None = None, msgid: str = "") -> None:
    session.execute(update(SopStepRun).where(SopStepRun.id == run_id).values(
        status=RunStatus.done.value, outcome=outcome.value, detail=detail[:255], task_id=task_id, msgid=msgid[:64],
        ran_at=now), execution_options={"synchronize_session": False})


def _wecom_api(session: Session) -> Any:
    from siyu.wecom.client import WecomNotConfigured, client_for

    try:
        return client_for(session)
    except WecomNotConfigured:
        return None


def run_due(session: Session, *, now: datetime | None = None, api: Any = None, commit: bool = True) -> RunResult:
    """Run every due step of running SOPs' active enrolments, once each.

    Owns its transactions when ``commit``: each batch commits; a WeCom message's claim commits before
    the call (never sent twice). ``api``: the WeCom API (default: the configured corp's, or none)."""
    now = now or utcnow()
    result = RunResult()
    _settle_lost_sends(session, now=now)
    wecom = api if api is not None else _LazyApi(session)
    while True:
        due = session.execute(
            select(SopStepRun.id, SopStepRun.enrolment_id, SopStepRun.step_index, SopEnrolment.customer_id,
                   SopEnrolment.account_id, SopEnrolment.version_id, SopEnrolment.sop_id)
            .join(SopEnrolment, SopEnrolment.id == SopStepRun.enrolment_id)
            .join(Sop, Sop.id == SopEnrolment.sop_id)
            .where(SopStepRun.status == RunStatus.pending.value, SopStepRun.due_at <= now,
                   SopEnrolment.status == EnrolmentStatus.active.value, Sop.status == SopStatus.running.value)
            .order_by(SopStepRun.due_at, SopStepRun.id).limit(RUN_BATCH)).all()
        if not due:
            break
        check_exits(session, enrolment_ids=[r.enrolment_id for r in due], now=now)
        still = set(session.scalars(select(SopEnrolment.id).where(
            SopEnrolment.id.in_([r.enrolment_id for r in due]), SopEnrolment.status == EnrolmentStatus.active.value)))
        due = [r for r in due if r.enrolment_id in still]
        versions = {v.id: v for v in session.scalars(select(SopVersion).where(
            SopVersion.id.in_(sorted({r.version_id for r in due}))))}
        values = variables.values_for(session, [(r.customer_id, r.account_id) for r in due])
        scripts: dict[int, str] = {}
        texts = {r.id: variables.render(step_text(session, versions[r.version_id].steps[r.step_index], scripts),
                                        values[(r.customer_id, r.account_id)]) for r in due}
        uses = _library_uses(session, [versions[r.version_id].steps[r.step_index] for r in due], texts=texts)
        for r in due:  # a task names the materials the operator sends with the script
            step = versions[r.version_id].steps[r.step_index]
            if step["kind"] == StepKind.task.value and step.get("material_ids"):
                texts[r.id] = f"{texts[r.id]}{_material_note(session, step['material_ids'])}"
        tasks = [r for r in due if versions[r.version_id].steps[r.step_index]["kind"] == StepKind.task.value]
        ran_tasks = _run_tasks(session, tasks, texts, versions, now=now)
        result.ran += ran_tasks
        if ran_tasks:
            result.by_outcome[RunOutcome.task.value] += ran_tasks
        for row in due:
            step = versions[row.version_id].steps[row.step_index]
            if step["kind"] not in (StepKind.tag.value, StepKind.coupon.value):
                continue
            outcome = _run_one(session, row, step, texts[row.id], now=now, api=wecom, commit=commit)
            if outcome is not None:
                result.ran += 1
                result.by_outcome[outcome.value] += 1
        messages = [r for r in due if versions[r.version_id].steps[r.step_index]["kind"] == StepKind.send.value]
        for start in range(0, len(messages), SEND_CHUNK):
            for outcome in _send_many(session, messages[start:start + SEND_CHUNK], versions, texts, now=now,
                                      api=wecom, commit=commit):
                result.ran += 1
                result.by_outcome[outcome.value] += 1
        _complete_finished(session, [r.enrolment_id for r in due], now)
        if uses:
            library_service.record_uses(session, uses, "sop")
        session.flush()
        if commit:
            session.commit()
    return result


def _library_uses(session: Session, steps: Sequence[dict[str, Any]], *, texts: dict[int, str]) -> dict[int, int]:
    """Library items these due steps use: the script (when the step has no text of its own) and materials."""
    uses: dict[int, int] = defaultdict(int)
    for step in steps:
        if step.get("script_id") and not step.get("text"):
            uses[int(step["script_id"])] += 1
        for material_id in step.get("material_ids") or []:
            uses[int(material_id)] += 1
    return dict(uses)


def _material_note(session: Session, ids: Sequence[int]) -> str:
    """「（素材：门店实拍、新客指南）」: the materials a task's operator sends with its script."""
    titles = [m.title for m in library_service.get_materials(session, ids)]
    return _("(materials: {titles})", titles="、".join(titles)) if titles else ""


class _LazyApi:
    """The configured corp's API, looked up on the first WeCom message only."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.loaded = False
        self.api: Any = None

    def get(self) -> Any:
        if not self.loaded:
            self.api, self.loaded = _wecom_api(self.session), True
        return self.api


def _settle_lost_sends(session: Session, *, now: datetime) -> None:
    """Claims left ``sending`` past the lease: the worker died during the WeCom call. Not sent again."""
    lost = list(session.scalars(select(SopStepRun.id).where(SopStepRun.status == RunStatus.sending.value,
                                                            SopStepRun.claimed_at < now - SENDING_LEASE)))
    for run_id in lost:
        _finish(session, run_id, outcome=RunOutcome.maybe_sent, now=now,
                detail=_("The worker stopped during the WeCom call; not sent again, to never send twice"))


def _run_one(session: Session, row: Any, step: dict[str, Any], text: str, *, now: datetime, api: Any,
             commit: bool) -> RunOutcome | None:
    kind = StepKind(step["kind"])  # task steps run set-based (_run_tasks), messages in chunks (_send_many)
    if kind is StepKind.tag:
        if not _claim(session, row.id, to=RunStatus.done, now=now):
            return None
        tag = session.get(Tag, int(step.get("tag_id") or 0))
        if tag is None:
            _finish(session, row.id, outcome=RunOutcome.tagged, now=now, detail=_("The tag was deleted"))
            return RunOutcome.tagged
        changes = customers_service.add_tags(session, customer_ids=[row.customer_id], tags=[tag])
        if changes:
            added, removed = changes[row.customer_id]
            session.add(Touch(customer_id=row.customer_id, account_id=row.account_id, kind=TouchKind.tag_change.value,
                              details={"added": added, "removed": removed}, occurred_at=now))
            customers_service.notify_changed(session, [row.customer_id], {"tags"})  # mirrored to WeCom corp tags
        _finish(session, row.id, outcome=RunOutcome.tagged, now=now, detail=customers_service.tag_name(tag))
        _step_touch(session, row, step, RunOutcome.tagged, now=now, content=customers_service.tag_name(tag))
        return RunOutcome.tagged
    if kind is StepKind.coupon:
        return _issue_coupon(session, row, step, now=now)
    return None  # messages run in chunks (_send_many), tasks set-based (_run_tasks)


def _issue_coupon(session: Session, row: Any, step: dict[str, Any], *, now: datetime) -> RunOutcome | None:
    """One code of the step's batch for this customer (the one held already when there is one): the pool's
    draw is the coupons domain's, so a code goes to one customer, once. A used-up or expired batch issues
    nothing and says so on the run."""
    from siyu.coupons import service as coupons_service

    if not _claim(session, row.id, to=RunStatus.done, now=now):
        return None
    batch_id = int(step.get("coupon_batch_id") or 0)
    try:
        issued = coupons_service.issue(session, batch_id, [row.customer_id], via="sop", at=now)
    except (Invalid, NotFound) as exc:
        _finish(session, row.id, outcome=RunOutcome.no_coupon, now=now,
                detail=_("The coupon batch expired or no longer exists"))
        del exc
        return RunOutcome.no_coupon
    code = issued.codes.get(row.customer_id)
    if code is None:
        _finish(session, row.id, outcome=RunOutcome.no_coupon, now=now, detail=_("The coupon pool is empty"))
        return RunOutcome.no_coupon
    _finish(session, row.id, outcome=RunOutcome.coupon, now=now, detail=code)
    _step_touch(session, row, step, RunOutcome.coupon, now=now, content=code)
    return RunOutcome.coupon


def _run_tasks(session: Session, rows: Sequence[Any], texts: dict[int, str], versions: dict[int, SopVersion], *,
               now: datetime) -> int:
    """The batch's task steps, set-based: one claim (pending → done), one insert of the day's tasks, one
    update of the runs, one insert of their timeline entries. A run another worker claimed is left alone."""
    if not rows:
        return 0
    table = cast(Table, SopStepRun.__table__)
    claimed = set(session.scalars(
        update(SopStepRun).where(SopStepRun.id.in_([r.id for r in rows]),
                                 SopStepRun.status == RunStatus.pending.value)
        .values(status=RunStatus.done.value, claimed_at=now).returning(SopStepRun.id),
        execution_options={"synchronize_session": False}))
    mine = [r for r in rows if r.id in claimed]
    if not mine:
        return 0
    from siyu.maintenance import service as maintenance_service
    from siyu.maintenance.models import Task, TaskKind

    day = now.astimezone(local_zone()).date()
    found = maintenance_service.add_tasks(session, [{"customer_id": r.customer_id, "account_id": r.account_id,
                                                     "detail": texts[r.id], "ref_id": r.id} for r in mine],
                                          kind=TaskKind.sop, day=day, now=now)
    joined = [r for r in mine if (r.customer_id, r.account_id) in found]
    owners = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(sorted(set(found.values())))))}
    for row in joined:  # a second step of the day for the same customer and account joins the day's task
        task = owners[found[(row.customer_id, row.account_id)]]
        if task.ref_id != row.id and texts[row.id] not in task.detail:
            task.detail = f"{task.detail}；{texts[row.id]}"[:255]
    session.connection().execute(
        update(table).where(table.c.id == bindparam("run")).values(
            outcome=RunOutcome.task.value, task_id=bindparam("task"), ran_at=now),
        [{"run": r.id, "task": found.get((r.customer_id, r.account_id))} for r in mine])
    names = {i: n for i, n in session.execute(select(Sop.id, Sop.name).where(
        Sop.id.in_(sorted({r.sop_id for r in mine}))))}
    session.connection().execute(cast(Table, Touch.__table__).insert(), [
        _touch_row(r.customer_id, r.account_id, now, {
            "event": "sop_step", "sop_id": r.sop_id, "sop": names.get(r.sop_id, ""), "step": r.step_index + 1,
            "kind": StepKind.task.value, "outcome": RunOutcome.task.value, "label": _(OUTCOME_LABELS[RunOutcome.task]),
            "run_id": r.id}, content=texts[r.id][:2000]) for r in mine])
    return len(mine)


def _claim_many(session: Session, run_ids: Sequence[int], *, to: RunStatus, now: datetime) -> set[int]:
    """Claim these runs (pending → ``to``) in one UPDATE; the ids this caller got."""
    if not run_ids:
        return set()
    return set(session.scalars(
        update(SopStepRun).where(SopStepRun.id.in_(list(run_ids)), SopStepRun.status == RunStatus.pending.value)
        .values(status=to.value, claimed_at=now).returning(SopStepRun.id),
        execution_options={"synchronize_session": False}))


def _finish_many(session: Session, finished: Sequence[tuple[Any, RunOutcome, str, str, int | None]], *,
                 steps: dict[int, dict[str, Any]], contents: dict[int, str], now: datetime) -> None:
    """(row, outcome, detail, msgid, task id) of claimed runs: one executemany UPDATE, one INSERT of their
    timeline entries (content: ``contents`` by run id)."""
    if not finished:
        return
    table = cast(Table, SopStepRun.__table__)
    session.connection().execute(
        update(table).where(table.c.id == bindparam("run")).values(
            status=RunStatus.done.value, outcome=bindparam("outcome"), detail=bindparam("detail"),
            task_id=bindparam("task"), msgid=bindparam("msg"), ran_at=now),
        [{"run": r.id, "outcome": o.value, "detail": d[:255], "task": t, "msg": m[:64]}
         for r, o, d, m, t in finished])
    names = {i: n for i, n in session.execute(select(Sop.id, Sop.name).where(
        Sop.id.in_(sorted({r.sop_id for r, *_rest in finished}))))}
    session.connection().execute(cast(Table, Touch.__table__).insert(), [
        _touch_row(r.customer_id, r.account_id, now, {
            "event": "sop_step", "sop_id": r.sop_id, "sop": names.get(r.sop_id, ""), "step": r.step_index + 1,
            "kind": steps[r.id]["kind"], "outcome": o.value, "label": _(OUTCOME_LABELS[o]), "run_id": r.id},
            content=contents.get(r.id, "")[:2000]) for r, o, _d, _m, _t in finished])


def _tasks_instead(session: Session, items: Sequence[tuple[Any, RunOutcome, str]], texts: dict[int, str], *,
                   now: datetime) -> list[tuple[Any, RunOutcome, str, str, int | None]]:
    """Messages that cannot go out through WeCom become the day's SOP tasks (set-based, as ``_run_tasks``):
    (row, outcome, reason, msgid "", task id) for ``_finish_many``."""
    if not items:
        return []
    from siyu.maintenance import service as maintenance_service
    from siyu.maintenance.models import Task, TaskKind, TaskStatus

    day = now.astimezone(local_zone()).date()
    found = maintenance_service.add_tasks(session, [{"customer_id": r.customer_id, "account_id": r.account_id,
                                                     "detail": texts[r.id], "ref_id": r.id} for r, _o, _w in items],
                                          kind=TaskKind.sop, day=day, now=now)
    owners = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(sorted(set(found.values())))))}
    for row, _outcome, _why in items:  # a second step of the day for the same customer joins the day's task
        task = owners.get(found.get((row.customer_id, row.account_id), 0))
        if task is not None and task.ref_id != row.id and texts[row.id] not in task.detail:
            task.detail = f"{task.detail}；{texts[row.id]}"[:255]
            if task.status not in (TaskStatus.open.value, TaskStatus.snoozed.value):
                task.status = TaskStatus.open.value
    session.flush()
    return [(r, o, why, "", found.get((r.customer_id, r.account_id))) for r, o, why in items]


def _send_many(session: Session, rows: Sequence[Any], versions: dict[int, SopVersion], texts: dict[int, str], *,
               now: datetime, api: Any, commit: bool) -> list[RunOutcome]:
    """A chunk of due WeCom messages, set-based around the calls: who cannot be sent to (personal account, no
    external id, over quota, not connected) becomes a task at once; the rest are reserved in the ledger and
    claimed (``sending``) in one statement each and committed before any call — never sent twice; each
    customer then gets their own ``add_msg_template`` (their own text), and the answers are written at once."""
    from siyu.wecom.client import WecomApiError

    steps = {r.id: versions[r.version_id].steps[r.step_index] for r in rows}
    accounts = {a.id: a for a in session.scalars(select(Account).where(
        Account.id.in_(sorted({r.account_id for r in rows}))))}
    externals = {int(c): x for c, x in session.execute(select(Customer.id, Customer.wecom_external_userid).where(
        Customer.id.in_(sorted({r.customer_id for r in rows}))))}
    instead: list[tuple[Any, RunOutcome, str]] = []
    candidates = []
    for row in rows:
        account = accounts.get(row.account_id)
        if account is None or account.kind != AccountKind.wecom.value or not account.wecom_userid:
            instead.append((row, RunOutcome.no_wecom, _(NO_SERVER_SEND)))
        elif not externals.get(row.customer_id):
            instead.append((row, RunOutcome.no_wecom,
                            _("This customer has no WeCom external user ID, so WeCom cannot deliver to them")))
        else:
            candidates.append(row)
    reservation = sends.reserve_each(session, [(r.customer_id, f"sop_run:{r.id}") for r in candidates], now,
                                     source=SendSource.sop)
    instead += [(r, RunOutcome.over_quota, reservation.refused[f"sop_run:{r.id}"]) for r in candidates
                if f"sop_run:{r.id}" in reservation.refused]
    allowed = [r for r in candidates if f"sop_run:{r.id}" not in reservation.refused]
    connected = (api.get() if isinstance(api, _LazyApi) else api) if allowed else None
    if allowed and connected is None:
        sends.release_each(session, source=SendSource.sop, refs=[f"sop_run:{r.id}" for r in allowed])
        instead += [(r, RunOutcome.no_wecom, _("WeCom is not connected: send it by hand")) for r in allowed]
        allowed = []
    mine = _claim_many(session, [r.id for r, _o, _w in instead], to=RunStatus.done, now=now)
    instead = [item for item in instead if item[0].id in mine]
    sending = _claim_many(session, [r.id for r in allowed], to=RunStatus.sending, now=now)
    sends.release_each(session, source=SendSource.sop, refs=[f"sop_run:{r.id}" for r in allowed
                                                             if r.id not in sending])  # another worker has it
    allowed = [r for r in allowed if r.id in sending]
    finished = _tasks_instead(session, instead, texts, now=now)
    contents = {r.id: why for r, _o, why in instead}
    if allowed and commit:
        session.commit()  # the claims and the reservations are durable before WeCom hears of any of them
    failed: list[tuple[Any, RunOutcome, str]] = []
    for row in allowed:
        assert connected is not None
        step, text = steps[row.id], texts[row.id]
        external = str(externals[row.customer_id])
        try:
            extra: dict[str, Any] = {}
            if step.get("material_ids"):  # links, images and cards from the library (images as temporary material)
                from siyu.wecom import media

                extra["attachments"] = media.welcome_attachments(
                    session, connected, library_service.welcome_materials(session, step["material_ids"]))
            answer = connected.create_mass_send(sender=accounts[row.account_id].wecom_userid, text=text,
                                                chat_type="single", external_userids=[external], **extra)
        except WecomApiError as exc:
            if exc.errcode is None and not exc.retryable:  # the answer was lost after WeCom may have acted
                finished.append((row, RunOutcome.maybe_sent,
                                 _("WeCom may have got it but its answer was lost; not sent again: {detail}",
                                   detail=exc.display()), "", None))
                contents[row.id] = text
                continue
            failed.append((row, RunOutcome.send_failed, exc.display()))
            continue
        if external in answer.get("fail_list", []) or not answer.get("msgid"):
            failed.append((row, RunOutcome.send_failed,
                           _("The customer is not (or no longer) a WeCom contact of this account's member")))
            continue
        finished.append((row, RunOutcome.sent, "", str(answer["msgid"]), None))
        contents[row.id] = text
    # WeCom created nothing for these: the quota is given back, and each becomes a task.
    sends.release_each(session, source=SendSource.sop, refs=[f"sop_run:{r.id}" for r, _o, _w in failed])
    finished += _tasks_instead(session, failed, texts, now=now)
    contents.update({r.id: why for r, _o, why in failed})
    _finish_many(session, finished, steps=steps, contents=contents, now=now)
    return [outcome for _r, outcome, *_rest in finished]


def _step_touch(session: Session, row: Any, step: dict[str, Any], outcome: RunOutcome, *, now: datetime,
                content: str) -> None:
    sop = session.get(Sop, row.sop_id)
    session.add(Touch(customer_id=row.customer_id, account_id=row.account_id, kind=TouchKind.system.value,
                      content=content[:2000], occurred_at=now,
                      details={"event": "sop_step", "sop_id": row.sop_id, "sop": sop.name if sop else "",
                               "step": row.step_index + 1, "kind": step["kind"], "outcome": outcome.value,
                               "label": _(OUTCOME_LABELS[outcome]), "run_id": row.id}))


# ---------------------------------------------------------------- the periodic job


def run_all(session: Session, *, now: datetime | None = None, api: Any = None, commit: bool = True) -> RunResult:
    """The job: enrol every running SOP's new entries (time-based triggers and anything a hook missed),
    then run the due steps. Idempotent and crash-safe (see the module's docstring)."""
    now = now or utcnow()
    entered = 0
    for sop, _version in running_sops(session):
        entered += enrol(session, sop=sop, now=now)
    if commit:
        session.commit()
    result = run_due(session, now=now, api=api, commit=commit)
    result.entered = entered
    return result


# ---------------------------------------------------------------- the dry run


@dataclass
class DryRunStep:
    step: int
    kind: str
    due_at: datetime
    text: str
    outcome: str
    reason: str = ""


@dataclass
class DryRunEntry:
    customer_id: int
    name: str
    account_id: int
    steps: list[DryRunStep]


@dataclass
class DryRun:
    entering: int
    items: list[DryRunEntry]
    message: str = ""


def dry_run(session: Session, *, data: SopIn | None = None, sop_id: int | None = None, viewer: Viewer,
            now: datetime | None = None, sample: int = 50) -> DryRun:
    """Who would enter today (the viewer's accounts) and what each would get; nothing is written."""
    now = now or utcnow()
    midnight = datetime.combine(now.astimezone(local_zone()).date(), time(), tzinfo=local_zone())
    if data is not None:
        shape = _validated(session, data, viewer)
        sop = Sop(id=0, name=data.name, status=SopStatus.running.value, started_at=midnight)
        version = SopVersion(id=0, sop_id=0, number=0, **shape)
    else:
        sop = get_sop(session, sop_id=int(sop_id or 0))
        version = current_version(session, sop)
    since = max(midnight, sop.started_at) if data is None else midnight
    entries = candidates(session, sop=sop, version=version, now=now, since=since, viewer=viewer)
    shown = entries[:sample]
    names = {c: n for c, n in session.execute(select(Customer.id, Customer.name).where(
        Customer.id.in_([e.customer_id for e in shown])))} if shown else {}
    values = variables.values_for(session, [(e.customer_id, e.account_id or 0) for e in shown])
    accounts = {a.id: a for a in session.scalars(select(Account).where(
        Account.id.in_(sorted({e.account_id for e in shown if e.account_id is not None}))))} if shown else {}
    externals = {c: x for c, x in session.execute(select(Customer.id, Customer.wecom_external_userid).where(
        Customer.id.in_([e.customer_id for e in shown])))} if shown else {}
    used = sends.used_counts(session, [e.customer_id for e in shown], at=now)
    period = sends.period_of(sends.get_settings_row(session).quota_mode, sends.local_day(now))
    items = []
    for entry in shown:
        assert entry.account_id is not None
        planned = []
        sends_so_far = used.get(entry.customer_id, 0)
        for index, _seq, at in step_times(version.steps, entry.anchor_at):
            due = max(at, now)
            step = version.steps[index]
            kind = StepKind(step["kind"])
            text = variables.render(step_text(session, step), values[(entry.customer_id, entry.account_id)])
            if step.get("material_ids"):
                text = f"{text}{_material_note(session, step['material_ids'])}"
            outcome, reason = kind.value, ""
            if kind is StepKind.tag:
                tag = session.get(Tag, int(step.get("tag_id") or 0))
                text = customers_service.tag_name(tag) if tag is not None else ""
            if kind is StepKind.send:
                account = accounts.get(entry.account_id)
                if account is None or account.kind != AccountKind.wecom.value or not externals.get(entry.customer_id):
                    outcome, reason = RunOutcome.no_wecom.value, _(NO_SERVER_SEND)
                elif sends.period_of(period_mode(session), sends.local_day(due)).start == period.start and \
                        sends_so_far >= period.limit:
                    outcome, reason = RunOutcome.over_quota.value, _("Over the send quota: would become a task")
                else:
                    sends_so_far += 1 if sends.period_of(period_mode(session), sends.local_day(due)).start == \
                        period.start else 0
            planned.append(DryRunStep(step=index + 1, kind=kind.value, due_at=due, text=text,
                                      outcome=outcome, reason=reason))
        items.append(DryRunEntry(customer_id=entry.customer_id, name=names.get(entry.customer_id, ""),
                                 account_id=entry.account_id, steps=planned))
    message = "" if entries else _("Nobody would enter this SOP today")
    return DryRun(entering=len(entries), items=items, message=message)


def period_mode(session: Session) -> str:
    return sends.get_settings_row(session).quota_mode


def local_date(at: datetime) -> date:
    return at.astimezone(local_zone()).date()

