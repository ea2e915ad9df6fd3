"""Service inbox over HTTP: the agent workspace (console), its live stream, and the API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from siyu.accounts import service as accounts_service
from siyu.core.db import get_sessionmaker, missing_ids
from siyu.core.deps import AdminApiViewer, ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_count, parse_id
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer
from siyu.inbox import jobs as inbox_jobs
from siyu.inbox import reports, service
from siyu.inbox.models import Conversation, ConversationStatus, Message
from siyu.inbox.service import InboundMessage, QueueFilter
from siyu.library import service as library_service
from siyu.team import service as team_service
from siyu.team.models import Role, User, UserAccount
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

api = APIRouter(tags=["inbox"])
pages = APIRouter(include_in_schema=False)

VIEW_LABELS = {
    "unanswered": N_("Unanswered"),
    "mine": N_("Mine"),
    "open": N_("Open"),
    "pending": N_("Waiting for customer"),
    "snoozed": N_("Snoozed"),
    "resolved": N_("Resolved"),
    "all": N_("All"),
}
STATUS_LABELS = {
    ConversationStatus.open.value: N_("Open"),
    ConversationStatus.pending.value: N_("Waiting for customer"),
    ConversationStatus.snoozed.value: N_("Snoozed"),
    ConversationStatus.resolved.value: N_("Resolved"),
}
CHANNEL_LABELS = {
    "wecom_kf": N_("WeChat customer service"), "mp": N_("Official Account"), "wecom_archive": N_("WeCom chat"),
    "personal": N_("Personal WeChat"),
}
TYPE_LABELS = {
    "business_card": N_("Contact card"), "msgmenu": N_("Menu"), "channels": N_("Channels item"),
    "image": N_("Picture"), "voice": N_("Voice"), "video": N_("Video"), "file": N_("File"), "link": N_("Link"),
    "miniprogram": N_("Mini program"), "red_packet": N_("Red packet"), "sticker": N_("Sticker"),
    "location": N_("Location"), "system": N_("System message"), "unknown": N_("Unsupported message"),
}
# 微信客服 session states (kf/service_state, W:94669)
SERVICE_STATE_LABELS = {
    0: N_("Not handled yet"), 1: N_("Served by Siyu (smart assistant)"), 2: N_("Waiting in WeCom's queue"),
    3: N_("Served by a person in WeCom"), 4: N_("Ended"),
}
STREAM_POLL_SECONDS = 2.0
INCIDENT_ROLES = ("admin", "planner", "operator")  # who may send corrections (autoreply.incidents)


# ---------------------------------------------------------------- API


class MessageOut(BaseModel):
    id: int
    direction: str  # "in" (the customer, or a system line) / "out" (us)
    msg_type: str
    text: str
    sent_at: datetime
    status: str
    error: str
    internal: bool
    automatic: bool
    author_id: int | None
    # Outgoing only: queued / sent / delivered / failed, and why it failed.
    delivery: str | None = None
    failure_reason: str | None = None
    payload: dict[str, Any] | None = None  # the platform's message as received (types other than text)

    @classmethod
    def of(cls, message: Message) -> MessageOut:
        out = cls.model_validate(message, from_attributes=True)
        if message.direction == "out" and not message.internal:
            out.delivery = message.status
            out.failure_reason = message.error if message.status == "failed" else None
        return out


class ConversationOut(BaseModel):
    id: int
    account_id: int
    customer_id: int | None
    group_key: str
    channel: str  # wecom_kf (微信客服), mp (公众号), wecom_archive, personal
    service_state: int | None  # 微信客服: 0 未处理, 1 智能助手, 2 待接入池, 3 人工接待, 4 已结束
    status: str
    assignee_id: int | None
    waiting_since: datetime | None
    unanswered: int
    priority: int
    last_message_at: datetime | None
    last_message_preview: str
    snoozed_until: datetime | None


class ConversationDetailOut(ConversationOut):
    messages: list[MessageOut]


class InboundIn(BaseModel):
    source: str = Field(min_length=1, max_length=16)
    platform_msgid: str = Field(min_length=1, max_length=128)
    account_id: Id
    sent_at: datetime
    customer_id: Id | None = None
    external_userid: str = Field("", max_length=64)
    group_key: str = Field("", max_length=64)
    sender: str = Field("", max_length=128)
    msg_type: str = Field("text", max_length=32)
    text: str = Field("", max_length=service.MAX_TEXT)
    payload: dict[str, Any] | None = None


class ReplyIn(BaseModel):
    text: str = Field(min_length=1, max_length=service.MAX_TEXT)
    internal: bool = False
    # A WeCom member's own chat (channel wecom_archive) is read-only; true sends a one-customer mass send
    # the member confirms in WeCom (需成员确认的群发; counts against the customer's monthly mass-send quota).
    member_send: bool = False


class StatusIn(BaseModel):
    status: ConversationStatus
    snooze_until: datetime | None = None


class AssignIn(BaseModel):
    assignee_id: Id | None


class BulkIn(BaseModel):
    view: str = "unanswered"
    account_id: Id | None = None
    channel: str | None = None
    q: str = Field("", max_length=service.SEARCH_MAX)
    asked: str = Field("", max_length=service.SEARCH_MAX)
    tag: str = Field("", max_length=130)
    level: str = Field("", max_length=16)
    ids: list[Id] = Field(default_factory=list, max_length=service.MAX_SELECTION)
    action: str
    args: dict[str, Any] = Field(default_factory=dict)
    expected_count: int = Field(ge=0)


class PresenceIn(BaseModel):
    online: bool
    capacity: int | None = Field(None, ge=0, le=500)


def _out(conversation: Conversation) -> ConversationOut:
    return ConversationOut.model_validate(conversation, from_attributes=True)


@api.get("/inbox/conversations", response_model=dict[str, Any])
def api_queue(session: SessionDep, viewer: ApiViewer, view: str = "unanswered", account_id: Id | None = None,
              channel: str | None = None, q: Annotated[str, Query(max_length=service.SEARCH_MAX)] = "",
              asked: Annotated[str, Query(max_length=service.SEARCH_MAX)] = "",
              tag: Annotated[str, Query(max_length=130)] = "", level: Annotated[str, Query(max_length=16)] = "",
              cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """The queue of one view, narrowed by a channel, a search (name, remark, last message), what the
    customer asked (their waiting messages contain it), a tag and a level."""
    flt = QueueFilter(view=view, account_id=account_id, channel=channel or None, q=q, asked=asked, tag=tag,
                      level=level)
    page = service.list_queue(session, flt=flt, viewer=viewer, limit=limit, cursor=cursor)
    return {"items": [_out(c) for c in page.items], "next_cursor": page.next_cursor}


@api.get("/inbox/conversations/{conversation_id}", response_model=ConversationDetailOut)
def api_conversation(session: SessionDep, viewer: ApiViewer, conversation_id: Id) -> ConversationDetailOut:
    conversation = service.get_conversation(session, conversation_id=conversation_id, viewer=viewer)
    messages = [MessageOut.of(m) for m in service.messages_of(session, conversation=conversation)]
    return ConversationDetailOut(**_out(conversation).model_dump(), messages=messages)


@api.post("/inbox/conversations/{conversation_id}/messages", response_model=MessageOut, status_code=201)
def api_reply(session: SessionDep, viewer: ApiViewer, conversation_id: Id, data: ReplyIn) -> MessageOut:
    message = service.reply(session, conversation_id=conversation_id, text=data.text, viewer=viewer,
                            internal=data.internal, member_send=data.member_send)
    session.commit()
    return MessageOut.of(message)


@api.post("/inbox/messages/{message_id}/retry", response_model=MessageOut)
def api_retry(session: SessionDep, viewer: ApiViewer, message_id: int) -> MessageOut:
    """Send a failed reply again (a new attempt of the same message)."""
    message = service.retry_reply(session, message_id=message_id, viewer=viewer)
    session.commit()
    session.refresh(message)
    return MessageOut.model_validate(message, from_attributes=True)


@api.post("/inbox/conversations/{conversation_id}/status", response_model=ConversationOut)
def api_status(session: SessionDep, viewer: ApiViewer, conversation_id: Id, data: StatusIn) -> ConversationOut:
    conversation = service.change_status(session, conversation_id=conversation_id, status=data.status.value,
                                         viewer=viewer, snooze_until=data.snooze_until)
    session.commit()
    return _out(conversation)


@api.post("/inbox/conversations/{conversation_id}/assignee", response_model=ConversationOut)
def api_assign(session: SessionDep, viewer: ApiViewer, conversation_id: Id, data: AssignIn) -> ConversationOut:
    conversation = service.transfer(session, conversation_id=conversation_id, to_user_id=data.assignee_id,
                                    viewer=viewer)
    session.commit()
    return _out(conversation)


@api.put("/inbox/presence", response_model=dict[str, Any])
def api_presence(session: SessionDep, viewer: ApiViewer, data: PresenceIn) -> dict[str, Any]:
    user_id = _require_user(viewer)
    if data.capacity is not None:
        service.set_capacity(session, user_id=user_id, capacity=data.capacity)
    moved = service.set_online(session, user_id=user_id, online=data.online)
    session.commit()
    state = service.agent_state(session, user_id=user_id)
    return {"online": state.online, "capacity": state.capacity, "moved": moved}


@api.post("/inbox/bulk", response_model=dict[str, Any], status_code=202)
def api_bulk(session: SessionDep, viewer: ApiViewer, data: BulkIn) -> dict[str, Any]:
    """Act on every conversation matching the filter (not only one page), as a job; confirm the count first."""
    flt = QueueFilter(view=data.view, account_id=data.account_id, channel=data.channel or None, q=data.q,
                      asked=data.asked, tag=data.tag, level=data.level, ids=tuple(data.ids))
    job_id = inbox_jobs.submit_bulk(session, flt=flt, action=data.action, args=data.args, viewer=viewer,
                                    expected=data.expected_count)
    session.commit()
    return {"job_id": job_id, "job_url": f"/api/v1/jobs/{job_id}"}


@api.post("/inbox/messages", response_model=dict[str, int], status_code=202)
def api_ingest(session: SessionDep, viewer: AdminApiViewer,
               data: Annotated[list[InboundIn], Field(max_length=1000)]) -> dict[str, int]:
    """Messages from a connector (personal-account capture, imports): stored exactly once."""
    unknown = missing_ids(session, "account", [item.account_id for item in data])
    unknown_customers = missing_ids(session, "customer", [i.customer_id for i in data if i.customer_id is not None])
    for item in data:
        if not viewer.can_see_account(item.account_id) or item.account_id in unknown:
            raise Invalid("Account {account_id} not found", field="account_id", account_id=item.account_id)
        if item.customer_id in unknown_customers:
            raise Invalid("Customer {customer_id} not found", field="customer_id", customer_id=item.customer_id)
    result = service.ingest(session, [InboundMessage(**item.model_dump()) for item in data])
    session.commit()
    return {"stored": result.stored, "duplicates": result.duplicates, "assigned": result.assigned}


def _require_user(viewer: Viewer) -> int:
    if viewer.user_id is None:
        raise Invalid("Only a person can be an agent")
    return viewer.user_id


# ---------------------------------------------------------------- console


FILTER_KEYS = ("view", "account_id", "q", "asked", "tag", "level")


def _filter_from(values: Any) -> QueueFilter:
    """The queue filter from a query string or a form (also a selection: several ``ids``)."""
    view = str(values.get("view") or "unanswered")
    account = str(values.get("account_id") or "")
    ids = values.getlist("ids") if hasattr(values, "getlist") else values.get("ids", [])
    return QueueFilter(view=view if view in service.QUEUE_VIEWS else "unanswered", account_id=parse_id(account),
                       channel=str(values.get("channel") or "") or None,
                       q=str(values.get("q") or "")[:service.SEARCH_MAX],
                       asked=str(values.get("asked") or "")[:service.SEARCH_MAX],
                       tag=str(values.get("tag") or "")[:130], level=str(values.get("level") or "")[:16],
                       ids=tuple(i for i in (parse_id(v) for v in ids if isinstance(v, str)) if i is not None))


def _filter_query(flt: QueueFilter, **changes: Any) -> str:
    """The filter as a query string for links that keep it (``changes`` override parts)."""
    values = {"view": flt.view, "account_id": flt.account_id or "", "channel": flt.channel or "", "q": flt.q,
              "asked": flt.asked, "tag": flt.tag, "level": flt.level, **changes}
    return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def _queue_context(session: Session, viewer: Viewer, request: Request) -> dict[str, Any]:
    params = request.query_params
    flt = _filter_from(params)
    flt.ids = ()
    view, account_id = flt.view, flt.account_id
    error = None
    items: list[Conversation] = []
    next_cursor = None
    try:
        page = service.list_queue(session, flt=flt, viewer=viewer, cursor=params.get("cursor") or None)
        items, next_cursor = page.items, page.next_cursor
    except DomainError as exc:
        session.rollback()
        error = exc.message
    customer_ids = [c.customer_id for c in items if c.customer_id]
    names = ({cid: name for cid, name in session.execute(
        select(Customer.id, Customer.name).where(Customer.id.in_(customer_ids)))} if customer_ids else {})
    levels = {lv.account_id: lv for lv in [service.service_level(session, a) for a in {c.account_id for c in items}]}
    now = datetime.now(local_zone())
    breaches = {c.id: service.breached(c, levels[c.account_id], now=now) for c in items}
    assignees = team_service.display_names(session, user_ids=[c.assignee_id for c in items])
    from siyu.customers import service as customers_service

    return {
        "view": view, "account_id": account_id, "items": items, "names": names, "breaches": breaches,
        "assignees": assignees, "error": error, "next_cursor": next_cursor, "flt": flt,
        "filter_query": _filter_query(flt), "view_query": {key: _filter_query(flt, view=key) for key in VIEW_LABELS},
        "counts": service.queue_counts(session, viewer=viewer),
        "view_labels": {k: _(v) for k, v in VIEW_LABELS.items()},
        "channel_labels": {k: _(v) for k, v in CHANNEL_LABELS.items()},
        "account_names": _account_names(session),
        "levels": [lv.label for lv in sorted(customers_service.get_rules(session).levels, key=lambda lv: lv.min_total)],
    }


def _account_names(session: Session) -> dict[int, str]:
    from siyu.customers import service as customers_service

    return customers_service.account_names(session)


def _presence(session: Session, viewer: Viewer) -> Any:
    return service.agent_state(session, user_id=viewer.user_id) if viewer.user_id is not None else None


@pages.get("/inbox", response_class=HTMLResponse)
def inbox_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _workspace(request, session, viewer, conversation=None)


def _workspace(request: Request, session: Session, viewer: Viewer, *, conversation: Conversation | None,
               status_code: int = 200, **extra: Any) -> Response:
    """The three panes: the queue, the open conversation, the customer's portrait."""
    context = _queue_context(session, viewer, request)
    if request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "queue":
        return render(request, "inbox/_queue.html", **context)
    presence = _presence(session, viewer)
    session.commit()  # an agent's presence row is created on first visit
    if conversation is not None:
        context.update(_conversation_context(session, viewer, conversation))
    return render(request, "inbox/queue.html", status_code=status_code, nav_active="inbox",
                  title=_("Service inbox"), presence=presence, open_conversation=conversation,
                  accounts=accounts_service.visible_accounts(session, viewer=viewer), **context, **extra)


