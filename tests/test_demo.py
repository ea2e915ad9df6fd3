"""The demo company (山野茶舍) looks like a real team's data and obeys the product's rules.

The demo database is built once per test process (``demo`` in tests/conftest.py) and only read here:
each test's ``session`` is rolled back.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.customers import service as customers_service
from siyu.customers.models import Customer, CustomerTag, Friendship, Stage, Tag, TagGroup, Touch, TouchKind
from siyu.demo import DemoNeedsEmptyDatabase, Planner, build_demo
from siyu.team import service as team_service
from siyu.team.models import AuditEntry, Role, User
from tests.conftest import DEMO_CUSTOMERS, DEMO_PASSWORD, Demo


@pytest.fixture
def session(demo: Demo) -> Iterator[Session]:
    with demo.sessions() as db:
        yield db
        db.rollback()


def test_demo_builds_the_requested_number_of_customers(demo: Demo, session: Session) -> None:
    assert demo.summary.customers == DEMO_CUSTOMERS
    assert session.scalar(select(func.count()).select_from(Customer)) == DEMO_CUSTOMERS
    assert demo.summary.admin_username == "admin"
    assert demo.summary.accounts >= 6


def test_demo_customers_stand_on_every_rung_of_the_ladder(demo: Demo, session: Session) -> None:
    stages = {stage: count for stage, count in session.execute(
        select(Customer.stage, func.count()).group_by(Customer.stage))}
    assert set(stages) == {stage.value for stage in Stage}
    assert all(count >= 10 for count in stages.values()), stages
    assert demo.summary.stages == stages


def test_every_demo_customer_is_a_friend_of_an_account(session: Session) -> None:
    friendless = session.scalar(
        select(func.count()).select_from(Customer)
        .where(~select(Friendship.id).where(Friendship.customer_id == Customer.id).exists()))
    assert friendless == 0
    two_accounts = session.scalar(select(func.count()).select_from(
        select(Friendship.customer_id).group_by(Friendship.customer_id).having(func.count() > 1).subquery()))
    assert two_accounts and two_accounts > DEMO_CUSTOMERS // 10


def test_most_demo_remark_names_are_real_name_plus_keyword(session: Session) -> None:
    rows = session.execute(
        select(Customer.name, Friendship.remark_name).join(Friendship, Friendship.customer_id == Customer.id)
        .where(Friendship.id == select(func.min(Friendship.id)).where(Friendship.customer_id == Customer.id)
               .correlate(Customer).scalar_subquery())).all()
    filled = [(name, remark) for name, remark in rows if remark]
    assert len(filled) >= 0.8 * len(rows)
    assert all(remark.startswith(name) and "-" in remark for name, remark in filled)


def test_demo_uses_tags_from_all_five_groups(session: Session) -> None:
    kinds = set(session.scalars(
        select(TagGroup.kind).join(Tag, Tag.group_id == TagGroup.id)
        .join(CustomerTag, CustomerTag.tag_id == Tag.id).distinct()))
    assert kinds >= {"source", "contact_count", "purchase", "crowd", "level"}


def test_demo_admin_can_log_in_with_the_given_password(session: Session) -> None:
    user = team_service.authenticate(session, username="admin", password=DEMO_PASSWORD)
    assert user.role == Role.admin.value


def test_demo_staff_cover_every_role_and_work_on_accounts(session: Session) -> None:
    users = list(session.scalars(select(User)))
    assert {u.role for u in users} == {role.value for role in Role}
    for user in users:
        if user.role in (Role.operator.value, Role.service.value):
            assert user.account_ids, user.username


def test_demo_timelines_are_recent_and_recorded_by_operators(demo: Demo, session: Session) -> None:
    # Operators record touches by hand; service agents' inbox replies are chat touches too; a day of
    # a customer's own inbox messages is a chat touch of theirs (no colleague: direction "customer").
    operators = set(session.scalars(select(User.id).where(User.role.in_([Role.operator.value,
                                                                           Role.service.value]))))
    manual = [k.value for k in TouchKind if k not in (TouchKind.system, TouchKind.tag_change,
                                                      TouchKind.field_change)]
    written = session.execute(select(Touch.kind, Touch.user_id, Touch.occurred_at, Touch.amount, Touch.details)
                              .where(Touch.kind.in_(manual))).all()
    touches = [row[:4] for row in written if (row.details or {}).get("direction") != "customer"]
    customers_wrote = [row for row in written if (row.details or {}).get("direction") == "customer"]
    assert customers_wrote and all(row.user_id is None and row.kind == "chat" for row in customers_wrote)
    assert {kind for kind, *_rest in touches} >= {"chat", "moments_like", "moments_comment", "moments_engaged",
                                                   "purchase", "offline_event", "note"}
    oldest = demo.built_at - timedelta(days=90, minutes=1)
    year_ago = demo.built_at - timedelta(days=365, minutes=1)  # purchases are a year of orders
    now = datetime.now(UTC)
    for kind, user_id, occurred_at, amount in touches:
        assert user_id in operators
        assert (year_ago if kind == "purchase" else oldest) <= occurred_at <= now
        assert (amount is not None and amount > 0) == (kind == "purchase")


def test_demo_computed_facts_are_what_refresh_computed_derives(session: Session) -> None:
    """The demo derives computed facts in bulk; the product's own rule must agree with every one."""
    ids = sorted(session.scalars(select(Customer.id)))
    sample = random.Random(1).sample(ids, 100)

    def facts(customer: Customer) -> tuple[Any, ...]:
        tags = frozenset(session.scalars(select(CustomerTag.tag_id).where(CustomerTag.customer_id == customer.id)))
        return (customer.stage, customer.level, customer.contact_count, customer.purchase_count,
                customer.purchase_total, customer.last_touch_at, customer.completeness, tags)

    rules = customers_service.get_rules(session)
    for customer in session.scalars(select(Customer).where(Customer.id.in_(sample))).all():
        before = facts(customer)
        customers_service.refresh_computed(session, customer=customer, rules=rules)
        assert facts(customer) == before, customer.id


