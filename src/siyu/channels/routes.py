"""Channels in the console and the API: list, edit, codes, QR and poster, the report, exports."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from siyu.accounts import service as accounts_service
from siyu.accounts.models import Account
from siyu.channels import images, service
from siyu.channels.models import (
    AccountStrategy,
    Channel,
    ChannelKind,
    ChannelStatus,
    CostModel,
    IncentiveKind,
)
from siyu.channels.service import ChannelIn
from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_id
from siyu.core.settings import local_today
from siyu.core.spreadsheet import neutralise
from siyu.core.viewer import Viewer
from siyu.team import service as team_service
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import render, templates

api = APIRouter(tags=["channels"])
pages = APIRouter(include_in_schema=False)

KIND_LABELS = {
    ChannelKind.store_staff: N_("Store staff"), ChannelKind.online_ad: N_("Online ad"),
    ChannelKind.parcel_card: N_("Parcel card"), ChannelKind.app: N_("App / mini program / channels"),
    ChannelKind.offline_event: N_("Offline event"), ChannelKind.promoter: N_("Promoter"),
    ChannelKind.circle: N_("Circle (borrow / mix / swap / build)"),
}
STATUS_LABELS = {ChannelStatus.active: N_("Active"), ChannelStatus.paused: N_("Paused"),
                 ChannelStatus.archived: N_("Archived")}
COST_LABELS = {CostModel.fixed: N_("Fixed budget"), CostModel.per_add: N_("Per added friend"),
               CostModel.per_promoter_reward: N_("Promoter rewards")}
STRATEGY_LABELS = {AccountStrategy.single: N_("One account"), AccountStrategy.round_robin: N_("Round robin"),
                   AccountStrategy.least_utilised: N_("Least utilised")}
INCENTIVE_LABELS = {IncentiveKind.none: N_("None"), IncentiveKind.coupon: N_("Coupon code"),
                    IncentiveKind.gift: N_("Gift"), IncentiveKind.qualification: N_("Purchase qualification"),
                    IncentiveKind.knowledge: N_("Knowledge pack")}
FIELD_LABELS = {"name": N_("Item name"), "kind": N_("Type"), "status": N_("Status"), "starts_on": N_("From"),
                "ends_on": N_("To"), "cost_model": N_("Cost model"), "cost_amount": N_("Cost"),
                "account_strategy": N_("Which account"), "account_ids": N_("Accounts"), "tag_names": N_("Tags"),
                "incentive_kind": N_("Incentive"), "incentive_text": N_("Incentive on the poster"),
                "welcome_text": N_("Welcome message"), "fallback_text": N_("When the coupons run out"),
                "codes": N_("Coupon codes"), "welcome_script_id": N_("Welcome script"),
                "welcome_material_ids": N_("Welcome attachments")}
PROMOTER_LABELS = {"name": N_("Name"), "reward_per_add": N_("Reward per added friend"),
                   "account_ids": N_("Accounts")}
REPORT_COLUMNS = (N_("Channel"), N_("Adds"), N_("Deletions"), N_("Net adds"), N_("Kept after 7 days"),
                  N_("Kept after 30 days"), N_("Buyers"), N_("Revenue"), N_("Cost"), N_("Cost per net customer"),
                  N_("ROI"))


def _labels() -> dict[str, Any]:
    def tr(mapping: dict[Any, str]) -> dict[str, str]:
        return {str(k.value if hasattr(k, "value") else k): _(v) for k, v in mapping.items()}

    return {"kind_labels": tr(KIND_LABELS), "status_labels": tr(STATUS_LABELS), "cost_labels": tr(COST_LABELS),
            "strategy_labels": tr(STRATEGY_LABELS), "incentive_labels": tr(INCENTIVE_LABELS),
            "labels": tr(FIELD_LABELS)}


class ChannelOut(BaseModel):
    id: int
    key: str
    name: str
    kind: str
    status: str
    account_ids: list[int]
    incentive_kind: str
    alert: str


# ---------------------------------------------------------------- API


@api.get("/channels", response_model=dict[str, list[ChannelOut]])
def api_list(session: SessionDep, viewer: ApiViewer) -> dict[str, list[ChannelOut]]:
    return {"items": [ChannelOut.model_validate(c, from_attributes=True)
                      for c in service.list_channels(session, viewer=viewer)]}


@api.post("/channels", response_model=ChannelOut, status_code=201)
def api_create(session: SessionDep, viewer: ApiViewer, data: ChannelIn) -> ChannelOut:
    channel = service.save_channel(session, data=data, viewer=viewer)
    session.commit()
    return ChannelOut.model_validate(channel, from_attributes=True)


@api.post("/channels/{channel_id}/codes", response_model=dict[str, int])
def api_codes(session: SessionDep, viewer: ApiViewer, channel_id: Id, codes: list[str]) -> dict[str, int]:
    added = service.add_codes(session, channel_id=channel_id, codes=codes, viewer=viewer)
    session.commit()
    claimed, total = service.pool_status(session, channel_id=channel_id)
    return {"added": added, "claimed": claimed, "total": total}


# ---------------------------------------------------------------- console


def _report_days(request: Request) -> tuple[date, date, int]:
    raw = request.query_params.get("days", "30")
    days = int(raw) if parse_id(raw) is not None and 1 <= int(raw) <= 366 else 30
    until = local_today()
    return until - timedelta(days=days - 1), until, days


@pages.get("/channels", response_class=HTMLResponse)
def channels_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    since, until, days = _report_days(request)
    channels = service.list_channels(session, viewer=viewer)
    figures = service.report(session, since=since, until=until, channel_ids=[c.id for c in channels])
    top = sorted(channels, key=lambda c: -(figures[c.id].net if c.id in figures else 0))[:8]
    daily = service.daily_adds(session, since=since, until=until, channel_ids=[c.id for c in top])
    axis = [since + timedelta(days=i) for i in range(days)]
    chart = {"x": [d.strftime("%m-%d") for d in axis],
             "series": [{"name": c.name, "data": [daily.get(c.id, {}).get(d, 0) for d in axis]} for c in top]}
    names = {a.id: a.display_name for a in accounts_service.visible_accounts(session, viewer=viewer)}
    return render(request, "channels/list.html", nav_active="channels", title=_("Channels"), channels=channels,
                  figures=figures, days=days, chart=chart, account_names=names, **_labels())


def _editor(request: Request, session: Session, viewer: Viewer, *, channel: Channel | None,
            values: dict[str, Any], errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    pool = service.pool_status(session, channel_id=channel.id) if channel else (0, 0)
    return render(request, "channels/edit.html", status_code=status_code, nav_active="channels",
                  title=channel.name if channel else _("New channel"), channel=channel, values=values,
                  errors=errors or {}, pool=pool, link=_link(request, channel) if channel else "",
                  accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  library=_library_choices(session), **_labels())


def _library_choices(session: Session) -> dict[str, Any]:
    """The library's scripts and the links, images and mini-program cards a welcome may use, most used first."""
    from siyu.library import service as library_service

    return library_service.picker_choices(session, material_kinds=library_service.WELCOME_KINDS)


