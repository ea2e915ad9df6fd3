"""Channel rules: creating channels and codes, attributing adds, incentives, the report.

Why it is shaped this way (seeds/001, 003): a brand pilots many channels and moves its
budget to the ones that bring customers who stay and buy. So every add is attributed at
the moment it happens (first touch kept, later touches recorded), incentives are given in
the same transaction (a coupon code claimed with one guarded UPDATE, so concurrent adds can
never share a code), and the report compares channels on net adds, retention, revenue and
cost per customer from the same rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Interval, and_, case, func, insert, literal, select, tuple_, update
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountStatus
from siyu.channels.models import (
    AccountStrategy,
    Channel,
    ChannelAdd,
    ChannelKind,
    ChannelStatus,
    CostModel,
    CouponCode,
    IncentiveKind,
    Promoter,
    PromoterReward,
)
from siyu.core import codepool
from siyu.core.db import dialect_insert, utcnow
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.ids import Id
from siyu.core.settings import local_today, local_zone
from siyu.core.text import Name
from siyu.core.viewer import SYSTEM, Viewer
from siyu.customers import service as customers_service
from siyu.customers import variables
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Touch, TouchKind
from siyu.library import service as library_service
from siyu.orders.models import COUNTED_STATUSES, MatchState, Order
from siyu.team import service as team_service

# Alerts are stored as message ids and translated where they are shown.
POOL_EMPTY = N_("coupon pool empty")
ALL_FULL = N_("every account is at capacity")
UNKNOWN_STATE = N_("unknown channel state")
MAX_CODES_PER_UPLOAD = 100_000
CONTACT_WAY_STATE_MAX = 30  # W:92228 配置客户联系「联系我」方式: state 不超过30个字符
EDITING_ROLES = ("admin", "planner", "operator")


class ChannelNotFound(NotFound):
    pass


class ChannelIn(BaseModel):
    name: Name = Field(min_length=1, max_length=64)
    kind: ChannelKind = ChannelKind.store_staff
    status: ChannelStatus = ChannelStatus.active
    starts_on: date | None = None
    ends_on: date | None = None
    cost_model: CostModel = CostModel.per_add
    cost_amount: Decimal = Field(Decimal("0"), ge=0, le=Decimal("100000000"))
    account_strategy: AccountStrategy = AccountStrategy.single
    account_ids: list[Id] = Field(min_length=1, max_length=200)
    tag_names: list[Name] = Field(default_factory=list, max_length=20)
    incentive_kind: IncentiveKind = IncentiveKind.none
    incentive_text: str = Field("", max_length=200)
    welcome_text: str = Field("", max_length=2000)
    fallback_text: str = Field("", max_length=2000)
    promoter_id: Id | None = None
    # 话术库 / 素材库: the script sent when welcome_text is empty, and link materials sent with the welcome
    welcome_script_id: Id | None = None
    welcome_material_ids: list[Id] = Field(default_factory=list, max_length=20)

    @field_validator("ends_on")
    @classmethod
    def ends_after_start(cls, value: date | None, info: Any) -> date | None:
        starts = info.data.get("starts_on")
        if value is not None and starts is not None and value < starts:
            raise ValueError("must not be before the start date")
        return value


# ---------------------------------------------------------------- channels and codes


def _require_editor(viewer: Viewer, account_ids: list[int]) -> None:
    if viewer.role not in EDITING_ROLES:
        raise Forbidden("Your role may not change channels")
    hidden = [a for a in account_ids if not viewer.can_see_account(a)]
    if hidden:
        raise Invalid("Account {account_id} not found", field="account_ids", account_id=hidden[0])


def new_key(session: Session) -> str:
    """A short, unguessable state (WeCom allows 30 characters)."""
    while True:
        key = "ch" + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
        if session.scalar(select(Channel.id).where(Channel.key == key)) is None:
            return key


def save_channel(session: Session, *, data: ChannelIn, viewer: Viewer, channel_id: int | None = None) -> Channel:
    _require_editor(viewer, data.account_ids)
    if session.scalar(select(func.count()).select_from(Account).where(Account.id.in_(data.account_ids))) != len(
            set(data.account_ids)):
        raise Invalid("Choose existing accounts", field="account_ids")
    if data.tag_names:
        customers_service.resolve_tags(session, names=data.tag_names)  # unknown group → a clear error now
    if data.promoter_id is not None and session.get(Promoter, data.promoter_id) is None:
        raise Invalid("No such promoter", field="promoter_id")
    variables.check_outgoing(data.welcome_text, field="welcome_text")
    variables.check_outgoing(data.fallback_text, field="fallback_text")
    library_service.check_script_choice(session, data.welcome_script_id, field_name="welcome_script_id")
    library_service.check_welcome_materials(session, data.welcome_material_ids, field_name="welcome_material_ids")
    if channel_id is None:
        channel = Channel(key=new_key(session))
        session.add(channel)
    else:
        channel = get_channel(session, channel_id=channel_id, viewer=viewer)
    before = {k: getattr(channel, k) for k in ("name", "status", "cost_amount")} if channel_id else None
    for name, value in data.model_dump().items():
        setattr(channel, name, value.value if hasattr(value, "value") else value)
    session.flush()
    team_service.record_audit(session, actor=viewer, action="update" if channel_id else "create",
                              entity_type="channel", entity_id=channel.id, summary=channel.name,
                              before={k: str(v) for k, v in before.items()} if before else None,
                              after=data.model_dump(mode="json"))
    _queue_contact_way(session, channel.id)
    return channel


def _queue_contact_way(session: Session, channel_id: int) -> None:
    from siyu.core import jobs

    jobs.enqueue_after_commit(session, "channels.jobs.sync_contact_way", channel_id)


def wecom_users(session: Session, channel: Channel) -> list[str]:
    """The WeCom member user ids the channel's contact way should reach (personal accounts have none)."""
    rows = session.scalars(select(Account.wecom_userid).where(
        Account.id.in_(channel.account_ids or []), Account.kind == "wecom", Account.wecom_userid.is_not(None)))
    return sorted(u for u in rows if u)


