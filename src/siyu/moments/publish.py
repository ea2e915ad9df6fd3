"""Posts going out, and what comes back: the flows the moments jobs run.

- ``publish_due``: each scheduled post whose time has come. A WeCom account's goes to
  ``add_moment_task`` (images uploaded just before through ``media/upload_attachment``, W:96347;
  the account's member as the only sender; visible to the customers with the post's corp tags,
  W:96351) and waits for its ``jobid``. A personal account's becomes a ``moment`` task on the
  operator's 今日任务 (the text and images to copy; done = posted by hand).
- ``follow_tasks``: ``get_moment_task_result`` until the task is made (status 3 → ``moment_id``),
  then ``get_moment_task`` until the member has published it in their client, then
  ``get_moment_list`` for when it was published and ``get_moment_customer_list`` for its reach.
- ``read_interactions``: ``get_moment_list`` (30-day spans, W:96352) for the moments still there,
  ``get_moment_comments`` for each of our published posts; each like or comment not seen before
  is one ``MomentInteraction`` and one ``moments_engaged`` touch on that customer's timeline
  (written with a ``dedupe_key``: reading the same interaction twice writes it once).

Every step commits per post (the caller's transaction per post), so a platform refusal fails one
post with the platform's words and the rest go on; a busy platform leaves the post as it was for
the next run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account, AccountKind
from siyu.core import storage
from siyu.core.db import dialect_insert, utcnow
from siyu.core.i18n import _
from siyu.core.settings import local_zone
from siyu.customers import service as customers_service
from siyu.customers.models import Customer, Tag, Touch, TouchKind
from siyu.moments.models import InteractionKind, MomentInteraction, MomentPost, PostStatus

log = logging.getLogger(__name__)

LIST_SPAN = timedelta(days=30)  # W:96352 get_moment_list: "起止时间间隔不能超过30天"
READ_BACK_DAYS = 30  # interactions are read for posts published within this many days
DETAIL_CHARS = 80  # the start of the text a reminder task shows


@dataclass
class RunResult:
    published: int = 0
    reminded: int = 0
    made: int = 0
    failed: int = 0
    interactions: int = 0
    touches: int = 0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"published": self.published, "reminded": self.reminded, "made": self.made, "failed": self.failed,
                "interactions": self.interactions, "touches": self.touches}


def _api(session: Session) -> Any | None:
    """The configured corp's API, or None when WeCom is not connected (WeCom posts wait)."""
    from siyu.wecom.client import WecomNotConfigured, client_for

    try:
        return client_for(session)
    except WecomNotConfigured:
        return None


def _failed(post: MomentPost, exc: Exception) -> None:
    from siyu.wecom.client import WecomApiError

    post.status = PostStatus.failed.value
    post.error = (exc.display() if isinstance(exc, WecomApiError) else str(exc))[:255]


def _retryable(exc: Exception) -> bool:
    from siyu.wecom.client import WecomApiError

    return isinstance(exc, WecomApiError) and exc.retryable


# ---------------------------------------------------------------- scheduled posts go out


def due_posts(session: Session, *, now: datetime, personal_only: bool = False) -> list[int]:
    query = select(MomentPost.id).where(MomentPost.status == PostStatus.scheduled.value, MomentPost.scheduled_at <= now)
    if personal_only:  # WeCom is not connected: its members' posts wait, untouched
        query = query.join(Account, Account.id == MomentPost.account_id).where(
            Account.kind == AccountKind.personal.value)
    return list(session.scalars(query.order_by(MomentPost.scheduled_at, MomentPost.id).limit(500)))