@pages.post("/inbox/presence", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def presence_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    user_id = _require_user(viewer)
    capacity = form.get("capacity")
    try:
        if isinstance(capacity, str) and capacity.strip():
            count = parse_count(capacity, default=-1)
            if count < 0:
                raise Invalid("Capacity must be between 0 and 500", field="capacity")
            service.set_capacity(session, user_id=user_id, capacity=count)
        service.set_online(session, user_id=user_id, online=form.get("online") == "1")
        session.commit()
    except DomainError:
        session.rollback()
        raise
    return RedirectResponse(request.headers.get("referer") or "/inbox", status_code=303)


BULK_LABELS = {"assign": N_("Assign to"), "resolve": N_("Resolve"), "reply": N_("Reply with"),
               "tag": N_("Tag the customers")}


def _bulk_page(request: Request, session: Session, viewer: Viewer, *, status_code: int = 200,
               error: str | None = None, values: Any = None) -> Response:
    params = values if values is not None else request.query_params
    flt = _filter_from(params)
    try:
        count = service.count_matching(session, flt=flt, viewer=viewer)
    except DomainError as exc:  # e.g. a tag that does not exist
        session.rollback()
        count, error, status_code = 0, exc.message, exc.status_code
    colleagues = list(session.scalars(select(User).where(User.is_active.is_(True)).order_by(User.username)))
    return render(request, "inbox/bulk.html", status_code=status_code, nav_active="inbox",
                  title=_("Bulk action on conversations"), flt=flt, count=count, error=error,
                  values={k: v for k, v in params.items() if isinstance(v, str)}, filter_query=_filter_query(flt),
                  colleagues=colleagues, canned=service.canned_replies(session, account_id=flt.account_id),
                  action_labels={k: _(v) for k, v in BULK_LABELS.items()},
                  view_labels={k: _(v) for k, v in VIEW_LABELS.items()})


@pages.get("/inbox/bulk", response_class=HTMLResponse)
def bulk_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _bulk_page(request, session, viewer)


@pages.post("/inbox/bulk", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def bulk_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    flt = _filter_from(form)
    action = values.get("action", "")
    args: dict[str, Any] = {}
    if action == "assign":
        assignee = values.get("assignee_id", "")
        args["assignee_id"] = parse_id(assignee)
    elif action == "reply":
        args["text"] = values.get("text", "")
    elif action == "tag":
        args["tags"] = [t.strip() for t in values.get("tags", "").replace("，", ",").split(",") if t.strip()]
    expected = values.get("expected_count", "")
    try:
        job_id = inbox_jobs.submit_bulk(session, flt=flt, action=action, args=args, viewer=viewer,
                                        expected=parse_count(expected, default=-1))
        session.commit()
    except DomainError as exc:
        session.rollback()
        return _bulk_page(request, session, viewer, status_code=exc.status_code, error=exc.message, values=form)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


def _conversation_context(session: Session, viewer: Viewer, conversation: Conversation) -> dict[str, Any]:
    customer = session.get(Customer, conversation.customer_id) if conversation.customer_id else None
    # Who may take it: the account's people, those who see every account (admins, planners), and
    # whoever has it now — so the menu always shows the current assignee, whatever their role.
    everywhere = [role.value for role in Role if role.sees_all_accounts]
    colleagues = list(session.scalars(
        select(User).where(or_(
            User.id.in_(select(UserAccount.user_id).where(UserAccount.account_id == conversation.account_id)),
            User.role.in_(everywhere), User.id == (conversation.assignee_id or 0)),
            or_(User.is_active.is_(True), User.id == (conversation.assignee_id or 0)))
        .order_by(User.display_name, User.username)))
    messages = service.messages_of(session, conversation=conversation)
    return {
        "conversation": conversation, "customer": customer, "messages": messages,
        "canned": [(c, service.render_canned(session, reply=c, conversation=conversation))
                   for c in service.canned_replies(session, account_id=conversation.account_id)],
        # 话术库: the most used scripts, rendered for this customer; a sent one is counted (reply_submit)
        "scripts": library_service.scripts_for(session, customer_id=conversation.customer_id,
                                               account_id=conversation.account_id, limit=SCRIPTS_IN_COMPOSER),
        "colleagues": colleagues,
        "assignee": team_service.display_names(session, user_ids=[conversation.assignee_id]).get(
            conversation.assignee_id or 0, ""),
        "authors": team_service.display_names(session, user_ids=[m.author_id for m in messages]),
        "status_labels": {k: _(v) for k, v in STATUS_LABELS.items()},
        "type_labels": {k: _(v) for k, v in TYPE_LABELS.items()},
        "service_state_labels": {k: _(v) for k, v in SERVICE_STATE_LABELS.items()},
        "channel_labels": {k: _(v) for k, v in CHANNEL_LABELS.items()},
        "account_name": _account_names(session).get(conversation.account_id, ""),
        "breach": service.breached(conversation, service.service_level(session, conversation.account_id),
                                   now=datetime.now(local_zone())),
        "now_local": datetime.now(local_zone()).strftime("%Y-%m-%dT%H:%M"),
        "may_report": viewer.role in INCIDENT_ROLES,
    }


REPORT_LABELS = {
    "who": N_("Who"), "conversations": N_("Conversations"), "answered": N_("Answered"), "resolved": N_("Resolved"),
    "first_response": N_("Average first response (min)"), "resolution": N_("Average resolution (min)"),
    "breaches": N_("Overdue"), "agent": N_("Agent"), "account": N_("Account"),
    "agents": N_("Agents"), "accounts": N_("Accounts"), "unassigned": N_("Unassigned"),
    "hour": N_("Hour"), "inbound": N_("Customer messages"), "human": N_("Replies by people"),
    "automatic": N_("Automatic replies"),
}
WAIT_LABELS = (N_("under 1 min"), N_("1–5 min"), N_("5–15 min"), N_("15–60 min"), N_("over 1 hour"))


def _report_range(request: Request) -> tuple[datetime, datetime, int, int | None]:
    days_text = request.query_params.get("days", "7")
    days = int(days_text) if parse_id(days_text) is not None and 1 <= int(days_text) <= 62 else 7
    account = request.query_params.get("account_id", "")
    until = datetime.now(local_zone())
    return until - timedelta(days=days), until, days, parse_id(account)


@pages.get("/inbox/reports", response_class=HTMLResponse)
def reports_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    since, until, days, account_id = _report_range(request)
    if account_id is not None and not viewer.can_see_account(account_id):
        raise Invalid("Account {account_id} not found", field="account_id", account_id=account_id)
    report = reports.build(session, viewer=viewer, since=since, until=until, account_id=account_id)
    labels = {k: _(v) for k, v in REPORT_LABELS.items()}
    charts = {
        "hourly": {"x": report.hours, "series": [
            {"name": labels["inbound"], "data": report.inbound},
            {"name": labels["human"], "data": report.human},
            {"name": labels["automatic"], "data": report.automatic}]},
        "waits": {"x": [_(w) for w in WAIT_LABELS], "series": [{"name": labels["conversations"],
                                                                "data": report.waits}]},
    }
    return render(request, "inbox/reports.html", nav_active="inbox", title=_("Service reports"), report=report,
                  labels=labels, charts=charts, days=days, account_id=account_id,
                  accounts=accounts_service.visible_accounts(session, viewer=viewer))


@pages.get("/inbox/reports.csv")
def reports_csv(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    since, until, days, account_id = _report_range(request)
    if account_id is not None and not viewer.can_see_account(account_id):
        raise Invalid("Account {account_id} not found", field="account_id", account_id=account_id)
    report = reports.build(session, viewer=viewer, since=since, until=until, account_id=account_id)
    team_service.record_audit(session, actor=viewer, action="export", entity_type="service_report",
                              summary=f"{days} days", after={"days": days, "account_id": account_id})
    session.commit()
    body = reports.to_csv(report, labels={k: _(v) for k, v in REPORT_LABELS.items()})
    filename = f"service-report-{until:%Y%m%d}.csv"
    return Response(body.encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@pages.get("/inbox/canned", response_class=HTMLResponse)
def canned_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _canned_page(request, session, viewer)


def _canned_page(request: Request, session: Session, viewer: Viewer, *, error: str | None = None,
                 values: dict[str, str] | None = None, status_code: int = 200) -> Response:
    replies = [r for r in service.canned_replies(session, account_id=None)
               if r.account_id is None or viewer.can_see_account(r.account_id)]
    return render(request, "inbox/canned.html", status_code=status_code, nav_active="inbox", title=_("Quick replies"),
                  replies=replies, error=error, values=values or {}, account_names=_account_names(session),
                  accounts=accounts_service.visible_accounts(session, viewer=viewer))


@pages.post("/inbox/canned", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def canned_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    account = values.get("account_id", "")
    try:
        service.save_canned(session, shortcut=values.get("shortcut", ""), title=values.get("title", ""),
                            body=values.get("body", ""), account_id=parse_id(account),
                            viewer=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        return _canned_page(request, session, viewer, error=exc.message, values=values, status_code=exc.status_code)
    return RedirectResponse("/inbox/canned", status_code=303)


@pages.post("/inbox/canned/{reply_id}/delete", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def canned_delete(request: Request, session: SessionDep, viewer: PageViewer, reply_id: Id) -> Response:
    service.delete_canned(session, reply_id=reply_id, viewer=viewer)
    session.commit()
    return RedirectResponse("/inbox/canned", status_code=303)


@pages.get("/inbox/{conversation_id}", response_class=HTMLResponse)
def conversation_page(request: Request, session: SessionDep, viewer: PageViewer, conversation_id: Id,
                      error: str = "") -> Response:
    conversation = service.get_conversation(session, conversation_id=conversation_id, viewer=viewer)
    target = request.headers.get("hx-target") if request.headers.get("hx-request") == "true" else None
    if target == "messages":
        return render(request, "inbox/_messages.html", **_conversation_context(session, viewer, conversation))
    if target == "conversation-pane":  # opened from the queue: only the middle and right panes change
        return render(request, "inbox/_conversation.html", **_conversation_context(session, viewer, conversation))
    return _workspace(request, session, viewer, conversation=conversation)


SCRIPTS_IN_COMPOSER = 20  # the library's most used scripts offered beside the quick replies


def _script_ids(raw: Any) -> list[int]:
    """The ``library_script_ids`` the composer's picker filled in (ids, comma-separated; junk ignored)."""
    if not isinstance(raw, str):
        return []
    return list(dict.fromkeys(int(p) for p in raw.split(",")[:20] if p.strip().isdigit() and len(p.strip()) < 10))


@pages.post("/inbox/{conversation_id}/reply", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def reply_submit(request: Request, session: SessionDep, viewer: PageViewer, conversation_id: Id,
                 form: FormDep) -> Response:
    text = form.get("text")
    internal = form.get("internal") == "1"
    try:
        service.reply(session, conversation_id=conversation_id, text=text if isinstance(text, str) else "",
                      viewer=viewer, internal=internal, member_send=form.get("member_send") == "1")
        if not internal:  # the library's scripts the agent picked for this reply: one use each
            library_service.record_picked(session, _script_ids(form.get("library_script_ids")), "inbox", viewer=viewer,
                                          customer_id=session.get_one(Conversation, conversation_id).customer_id)
        session.commit()
    except DomainError as exc:
        session.rollback()
        conversation = service.get_conversation(session, conversation_id=conversation_id, viewer=viewer)
        return _workspace(request, session, viewer, conversation=conversation, status_code=exc.status_code,
                          reply_error=exc.message, draft=text if isinstance(text, str) else "")
    return RedirectResponse(f"/inbox/{conversation_id}#composer", status_code=303)


@pages.post("/inbox/{conversation_id}/messages/{message_id}/retry", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def retry_submit(request: Request, session: SessionDep, viewer: PageViewer, conversation_id: int,
                 message_id: int) -> Response:
    service.retry_reply(session, message_id=message_id, viewer=viewer, conversation_id=conversation_id)
    session.commit()
    return RedirectResponse(f"/inbox/{conversation_id}#messages", status_code=303)


@pages.post("/inbox/{conversation_id}/status", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def status_submit(request: Request, session: SessionDep, viewer: PageViewer, conversation_id: Id,
                  form: FormDep) -> Response:
    status = form.get("status")
    until_text = form.get("snooze_until")
    until = None
    if isinstance(until_text, str) and until_text:
        try:
            until = datetime.fromisoformat(until_text).replace(tzinfo=local_zone())
        except ValueError as exc:
            raise Invalid("Choose a time in the future to snooze until", field="snooze_until") from exc
    service.change_status(session, conversation_id=conversation_id, status=status if isinstance(status, str) else "",
                          viewer=viewer, snooze_until=until)
    session.commit()
    return RedirectResponse(f"/inbox/{conversation_id}", status_code=303)


@pages.post("/inbox/{conversation_id}/assignee", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def assign_submit(request: Request, session: SessionDep, viewer: PageViewer, conversation_id: Id,
                  form: FormDep) -> Response:
    value = form.get("assignee_id")
    to_user = parse_id(value) if isinstance(value, str) else None
    service.transfer(session, conversation_id=conversation_id, to_user_id=to_user, viewer=viewer)
    session.commit()
    return RedirectResponse(f"/inbox/{conversation_id}", status_code=303)


# ---------------------------------------------------------------- live updates


def _fingerprint(viewer: Viewer, conversation_id: int | None) -> str:
    """A cheap signature of what the viewer's screen shows; it changes when anything on it changes."""
    with get_sessionmaker()() as session:
        scope = service.visible_conversations(viewer)
        query = select(func.count(), func.max(Conversation.last_message_at), func.max(Conversation.assigned_at),
                       func.sum(Conversation.unanswered)).where(Conversation.status == ConversationStatus.open.value)
        if scope is not None:
            query = query.where(scope)
        parts: list[Any] = list(session.execute(query).one())
        if conversation_id is not None:
            parts += list(session.execute(select(
                func.count(), func.max(Message.id), func.count().filter(Message.status == "failed"),
                func.count().filter(Message.status == "queued")).where(
                Message.conversation_id == conversation_id)).one())
        return json.dumps(parts, default=str)


@pages.get("/inbox-stream")
async def stream(request: Request, viewer: PageViewer, conversation: int | None = None) -> StreamingResponse:
    """Server-sent events: "changed" whenever the queue (or the open conversation) changes."""
    if conversation is not None:
        with get_sessionmaker()() as session:
            service.get_conversation(session, conversation_id=conversation, viewer=viewer)  # 404 if not theirs

    async def events() -> AsyncIterator[str]:
        last = await anyio.to_thread.run_sync(_fingerprint, viewer, conversation)
        yield "retry: 3000\nevent: ready\ndata: {}\n\n"
        while not await request.is_disconnected():
            await asyncio.sleep(STREAM_POLL_SECONDS)
            current = await anyio.to_thread.run_sync(_fingerprint, viewer, conversation)
            if current != last:
                last = current
                yield "event: changed\ndata: {}\n\n"
            else:
                yield ": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