def test_demo_leaves_an_audit_trail(session: Session) -> None:
    entity_types = set(session.scalars(select(AuditEntry.entity_type).distinct()))
    assert {"user", "account", "custom_field", "customer", "touch"} <= entity_types


def test_demo_refuses_a_database_that_already_has_data(session: Session) -> None:
    with pytest.raises(DemoNeedsEmptyDatabase):
        build_demo(session, admin_password=DEMO_PASSWORD, customers=5)


def test_same_seed_invents_the_same_people() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first = Planner(random.Random(7), now)
    again = Planner(random.Random(7), now)
    people = [first.person() for _ in range(20)]
    assert people == [again.person() for _ in range(20)]
    other = Planner(random.Random(8), now)
    assert [p.wechat_id for p in people] != [other.person().wechat_id for _ in range(20)]


def test_demo_has_a_wecom_kf_account_served_by_its_service_staff_with_conversations(session: Session) -> None:
    from siyu.accounts.models import Account, AccountKind
    from siyu.demo import KF_OPEN_KFID
    from siyu.inbox.models import Conversation
    from siyu.team.models import User, UserAccount

    kf = session.scalar(select(Account).where(Account.open_kfid == KF_OPEN_KFID))
    assert kf is not None and kf.kind == AccountKind.wecom_kf.value and kf.greeting
    served_by = set(session.scalars(select(User.username).join(UserAccount, UserAccount.user_id == User.id)
                                    .where(UserAccount.account_id == kf.id)))
    assert {"kefu.xiaoyu", "kefu.ajie"} <= served_by
    channels = {channel: count for channel, count in session.execute(
        select(Conversation.channel, func.count()).group_by(Conversation.channel))}
    assert channels.get("wecom_kf", 0) > channels.get("wecom_archive", 0) > 0, channels