def publish_one(session: Session, *, post_id: int, now: datetime | None = None, api: Any = None) -> str:
    """One due post out: WeCom task created (through ``api``; None: it waits), or the operator's reminder."""
    now = now or utcnow()
    post = session.get(MomentPost, post_id)
    if post is None or post.status != PostStatus.scheduled.value:
        return ""
    account = session.get(Account, post.account_id)
    if account is None:
        return ""
    if account.kind == AccountKind.personal.value:
        _remind(session, post=post, account=account, now=now)
        return post.status
    if not account.wecom_userid:
        post.status, post.error = PostStatus.failed.value, _("This account has no WeCom member ID")
        return post.status
    if api is None:
        return post.status  # WeCom not connected: it waits on the calendar
    try:
        media_ids = [api.upload_moment_image(str(image.get("name") or "image.jpg"), storage.get(str(image["key"])),
                                             str(image.get("content_type") or "image/jpeg"))
                     for image in post.images or []]
        corp_tags = [t for t in session.scalars(select(Tag.wecom_id).where(Tag.id.in_(post.tag_ids or []))) if t]
        post.jobid = api.add_moment_task(sender=account.wecom_userid, text=post.text, image_media_ids=media_ids,
                                         tag_ids=corp_tags)
    except Exception as exc:  # a platform refusal fails this post with the platform's words
        if _retryable(exc):
            return post.status
        if not _is_platform_error(exc):
            raise
        _failed(post, exc)
        return post.status
    post.status, post.error = PostStatus.creating.value, ""
    return post.status


def _is_platform_error(exc: Exception) -> bool:
    from siyu.wecom.client import WecomApiError

    return isinstance(exc, WecomApiError)


def _remind(session: Session, *, post: MomentPost, account: Account, now: datetime) -> None:
    """The operator's 今日任务 gets "post this moment" (the text and images are on the post's page)."""
    from siyu.maintenance.models import Task, TaskKind, TaskStatus

    if post.task_id is None:
        day = (post.scheduled_at or now).astimezone(local_zone()).date()
        detail = (post.text or "").strip().replace("\n", " ")[:DETAIL_CHARS] or _("A moment with {n} images",
                                                                                   n=len(post.images or []))
        task = Task(kind=TaskKind.moment.value, customer_id=None, account_id=account.id,
                    operator_id=account.owner_user_id, day=day, priority=350, status=TaskStatus.open.value,
                    detail=detail, ref_id=post.id, created_at=now)
        session.add(task)
        session.flush()
        post.task_id = task.id
    post.status = PostStatus.reminded.value


def publish_due(session_factory: Any, *, now: datetime | None = None) -> RunResult:
    """Every due post, each in its own transaction."""
    now = now or utcnow()
    result = RunResult()
    with session_factory() as session:
        api = _api(session)  # one client for the run (None: WeCom posts wait)
        ids = due_posts(session, now=now, personal_only=api is None)
    for post_id in ids:
        with session_factory() as session:
            status = publish_one(session, post_id=post_id, now=now, api=api)
        if status == PostStatus.creating.value:
            result.published += 1
        elif status == PostStatus.reminded.value:
            result.reminded += 1
        elif status == PostStatus.failed.value:
            result.failed += 1
    return result


# ---------------------------------------------------------------- following a task to its publication


def follow_one(session: Session, *, post_id: int, api: Any, now: datetime | None = None) -> str:
    now = now or utcnow()
    post = session.get(MomentPost, post_id)
    if post is None:
        return ""
    account = session.get(Account, post.account_id)
    userid = account.wecom_userid if account is not None else None
    try:
        if post.status == PostStatus.creating.value:
            answer = api.moment_task_result(post.jobid)
            if int(answer.get("status") or 0) != 3:
                return post.status  # still being made: look again next time
            outcome = dict(answer.get("result") or {})
            if int(outcome.get("errcode") or 0) != 0 or not outcome.get("moment_id"):
                post.status = PostStatus.failed.value
                post.error = _("WeCom did not make the moment: {message}",
                               message=str(outcome.get("errmsg") or ""))[:255]
                return post.status
            invalid = (outcome.get("invalid_sender_list") or {}).get("user_list") or []
            if userid in invalid:
                post.status = PostStatus.failed.value
                post.error = _("WeCom does not accept {userid} as the sender", userid=userid)[:255]
                return post.status
            post.moment_id, post.status = str(outcome["moment_id"]), PostStatus.waiting.value
        if post.status == PostStatus.waiting.value and userid:
            published = any(row.get("userid") == userid and int(row.get("publish_status") or 0) == 1
                            for row in api.moment_publishers(post.moment_id))
            if not published:
                return post.status  # the member has not published it in their client yet
            post.published_at = _created_at(api, post.moment_id, around=post.scheduled_at or now, now=now) or now
            post.reach = len(api.moment_customers(post.moment_id, userid))
            post.status, post.error = PostStatus.published.value, ""
    except Exception as exc:
        if _retryable(exc):
            return post.status
        if not _is_platform_error(exc):
            raise
        _failed(post, exc)
    return post.status