def sync_contact_way(session: Session, *, channel: Channel, api: Any) -> str:
    """Make the channel's WeCom 「联系我」 code match it: members and ``state`` = the channel key.

    Created on the first save, updated after; deleted only when no WeCom member is left on the
    channel. Archiving keeps the code: a QR already printed still adds and attributes customers.
    Returns what was done ("created", "updated", "deleted" or "none").
    """
    users = wecom_users(session, channel)
    if not users:
        if not channel.wecom_config_id:
            return "none"
        api.delete_contact_way(channel.wecom_config_id)
        channel.wecom_config_id, channel.qr_url, channel.qr_image_key = "", "", ""
        return "deleted"
    remark = channel.name[:30]
    if channel.wecom_config_id:
        api.update_contact_way(channel.wecom_config_id, users=users, state=channel.key, remark=remark)
        return "updated"
    channel.wecom_config_id, channel.qr_url = create_contact_way(api, users=users, state=channel.key, remark=remark)
    return "created"


def create_contact_way(api: Any, *, users: list[str], state: str, remark: str) -> tuple[str, str]:
    """A new 「联系我」 QR code for these members whose adds carry ``state`` (W:92228): (config id, QR URL).

    Shared by channels and personal invite codes (referrals). Type 2 (several members) even for
    one: the members change, a type-1 code cannot.
    """
    made = api.add_contact_way(users=users, state=state[:CONTACT_WAY_STATE_MAX], remark=remark[:30], kind=2)
    return str(made.get("config_id", "")), str(made.get("qr_code", ""))


QR_IMAGE_AREA = "channel_qr"  # core.storage area of the kept 「联系我」 QR images (never swept)