# ---------------------------------------------------------------- siyu demo --simulate


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_simulated_traffic_archives_members_chats_and_attributes_a_qr_follower_to_its_channel(
        app: Any, db: Session, make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `siyu demo --simulate` plays, shortened: the groups scenario, then members' own chats through the
    chat archive (msgaudit_notify, real RSA on the random keys), then 公众号 followers through the demo's QR code.
    Siyu runs on a real socket; the simulator with it. msgaudit_notify comes every 1.1 s here (the platform's
    are ≥ 15 s apart, W:95039, so their CreateTime seconds never repeat — Siyu drops a repeat as a retry)."""
    import base64
    import hashlib
    import json as json_module

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from siyu.channels.models import Channel, ChannelAdd
    from siyu.core.settings import get_settings
    from siyu.demo import MP_CHANNEL_NAME, mp_qr_channel
    from siyu.groups.models import GroupChat, GroupMessage
    from siyu.inbox.models import Conversation, Message
    from siyu.mp import client as mp_client
    from siyu.simulator.corp import DEFAULT_MEMBERS
    from siyu.simulator.driver import run_simulated_traffic
    from siyu.simulator.server import RunningServer
    from siyu.wecom.models import ArchiveConsent

    port = _free_port()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    aes = base64.b64encode(hashlib.sha256(b"demo-simulate").digest()).decode()[:-1]
    for name, value in {"SIYU_WECOM_CORP_ID": "wwDEMOSIMULATE", "SIYU_WECOM_TOKEN": "demo-token",
                        "SIYU_WECOM_AES_KEY": aes, "SIYU_WECOM_SECRET": "demo-secret",
                        "SIYU_WECOM_API_BASE": f"http://127.0.0.1:{port}/cgi-bin/",
                        "SIYU_WECOM_ARCHIVE_SOURCE": "simulator",
                        "SIYU_WECOM_ARCHIVE_PRIVATE_KEYS": json_module.dumps({"1": private}),
                        "SIYU_MP_APPID": "wxDEMOSIMULATE01", "SIYU_MP_TOKEN": "mp-token", "SIYU_MP_AES_KEY": aes,
                        "SIYU_MP_SECRET": "mp-secret", "SIYU_MP_API_BASE": f"http://127.0.0.1:{port}/mp/cgi-bin/"
                        }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    accounts = {userid: make.account(wecom_userid=userid, display_name=name) for userid, name in DEFAULT_MEMBERS}
    known = make.customer(accounts["shanye.xiaoye01"], name="林晓")
    known.wecom_external_userid = "wmDEMOKNOWN000001"  # a WeCom customer of the member, as the demo's are
    db.commit()

    def qr_codes() -> list[str]:
        from siyu.core.db import transaction

        with transaction() as session:
            return mp_qr_channel(session, appid="wxDEMOSIMULATE01", api=mp_client.api_for(session))

    siyu = RunningServer(app).start()
    try:
        summaries = run_simulated_traffic(
            siyu.url, scenarios=("groups",), count=2, rate=0, serve_port=port, keep_serving=False,
            wait_seconds=10, echo=lambda _line: None, mp_messages=2, archive_messages=16,
            archive_public_key=(1, public), archive_notify_interval=1.1, before_traffic=qr_codes,
            known_contacts=[{"external_userid": "wmDEMOKNOWN000001", "name": "林晓", "userid": "shanye.xiaoye01",
                             "added_at": 0}])
    finally:
        siyu.stop()
        get_settings.cache_clear()
    assert [s.scenario for s in summaries] == ["groups", "archive", "chat"]
    assert all(s.failed == 0 for s in summaries), summaries
    db.expire_all()
    # Private chats: read-only wecom_archive conversations, the known customer's among them.
    archived = db.scalars(select(Conversation).where(Conversation.channel == "wecom_archive")).all()
    assert known.id in {c.customer_id for c in archived}
    assert db.scalar(select(func.count()).select_from(Message).where(Message.source == "wecom_archive")) > 0
    # One customer refused: the refusal is recorded and nothing of that chat is stored.
    refused = db.scalars(select(ArchiveConsent).where(ArchiveConsent.agreed.is_(False))).all()
    assert len(refused) == 1
    assert not [m for m in db.scalars(select(Message).where(Message.source == "wecom_archive"))
                if refused[0].external_userid in (m.sender, *((m.payload or {}).get("tolist") or []))
                and m.msg_type != "system"]
    # Group messages, linked to the group the groups scenario made (and Siyu mirrored).
    linked = db.scalars(select(GroupMessage).where(GroupMessage.group_chat_id.is_not(None))).all()
    assert linked and {m.group_chat_id for m in linked} <= set(db.scalars(select(GroupChat.id)))
    # The 公众号 follower came through the demo channel's parametric QR code and is that channel's.
    channel = db.scalars(select(Channel).where(Channel.name == MP_CHANNEL_NAME)).one()
    assert db.scalar(select(func.count()).select_from(ChannelAdd).where(ChannelAdd.channel_id == channel.id)) == 1


def test_demo_has_a_year_of_orders_with_seasons_refunds_and_matching_timelines(demo: Demo, session: Session) -> None:
    from siyu.orders.models import CustomerPurchaseFacts, Order, OrderLine

    orders = session.execute(select(Order.paid_at, Order.status, Order.touch_id, Order.customer_id)).all()
    assert len(orders) > DEMO_CUSTOMERS // 2
    assert min(o.paid_at for o in orders) < demo.built_at - timedelta(days=200)  # a year, not the last 90 days
    assert {"refunded", "partly_refunded"} & {o.status for o in orders}
    # Every order is on its buyer's timeline, and every purchase on a timeline is an order.
    purchases = set(session.scalars(select(Touch.id).where(Touch.kind == "purchase")))
    assert {o.touch_id for o in orders} == purchases
    assert session.scalar(select(func.count(func.distinct(OrderLine.category)))) >= 5
    bought = session.scalar(select(func.count()).select_from(CustomerPurchaseFacts)
                            .where(CustomerPurchaseFacts.purchase_count > 0))
    assert bought == session.scalar(select(func.count()).select_from(Customer).where(Customer.purchase_count > 0))


def test_every_demo_operator_opens_a_believable_list_of_todays_tasks(session: Session) -> None:
    """Cadence policies exist, and each operator's 今日任务 has chats due, capped, most important first."""
    from siyu.maintenance import service as maintenance_service
    from siyu.maintenance.models import CadencePolicy
    from siyu.team.service import viewer_for

    assert session.scalar(select(func.count()).select_from(CadencePolicy)) == 2
    operators = [u for u in session.scalars(select(User)) if u.role == Role.operator.value]
    assert operators
    for user in operators:
        tasks = maintenance_service.list_today(session, viewer=viewer_for(user), limit=200)
        # The daily kinds are capped at 50; SOP steps, moments and group findings arrive beside them.
        daily = [t for t in tasks if t.kind in maintenance_service.GENERATED_KINDS]
        assert 5 <= len(daily) <= 50, (user.username, len(daily))
        assert {t.kind for t in tasks} >= {"cadence"}
        assert [t.priority for t in tasks] == sorted((t.priority for t in tasks), reverse=True)


def test_the_demo_runs_groups_of_several_kinds_fills_them_through_a_group_code_and_flags_silent_and_dead_ones(
        session: Session) -> None:
    from siyu.groups.models import GroupChat, GroupCode, GroupMember, GroupTask

    groups = list(session.scalars(select(GroupChat)))
    assert len({g.kind for g in groups if g.kind}) == 5 and any(g.name == "山野茶舍杭州中心金粉群" for g in groups)
    assert {g.health for g in groups} >= {"active", "silent", "dead"}
    assert any(g.platform == "personal" for g in groups)
    code = session.scalar(select(GroupCode))
    assert code is not None and code.wecom_config_id and code.alert == ""
    joined = list(session.scalars(select(GroupMember).where(GroupMember.state == code.state)))
    assert len({m.group_chat_id for m in joined}) >= 2  # the code moved on before the first group was full
    assert session.scalar(select(GroupTask).where(GroupTask.kind == "apply_resources")) is not None


def test_the_demo_has_a_week_of_morning_and_evening_posts_sent_and_an_intake_plan_in_three_batches(
        session: Session) -> None:
    from siyu.core.settings import local_zone
    from siyu.groups.models import GroupInvitee, GroupPost, GroupWelcomeTemplate

    sent = list(session.scalars(select(GroupPost).where(GroupPost.status == "confirmed",
                                                        GroupPost.slot.in_(["morning", "evening"]))))
    days = {(p.slot, p.due_at.astimezone(local_zone()).date()) for p in sent}
    assert len({d for s, d in days if s == "morning"}) >= 6 and len({d for s, d in days if s == "evening"}) >= 6
    assert all(p.msgid for p in sent)
    assert session.scalar(select(GroupPost).where(GroupPost.status == "scheduled")) is not None  # still to come
    batches = {i.batch for i in session.scalars(select(GroupInvitee))}
    assert batches == {1, 2, 3}
    assert all(i.note for i in session.scalars(select(GroupInvitee).where(GroupInvitee.batch == 3)))
    assert session.scalar(select(GroupPost).where(GroupPost.slot == "rules", GroupPost.status == "confirmed"))
    assert all(t.wecom_template_id for t in session.scalars(select(GroupWelcomeTemplate)))


def test_demo_ladder_has_a_history_so_the_funnel_moves_with_the_date(session: Session) -> None:
    from datetime import timedelta

    from siyu.analytics import service as analytics_service
    from siyu.core.settings import local_today
    from siyu.core.viewer import SYSTEM

    today = local_today()
    now = analytics_service.funnel(session, viewer=SYSTEM, day=today)
    earlier = analytics_service.funnel(session, viewer=SYSTEM, day=today - timedelta(days=60))
    stored = {stage: session.scalar(select(func.count()).select_from(Customer).where(
        Customer.stage == stage, Customer.merged_into_id.is_(None))) for stage in analytics_service.STAGES}
    assert now.current == stored  # the history ends where the customers stand
    assert earlier.total < now.total and earlier.reached["fan"] < now.reached["fan"]


def test_demo_library_holds_believable_scripts_and_materials(session: Session) -> None:
    from siyu.core.models import StoredChunk
    from siyu.customers import variables
    from siyu.library.models import LibraryItem

    items = list(session.scalars(select(LibraryItem)))
    scripts = [i for i in items if i.kind == "script"]
    assert len(scripts) >= 20 and {"link", "image", "miniprogram"} <= {i.kind for i in items}
    for script in scripts:
        variables.check_outgoing(script.text, field="text")  # customer-safe variables only
    assert any(i.use_count > 0 for i in items)
    image = next(i for i in items if i.kind == "image")
    first = session.scalar(select(StoredChunk.data).where(StoredChunk.file_key == image.file_key, StoredChunk.seq == 0))
    assert first is not None and bytes(first).startswith(b"\x89PNG")  # in the shared storage


def test_demo_has_a_running_sop_with_customers_at_its_steps(session: Session) -> None:
    from siyu.maintenance.models import Task
    from siyu.sops.models import Sop, SopEnrolment, SopStepRun

    sop = session.scalars(select(Sop).where(Sop.name == "新客7天培育")).one()
    assert sop.status == "running"
    enrolments = list(session.scalars(select(SopEnrolment).where(SopEnrolment.sop_id == sop.id)))
    assert len(enrolments) >= 10
    outcomes = {run.outcome for run in session.scalars(select(SopStepRun).where(SopStepRun.sop_id == sop.id))}
    assert {"task", "no_wecom"} <= outcomes  # the welcome task; the message without a WeCom connection, said so
    assert session.scalar(select(func.count()).select_from(Task).where(Task.kind == "sop")) >= 10


def test_demo_has_a_past_event_with_attendance_and_an_upcoming_one_with_sign_ups(demo: Demo,
                                                                                  session: Session) -> None:
    from siyu.maintenance.models import Task, TaskKind
    from siyu.offline import service as offline_service
    from siyu.offline.models import OfflineEvent

    events = {e.name: e for e in session.scalars(select(OfflineEvent))}
    past, upcoming = events["明前龙井品鉴会"], events["桂花乌龙试吃会"]
    assert past.ends_at < demo.built_at < upcoming.starts_at
    counts = offline_service.counts(session, [past.id, upcoming.id])
    assert counts[past.id].checked_in == 7 and counts[past.id].registered > counts[past.id].checked_in
    assert offline_service.no_shows(session, event_id=past.id, viewer=team_service.viewer_for(
        session.scalar(select(User).where(User.role == "admin"))))
    attended = select(func.count()).select_from(Touch).where(Touch.kind == TouchKind.offline_event.value,
                                                             Touch.details.is_not(None))
    assert session.scalar(attended) >= 7
    assert session.scalar(select(func.count()).select_from(Task).where(Task.kind == TaskKind.event_follow.value)) >= 7
    assert counts[upcoming.id].registered == upcoming.capacity and counts[upcoming.id].waitlisted >= 1
    assert counts[upcoming.id].to_review >= 1


def test_demo_has_a_coupon_batch_a_running_referral_programme_with_a_leaderboard_and_a_finished_draw(
        session: Session) -> None:
    from siyu.coupons import service as coupons_service
    from siyu.draws import service as draws_service
    from siyu.referrals import service as referrals_service
    from siyu.referrals.models import ReferralProgramme

    (batch,) = coupons_service.list_batches(session)
    drawn, total, redeemed = coupons_service.figures(session, [batch.id])[batch.id]
    assert drawn > 0 and total >= drawn and redeemed >= 1
    programme = session.scalar(select(ReferralProgramme))
    assert programme is not None and programme.status == "active"
    board = referrals_service.leaderboard(session, programme_id=programme.id)
    assert len(board) >= 3 and board[0].invites >= 3
    assert referrals_service.balance(session, programme_id=programme.id) == []
    assert any(e.delta == -1 for e in referrals_service.ledger(session, programme_id=programme.id))
    (draw,) = draws_service.list_draws(session)
    assert draw.status == "drawn" and draw.seed and draw.eligible_count > 0
    assert draws_service.verify(draw, draws_service.prizes_of(session, draw.id),
                                draws_service.winners_of(session, draw.id))