def _link(request: Request, channel: Channel) -> str:
    """The channel's public landing page (it shows WeCom's 「联系我」 QR when there is one)."""
    return str(request.url_for("channel_link", key=channel.key))


@pages.get("/channels/new", response_class=HTMLResponse)
def new_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _editor(request, session, viewer, channel=None, values={"kind": "store_staff", "status": "active",
                                                                   "cost_model": "per_add", "cost_amount": "0",
                                                                   "account_strategy": "single",
                                                                   "incentive_kind": "none", "account_ids": []})


@pages.get("/channels/promoters", response_class=HTMLResponse)
def promoters_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return render(request, "channels/promoters.html", nav_active="channels", title=_("Promoters"),
                  standings=service.leaderboard(session, viewer=viewer), errors={}, values={},
                  accounts=accounts_service.visible_accounts(session, viewer=viewer))


def _account_ids(form: FormData) -> list[int]:
    return [i for v in form.getlist("account_ids") if isinstance(v, str) and (i := parse_id(v)) is not None]


@pages.post("/channels/promoters", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def promoter_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    account_ids = _account_ids(form)
    try:
        data = service.PromoterIn.model_validate({"name": values.get("name", "").strip(),
                                                  "reward_per_add": values.get("reward_per_add") or "0"})
        if not account_ids:
            raise Invalid("Choose at least one account", field="account_ids")
        service.create_promoter(session, data=data, account_ids=account_ids, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return render(request, "channels/promoters.html", status_code=422, nav_active="channels",
                      title=_("Promoters"), standings=service.leaderboard(session, viewer=viewer), values=values,
                      errors=field_errors(exc, labels=PROMOTER_LABELS),
                      accounts=accounts_service.visible_accounts(session, viewer=viewer))
    return RedirectResponse("/channels/promoters", status_code=303)


@pages.get("/channels/report.{fmt}")
def report_export(request: Request, session: SessionDep, viewer: PageViewer, fmt: str) -> Response:
    if fmt not in ("csv", "xlsx"):
        raise NotFound("Not found")
    rows, days = _report_rows(session, viewer, request)
    header = [_(c) for c in REPORT_COLUMNS]
    team_service.record_audit(session, actor=viewer, action="export", entity_type="channel_report",
                              summary=f"{days} days, {fmt}", after={"days": days, "format": fmt, "rows": len(rows)})
    session.commit()
    filename = f"channels-{local_today():%Y%m%d}.{fmt}"
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if fmt == "csv":
        out = io.StringIO()
        out.write("\ufeff")
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
        return Response(out.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8", headers=disposition)
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(_("Channels"))
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return Response(buffer.getvalue(), headers=disposition,
                    media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


@pages.get("/channels/{channel_id}", response_class=HTMLResponse)
def edit_page(request: Request, session: SessionDep, viewer: PageViewer, channel_id: Id) -> Response:
    channel = service.get_channel(session, channel_id=channel_id, viewer=viewer)
    values: dict[str, Any] = {name: getattr(channel, name) for name in ChannelIn.model_fields}
    values["tag_names"] = "\n".join(channel.tag_names)
    values["starts_on"] = channel.starts_on.isoformat() if channel.starts_on else ""
    values["ends_on"] = channel.ends_on.isoformat() if channel.ends_on else ""
    return _editor(request, session, viewer, channel=channel, values=values)


def _channel_in(form: Any) -> tuple[ChannelIn, dict[str, Any]]:
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    values["account_ids"] = _account_ids(form)
    tags = [t.strip() for t in str(values.get("tag_names", "")).replace("，", "\n").replace(",", "\n").splitlines()]
    values["welcome_material_ids"] = [i for v in form.getlist("welcome_material_ids")
                                      if isinstance(v, str) and (i := parse_id(v)) is not None]
    data = {**values, "tag_names": [t for t in tags if t], "starts_on": values.get("starts_on") or None,
            "ends_on": values.get("ends_on") or None, "cost_amount": values.get("cost_amount") or "0",
            "promoter_id": None, "welcome_script_id": values.get("welcome_script_id") or None}
    return ChannelIn.model_validate(data), values


@pages.post("/channels/save", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def save_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    channel_text = form.get("channel_id")
    channel_id = parse_id(channel_text) if isinstance(channel_text, str) else None
    channel = service.get_channel(session, channel_id=channel_id, viewer=viewer) if channel_id else None
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    values["account_ids"] = _account_ids(form)
    try:
        data, values = _channel_in(form)
        saved = service.save_channel(session, data=data, viewer=viewer, channel_id=channel_id)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _editor(request, session, viewer, channel=channel, values=values, status_code=422,
                       errors=field_errors(exc, labels=FIELD_LABELS))
    return RedirectResponse(f"/channels/{saved.id}", status_code=303)


@pages.post("/channels/{channel_id}/codes", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def codes_submit(request: Request, session: SessionDep, viewer: PageViewer, channel_id: Id,
                 form: FormDep) -> Response:
    raw = form.get("codes")
    codes = [c for line in (raw if isinstance(raw, str) else "").splitlines() for c in line.split(",")]
    service.add_codes(session, channel_id=channel_id, codes=codes, viewer=viewer)
    session.commit()
    return RedirectResponse(f"/channels/{channel_id}#codes", status_code=303)


def _png(body: bytes, filename: str) -> Response:
    return Response(body, media_type="image/png", headers={"Content-Disposition": f'inline; filename="{filename}"'})


@pages.get("/channels/{channel_id}/qr.png")
def qr_image(request: Request, session: SessionDep, viewer: PageViewer, channel_id: Id) -> Response:
    """WeCom's own 「联系我」 QR when it was fetched and kept; else a QR of the channel's landing page."""
    channel = service.get_channel(session, channel_id=channel_id, viewer=viewer)
    kept = service.qr_image(channel)
    if kept is not None:
        return Response(kept, media_type="image/jpeg" if kept.startswith(b"\xff\xd8") else "image/png",
                        headers={"Content-Disposition": f'inline; filename="channel-{channel.key}-wecom"'})
    return _png(images.qr_png(_link(request, channel)), f"channel-{channel.key}.png")


def _first_account(session: Session, channel: Channel) -> Account | None:
    return session.get(Account, channel.account_ids[0]) if channel.account_ids else None


@pages.get("/channels/{channel_id}/poster.png")
def poster_image(request: Request, session: SessionDep, viewer: PageViewer, channel_id: Id) -> Response:
    channel = service.get_channel(session, channel_id=channel_id, viewer=viewer)
    face = service.public_face(channel, _first_account(session, channel))
    try:
        body = images.poster_png(title=face.title, incentive=face.incentive, qr_data=_link(request, channel),
                                 qr_image=service.qr_image(channel), badge=(face.persona or face.brand)[:1],
                                 footer=_("Press and hold the QR code to add us"))
    except images.FontMissing as exc:
        raise NotFound("No Chinese font is installed on the server (fonts-noto-cjk); the poster cannot be drawn") \
            from exc
    return _png(body, f"poster-{channel.key}.png")


@pages.get("/c/{key}/qr.png", name="channel_link_qr")
def channel_link_qr(session: SessionDep, key: str) -> Response:
    """The public landing page's QR image: WeCom's 「联系我」 QR kept for the channel."""
    from sqlalchemy import select

    channel = session.scalar(select(Channel).where(Channel.key == key[:30]))
    kept = service.qr_image(channel) if channel is not None else None
    if kept is None:
        raise NotFound("This code is not valid")
    return Response(kept, media_type="image/jpeg" if kept.startswith(b"\xff\xd8") else "image/png",
                    headers={"Cache-Control": "public, max-age=3600"})


@pages.get("/c/{key}", response_class=HTMLResponse, name="channel_link")
def channel_link(request: Request, session: SessionDep, key: str) -> Response:
    """The public page behind a channel's QR: who the customer adds (persona, brand, incentive) and how —
    WeCom's own 「联系我」 QR to press and hold, or the personal account's WeChat ID."""
    from sqlalchemy import select

    channel = session.scalar(select(Channel).where(Channel.key == key[:30]))
    if channel is None:
        raise NotFound("This code is not valid")
    account_id, _alert = service.pick_account(session, channel)
    account = session.get(Account, account_id) if account_id else None
    session.commit()  # the round-robin position moved
    face = service.public_face(channel, account)
    return templates.TemplateResponse(request, "channels/link.html", {
        "face": face, "account": account, "has_qr": bool(channel.qr_image_key),
        "qr_src": str(request.url_for("channel_link_qr", key=channel.key))})


def _report_rows(session: Session, viewer: Viewer, request: Request) -> tuple[list[list[Any]], int]:
    since, until, days = _report_days(request)
    channels = service.list_channels(session, viewer=viewer)
    figures = service.report(session, since=since, until=until, channel_ids=[c.id for c in channels])
    rows = []
    for channel in channels:
        f = figures.get(channel.id) or service.ChannelFigures(channel_id=channel.id)
        rows.append([neutralise(channel.name), f.adds, f.deletions, f.net,
                     "" if f.retained_7 is None else f"{f.retained_7:.0%}",
                     "" if f.retained_30 is None else f"{f.retained_30:.0%}", f.purchasers, f"{f.revenue:.2f}",
                     f"{f.cost:.2f}", "" if f.cost_per_net is None else f"{f.cost_per_net:.2f}",
                     "" if f.roi is None else f"{f.roi:.0%}"])
    return rows, days