def keep_qr_image(session: Session, *, channel: Channel, body: bytes) -> str:
    """Keep the contact way's QR image in the shared storage and point the channel at it."""
    from siyu.core import storage

    key = f"{QR_IMAGE_AREA}/{channel.key}-{secrets.token_hex(8)}"
    storage.put_bytes(key, body, meta={"channel_id": channel.id, "source": channel.qr_url[:200]})
    old, channel.qr_image_key = channel.qr_image_key, key
    if old:
        storage.delete_file(old)
    return key


def qr_image(channel: Channel) -> bytes | None:
    """The kept 「联系我」 QR image of the channel, if WeCom gave one and it was fetched."""
    from siyu.core import storage

    if not channel.qr_image_key:
        return None
    try:
        return storage.get(channel.qr_image_key)
    except (NotFound, FileNotFoundError):
        return None


@dataclass(frozen=True)
class PublicFace:
    """What a customer sees of a channel (poster, landing page): the persona and brand they add and the
    incentive — never the channel's internal name, its key or a remark."""

    title: str
    persona: str
    brand: str
    positioning: str
    signature: str
    avatar_url: str
    wechat_id: str
    incentive: str
    qr_image_url: str = ""  # a personal account's own WeChat QR, while it has not expired


def public_face(channel: Channel, account: Account | None, *, today: date | None = None) -> PublicFace:
    persona = account.display_name if account is not None else ""
    brand = account.brand if account is not None else ""
    if account is not None and len(channel.account_ids or []) > 1 and channel.qr_image_key:
        persona = ""  # WeCom picks one of several members: name the brand, not one persona
    title = " · ".join(part for part in (brand, persona) if part) or _("Add us on WeChat")
    return PublicFace(title=title, persona=persona, brand=brand,
                      positioning=account.positioning if account is not None else "",
                      signature=account.signature if account is not None else "",
                      avatar_url=account.avatar_url if account is not None and
                      account.avatar_url.startswith("https://") else "",
                      wechat_id=account.wechat_id if account is not None else "",
                      incentive=channel.incentive_text, qr_image_url=_personal_qr(account, today))


def _personal_qr(account: Account | None, today: date | None) -> str:
    """The personal account's own QR image (uploaded on its page), unless its expiry date has passed."""
    if account is None or account.kind != "personal" or not account.qr_image_url:
        return ""
    if account.qr_expires_on is not None and account.qr_expires_on < (today or local_today()):
        return ""
    return account.qr_image_url


def get_channel(session: Session, *, channel_id: int, viewer: Viewer) -> Channel:
    channel = session.get(Channel, channel_id)
    if channel is None or (not viewer.sees_all_accounts
                           and not any(viewer.can_see_account(a) for a in channel.account_ids or [0])):
        raise ChannelNotFound("Channel not found")
    return channel


def list_channels(session: Session, *, viewer: Viewer) -> list[Channel]:
    channels = list(session.scalars(select(Channel).order_by(Channel.status, Channel.id.desc())))
    return [c for c in channels if viewer.sees_all_accounts or any(viewer.can_see_account(a) for a in c.account_ids)]


def add_codes(session: Session, *, channel_id: int, codes: list[str], viewer: Viewer) -> int:
    """Add coupon codes to a channel's pool; duplicates (in the upload or the pool) are skipped."""
    channel = get_channel(session, channel_id=channel_id, viewer=viewer)
    _require_editor(viewer, channel.account_ids)
    cleaned = list(dict.fromkeys(c.strip() for c in codes if c.strip()))
    if len(cleaned) > MAX_CODES_PER_UPLOAD:
        raise Invalid("At most {n} codes at a time", field="codes", n=MAX_CODES_PER_UPLOAD)
    too_long = [c for c in cleaned if len(c) > 64]
    if too_long:
        raise Invalid("A code is longer than 64 characters: {code}", field="codes", code=too_long[0][:20])
    existing = set(session.scalars(select(CouponCode.code).where(CouponCode.channel_id == channel.id)))
    fresh = [c for c in cleaned if c not in existing]
    if fresh:
        session.execute(insert(CouponCode), [{"channel_id": channel.id, "code": c} for c in fresh])
    if fresh and channel.alert:
        channel.alert = ""  # the pool has codes again
    team_service.record_audit(session, actor=viewer, action="update", entity_type="channel", entity_id=channel.id,
                              entity_name=channel.name, summary=_("+{n} coupon codes", n=len(fresh)))
    session.flush()
    return len(fresh)