def _created_at(api: Any, moment_id: str, *, around: datetime, now: datetime) -> datetime | None:
    """When WeCom made the moment, from get_moment_list over a span ≤ 30 days that ends now."""
    start = max(around - timedelta(days=1), now - LIST_SPAN)
    for row in api.moments(int(start.timestamp()), int(now.timestamp()) + 1):
        if row.get("moment_id") == moment_id:
            return datetime.fromtimestamp(int(row.get("create_time") or 0), tz=UTC)
    return None


def follow_tasks(session_factory: Any, *, now: datetime | None = None) -> RunResult:
    result = RunResult()
    with session_factory() as session:
        api = _api(session)
        ids = list(session.scalars(select(MomentPost.id).where(
            MomentPost.status.in_((PostStatus.creating.value, PostStatus.waiting.value))).order_by(MomentPost.id)))
    if api is None:
        return result
    for post_id in ids:
        with session_factory() as session:
            status = follow_one(session, post_id=post_id, api=api, now=now)
        result.made += status == PostStatus.published.value
        result.failed += status == PostStatus.failed.value
        if status == PostStatus.published.value:  # the first likes onto timelines now, not at the next read-back
            try:
                with session_factory() as session:
                    new, touches = read_one(session, post_id=post_id, api=api, now=now)
            except Exception as exc:
                if not (_retryable(exc) or _is_platform_error(exc)):
                    raise
                log.warning("moments first read-back of post %s postponed: %s", post_id, exc)
            else:
                result.interactions += new
                result.touches += touches
    return result


# ---------------------------------------------------------------- likes and comments onto timelines


def touch_key(post_id: int, kind: str, external_userid: str, at: int) -> str:
    return f"moment:{post_id}:{kind}:{external_userid}:{at}"


