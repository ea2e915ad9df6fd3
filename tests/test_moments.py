"""朋友圈 calendar (issue 20, item 4): the limits (10 images, 2,001 characters → refused, the limit
named), WeCom publishing end to end against the running simulator (publish → task result → moment
list → comments → each customer's like or comment on their timeline, once however often it is read),
personal accounts' reminder tasks marked posted, role scoping, the calendar and the console form."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core import storage
from siyu.core.db import transaction, utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.settings import get_settings, local_today, local_zone
from siyu.core.viewer import SYSTEM
from siyu.customers.models import Tag, Touch, TouchKind
from siyu.maintenance import service as maintenance_service
from siyu.maintenance.models import Task, TaskKind
from siyu.maintenance.schemas import TaskDoneIn
from siyu.moments import publish, service
from siyu.moments.models import MomentInteraction, MomentPost, PostStatus
from siyu.moments.schemas import ColumnIn, PostIn
from siyu.moments.service import Upload
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.team.models import AuditEntry
from siyu.wecom.client import client_for
from tests.conftest import viewer_of
from tests.test_pages import Console

CORP_ID = "wwSIYUMOMENTS001"
SECRET = "moments-test-secret-0123456789ab"
MEMBER = "shanye.xiaoye01"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def png(n: int = 1) -> list[Upload]:
    return [Upload(name=f"新品{i}.png", content_type="image/png", data=PNG) for i in range(n)]


class Simulator:
    def __init__(self, server: RunningServer, corp: VirtualCorp) -> None:
        self.server = server
        self.corp = corp

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = httpx.post(f"{self.server.url}/_simulator/{path}", json=body or {})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def cgi(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A raw call to the simulated platform, as a third party would make it."""
        token = httpx.get(f"{self.server.url}/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET})
        answer = httpx.post(f"{self.server.url}/cgi-bin/{path}", params={"access_token": token.json()["access_token"]},
                            json=body)
        return dict(answer.json())


@pytest.fixture
def sim(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    corp = VirtualCorp.seeded(9, corp_id=CORP_ID, contacts_per_member=6, groups_per_member=0, salt=0)
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    for name, value in {"SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET,
                        "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        yield Simulator(server, corp)
    finally:
        server.stop()


def wecom_customers(make: Any, db: Session, account: Any, sim: Simulator) -> dict[str, Any]:
    """Siyu's customers for the member's contacts in the simulated corp (as the sync would make them)."""
    found = {}
    for row in sim.corp.contacts_of(MEMBER):
        customer = make.customer(account)
        customer.wecom_external_userid = row["external_userid"]
        found[row["external_userid"]] = customer
    db.commit()
    return found


def soon() -> datetime:
    return utcnow() + timedelta(minutes=30)


# ---------------------------------------------------------------- the limits


def test_a_tenth_image_is_refused_naming_the_limit(db: Session, make: Any) -> None:
    account = make.account()
    with pytest.raises(Invalid) as refused:
        service.create_post(db, data=PostIn(account_id=account.id, text="新品上架"), uploads=png(10), viewer=SYSTEM)
    assert refused.value.message == "一条朋友圈最多 9 张图片，这条有 10 张"
    db.rollback()
    assert db.scalar(select(func.count()).select_from(MomentPost)) == 0
    with transaction() as session:  # nothing stored for a refused post
        assert storage.sweep("moments", older_than=utcnow() + timedelta(days=1)) == 0 and session is not None


def test_a_text_of_2001_characters_is_refused_naming_the_limit(db: Session, make: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    with pytest.raises(Invalid) as refused:
        service.create_post(db, data=PostIn(account_id=account.id, text="茶" * 2001), viewer=SYSTEM)
    assert refused.value.message == "朋友圈文字最多 2000 字，这条有 2001 字"
    post = service.create_post(db, data=PostIn(account_id=account.id, text="茶" * 2000), viewer=SYSTEM)
    assert post.status == PostStatus.draft.value


def test_the_api_refuses_ten_images_and_long_text_with_the_limit(client: Any, make: Any,
                                                                  admin_headers: dict[str, str]) -> None:
    account = make.account()
    image = {"name": "a.png", "content_type": "image/png", "data_base64": base64.b64encode(PNG).decode()}
    answer = client.post("/api/v1/moments", headers=admin_headers,
                         json={"account_id": account.id, "text": "图", "images": [image] * 10})
    assert answer.status_code == 422 and "最多 9 张图片" in answer.text
    answer = client.post("/api/v1/moments", headers=admin_headers, json={"account_id": account.id, "text": "字" * 2001})
    assert answer.status_code == 422 and "最多 2000 字" in answer.text
    answer = client.post("/api/v1/moments", headers=admin_headers,
                         json={"account_id": account.id, "text": "周一上新：明前龙井", "images": [image] * 2,
                               "scheduled_at": soon().isoformat()})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "scheduled" and len(body["images"]) == 2
    listed = client.get("/api/v1/moments", headers=admin_headers).json()
    assert [p["id"] for p in listed["items"]] == [body["id"]]


def test_an_image_that_is_not_a_jpg_or_png_is_refused(db: Session, make: Any) -> None:
    account = make.account()
    page = Upload(name="新品.png", content_type="image/png", data=b"<html><script>alert(1)</script></html>")
    with pytest.raises(Invalid) as refused:
        service.create_post(db, data=PostIn(account_id=account.id, text="新品"), uploads=[page], viewer=SYSTEM)
    assert refused.value.message == "图片须为 JPG 或 PNG，新品.png 不是"


def test_a_wecom_post_is_visible_only_by_corp_tags(db: Session, make: Any) -> None:
    account = make.account()
    group_tag = db.scalars(select(Tag)).first()
    assert group_tag is not None and group_tag.wecom_id is None
    with pytest.raises(Invalid) as refused:
        service.create_post(db, data=PostIn(account_id=account.id, text="只给老客看", tag_ids=[group_tag.id]),
                            viewer=SYSTEM)
    assert "企业客户标签" in refused.value.message


# ---------------------------------------------------------------- WeCom, end to end


def test_a_wecom_post_is_published_and_likes_reach_timelines_exactly_once(db: Session, make: Any, sim: Simulator,
                                                                          client: Any, admin: Any) -> None:
    account = make.account(wecom_userid=MEMBER)
    customers = wecom_customers(make, db, account, sim)
    post = service.create_post(db, data=PostIn(account_id=account.id, module="product", text="周一上新：明前龙井到店",
                                               scheduled_at=soon()), uploads=png(2), viewer=SYSTEM)
    db.commit()
    assert post.audience == len(customers)

    # Not yet due: nothing goes out.
    assert publish.publish_due(transaction).published == 0
    # Due: the task is created (images uploaded first), then followed until it is made and published.
    later = utcnow() + timedelta(hours=1)
    assert publish.publish_due(transaction, now=later).published == 1
    db.refresh(post)
    assert post.status == PostStatus.creating.value and post.jobid
    publish.follow_tasks(transaction)  # first look: WeCom is still making it (status 2)
    db.refresh(post)
    assert post.status == PostStatus.creating.value
    made = publish.follow_tasks(transaction)  # made (status 3 → moment_id), published, reach and first likes read
    db.refresh(post)
    assert post.status == PostStatus.published.value and post.moment_id.startswith("mom")
    assert post.reach == len(customers) and post.published_at is not None
    moment = sim.corp.state.moments.moments[0]
    assert moment.text == "周一上新：明前龙井到店" and len(moment.images) == 2

    # Two known customers react for sure (besides whatever the simulator's customers did on their own).
    first, second = list(customers)[:2]
    sim.control("moment_interact", {"moment_id": post.moment_id, "userid": MEMBER, "external_userid": first})
    sim.control("moment_interact", {"moment_id": post.moment_id, "userid": MEMBER, "external_userid": second,
                                    "kind": "comment"})
    api = client_for(db)
    expected = api.moment_comments(post.moment_id, MEMBER)
    total = len(expected["like_list"]) + len(expected["comment_list"])
    run = publish.read_interactions(transaction)
    assert run.interactions == 2 and made.interactions + run.interactions == total
    assert made.touches + run.touches == total  # every reacting contact is a Siyu customer here
    again = publish.read_interactions(transaction)
    assert again.interactions == 0 and again.touches == 0

    db.expire_all()
    engaged = list(db.scalars(select(Touch).where(Touch.kind == TouchKind.moments_engaged.value)))
    assert len(engaged) == total
    first_touches = [t for t in engaged if t.customer_id == customers[first].id]
    assert any(t.content == "点赞了我们的朋友圈：周一上新：明前龙井到店" for t in first_touches)
    assert any(t.content.startswith("评论了我们的朋友圈") for t in engaged if t.customer_id == customers[second].id)
    assert db.scalar(select(func.count()).select_from(MomentInteraction)) == total
    db.refresh(post)
    assert post.likes == len(expected["like_list"]) and post.comments == len(expected["comment_list"])
    db.refresh(customers[first])
    assert customers[first].last_touch_at is not None
    # The post's page and the calendar show reach and interactions; the customer's timeline shows the like.
    console = Console(client).login(admin)
    page = console.get(f"/moments/{post.id}")
    assert customers[first].name in page.text and customers[second].name in page.text
    assert f'<div class="h2 m-0">{post.likes}</div>' in page.text
    week = console.get(f"/moments?day={post.scheduled_at.astimezone(local_zone()).date().isoformat()}"
                       if post.scheduled_at else "/moments")
    assert f"触达 {post.reach} · 赞 {post.likes} · 评论 {post.comments}" in week.text
    timeline = console.get(f"/customers/{customers[first].id}")
    assert "点赞了我们的朋友圈：周一上新：明前龙井到店" in timeline.text


def test_the_simulator_serves_the_platforms_limits(sim: Simulator) -> None:
    too_long = sim.cgi("externalcontact/add_moment_task", {"text": {"content": "茶" * 2001}})
    assert too_long["errcode"] == 40058 and too_long["errmsg"].startswith("invalid text size")
    ten = [{"msgtype": "image", "image": {"media_id": "x"}}] * 10
    too_many = sim.cgi("externalcontact/add_moment_task", {"text": {"content": "图"}, "attachments": ten})
    assert too_many["errcode"] == 40058 and too_many["errmsg"].startswith("invalid attachments size")
    unknown = sim.cgi("externalcontact/add_moment_task", {"attachments": ten[:1]})
    assert unknown["errcode"] == 40007
    now = int(utcnow().timestamp())
    span = sim.cgi("externalcontact/get_moment_list", {"start_time": now - 31 * 86400, "end_time": now})
    assert span["errcode"] == 40058 and "30 days" in span["errmsg"]
    listed = sim.cgi("externalcontact/get_moment_list", {"start_time": now - 30 * 86400, "end_time": now, "limit": 50})
    assert listed["errcode"] == 0 and listed["moment_list"] == []

    def upload(data: bytes, media_type: str = "image") -> dict[str, Any]:
        token = httpx.get(f"{sim.server.url}/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET})
        return dict(httpx.post(f"{sim.server.url}/cgi-bin/media/upload_attachment", params={
            "access_token": token.json()["access_token"], "media_type": media_type, "attachment_type": 1},
            files={"media": ("a.png", data, "image/png")}).json())

    assert upload(b"abc")["errcode"] == 40006  # "所有文件size必须大于5个字节"
    assert upload(PNG, media_type="file")["errcode"] == 40004  # moments take images and videos only
    media_id = upload(PNG)["media_id"]
    job = sim.cgi("externalcontact/add_moment_task", {
        "text": {"content": "新茶"}, "attachments": [{"msgtype": "image", "image": {"media_id": media_id}}],
        "visible_range": {"sender_list": {"user_list": [MEMBER, "nobody"]}}})
    assert job["errcode"] == 0

    def result() -> dict[str, Any]:
        token = httpx.get(f"{sim.server.url}/cgi-bin/gettoken", params={"corpid": CORP_ID, "corpsecret": SECRET})
        return dict(httpx.get(f"{sim.server.url}/cgi-bin/externalcontact/get_moment_task_result", params={
            "access_token": token.json()["access_token"], "jobid": job["jobid"]}).json())

    running = result()  # asynchronous: the first look finds it being made
    assert running["status"] == 2 and "result" not in running
    made = result()
    assert made["status"] == 3 and made["type"] == "add_moment_task"
    assert made["result"]["invalid_sender_list"]["user_list"] == ["nobody"]
    assert made["result"]["moment_id"].startswith("mom")


def test_a_refused_task_fails_the_post_with_the_platforms_words(db: Session, make: Any, sim: Simulator) -> None:
    account = make.account(wecom_userid="nobody.in.this.corp")
    post = service.create_post(db, data=PostIn(account_id=account.id, text="新品", scheduled_at=soon()),
                               viewer=SYSTEM)
    db.commit()
    publish.publish_due(transaction, now=utcnow() + timedelta(hours=1))
    publish.follow_tasks(transaction)
    publish.follow_tasks(transaction)
    db.refresh(post)
    assert post.status == PostStatus.failed.value and "nobody.in.this.corp" in post.error


# ---------------------------------------------------------------- personal accounts


def test_a_personal_post_becomes_the_operators_task_and_is_marked_posted(db: Session, make: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    operator = make.user("operator", accounts=[account])
    account.owner_user_id = operator.id
    db.commit()
    at = datetime.combine(local_today() + timedelta(days=1), time(10), tzinfo=local_zone())  # tomorrow 10:00 local
    post = service.create_post(db, data=PostIn(account_id=account.id, module="personal", text="今天在茶园采茶",
                                               scheduled_at=at), uploads=png(3), viewer=viewer_of(operator))
    db.commit()
    run = publish.publish_due(transaction, now=at + timedelta(minutes=1))
    assert run.reminded == 1
    publish.publish_due(transaction, now=at + timedelta(minutes=2))  # a second run makes no second task
    db.expire_all()
    tasks = list(db.scalars(select(Task).where(Task.kind == TaskKind.moment.value)))
    assert len(tasks) == 1
    task = tasks[0]
    assert task.customer_id is None and task.ref_id == post.id and task.operator_id == operator.id
    assert task.detail == "今天在茶园采茶" and task.day == at.date()
    today = maintenance_service.list_today(db, viewer=viewer_of(operator), day=at.date())
    assert [t.id for t in today] == [task.id]

    maintenance_service.complete_task(db, task_id=task.id, data=TaskDoneIn(), viewer=viewer_of(operator))
    db.commit()
    db.refresh(post)
    assert post.status == PostStatus.published.value and post.posted_by_id == operator.id
    assert task.status == "done"
    with pytest.raises(Invalid):
        service.mark_posted(db, post_id=post.id, viewer=viewer_of(operator))


# ---------------------------------------------------------------- scoping, calendar, console


def test_an_operator_cannot_open_another_accounts_posts(client: Any, db: Session, make: Any,
                                                        token_for: Any) -> None:
    mine, theirs = make.account(), make.account()
    operator = make.user("operator", accounts=[mine])
    post = service.create_post(db, data=PostIn(account_id=theirs.id, text="别人的朋友圈"), viewer=SYSTEM)
    db.commit()
    with pytest.raises(NotFound):
        service.get_post(db, post_id=post.id, viewer=viewer_of(operator))
    headers = token_for(operator)
    assert client.get(f"/api/v1/moments/{post.id}", headers=headers).status_code == 404
    assert client.get("/api/v1/moments", headers=headers).json()["items"] == []
    answer = client.post("/api/v1/moments", headers=headers, json={"account_id": theirs.id, "text": "冒名"})
    assert answer.status_code == 404
    client.headers.pop("Authorization", None)
    console = Console(client).login(operator)
    assert console.get(f"/moments/{post.id}").status_code == 404
    assert console.get(f"/moments/{post.id}/images/0").status_code == 404
    month = console.get("/moments?view=month")
    assert month.status_code == 200 and "别人的朋友圈" not in month.text


def test_the_calendar_shows_a_week_and_a_month(client: Any, db: Session, make: Any, admin: Any) -> None:
    account = make.account()
    column = service.create_column(db, data=ColumnIn(name="周一上新", module="product"), viewer=viewer_of(admin))
    at = (utcnow() + timedelta(days=2)).astimezone(local_zone())  # the calendar's days are local days
    service.create_post(db, data=PostIn(account_id=account.id, column_id=column.id, text="<b>新茶</b>到店",
                                        scheduled_at=at), viewer=SYSTEM)
    service.create_post(db, data=PostIn(account_id=account.id, module="user", text="草稿：客户晒单"), viewer=SYSTEM)
    db.commit()
    client = Console(client).login(admin)
    week = client.get(f"/moments?view=week&day={at.date().isoformat()}")
    assert week.status_code == 200
    assert "&lt;b&gt;新茶&lt;/b&gt;到店" in week.text and "<b>新茶</b>" not in week.text
    assert "周一上新" in week.text and "草稿：客户晒单" in week.text and "cdn" not in week.text.lower()
    month = client.get(f"/moments?view=month&day={at.date().isoformat()}")
    assert month.status_code == 200 and month.text.count('data-testid="day"') >= 28
    assert client.get("/moments?view=year").status_code == 422


def test_the_console_form_plans_a_post_with_images(client: Any, db: Session, make: Any, admin: Any) -> None:
    account = make.account()
    client = Console(client).login(admin).client
    page = client.get("/moments/new")
    assert page.status_code == 200 and 'name="images"' in page.text
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    when = (datetime.now(local_zone()) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")  # a local time
    files = [("images", (f"{i}.png", PNG, "image/png")) for i in range(10)]
    refused = client.post("/moments/new", data={"csrf_token": token, "account_id": str(account.id), "module": "product",
                                                "text": "十张图", "scheduled_at": when}, files=files)
    assert refused.status_code == 422 and "最多 9 张图片" in refused.text
    done = client.post("/moments/new", data={"csrf_token": token, "account_id": str(account.id), "module": "product",
                                             "text": "两张图的新品", "scheduled_at": when}, files=files[:2],
                       follow_redirects=False)
    assert done.status_code == 303, done.text
    post = db.scalars(select(MomentPost)).one()
    assert post.status == PostStatus.scheduled.value and len(post.images) == 2
    detail = client.get(done.headers["location"])
    assert detail.status_code == 200 and "两张图的新品" in detail.text
    image = client.get(f"/moments/{post.id}/images/0")
    assert image.status_code == 200 and image.content == PNG


# ---------------------------------------------------------------- the demo


def test_the_demo_plans_a_week_per_persona_and_publishes_wecom_posts_through_the_simulator(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `siyu demo --simulate` shows: a week of posts per persona; past personal posts posted by their
    operator, today's on their 今日任务; WeCom posts due go out through the simulator and its customers'
    likes come back onto the demo customers' timelines."""
    from siyu.accounts.models import Account
    from siyu.customers.models import Customer, Friendship
    from siyu.demo import build_demo
    from siyu.simulator.corp import DEFAULT_MEMBERS

    with transaction() as session:
        build_demo(session, admin_password="demo-admin-password", customers=150)
    with transaction() as session:
        per_account = dict(session.execute(select(MomentPost.account_id, func.count()).where(
            MomentPost.scheduled_at.is_not(None)).group_by(MomentPost.account_id)).all())
        kinds = dict(session.execute(select(Account.id, Account.kind)).all())
        planners = [a for a, kind in kinds.items() if kind in ("wecom", "personal")]
        assert sorted(per_account) == sorted(planners) and min(per_account.values()) >= 7
        personal_past = session.scalars(select(MomentPost).join(Account, Account.id == MomentPost.account_id).where(
            Account.kind == "personal", MomentPost.scheduled_at < utcnow() - timedelta(days=1))).all()
        assert personal_past and all(p.status == PostStatus.published.value and p.posted_by_id for p in personal_past)
        known = [{"external_userid": e, "name": n, "userid": u, "added_at": 0} for e, n, u in session.execute(
            select(Customer.wecom_external_userid, Customer.name, Account.wecom_userid)
            .join(Friendship, Friendship.customer_id == Customer.id).join(Account, Account.id == Friendship.account_id)
            .where(Customer.wecom_external_userid.is_not(None), Account.wecom_userid.is_not(None)))]
    assert known

    corp = VirtualCorp.seeded(3, corp_id=CORP_ID, members=DEFAULT_MEMBERS, contacts_per_member=0, groups_per_member=0,
                              salt=0)
    corp.adopt_contacts(known)
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    try:
        for name, value in {"SIYU_WECOM_CORP_ID": CORP_ID, "SIYU_WECOM_SECRET": SECRET,
                            "SIYU_WECOM_API_BASE": server.url + "/cgi-bin/"}.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        out = publish.publish_due(transaction)
        assert out.published >= 1 and out.failed == 0
        publish.follow_tasks(transaction)
        followed = publish.follow_tasks(transaction)
        assert followed.made == out.published and followed.touches > 0
    finally:
        server.stop()
    with transaction() as session:
        engaged = session.scalar(select(func.count()).select_from(Touch).where(
            Touch.kind == TouchKind.moments_engaged.value, Touch.dedupe_key.like("moment:%")))
        assert engaged == followed.touches
        liked = session.scalars(select(MomentPost).where(MomentPost.likes > 0)).all()
        assert liked and all(p.status == PostStatus.published.value and p.reach > 0 for p in liked)


def test_the_operator_posts_a_personal_moment_from_todays_tasks(client: Any, db: Session, make: Any,
                                                                token_for: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    operator = make.user("operator", accounts=[account])
    account.owner_user_id = operator.id
    db.commit()
    post = service.create_post(db, data=PostIn(account_id=account.id, module="product", text="新茶到店，欢迎来试饮",
                                               scheduled_at=soon()), uploads=png(2), viewer=viewer_of(operator))
    db.commit()
    publish.publish_due(transaction, now=utcnow() + timedelta(hours=1))
    items = client.get("/api/v1/tasks?due=today", headers=token_for(operator)).json()["items"]
    assert [(i["kind"], i["customer_id"], i["title"]) for i in items] == [
        ("moment", None, "发朋友圈 · 新茶到店，欢迎来试饮")]
    client.headers.pop("Authorization", None)
    console = Console(client).login(operator)
    today = console.get("/today")
    assert 'data-testid="task-moment"' in today.text and f'href="/moments/{post.id}"' in today.text
    assert "新茶到店，欢迎来试饮" in today.text and "我已发布" in today.text
    detail = console.get(f"/moments/{post.id}")
    assert detail.text.count(f'/moments/{post.id}/images/') >= 2  # the images to save and copy
    task_id = db.scalars(select(Task.id).where(Task.ref_id == post.id)).one()
    answer = console.post(f"/today/{task_id}/done", {})
    assert answer.status_code == 303
    db.expire_all()
    db.refresh(post)
    assert post.status == PostStatus.published.value and post.posted_by_id == operator.id
    assert 'data-testid="task-moment"' not in console.get("/today").text


def test_a_draft_is_edited_and_scheduled_and_a_published_post_is_not(client: Any, db: Session, make: Any,
                                                                     admin_headers: dict[str, str]) -> None:
    account = make.account(kind="personal", wecom_userid=None)
    draft = client.post("/api/v1/moments", headers=admin_headers,
                        json={"account_id": account.id, "text": "草稿"}).json()
    assert draft["status"] == "draft"
    changed = client.patch(f"/api/v1/moments/{draft['id']}", headers=admin_headers, json={"text": "改好的文案"})
    assert changed.status_code == 200 and changed.json()["text"] == "改好的文案"
    too_long = client.patch(f"/api/v1/moments/{draft['id']}", headers=admin_headers, json={"text": "字" * 2001})
    assert too_long.status_code == 422 and "最多 2000 字" in too_long.text
    when = soon().isoformat()
    scheduled = client.post(f"/api/v1/moments/{draft['id']}/schedule", headers=admin_headers,
                            json={"scheduled_at": when})
    assert scheduled.status_code == 200 and scheduled.json()["status"] == "scheduled"
    past = client.post(f"/api/v1/moments/{draft['id']}/schedule", headers=admin_headers,
                       json={"scheduled_at": (utcnow() - timedelta(days=1)).isoformat()})
    assert past.status_code == 422
    posted = client.post(f"/api/v1/moments/{draft['id']}/posted", headers=admin_headers)
    assert posted.status_code == 200 and posted.json()["status"] == "published"
    frozen = client.patch(f"/api/v1/moments/{draft['id']}", headers=admin_headers, json={"text": "再改"})
    assert frozen.status_code == 422 and "已经发出" in frozen.text
    audit = db.scalars(select(AuditEntry.action).where(AuditEntry.entity_type == "moment_post")).all()
    assert sorted(audit) == ["create", "moment_posted", "update", "update"]