def pool_status(session: Session, *, channel_id: int) -> tuple[int, int]:
    """(codes claimed, codes in the pool)."""
    return codepool.status(session, CouponCode, scope=[CouponCode.channel_id == channel_id])


# ---------------------------------------------------------------- which account


def pick_account(session: Session, channel: Channel) -> tuple[int | None, str]:
    """The account that should take the next add, and an alert when every account is full."""
    accounts = {a.id: a for a in session.scalars(select(Account).where(Account.id.in_(channel.account_ids)))}
    ordered = [accounts[i] for i in channel.account_ids if i in accounts]
    if not ordered:
        return None, "no account"
    friends: dict[int, int] = {account_id: count for account_id, count in session.execute(
        select(Friendship.account_id, func.count()).where(
            Friendship.account_id.in_(list(accounts)), Friendship.status == FriendshipStatus.active.value)
        .group_by(Friendship.account_id))}
    # A retired account takes no new friends (issue 21: it leaves rotations); it stays the last resort.
    room = [a for a in ordered if friends.get(a.id, 0) < a.friend_capacity and a.status != AccountStatus.retired.value]
    if not room:
        # Still give an account (the customer must not be lost), and tell someone to add capacity.
        _raise_alert(session, channel, ALL_FULL)
        return ordered[0].id, ALL_FULL
    if channel.account_strategy == AccountStrategy.least_utilised.value:
        chosen = min(room, key=lambda a: (friends.get(a.id, 0) / max(a.friend_capacity, 1), a.id))
    elif channel.account_strategy == AccountStrategy.round_robin.value:
        chosen = room[channel.rotation % len(room)]
        channel.rotation += 1
    else:
        chosen = room[0]
    return chosen.id, ""


# ---------------------------------------------------------------- on add


@dataclass
class AddOutcome:
    channel_id: int | None
    first_touch: bool = False
    coupon: str | None = None
    welcome: str | None = None
    alert: str = ""
    attachments: list[dict[str, Any]] = field(default_factory=list)  # send_welcome_msg's links, from the library
    # Every welcome material (links, images, mini-program cards) in order: images and covers become
    # media_ids (wecom.media) when the welcome is sent.
    material_ids: list[int] = field(default_factory=list)


def _local_day(at: datetime) -> date:
    return at.astimezone(local_zone()).date()


@dataclass(frozen=True)
class FriendAdd:
    """A customer who added an account, through the contact way whose ``state`` is given."""

    customer_id: int
    account_id: int
    state: str
    added_at: datetime


def on_friend_added(session: Session, *, customer_id: int, account_id: int, state: str,
                    added_at: datetime | None = None) -> AddOutcome:
    """One add (see ``on_friends_added``); the customer's computed facts are refreshed too."""
    outcome = on_friends_added(session, [FriendAdd(customer_id, account_id, state, added_at or utcnow())])[0]
    customer = session.get(Customer, customer_id)
    if customer is not None:
        customers_service.refresh_computed(session, customer=customer)
    return outcome


@dataclass(frozen=True)
class AddListener:
    """A domain that owns some add states (referrals: personal invite codes), registered at its import:
    ``claims(state)`` picks its adds out of a batch, ``added`` handles them, ``removed`` hears of a friend
    lost. Channels never import that domain (the listener comes to it)."""

    claims: Callable[[str], bool]
    added: Callable[[Session, list[FriendAdd]], object]
    removed: Callable[..., object]


_add_listeners: list[AddListener] = []


def listen_to_adds(listener: AddListener) -> None:
    """Register ``listener`` (idempotent)."""
    if listener not in _add_listeners:
        _add_listeners.append(listener)