def read_one(session: Session, *, post_id: int, api: Any, alive: set[str] | None = None,
             now: datetime | None = None) -> tuple[int, int]:
    """One post's likes and comments: new ones stored and put on timelines; (new interactions, new touches)."""
    now = now or utcnow()
    post = session.get(MomentPost, post_id)
    account = session.get(Account, post.account_id) if post is not None else None
    if post is None or account is None or not account.wecom_userid or not post.moment_id:
        return 0, 0
    if alive is not None and post.moment_id not in alive:
        return 0, 0  # deleted in the member's client: WeCom no longer lists it (W:96352)
    answer = api.moment_comments(post.moment_id, account.wecom_userid)
    rows = [(InteractionKind.like.value, r) for r in answer["like_list"]] + \
           [(InteractionKind.comment.value, r) for r in answer["comment_list"]]
    rows = [(kind, r) for kind, r in rows if r.get("external_userid")]  # members' own likes are not customers'
    post.likes = sum(1 for kind, _r in rows if kind == InteractionKind.like.value)
    post.comments = sum(1 for kind, _r in rows if kind == InteractionKind.comment.value)
    post.read_at = now
    seen = {(k, e, int(at.timestamp())) for k, e, at in session.execute(
        select(MomentInteraction.kind, MomentInteraction.external_userid, MomentInteraction.occurred_at)
        .where(MomentInteraction.post_id == post.id))}
    fresh = [(kind, str(r["external_userid"]), int(r.get("create_time") or 0)) for kind, r in rows]
    fresh = [row for row in dict.fromkeys(fresh) if row not in seen]
    if not fresh:
        return 0, 0
    customers = {ext: cid for cid, ext in session.execute(select(Customer.id, Customer.wecom_external_userid).where(
        Customer.wecom_external_userid.in_(sorted({e for _k, e, _t in fresh}))))}
    preview = (post.text or "").strip().replace("\n", " ")[:40]
    touch_rows: list[dict[str, Any]] = []
    for kind, external_userid, at in fresh:
        customer_id = customers.get(external_userid)
        if customer_id is None:
            continue
        text = (_("Liked our moment: {text}", text=preview) if kind == InteractionKind.like.value
                else _("Commented on our moment: {text}", text=preview))
        touch_rows.append({"customer_id": customer_id, "account_id": post.account_id, "user_id": None,
                           "kind": TouchKind.moments_engaged.value, "content": text, "amount": None,
                           "details": {"event": "moment_" + kind, "post_id": post.id, "moment_id": post.moment_id},
                           "occurred_at": datetime.fromtimestamp(at, tz=UTC), "created_at": now,
                           "dedupe_key": touch_key(post.id, kind, external_userid, at)})
    table = cast(Table, Touch.__table__)
    written: dict[str, int] = {}
    if touch_rows:
        for key, touch_id in session.connection().execute(
                dialect_insert(session, table).on_conflict_do_nothing(index_elements=["dedupe_key"])
                .returning(table.c.dedupe_key, table.c.id), touch_rows).all():
            written[str(key)] = int(touch_id)
    for kind, external_userid, at in fresh:
        session.add(MomentInteraction(post_id=post.id, kind=kind, external_userid=external_userid,
                                      customer_id=customers.get(external_userid),
                                      touch_id=written.get(touch_key(post.id, kind, external_userid, at)),
                                      occurred_at=datetime.fromtimestamp(at, tz=UTC), created_at=now))
    session.flush()
    touched = sorted({row["customer_id"] for row in touch_rows if row["dedupe_key"] in written})
    if touched:  # contact count, last touch, stage, and the cadence's next-due day move with them
        customers_service.refresh_computed_ids(session, customer_ids=touched)
    return len(fresh), len(written)


def alive_moments(api: Any, *, since: datetime, now: datetime) -> set[str]:
    """The corp's moment ids WeCom still lists from ``since`` to now, in spans of at most 30 days."""
    ids: set[str] = set()
    start = since
    while start < now:
        end = min(start + LIST_SPAN, now + timedelta(seconds=1))
        ids.update(str(row.get("moment_id")) for row in api.moments(int(start.timestamp()) - 1, int(end.timestamp())))
        start = end
    return ids


def read_interactions(session_factory: Any, *, now: datetime | None = None) -> RunResult:
    now = now or utcnow()
    result = RunResult()
    since = now - timedelta(days=READ_BACK_DAYS)
    with session_factory() as session:
        api = _api(session)
        posts = list(session.execute(select(MomentPost.id, MomentPost.published_at, MomentPost.scheduled_at).where(
            MomentPost.status == PostStatus.published.value, MomentPost.moment_id != "",
            MomentPost.published_at >= since).order_by(MomentPost.id)))
    if api is None or not posts:
        return result
    # WeCom dates a corp moment when its task was made: at or after the post's time, at or before publication.
    earliest = min(min(at, planned or at) for _id, at, planned in posts) - timedelta(days=1)
    try:
        alive = alive_moments(api, since=max(earliest, now - timedelta(days=READ_BACK_DAYS + 1)), now=now)
    except Exception as exc:
        if _retryable(exc) or _is_platform_error(exc):
            log.warning("moments read-back postponed: %s", exc)
            return result
        raise
    for post_id, _at, _planned in posts:
        try:
            with session_factory() as session:
                new, touches = read_one(session, post_id=post_id, api=api, alive=alive, now=now)
        except Exception as exc:
            if _retryable(exc) or _is_platform_error(exc):
                log.warning("moments read-back of post %s postponed: %s", post_id, exc)
                continue
            raise
        result.interactions += new
        result.touches += touches
    return result
