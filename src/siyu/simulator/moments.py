"""客户朋友圈 (customers' moments): the virtual corp's moments desk.

The corp publishes to its customers' moments through a *task* (W:96351 企业发表内容到客户的朋友圈):
``externalcontact/add_moment_task`` takes text (≤ 2,000 characters), up to 9 images (or 1 video, or
1 link) uploaded before through ``media/upload_attachment`` (W:96347, ``attachment_type=1``, the
media_id lasting 3 days), the executors (``sender_list``, ≤ 100,000 members) and who may see it
(``external_contact_list.tag_list``: corp customer tags only), and answers a ``jobid`` at once. The
task is made asynchronously: ``get_moment_task_result`` answers status 1 (started), 2 (running) and
3 (done, with ``moment_id`` and the invalid senders and tags). Here a task is made on the second look
at it, so a caller must really poll. Each executor then publishes it in their WeCom client (the
simulator does so at once unless ``auto_publish`` is off; ``moment_publish`` does it by hand).

Read-back (W:96352 获取客户朋友圈全部的发表记录): ``get_moment_list`` (a span ≤ 30 days, ≤ 20 a page,
deleted moments not returned, no ``creator`` for moments made through the API), ``get_moment_task``
(each executor's ``publish_status``), ``get_moment_customer_list`` (the customers it was visible to
per executor), ``get_moment_comments`` (likes and comments per customer ``external_userid``, with
their time — the platform gives no comment text). When a member publishes, some of the customers who
can see it like or comment on it (seeded random), so read-back has data; ``moment_interact`` adds one.

*W:N* is the page developer.work.weixin.qq.com/document/path/N. Where a page names the error text but
no code, the code is WeCom's 40058 (不合法的参数, W:90313), as it answers other length refusals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from siyu.simulator.errors import ApiError
from siyu.simulator.paging import page

if TYPE_CHECKING:
    from siyu.simulator.corp import VirtualCorp

# ---- the platform's limits (each with the page that states it) --------------------------------
TEXT_MAX_CHARS = 2000  # W:96351: text.content "最多支持传入2000个字符，若超出长度报错'invalid text size'"
IMAGES_MAX = 9  # W:96351: attachments "最多支持9个图片类型，或者1个视频，或者1个链接"
SENDERS_MAX = 100_000  # W:96351: sender_list.user_list "最多支持10万个"
LIST_SPAN_SECONDS = 30 * 86400  # W:96352 get_moment_list: "朋友圈记录的起止时间间隔不能超过30天"
LIST_LIMIT_MAX = 20  # W:96352 get_moment_list: limit "最大值20，默认值20，超过最大值时取默认值"
TASK_LIMIT_DEFAULT, TASK_LIMIT_MAX = 500, 1000  # W:96352 get_moment_task / get_moment_customer_list
MEDIA_SECONDS = 3 * 86400  # W:96347 上传附件资源: "该media_id仅三天内有效"
MEDIA_MIN_BYTES = 5  # W:90253 上传临时素材 (the same upload rules): "所有文件size必须大于5个字节"
IMAGE_MAX_BYTES = 10 * 1024 * 1024  # W:96351: image "图片大小不超过10M"
VIDEO_MAX_BYTES = 10 * 1024 * 1024  # W:96351: video "最大不超过10MB"
ATTACHMENT_MOMENTS = 1  # W:96347: attachment_type 1 朋友圈 (2 商品图册)
ATTACHMENT_TYPES = (1, 2)
MOMENT_MEDIA_TYPES = ("image", "video")  # W:96347: "朋友圈附件类型，仅支持图片与视频"

INVALID_PARAMETER = 40058  # W:90313 不合法的参数
INVALID_MEDIA_TYPE = 40004  # W:90313 不合法的媒体文件类型
INVALID_FILE_SIZE = 40006  # W:90313 不合法的文件大小
INVALID_MEDIA_ID = 40007  # W:90313 不合法的media_id参数
INVALID_IMAGE_SIZE = 40009  # W:90313 上传图片大小不是有效值
INVALID_VIDEO_SIZE = 40011  # W:90313 上传视频大小不是有效值
EMPTY_CONTENT = 44004  # W:90313 文本消息content参数为空

# How often customers who can see a moment react (the simulator's choice, seeded): the share who like, comment.
LIKE_SHARE = 0.35
COMMENT_SHARE = 0.12


class MomentMedia(BaseModel):
    media_id: str
    media_type: str
    attachment_type: int
    filename: str = ""
    size: int = 0
    created_at: int


class MomentTask(BaseModel):
    jobid: str
    created_at: int
    looks: int = 0  # get_moment_task_result calls so far: made on the second
    status: int = 1  # 1 started, 2 running, 3 done
    text: str = ""
    attachments: list[dict[str, Any]] = Field(default_factory=list)
    senders: list[str] = Field(default_factory=list)
    departments: list[int] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    moment_id: str = ""
    invalid_users: list[str] = Field(default_factory=list)
    invalid_departments: list[int] = Field(default_factory=list)
    invalid_tags: list[str] = Field(default_factory=list)


class Reaction(BaseModel):
    external_userid: str = ""
    userid: str = ""
    create_time: int


class Publication(BaseModel):
    """One executor's side of a moment: published or not, who saw it, who reacted."""

    userid: str
    publish_status: int = 0  # 0 not yet, 1 published
    publish_time: int = 0
    visible: list[str] = Field(default_factory=list)  # external_userids chosen at publication
    likes: list[Reaction] = Field(default_factory=list)
    comments: list[Reaction] = Field(default_factory=list)