def on_friends_added(session: Session, adds: list[FriendAdd]) -> list[AddOutcome]:
    """Attribute adds to the channels whose keys are their states; tag, reward, and prepare the welcomes.

    Set-based, so a flood of adds costs a few statements per batch rather than per add; one
    outcome per add, in order. An add is a customer's first touch when no channel brought them
    before (nor an earlier add in the list). The caller refreshes the customers' computed
    facts (the channel's tags feed them).
    """
    referred: list[FriendAdd] = []
    for listener in list(_add_listeners):  # states another domain owns (老带新's personal invite codes)
        claimed = [add for add in adds if add.state and listener.claims(add.state)]
        if claimed:
            listener.added(session, claimed)
        referred += claimed
    referred_set = set(referred)
    outcomes = [AddOutcome(channel_id=None, alert=UNKNOWN_STATE if add.state and add not in referred_set else "")
                for add in adds]
    keys = sorted({add.state[:30] for add in adds if add.state})
    channels = {c.key: c for c in session.scalars(select(Channel).where(Channel.key.in_(keys)))} if keys else {}
    # An unknown or malformed state: the customer is recorded by the caller all the same.
    attributed = [(index, add, channels[add.state[:30]]) for index, add in enumerate(adds)
                  if add.state and add.state[:30] in channels]
    if not attributed:
        return outcomes
    seen = set(session.scalars(select(ChannelAdd.customer_id).where(
        ChannelAdd.customer_id.in_(sorted({add.customer_id for _i, add, _c in attributed}))).distinct()))
    rows = []
    for index, add, channel in attributed:
        outcomes[index] = AddOutcome(channel_id=channel.id, first_touch=add.customer_id not in seen)
        seen.add(add.customer_id)
        rows.append({"channel_id": channel.id, "customer_id": add.customer_id, "account_id": add.account_id,
                     "first_touch": outcomes[index].first_touch, "added_at": add.added_at,
                     "added_on": _local_day(add.added_at), "promoter_id": channel.promoter_id})
    table = ChannelAdd.__table__
    inserted = {(int(c), int(u), int(a)) for c, u, a in session.execute(
        dialect_insert(session, table).on_conflict_do_nothing()
        .returning(table.c.channel_id, table.c.customer_id, table.c.account_id), rows)}
    again = [(r["channel_id"], r["customer_id"], r["account_id"]) for r in rows
             if (r["channel_id"], r["customer_id"], r["account_id"]) not in inserted]
    if again:  # the same person re-added through the same channel and account
        session.execute(update(ChannelAdd).where(tuple_(ChannelAdd.channel_id, ChannelAdd.customer_id,
                                                        ChannelAdd.account_id).in_(again)).values(removed_at=None))
    _tag_added(session, [(add.customer_id, channel) for _i, add, channel in attributed])
    _reward_promoters(session, [(add, channel) for _i, add, channel in attributed
                                if (channel.id, add.customer_id, add.account_id) in inserted])
    templates: dict[int, str] = {}
    uses: dict[int, int] = {}  # library items in these welcomes: counted as used (library.record_uses)
    scripts: dict[int, str] = {}
    links: dict[int, list[Any]] = {}
    for index, add, channel in attributed:
        outcome = outcomes[index]
        templates[index] = channel.welcome_text
        if not channel.welcome_text and channel.welcome_script_id is not None:
            if channel.id not in scripts:
                scripts[channel.id] = library_service.script_text(session, channel.welcome_script_id)
            templates[index] = scripts[channel.id]
            if templates[index]:
                uses[channel.welcome_script_id] = uses.get(channel.welcome_script_id, 0) + 1
        if channel.welcome_material_ids:
            if channel.id not in links:
                links[channel.id] = library_service.welcome_materials(session, channel.welcome_material_ids)
            outcome.attachments = [library_service.link_attachment(m) for m in links[channel.id]
                                   if m.kind == "link"]
            outcome.material_ids = [m.id for m in links[channel.id]]
            for material in links[channel.id]:
                uses[material.id] = uses.get(material.id, 0) + 1
        if channel.incentive_kind == IncentiveKind.coupon.value:
            outcome.coupon = claim_coupon(session, channel_id=channel.id, customer_id=add.customer_id)
            if outcome.coupon is None:
                outcome.alert = POOL_EMPTY
                _raise_alert(session, channel, POOL_EMPTY)
                templates[index] = channel.fallback_text or channel.welcome_text
    values = variables.values_for(session, [(add.customer_id, add.account_id) for i, add, _c in attributed
                                            if templates[i]])
    for index, add, channel in attributed:
        outcome = outcomes[index]
        if templates[index]:
            outcome.welcome = variables.render(templates[index], replace(
                values[(add.customer_id, add.account_id)], coupon=outcome.coupon or ""))
        session.add(Touch(customer_id=add.customer_id, account_id=add.account_id, kind=TouchKind.system.value,
                          content=channel.name, occurred_at=add.added_at,
                          details={"event": "channel_add", "channel_id": channel.id,
                                   "first_touch": outcome.first_touch, "coupon": outcome.coupon}))
    session.flush()
    if uses:
        library_service.record_uses(session, uses, "welcome")
    return outcomes


