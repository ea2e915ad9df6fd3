from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from siyu.accounts import service
from siyu.accounts.schemas import AccountIn, AccountList, AccountOut, AccountUpdate
from siyu.accounts.service import AccountView
from siyu.core.deps import AdminApiViewer, ApiViewer, PageViewer, SessionDep
from siyu.core.i18n import _
from siyu.core.ids import Id
from siyu.team import service as team_service
from siyu.web.render import render

api = APIRouter(tags=["accounts"])
pages = APIRouter(include_in_schema=False)


def account_out(view: AccountView) -> AccountOut:
    out = AccountOut.model_validate(view.account)
    out.friend_count = view.friend_count
    out.utilisation = round(view.utilisation, 4)
    out.near_capacity = view.near_capacity
    return out


@api.get("/accounts", response_model=AccountList)
def list_accounts(session: SessionDep, viewer: ApiViewer) -> AccountList:
    return AccountList(items=[account_out(v) for v in service.list_accounts(session, viewer=viewer)])


@api.get("/accounts/{account_id}", response_model=AccountOut)
def get_account(session: SessionDep, viewer: ApiViewer, account_id: Id) -> AccountOut:
    return account_out(service.get_account_view(session, account_id=account_id, viewer=viewer))


@api.post("/accounts", response_model=AccountOut, status_code=201)
def create_account(session: SessionDep, viewer: AdminApiViewer, data: AccountIn) -> AccountOut:
    account = service.create_account(session, data=data, actor=viewer)
    session.commit()
    return account_out(service.get_account_view(session, account_id=account.id, viewer=viewer))


@api.patch("/accounts/{account_id}", response_model=AccountOut)
def update_account(session: SessionDep, viewer: AdminApiViewer, account_id: Id, data: AccountUpdate) -> AccountOut:
    service.update_account(session, account_id=account_id, data=data, actor=viewer)
    session.commit()
    return account_out(service.get_account_view(session, account_id=account_id, viewer=viewer))


@pages.get("/accounts", response_class=HTMLResponse)
def accounts_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    accounts = service.list_accounts(session, viewer=viewer)
    owners = team_service.display_names(session, user_ids={v.account.owner_user_id for v in accounts
                                                           if v.account.owner_user_id})
    return render(request, "accounts/list.html", nav_active="accounts", accounts=accounts, owners=owners,
                  title=_("Accounts"))