class Moment(BaseModel):
    moment_id: str
    create_time: int
    create_type: int = 0  # 0 the corp, 1 a member
    visible_type: int = 1  # 0 some customers (by tags), 1 all
    text: str = ""
    images: list[str] = Field(default_factory=list)
    video: str = ""
    link: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    publications: list[Publication] = Field(default_factory=list)
    deleted: bool = False

    def publication(self, userid: str) -> Publication | None:
        return next((p for p in self.publications if p.userid == userid), None)


class MomentsState(BaseModel):
    media: list[MomentMedia] = Field(default_factory=list)
    tasks: list[MomentTask] = Field(default_factory=list)
    moments: list[Moment] = Field(default_factory=list)


def _limit(value: Any, *, default: int, maximum: int) -> int:
    """The platform's rule for these calls: missing or over the maximum → the default."""
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ApiError(INVALID_PARAMETER, "invalid limit") from exc
    return default if number < 1 or number > maximum else number


def _int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if value in (None, ""):
        raise ApiError(INVALID_PARAMETER, f"missing {name}")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ApiError(INVALID_PARAMETER, f"invalid {name}") from exc


class MomentsDesk:
    """The corp's 客户朋友圈, kept in ``corp.state.moments``; handlers run under the corp's lock."""

    def __init__(self, corp: VirtualCorp) -> None:
        self.corp = corp
        self.auto_publish = True  # each executor publishes a finished task at once

    @property
    def state(self) -> MomentsState:
        return self.corp.state.moments

    def _now(self) -> int:
        return int(self.corp.clock())

    # ---- W:96347 上传附件资源 ------------------------------------------------------------------

    def api_upload_attachment(self, query: dict[str, Any], *, filename: str, size: int) -> dict[str, Any]:
        """``media/upload_attachment?media_type=…&attachment_type=1`` with a multipart ``media`` file."""
        with self.corp.lock:
            media_type = str(query.get("media_type") or "")
            if media_type not in ("image", "video", "file"):
                raise ApiError(INVALID_MEDIA_TYPE, "invalid media type")
            attachment_type = _int(query, "attachment_type")
            if attachment_type not in ATTACHMENT_TYPES:
                raise ApiError(INVALID_PARAMETER, "invalid attachment_type")
            if attachment_type == ATTACHMENT_MOMENTS and media_type not in MOMENT_MEDIA_TYPES:
                raise ApiError(INVALID_MEDIA_TYPE, "moments attachments are images or videos")
            if size <= MEDIA_MIN_BYTES:
                raise ApiError(INVALID_FILE_SIZE, "invalid file size")
            if media_type == "image" and size > IMAGE_MAX_BYTES:
                raise ApiError(INVALID_IMAGE_SIZE, "invalid image size")
            if media_type == "video" and size > VIDEO_MAX_BYTES:
                raise ApiError(INVALID_VIDEO_SIZE, "invalid video size")
            media = MomentMedia(media_id=self.corp._id("3", 44), media_type=media_type,
                                attachment_type=attachment_type, filename=filename, size=size,
                                created_at=self._now())
            self.state.media.append(media)
            return {"type": media_type, "media_id": media.media_id, "created_at": media.created_at}

    def _media(self, media_id: Any, media_type: str) -> MomentMedia:
        found = next((m for m in self.state.media if m.media_id == media_id), None)
        if found is None or found.created_at + MEDIA_SECONDS <= self._now():
            raise ApiError(INVALID_MEDIA_ID, f"invalid media_id: {media_id}")
        if found.media_type != media_type or found.attachment_type != ATTACHMENT_MOMENTS:
            raise ApiError(INVALID_MEDIA_ID, f"media_id is not a moments {media_type}")
        return found

    # ---- W:96351 企业发表内容到客户的朋友圈 ------------------------------------------------------

    def api_add_moment_task(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.corp.lock:
            text_body = body.get("text") or {}
            text = str(text_body.get("content") or "") if isinstance(text_body, dict) else ""
            if len(text) > TEXT_MAX_CHARS:
                raise ApiError(INVALID_PARAMETER, "invalid text size")
            attachments = body.get("attachments") or []
            if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
                raise ApiError(INVALID_PARAMETER, "invalid attachments")
            kinds = {str(a.get("msgtype") or "") for a in attachments}
            if len(kinds) > 1 or not kinds <= {"image", "video", "link"}:
                raise ApiError(INVALID_PARAMETER, "invalid attachments msgtype")
            if (kinds == {"image"} and len(attachments) > IMAGES_MAX) or (kinds - {"image"} and len(attachments) > 1):
                raise ApiError(INVALID_PARAMETER, "invalid attachments size")
            if not text and not attachments:
                raise ApiError(EMPTY_CONTENT, "empty content")
            for attachment in attachments:
                kind = str(attachment["msgtype"])
                part = attachment.get(kind) or {}
                if kind == "link":
                    if not part.get("url"):
                        raise ApiError(INVALID_PARAMETER, "invalid msg")
                    continue
                self._media(part.get("media_id"), kind)
            visible = body.get("visible_range") or {}
            senders = (visible.get("sender_list") or {}) if isinstance(visible, dict) else {}
            users = [str(u) for u in senders.get("user_list") or []]
            if len(users) > SENDERS_MAX:
                raise ApiError(INVALID_PARAMETER, "user_list exceeds 100000")
            departments = [int(d) for d in senders.get("department_list") or []]
            contacts = (visible.get("external_contact_list") or {}) if isinstance(visible, dict) else {}
            tags = [str(t) for t in contacts.get("tag_list") or []]
            task = MomentTask(jobid=self.corp._id("", 48), created_at=self._now(), text=text,
                              attachments=attachments, senders=users, departments=departments, tags=tags)
            self.state.tasks.append(task)
            return {"jobid": task.jobid}

    def api_get_moment_task_result(self, query: dict[str, Any]) -> dict[str, Any]:
        with self.corp.lock:
            jobid = query.get("jobid")
            if not jobid:
                raise ApiError(INVALID_PARAMETER, "missing jobid")
            task = next((t for t in self.state.tasks if t.jobid == jobid), None)
            if task is None:
                raise ApiError(INVALID_PARAMETER, "invalid jobid")
            task.looks += 1
            if task.status < 3:
                task.status = min(3, task.status + 1) if task.looks >= 2 else 2
                if task.status == 3:
                    self._make(task)
            answer: dict[str, Any] = {"status": task.status, "type": "add_moment_task"}
            if task.status == 3:
                answer["result"] = {
                    "errcode": 0, "errmsg": "ok", "moment_id": task.moment_id,
                    "invalid_sender_list": {"user_list": task.invalid_users,
                                            "department_list": task.invalid_departments},
                    "invalid_external_contact_list": {"tag_list": task.invalid_tags}}
            return answer

    def _make(self, task: MomentTask) -> None:
        """The task is made: the moment exists, each valid executor has it to publish."""
        members = {m.userid for m in self.corp.state.members if m.left_at is None}
        in_departments = [m.userid for m in self.corp.state.members
                          if m.left_at is None and set(m.department) & set(task.departments)]
        known_departments = {d for m in self.corp.state.members for d in m.department}
        task.invalid_users = [u for u in task.senders if u not in members]
        task.invalid_departments = [d for d in task.departments if d not in known_departments]
        known_tags = set(self.corp._tag_index())
        task.invalid_tags = [t for t in task.tags if t not in known_tags]
        executors = list(dict.fromkeys([u for u in task.senders if u in members] + in_departments))
        if not task.senders and not task.departments:
            executors = sorted(members)  # "若未指定，则表示执行者为应用可见范围内所有成员"
        images = [str((a.get("image") or {}).get("media_id")) for a in task.attachments if a.get("msgtype") == "image"]
        video = next((str((a.get("video") or {}).get("media_id")) for a in task.attachments
                      if a.get("msgtype") == "video"), "")
        link = next(({"title": str((a.get("link") or {}).get("title") or ""),
                      "url": str((a.get("link") or {}).get("url") or "")}
                     for a in task.attachments if a.get("msgtype") == "link"), {})
        tags = [t for t in task.tags if t in known_tags]
        moment = Moment(moment_id="mom" + self.corp._id("", 40), create_time=self._now(), text=task.text,
                        images=images, video=video, link=link, tags=tags, visible_type=0 if tags else 1,
                        publications=[Publication(userid=u) for u in executors])
        task.moment_id = moment.moment_id
        self.state.moments.append(moment)
        if self.auto_publish:
            for publication in moment.publications:
                self._publish(moment, publication)

    def _publish(self, moment: Moment, publication: Publication) -> None:
        """The executor publishes it in their client: the customers it is visible to are fixed, and
        some of them react over the next hours (times never later than now)."""
        now = self._now()
        publication.publish_status, publication.publish_time = 1, now
        wanted = set(moment.tags)
        for contact in self.corp.state.contacts:
            follow = contact.follow(publication.userid)
            if follow is not None and (not wanted or wanted & set(follow.tag_ids)):
                publication.visible.append(contact.external_userid)
        rng = self.corp.rng
        for external_userid in publication.visible:
            if rng.random() < LIKE_SHARE:
                publication.likes.append(Reaction(external_userid=external_userid,
                                                  create_time=min(now, now - rng.randrange(0, 3600))))
            if rng.random() < COMMENT_SHARE:
                publication.comments.append(Reaction(external_userid=external_userid,
                                                     create_time=min(now, now - rng.randrange(0, 3600))))

    def _moment(self, moment_id: Any) -> Moment:
        if not moment_id:
            raise ApiError(INVALID_PARAMETER, "missing moment_id")
        found = next((m for m in self.state.moments if m.moment_id == moment_id and not m.deleted), None)
        if found is None:
            raise ApiError(INVALID_PARAMETER, f"invalid moment_id: {moment_id}")
        return found

    # ---- W:96352 获取客户朋友圈全部的发表记录 --------------------------------------------------

    def api_get_moment_list(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.corp.lock:
            start, end = _int(body, "start_time"), _int(body, "end_time")
            if end < start:
                raise ApiError(INVALID_PARAMETER, "end_time is earlier than start_time")
            if end - start > LIST_SPAN_SECONDS:
                raise ApiError(INVALID_PARAMETER, "the span of start_time and end_time exceeds 30 days")
            filter_type = int(body.get("filter_type", 2) or 0) if body.get("filter_type") not in (None, "") else 2
            creator = str(body.get("creator") or "")
            found = [m for m in self.state.moments if not m.deleted and start < m.create_time < end
                     and (filter_type == 2 or m.create_type == filter_type) and not creator]
            # corp moments carry no creator (W:96352), so a creator filter matches none of them
            chunk, next_cursor = page(found, body.get("cursor"),
                                      _limit(body.get("limit"), default=LIST_LIMIT_MAX, maximum=LIST_LIMIT_MAX))
            return {"next_cursor": next_cursor, "moment_list": [_moment_body(m) for m in chunk]}

    def api_get_moment_task(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.corp.lock:
            moment = self._moment(body.get("moment_id"))
            chunk, next_cursor = page(moment.publications, body.get("cursor"),
                                      _limit(body.get("limit"), default=TASK_LIMIT_DEFAULT, maximum=TASK_LIMIT_MAX))
            return {"next_cursor": next_cursor,
                    "task_list": [{"userid": p.userid, "publish_status": p.publish_status} for p in chunk]}

    def _publication(self, body: dict[str, Any]) -> tuple[Moment, Publication]:
        moment = self._moment(body.get("moment_id"))
        userid = body.get("userid")
        if not userid:
            raise ApiError(INVALID_PARAMETER, "missing userid")
        self.corp.member(userid)
        publication = moment.publication(str(userid))
        if publication is None:
            raise ApiError(INVALID_PARAMETER, f"{userid} is not an executor of this moment")
        return moment, publication

    def api_get_moment_customer_list(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.corp.lock:
            _moment, publication = self._publication(body)
            chunk, next_cursor = page(publication.visible, body.get("cursor"),
                                      _limit(body.get("limit"), default=TASK_LIMIT_DEFAULT, maximum=TASK_LIMIT_MAX))
            return {"next_cursor": next_cursor,
                    "customer_list": [{"userid": publication.userid, "external_userid": e} for e in chunk]}

    def api_get_moment_comments(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.corp.lock:
            _moment, publication = self._publication(body)
            return {"comment_list": [_reaction(r) for r in publication.comments],
                    "like_list": [_reaction(r) for r in publication.likes]}

    # ---- driver operations (what happens in people's WeCom and WeChat) --------------------------

    def publish(self, moment_id: str, userid: str) -> dict[str, Any]:
        """An executor publishes a moment in their client (``moment_publish``)."""
        with self.corp.lock:
            moment, publication = self._publication({"moment_id": moment_id, "userid": userid})
            if publication.publish_status != 1:
                self._publish(moment, publication)
            return {"visible": len(publication.visible)}

    def interact(self, moment_id: str, userid: str, external_userid: str, kind: str = "like") -> dict[str, Any]:
        """A customer who can see it likes or comments on a published moment (``moment_interact``)."""
        with self.corp.lock:
            _moment, publication = self._publication({"moment_id": moment_id, "userid": userid})
            if external_userid not in publication.visible:
                raise ApiError(INVALID_PARAMETER, "this customer cannot see the moment")
            if kind not in ("like", "comment"):
                raise ApiError(INVALID_PARAMETER, "kind is like or comment")
            reaction = Reaction(external_userid=external_userid, create_time=self._now())
            (publication.likes if kind == "like" else publication.comments).append(reaction)
            return {"likes": len(publication.likes), "comments": len(publication.comments)}

    def overview(self) -> dict[str, Any]:
        with self.corp.lock:
            return {"tasks": len(self.state.tasks), "moments": len(self.state.moments),
                    "published": sum(1 for m in self.state.moments for p in m.publications if p.publish_status),
                    "likes": sum(len(p.likes) for m in self.state.moments for p in m.publications),
                    "comments": sum(len(p.comments) for m in self.state.moments for p in m.publications)}


def _reaction(reaction: Reaction) -> dict[str, Any]:
    row: dict[str, Any] = {"create_time": reaction.create_time}
    if reaction.userid:
        row["userid"] = reaction.userid
    else:
        row["external_userid"] = reaction.external_userid
    return row


def _moment_body(moment: Moment) -> dict[str, Any]:
    body: dict[str, Any] = {"moment_id": moment.moment_id, "create_time": moment.create_time,
                            "create_type": moment.create_type, "visible_type": moment.visible_type,
                            "text": {"content": moment.text}, "image": [{"media_id": m} for m in moment.images]}
    if moment.video:
        body["video"] = {"media_id": moment.video, "thumb_media_id": moment.video}
    if moment.link:
        body["link"] = dict(moment.link)
    return body