def _tag_added(session: Session, added: list[tuple[int, Channel]]) -> None:
    """Each channel's tags on the customers it brought (one set-based write per channel)."""
    by_channel: dict[int, list[int]] = {}
    for customer_id, channel in added:
        if channel.tag_names:
            by_channel.setdefault(channel.id, []).append(customer_id)
    changed: set[int] = set()
    for channel_id, customer_ids in by_channel.items():
        channel = session.get_one(Channel, channel_id)
        tags = customers_service.resolve_tags(session, names=channel.tag_names)
        changed.update(customers_service.add_tags(session, customer_ids=customer_ids, tags=tags))
    if changed:
        customers_service.notify_changed(session, sorted(changed), {"tags"})  # e.g. mirrored to WeCom


def _reward_promoters(session: Session, new_adds: list[tuple[FriendAdd, Channel]]) -> None:
    rewards = []
    for add, channel in new_adds:
        promoter = session.get(Promoter, channel.promoter_id) if channel.promoter_id is not None else None
        if promoter is not None:
            rewards.append({"promoter_id": promoter.id, "customer_id": add.customer_id, "channel_id": channel.id,
                            "amount": promoter.reward_per_add, "created_at": add.added_at})
    if rewards:
        session.execute(dialect_insert(session, PromoterReward.__table__).on_conflict_do_nothing(), rewards)


def on_friend_removed(session: Session, *, customer_id: int, account_id: int, at: datetime | None = None) -> int:
    """Mark the channel adds of this friendship as lost (the report's deletions and retention); a referee
    lost soon after being referred takes the referrer's credit back (referrals)."""
    result = session.execute(update(ChannelAdd).where(
        ChannelAdd.customer_id == customer_id, ChannelAdd.account_id == account_id,
        ChannelAdd.removed_at.is_(None)).values(removed_at=at or utcnow()))
    for listener in list(_add_listeners):
        listener.removed(session, customer_id=customer_id, at=at or utcnow())
    return int(getattr(result, "rowcount", 0) or 0)


def claim_coupon(session: Session, *, channel_id: int, customer_id: int) -> str | None:
    """One free code for this customer, or the one they already have; None when the pool is empty.

    Drawn by ``core.codepool.draw`` — the one pool mechanism, shared with coupon batches (coupons/).
    """
    return codepool.draw(session, CouponCode, scope=[CouponCode.channel_id == channel_id],
                         customer_ids=[customer_id]).get(customer_id)


def _raise_alert(session: Session, channel: Channel, alert: str) -> None:
    if channel.alert == alert:
        return
    channel.alert = alert
    team_service.record_audit(session, actor=SYSTEM, action="alert", entity_type="channel", entity_id=channel.id,
                              entity_name=channel.name, summary=f"{channel.name}: {alert}")


