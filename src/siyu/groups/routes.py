"""Customer groups in the console and the API: the list with filters, one group's members and changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import QueryParams

from siyu.accounts import service as accounts_service
from siyu.core.deps import ApiViewer, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import Id
from siyu.customers import service as customers_service
from siyu.groups import service
from siyu.groups.models import GroupChatStatus, GroupMember
from siyu.groups.schemas import (
    GroupChatOut,
    GroupDetailOut,
    GroupMemberOut,
    GroupMessageOut,
    GroupMessagePage,
    GroupPage,
)
from siyu.groups.service import GroupFilter
from siyu.web.render import render

api = APIRouter(tags=["groups"])
pages = APIRouter(include_in_schema=False)

LIST_LIMIT = 50
RECENT_CHANGES = 50
RECENT_MESSAGES = 50  # archived messages on the group page, newest first
STATUS_LABELS = {GroupChatStatus.active.value: N_("group_status.active"),
                 GroupChatStatus.dismissed.value: N_("group_status.dismissed")}
JOIN_SCENES = {1: N_("Invited by a member"), 2: N_("Invitation link"), 3: N_("Group QR code")}
QUIT_SCENES = {0: N_("Left"), 1: N_("Removed by the owner")}


def _labels() -> dict[str, Any]:
    return {"status_labels": {k: _(v) for k, v in STATUS_LABELS.items()},
            "join_scenes": {k: _(v) for k, v in JOIN_SCENES.items()},
            "quit_scenes": {k: _(v) for k, v in QUIT_SCENES.items()}}


# ---------------------------------------------------------------- API


@api.get("/groups", response_model=GroupPage)
def api_list(session: SessionDep, viewer: ApiViewer, account_id: Id | None = None, status: str | None = None,
             name: str = "", limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None) -> GroupPage:
    flt = GroupFilter(account_id=account_id, status=status or None, name=name[:100])
    page = service.list_groups(session, flt=flt, viewer=viewer, limit=limit, cursor=cursor)
    return GroupPage(items=[GroupChatOut.model_validate(g) for g in page.items], next_cursor=page.next_cursor)


@api.get("/groups/{group_id}", response_model=GroupDetailOut)
def api_detail(session: SessionDep, viewer: ApiViewer, group_id: Id) -> GroupDetailOut:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    members = service.current_members(session, group=group)
    live = service.live_customer_ids(session, customer_ids=[m.customer_id for m in members if m.customer_id])
    visible = service.visible_customer_ids(session, customer_ids=live.values(), viewer=viewer)
    out = []
    for member in members:
        item = GroupMemberOut.model_validate(member)
        item.customer_id = live.get(member.customer_id) if member.customer_id else None
        if item.customer_id not in visible:
            item.customer_id = None  # another account's customer is not named to this viewer
        out.append(item)
    return GroupDetailOut(**GroupChatOut.model_validate(group).model_dump(), admin_userids=group.admin_userids,
                          members=out)


@api.get("/groups/{group_id}/messages", response_model=GroupMessagePage)
def api_messages(session: SessionDep, viewer: ApiViewer, group_id: int,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None) -> GroupMessagePage:
    """The group's archived messages (会话存档), newest first, cursor-paged."""
    page = service.list_messages(session, group_id=group_id, viewer=viewer, limit=limit, cursor=cursor)
    return GroupMessagePage(items=[GroupMessageOut.model_validate(m) for m in page.items],
                            next_cursor=page.next_cursor)


# ---------------------------------------------------------------- console


@dataclass
class ListQuery:
    """The list's query string as typed, so the form shows exactly what was asked."""

    account_id: str = ""
    status: str = ""
    name: str = ""
    cursor: str = ""

    @classmethod
    def from_params(cls, params: QueryParams) -> ListQuery:
        return cls(account_id=params.get("account_id", "").strip(), status=params.get("status", "").strip(),
                   name=params.get("name", "").strip()[:100], cursor=params.get("cursor", "").strip())

    def to_filter(self) -> GroupFilter:
        account_id: Id | None = None
        if self.account_id:
            try:
                account_id = int(self.account_id)
            except ValueError as exc:
                raise Invalid("Unknown account", field="account_id") from exc
        return GroupFilter(account_id=account_id, status=self.status or None, name=self.name)

    def url(self, *, cursor: str | None = None) -> str:
        pairs = [(k, v) for k, v in (("account_id", self.account_id), ("status", self.status), ("name", self.name),
                                     ("cursor", cursor or "")) if v]
        return f"/groups?{urlencode(pairs)}" if pairs else "/groups"

    @property
    def filtered(self) -> bool:
        return bool(self.account_id or self.status or self.name)


@pages.get("/groups", response_class=HTMLResponse)
def groups_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    query = ListQuery.from_params(request.query_params)
    error: str | None = None
    items: list[Any] = []
    count = 0
    next_cursor: str | None = None
    try:
        flt = query.to_filter()
        count = service.count_groups(session, flt=flt, viewer=viewer)
        page = service.list_groups(session, flt=flt, viewer=viewer, limit=LIST_LIMIT, cursor=query.cursor or None)
        items, next_cursor = page.items, page.next_cursor
    except DomainError as exc:
        session.rollback()
        error = exc.message
    return render(request, "groups/list.html", status_code=422 if error else 200, nav_active="groups",
                  title=_("Groups"), query=query, items=items, count=count, error=error,
                  next_url=query.url(cursor=next_cursor) if next_cursor else None,
                  first_url=query.url() if query.cursor else None,
                  accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  account_names=customers_service.account_names(session), **_labels())


@dataclass
class MemberRow:
    member: GroupMember
    customer_id: int | None  # the customer as they are now (after any merge)
    customer_name: str
    linked: bool  # the viewer may open the customer's page
    account_name: str  # a corp member who is one of Siyu's accounts


@pages.get("/groups/{group_id}", response_class=HTMLResponse)
def group_page(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id) -> Response:
    group = service.get_group(session, group_id=group_id, viewer=viewer)
    members = service.current_members(session, group=group)
    changes = service.recent_changes(session, group=group, limit=RECENT_CHANGES)
    everyone = [*members, *(m for _c, m in changes)]
    live = service.live_customer_ids(session, customer_ids=[m.customer_id for m in everyone if m.customer_id])
    names = service.customer_names(session, customer_ids=live.values())
    visible = service.visible_customer_ids(session, customer_ids=live.values(), viewer=viewer)
    staff = service.staff_accounts(session, userids=[m.userid for m in everyone if m.member_type == 1])

    def row(member: GroupMember) -> MemberRow:
        account = staff.get(member.userid) if member.member_type == 1 else None
        customer_id = live.get(member.customer_id) if member.customer_id else None
        return MemberRow(member=member, customer_id=customer_id, customer_name=names.get(customer_id or 0, ""),
                         linked=customer_id in visible, account_name=account.display_name if account else "")

    messages = service.list_messages(session, group_id=group.id, viewer=viewer, limit=RECENT_MESSAGES,
                                     cursor=request.query_params.get("messages_cursor") or None)
    return render(request, "groups/detail.html", nav_active="groups", title=group.name or _("Unnamed group"),
                  group=group, account_names=customers_service.account_names(session), messages=messages,
                  members=[row(m) for m in members], changes=[(c, row(m)) for c, m in changes],
                  channel_names=customers_service.channel_names(session, states={m.state for m in members if m.state}),
                  **_labels())