# ---------------------------------------------------------------- the report


@dataclass
class ChannelFigures:
    channel_id: int
    adds: int = 0
    deletions: int = 0
    retained_7: float | None = None
    retained_30: float | None = None
    purchasers: int = 0
    revenue: Decimal = Decimal("0")
    cost: Decimal = Decimal("0")

    @property
    def net(self) -> int:
        return self.adds - self.deletions

    @property
    def cost_per_net(self) -> Decimal | None:
        return (self.cost / self.net).quantize(Decimal("0.01")) if self.net > 0 else None

    @property
    def roi(self) -> float | None:
        return float((self.revenue - self.cost) / self.cost) if self.cost > 0 else None


def report(session: Session, *, since: date, until: date, channel_ids: list[int] | None = None
           ) -> dict[int, ChannelFigures]:
    """Figures per channel for adds made between ``since`` and ``until`` (local days, inclusive)."""
    in_range = [ChannelAdd.added_on >= since, ChannelAdd.added_on <= until]
    if channel_ids is not None:
        in_range.append(ChannelAdd.channel_id.in_(channel_ids))
    now = utcnow()
    dialect = session.get_bind().dialect.name

    def kept(days: int) -> Any:
        old_enough = ChannelAdd.added_at <= now - timedelta(days=days)
        if dialect == "postgresql":
            stayed = ChannelAdd.removed_at.is_(None) | (
                ChannelAdd.removed_at > ChannelAdd.added_at + literal(timedelta(days=days), Interval()))
        else:
            stayed = ChannelAdd.removed_at.is_(None) | (
                func.julianday(ChannelAdd.removed_at) - func.julianday(ChannelAdd.added_at) > days)
        return (func.count().filter(old_enough), func.count().filter(and_(old_enough, stayed)))

    old7, kept7 = kept(7)
    old30, kept30 = kept(30)
    figures: dict[int, ChannelFigures] = {}
    for channel_id, adds, deletions, a7, k7, a30, k30 in session.execute(
        select(ChannelAdd.channel_id, func.count(), func.count(ChannelAdd.removed_at), old7, kept7, old30, kept30)
        .where(*in_range).group_by(ChannelAdd.channel_id)
    ):
        figures[channel_id] = ChannelFigures(
            channel_id=channel_id, adds=int(adds), deletions=int(deletions),
            retained_7=round(k7 / a7, 3) if a7 else None, retained_30=round(k30 / a30, 3) if a30 else None)
    # Revenue: orders (paid less refunded; wholly refunded and unmatched ones left out) of first-touch
    # customers after they were added. Driven from the orders: the day range is wrapped in coalesce() so
    # the planner does not start from a million adds and look up each one's orders.
    day = func.coalesce(ChannelAdd.added_on, ChannelAdd.added_on)
    revenue_range = [day >= since, day <= until]
    if channel_ids is not None:
        revenue_range.append(ChannelAdd.channel_id.in_(channel_ids))
    for channel_id, purchasers, revenue in session.execute(
        select(ChannelAdd.channel_id, func.count(func.distinct(Order.customer_id)),
               func.sum(Order.amount - Order.refunded_amount))
        .select_from(Order)
        .join(ChannelAdd, and_(ChannelAdd.customer_id == Order.customer_id, Order.paid_at >= ChannelAdd.added_at))
        .where(Order.match_state == MatchState.matched.value, Order.status.in_([s.value for s in COUNTED_STATUSES]),
               *revenue_range, ChannelAdd.first_touch.is_(True))
        .group_by(ChannelAdd.channel_id)
    ):
        row = figures.setdefault(channel_id, ChannelFigures(channel_id=channel_id))
        row.purchasers, row.revenue = int(purchasers), Decimal(str(revenue or 0))
    channels = {c.id: c for c in session.scalars(select(Channel).where(Channel.id.in_(list(figures))))}
    rewards: dict[int, Any] = {channel_id: total for channel_id, total in session.execute(
        select(PromoterReward.channel_id, func.sum(PromoterReward.amount)).where(
            PromoterReward.channel_id.in_(list(figures))).group_by(PromoterReward.channel_id))}
    for channel_id, row in figures.items():
        channel = channels.get(channel_id)
        if channel is None:
            continue
        if channel.cost_model == CostModel.fixed.value:
            row.cost = Decimal(channel.cost_amount)
        elif channel.cost_model == CostModel.per_add.value:
            row.cost = Decimal(channel.cost_amount) * row.adds
        else:
            row.cost = Decimal(str(rewards.get(channel_id) or 0))
    return figures


def daily_adds(session: Session, *, since: date, until: date, channel_ids: list[int]) -> dict[int, dict[date, int]]:
    """Net adds per channel per day, for the comparison chart."""
    rows = session.execute(
        select(ChannelAdd.channel_id, ChannelAdd.added_on,
               func.sum(case((ChannelAdd.removed_at.is_(None), 1), else_=0)))
        .where(ChannelAdd.added_on >= since, ChannelAdd.added_on <= until, ChannelAdd.channel_id.in_(channel_ids))
        .group_by(ChannelAdd.channel_id, ChannelAdd.added_on))
    result: dict[int, dict[date, int]] = {}
    for channel_id, day, net in rows:
        if isinstance(day, str):
            day = date.fromisoformat(day)
        result.setdefault(channel_id, {})[day] = int(net or 0)
    return result


# ---------------------------------------------------------------- promoters


class PromoterIn(BaseModel):
    name: Name = Field(min_length=1, max_length=64)
    reward_per_add: Decimal = Field(Decimal("0"), ge=0, le=Decimal("10000"))
    user_id: Id | None = None


@dataclass
class PromoterStanding:
    promoter: Promoter
    adds: int
    kept: int
    rewards: Decimal
    channel: Channel | None


def create_promoter(session: Session, *, data: PromoterIn, account_ids: list[int], viewer: Viewer) -> Promoter:
    """A promoter with their own channel (kind 推手), whose adds credit them ``reward_per_add`` each."""
    _require_editor(viewer, account_ids)
    promoter = Promoter(name=data.name, reward_per_add=data.reward_per_add, user_id=data.user_id)
    session.add(promoter)
    session.flush()
    save_channel(session, viewer=viewer, data=ChannelIn(
        name=data.name, kind=ChannelKind.promoter, cost_model=CostModel.per_promoter_reward,
        account_ids=account_ids, promoter_id=promoter.id, account_strategy=AccountStrategy.least_utilised))
    return promoter


def leaderboard(session: Session, *, viewer: Viewer) -> list[PromoterStanding]:
    adds = {pid: (int(n), int(kept)) for pid, n, kept in session.execute(
        select(ChannelAdd.promoter_id, func.count(), func.count().filter(ChannelAdd.removed_at.is_(None)))
        .where(ChannelAdd.promoter_id.is_not(None)).group_by(ChannelAdd.promoter_id))}
    rewards = {pid: Decimal(str(total or 0)) for pid, total in session.execute(
        select(PromoterReward.promoter_id, func.sum(PromoterReward.amount)).group_by(PromoterReward.promoter_id))}
    channels = {c.promoter_id: c for c in list_channels(session, viewer=viewer) if c.promoter_id is not None}
    standings = [PromoterStanding(promoter=p, adds=adds.get(p.id, (0, 0))[0], kept=adds.get(p.id, (0, 0))[1],
                                  rewards=rewards.get(p.id, Decimal("0")), channel=channels.get(p.id))
                 for p in session.scalars(select(Promoter)) if p.id in channels]
    return sorted(standings, key=lambda s: (-s.kept, -s.adds, s.promoter.id))


def reward_ledger(session: Session, *, promoter_id: int, limit: int = 200) -> list[PromoterReward]:
    return list(session.scalars(select(PromoterReward).where(PromoterReward.promoter_id == promoter_id)
                                .order_by(PromoterReward.id.desc()).limit(limit)))
