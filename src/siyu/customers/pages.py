"""Console pages of the customers domain: the list, the portrait (用户全像), tags & fields.

Why it is shaped this way: a page route parses form or query text, calls
``customers.service`` (where every rule lives) and renders; the API in ``routes.py``
does the same with JSON. Every form works without JavaScript (plain POST, then a
redirect back); with htmx the list filters, the tag editor, the timeline's "more" and
the add-a-touch form swap only the part of the page that changed. Bad input is
answered where the user typed it: the field is named next to the input, with the
submitted text kept so nothing is lost.

The customer page is responsive (one column under 992 px, usable at 320 px);
``?view=sidebar`` renders the same page without the navigation bars, for the WeCom
chat-toolbar app and a phone beside the personal-WeChat chat window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, QueryParams

from siyu.accounts import service as accounts_service
from siyu.core.deps import AdminPageViewer, CsrfChecked, PageViewer, SessionDep
from siyu.core.errors import DomainError, Invalid
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_id
from siyu.core.settings import get_settings, local_zone
from siyu.core.viewer import Viewer
from siyu.customers import jobs as customers_jobs
from siyu.customers import service
from siyu.customers.filters import filter_from_params
from siyu.customers.lifecycle import LifecycleRules
from siyu.customers.merge.service import PORTRAIT_LABELS
from siyu.customers.models import MANUAL_KINDS, Customer, FieldType, Stage, Touch
from siyu.customers.schemas import (
    AddressIn,
    AttachmentIn,
    CustomerUpdate,
    CustomFieldIn,
    TagGroupIn,
    TagIn,
    TouchIn,
)
from siyu.customers.service import CustomerFilter
from siyu.segments import service as segments_service
from siyu.segments.models import RFM_LABELS
from siyu.team import service as team_service
from siyu.web import forms
from siyu.web.forms import FormDep, FormRead
from siyu.web.render import render

pages = APIRouter(include_in_schema=False)

LIST_LIMIT = 50
TIMELINE_LIMIT = 20
SORT_LABELS = {"last_touch": N_("Last touch"), "created": N_("Newest"), "name": N_("Name")}

# Labels of the portrait's fields, for forms, errors and the timeline's "fields changed".
FIELD_LABELS = {
    **PORTRAIT_LABELS,
    "remark_name": N_("Remark name"),
    "salutation": N_("Salutation"),
    "description": N_("Description"),
    "phones": N_("Phones"),
    "account_id": N_("Account"),
    "tags": N_("Tags"),
    "kind": N_("Kind"),
    "content": N_("Content"),
    "amount": N_("Amount"),
    "occurred_at": N_("Time"),
    "label": N_("Label"),
    "recipient": N_("Recipient"),
    "phone": N_("Phone"),
    "region": N_("Region"),
    "detail": N_("Address"),
    "title": N_("Title"),
    "url": N_("Link"),
    "key": N_("Key"),
    "field_type": N_("Type"),
    "choices": N_("Choices"),
    "multi_select": N_("Multiple choice"),
    "new_tag": N_("New tag"),
    "cursor": N_("Page"),
    "sort": N_("Sort"),
    "stage": N_("Stage"),
    "stage_override": N_("Stage"),
    "owner_id": N_("Owner"),
    "segment": N_("Segment"),
    "rfm": N_("RFM segment"),
    "last_touch_before": N_("Last touch before"),
    "last_touch_after": N_("Last touch on or after"),
    "user_min_contacts": N_("Contacts to become a user"),
    "customer_min_purchases": N_("Purchases to become a customer"),
    "fan_min_purchases": N_("Purchases to become a fan"),
    "fan_min_contacts": N_("Contacts to become a fan"),
    "fan_new_launch_days": N_("Days after a launch in which buying it makes a fan (0: off)"),
    "contact_buckets": N_("Contact-count tags"),
    "purchase_buckets": N_("Purchase-count tags"),
    "levels": N_("Levels"),
}
PORTRAIT_TEXT_FIELDS = ("name", "wechat_id", "gender", "age_band", "city", "job", "income_band", "family",
                        "source")
PORTRAIT_NOTE_FIELDS = ("objective_notes", "emotional_notes")


# ---------------------------------------------------------------- small parsing helpers


def _text(form: FormData | QueryParams, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _texts(form: FormData | QueryParams, key: str) -> list[str]:
    return [v for v in form.getlist(key) if isinstance(v, str)]


def _int_or_none(raw: str, *, field_name: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if parse_id(raw) is None:
        raise Invalid("Invalid value for {label}", field=field_name,
                      label=forms.field_label(field_name, labels=FIELD_LABELS))
    return int(raw)


def _local_day_start(raw: str, *, field_name: str) -> datetime | None:
    """A date input (YYYY-MM-DD) as the start of that day in the console's time zone."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError as exc:
        raise Invalid("Invalid date {value}; use the form 2024-05-01", field=field_name, value=raw[:40]) from exc
    return datetime.combine(day, time.min, tzinfo=local_zone())


def _local_datetime(raw: str, *, field_name: str) -> datetime | None:
    """A datetime-local input (YYYY-MM-DDTHH:MM) in the console's time zone."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise Invalid("Invalid time {value}; use the form 2024-05-01 14:30", field=field_name,
                      value=raw[:40]) from exc
    return value if value.tzinfo else value.replace(tzinfo=local_zone())


def field_errors(exc: ValidationError | DomainError, *, custom_labels: dict[str, str] | None = None,
                 default_field: str = "form", labels: dict[str, str] | None = None) -> dict[str, str]:
    """``web.forms.field_errors`` with the customer forms' own field labels by default."""
    return forms.field_errors(exc, custom_labels=custom_labels, default_field=default_field,
                              labels=labels if labels is not None else FIELD_LABELS)


def _view(raw: str) -> str:
    """The only alternative layout is the sidebar; anything else is the full page."""
    return "sidebar" if raw == "sidebar" else ""


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


# ---------------------------------------------------------------- customer list


@dataclass
class ListQuery:
    """The list's query string as typed, so the form shows exactly what was asked."""

    q: str = ""
    tags: list[str] = field(default_factory=list)
    stage: str = ""
    account_id: str = ""
    source: str = ""
    after: str = ""
    before: str = ""
    sort: str = "last_touch"
    cursor: str = ""
    segment: str = ""  # a saved segment's id (segments.compiler compiles it beside the rest)
    rfm: str = ""

    @classmethod
    def from_params(cls, params: FormData | QueryParams) -> ListQuery:
        return cls(q=_text(params, "q")[:200], tags=[t for t in _texts(params, "tag") if t.strip()],
                   stage=_text(params, "stage"), account_id=_text(params, "account_id"),
                   source=_text(params, "source")[:64], after=_text(params, "last_touch_after"),
                   before=_text(params, "last_touch_before"), sort=_text(params, "sort") or "last_touch",
                   cursor=_text(params, "cursor"), segment=_text(params, "segment"),
                   rfm=_text(params, "rfm")[:32])

    def to_filter(self) -> CustomerFilter:
        account_id = _int_or_none(self.account_id, field_name="account_id")
        return filter_from_params(
            self.q, self.tags, self.stage or None, account_id, self.source or None,
            _local_day_start(self.before, field_name="last_touch_before"),
            _local_day_start(self.after, field_name="last_touch_after"), self.sort,
            _int_or_none(self.segment, field_name="segment"), self.rfm or None)

    def pairs(self, *, cursor: str | None = None) -> list[tuple[str, str]]:
        pairs = [("q", self.q)] + [("tag", t) for t in self.tags] + [
            ("stage", self.stage), ("account_id", self.account_id), ("source", self.source),
            ("last_touch_after", self.after), ("last_touch_before", self.before), ("segment", self.segment),
            ("rfm", self.rfm)]
        pairs = [(k, v) for k, v in pairs if v]
        if self.sort != "last_touch":
            pairs.append(("sort", self.sort))
        if cursor:
            pairs.append(("cursor", cursor))
        return pairs

    def url(self, *, cursor: str | None = None) -> str:
        query = urlencode(self.pairs(cursor=cursor))
        return f"/customers?{query}" if query else "/customers"

    def export_url(self, fmt: str) -> str:
        """The export of this list (every page of it) as ``csv`` or ``xlsx``."""
        query = urlencode(self.pairs())
        return f"/customers/export.{fmt}?{query}" if query else f"/customers/export.{fmt}"

    @property
    def selected_tags(self) -> set[str]:
        return set(self.tags)


@pages.get("/customers", response_class=HTMLResponse)
def customer_list(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    query = ListQuery.from_params(request.query_params)
    error: str | None = None
    items: list[Any] = []
    next_cursor: str | None = None
    count: service.CountResult | None = None
    status = 200
    try:
        flt = query.to_filter()
        service.check_search_rate(viewer, flt.q)
        count = service.count_customers(session, flt=flt, viewer=viewer,
                                        cap=get_settings().list_exact_count_limit)
        page = service.list_customers(session, flt=flt, viewer=viewer, limit=LIST_LIMIT,
                                      cursor=query.cursor or None)
        items = service.to_summaries(session, customers=page.items, viewer=viewer)
        next_cursor = page.next_cursor
    except DomainError as exc:
        session.rollback()
        error = exc.message
        status = 422 if exc.status_code < 422 else exc.status_code  # 429: too many searches
    context: dict[str, Any] = {
        "query": query, "items": items, "count": count, "error": error, "title": _("Customers"),
        "next_url": query.url(cursor=next_cursor) if next_cursor else None,
        "first_url": query.url() if query.cursor else None,
        "account_names": service.account_names(session), "nav_active": "customers",
    }
    partial = (_is_htmx(request) and request.headers.get("hx-target") == "results"
               and request.headers.get("hx-history-restore-request") != "true")
    if partial:
        return render(request, "customers/_results.html", status_code=status, **context)
    context.update(
        tag_groups=service.list_tag_groups(session), stages=[s.value for s in Stage],
        accounts=accounts_service.visible_accounts(session, viewer=viewer), sort_labels=SORT_LABELS,
        rfm_labels=RFM_LABELS, segments=segments_service.list_segments(session, viewer=viewer))
    return render(request, "customers/list.html", status_code=status, **context)


# ---------------------------------------------------------------- the portrait


@dataclass
class TimelineEntry:
    touch: Touch
    operator: str
    account: str
    content: str = ""  # the touch's text as the viewer may see it (phones masked for 客服)
    details: dict[str, Any] | None = None
    channel: str = ""  # the name of the channel a friend-add came through (its state is a code)


@dataclass
class Timeline:
    entries: list[TimelineEntry]
    next_cursor: str | None


def _timeline(session: Session, *, customer_id: int, viewer: Viewer, cursor: str | None = None,
              limit: int = TIMELINE_LIMIT) -> Timeline:
    page = service.list_touches(session, customer_id=customer_id, viewer=viewer, limit=limit, cursor=cursor)
    return Timeline(entries=_entries(session, page.items, viewer), next_cursor=page.next_cursor)


def _entries(session: Session, touches: list[Touch], viewer: Viewer) -> list[TimelineEntry]:
    names = team_service.display_names(session, user_ids={t.user_id for t in touches if t.user_id})
    accounts = service.account_names(session) if any(t.account_id for t in touches) else {}
    states = {str(t.details.get("state")) for t in touches if isinstance(t.details, dict) and t.details.get("state")}
    channels = service.channel_names(session, states=states)
    return [TimelineEntry(touch=t, operator=names.get(t.user_id, "") if t.user_id else _who_else(t),
                          account=accounts.get(t.account_id, "") if t.account_id else "",
                          content=service.touch_content(t, viewer), details=service.touch_details(t, viewer),
                          channel=channels.get(str(t.details.get("state") or ""), "")
                          if isinstance(t.details, dict) else "")
            for t in touches]


def _who_else(touch: Touch) -> str:
    """A touch without a colleague: the customer's own messages, or the system."""
    if isinstance(touch.details, dict) and touch.details.get("direction") == "customer":
        return _("The customer")
    return _("System")


@dataclass
class FormState:
    """What the user sent to one form and what was wrong with it, to render it again."""

    form: str = ""  # which form: portrait, remark, address, attachment, touch, tags
    account_id: int | None = None  # which friendship's remark form
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def value(self, name: str, default: Any = "") -> Any:
        return self.values.get(name, default)


def _detail_context(session: Session, *, customer: Customer, viewer: Viewer, state: FormState | None = None,
                    touches_cursor: str | None = None, view: str = "", notice: str = "") -> dict[str, Any]:
    detail = service.to_detail(session, customer=customer, viewer=viewer)
    custom_fields = service.list_custom_fields(session)
    tag_ids = {t.id for t in detail.tags}
    return {
        **_label_context(custom_fields),
        "customer": detail,
        "customer_id": customer.id,
        "touches_cursor": touches_cursor or "",
        "mask_phone": service.mask_phone,
        "tag_groups": service.list_tag_groups(session),
        "tag_ids": tag_ids,
        "custom_fields": custom_fields,
        "timeline": _timeline(session, customer_id=customer.id, viewer=viewer, cursor=touches_cursor),
        "touch_kinds": [k.value for k in MANUAL_KINDS],
        "state": state or FormState(),
        "may_see_phones": viewer.may_see_phones,
        "view": _view(view),
        "notice": notice,
        "title": customer.name,
        "nav_active": "customers",
        "now_local": datetime.now(local_zone()).strftime("%Y-%m-%dT%H:%M"),
        **_groups_context(session, customer_id=customer.id, viewer=viewer),
    }


def _groups_context(session: Session, *, customer_id: int, viewer: Viewer) -> dict[str, Any]:
    """The customer's groups and their role in each (groups.registry), for the portrait's 社群 card."""
    from siyu.groups import registry

    return {"customer_groups": registry.memberships(session, customer_id=customer_id, viewer=viewer),
            "group_role_labels": {k.value: _(v) for k, v in registry.ROLE_LABELS.items()},
            "group_kind_labels": {k.value: _(v) for k, v in registry.KIND_LABELS.items()}}


def _label_context(custom_fields: list[Any]) -> dict[str, Any]:
    custom_labels = {f.key: f.label for f in custom_fields}
    return {"field_label": lambda name: forms.field_label(name, custom_labels, FIELD_LABELS)}


def _render_detail(request: Request, session: Session, *, customer_id: int, viewer: Viewer, status_code: int = 200,
                   state: FormState | None = None, view: str = "", touches_cursor: str | None = None,
                   notice: str = "") -> Response:
    customer = service.get_customer(session, customer_id=customer_id, viewer=viewer)
    context = _detail_context(session, customer=customer, viewer=viewer, state=state, view=view,
                              touches_cursor=touches_cursor, notice=notice)
    return render(request, "customers/detail.html", status_code=status_code, **context)


def _back(customer_id: int, view: str, anchor: str = "", **params: str) -> RedirectResponse:
    query = {k: v for k, v in params.items() if v}
    if view == "sidebar":
        query["view"] = "sidebar"
    target = f"/customers/{customer_id}"
    if query:
        target += "?" + urlencode(query)
    return RedirectResponse(target + (f"#{anchor}" if anchor else ""), status_code=303)


NOTICES = {"saved": N_("Saved."), "address": N_("Address added."), "address-deleted": N_("Address deleted."),
           "attachment": N_("Attachment added."), "touch": N_("Touch added to the timeline."),
           "tags": N_("Tags updated."),
           "follow-up": N_("Follow-up scheduled: it appears in 今日任务 on its day."),
           "follow-up-invalid": N_("A follow-up needs an account and 1 to 365 days.")}


@pages.get("/customers/{customer_id}", response_class=HTMLResponse)
def customer_page(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id, view: str = "",
                  touches_cursor: str | None = None, done: str = "") -> Response:
    notice = _(NOTICES[done]) if done in NOTICES else ""
    return _render_detail(request, session, customer_id=customer_id, viewer=viewer, view=view,
                          touches_cursor=touches_cursor or None, notice=notice)


def _portrait_update(form: FormData, custom_keys: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in (*PORTRAIT_TEXT_FIELDS, *PORTRAIT_NOTE_FIELDS):
        if name in form:
            data[name] = _text(form, name) if name in PORTRAIT_NOTE_FIELDS else _text(form, name).strip()
    custom = {key: _text(form, f"custom.{key}") for key in custom_keys if f"custom.{key}" in form}
    if custom:
        data["custom_fields"] = custom
    return data


def _split_phones(raw: str) -> list[str]:
    for sep in (",", "，", "、", ";", "；"):
        raw = raw.replace(sep, "\n")
    return [p.strip() for p in raw.splitlines() if p.strip()]


@pages.post("/customers/{customer_id}", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def customer_update(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                    form: FormDep) -> Response:
    """The portrait form (facts, notes, custom fields) or one friendship's remark form."""
    service.get_customer(session, customer_id=customer_id, viewer=viewer)  # 404 before anything else
    section = "remark" if _text(form, "section") == "remark" else "portrait"
    view = _view(_text(form, "view"))
    custom_fields = service.list_custom_fields(session)
    values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"}
    state = FormState(form=section, values=values)
    try:
        if section == "remark":
            state.account_id = _int_or_none(_text(form, "account_id"), field_name="account_id")
            data: dict[str, Any] = {"account_id": state.account_id, "remark_name": _text(form, "remark_name").strip(),
                                    "description": _text(form, "description")}
            if "salutation" in form:
                data["salutation"] = _text(form, "salutation")
            if viewer.may_see_phones and "phones" in form:
                data["phones"] = _split_phones(_text(form, "phones"))
        else:
            data = _portrait_update(form, [f.key for f in custom_fields])
        update = CustomerUpdate.model_validate(data)
        service.update_customer(session, customer_id=customer_id, data=update, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        state.errors = field_errors(exc, custom_labels={f.key: f.label for f in custom_fields})
        return _render_detail(request, session, customer_id=customer_id, viewer=viewer, status_code=422,
                              state=state, view=view)
    return _back(customer_id, view, "portrait" if section == "portrait" else "remarks", done="saved")


def _facts_and_tags(session: Session, *, customer_id: int, viewer: Viewer) -> dict[str, Any]:
    customer = service.get_customer(session, customer_id=customer_id, viewer=viewer)
    detail = service.to_detail(session, customer=customer, viewer=viewer)
    return {"customer": detail, "customer_id": customer.id, "tag_groups": service.list_tag_groups(session),
            "tag_ids": {t.id for t in detail.tags}, **_label_context(service.list_custom_fields(session))}


def _ids(raw: list[str], *, field_name: str) -> list[int]:
    ids = []
    for value in raw:
        parsed = _int_or_none(value, field_name=field_name)
        if parsed is not None:
            ids.append(parsed)
    return ids


@pages.post("/customers/{customer_id}/tags", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def customer_tags_change(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                         form: FormDep) -> Response:
    """Tag chips: ``add``/``remove`` carry tag ids; ``new_tag`` is ``组:标签`` text (created if new)."""
    service.get_customer(session, customer_id=customer_id, viewer=viewer)
    view = _view(_text(form, "view"))
    new_tag = _text(form, "new_tag").strip()
    try:
        add = service.get_tags(session, tag_ids=_ids(_texts(form, "add"), field_name="tags"))
        remove = service.get_tags(session, tag_ids=_ids(_texts(form, "remove"), field_name="tags"))
        if new_tag:
            add += service.resolve_tags(session, names=[new_tag[:130]])
        added, removed = service.set_customer_tags(session, customer_id=customer_id, add=add, remove=remove,
                                                   viewer=viewer)
        session.commit()
    except DomainError as exc:
        session.rollback()
        if _is_htmx(request):
            return _htmx_error(request, "#tag-errors", exc.message)
        state = FormState(form="tags", values={"new_tag": new_tag}, errors={"tags": exc.message})
        return _render_detail(request, session, customer_id=customer_id, viewer=viewer, status_code=422,
                              state=state, view=view)
    if not _is_htmx(request):
        return _back(customer_id, view, "tags", done="tags")
    context = _facts_and_tags(session, customer_id=customer_id, viewer=viewer)
    new_entries: list[TimelineEntry] = []
    if added or removed:
        latest = service.list_touches(session, customer_id=customer_id, viewer=viewer, limit=1).items
        new_entries = _entries(session, latest, viewer)
    return render(request, "customers/_tags_changed.html", new_entries=new_entries, view=view,
                  state=FormState(), **context)


def _htmx_error(request: Request, target: str, message: str) -> Response:
    response = render(request, "partials/error_alert.html", status_code=422, message=message)
    response.headers["HX-Retarget"] = target
    response.headers["HX-Reswap"] = "innerHTML"
    return response


@pages.post("/customers/{customer_id}/touches", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def customer_touch_add(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                       form: FormDep) -> Response:
    service.get_customer(session, customer_id=customer_id, viewer=viewer)
    view = _view(_text(form, "view"))
    values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"}
    amount_raw = _text(form, "amount").strip()
    try:
        amount: Decimal | None = None
        if amount_raw:
            try:
                amount = Decimal(amount_raw.replace(",", "").replace("¥", "").replace("￥", ""))
            except InvalidOperation as exc:
                raise Invalid("{label} must be a number", field="amount", label=_("Amount")) from exc
        data = TouchIn.model_validate({
            "kind": _text(form, "kind"), "content": _text(form, "content"), "amount": amount,
            "account_id": _int_or_none(_text(form, "account_id"), field_name="account_id"),
            "occurred_at": _local_datetime(_text(form, "occurred_at"), field_name="occurred_at")})
        touch = service.add_touch(session, customer_id=customer_id, data=data, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        errors = field_errors(exc)
        if _is_htmx(request):
            return _htmx_error(request, "#touch-errors", "；".join(errors.values()))
        state = FormState(form="touch", values=values, errors=errors)
        return _render_detail(request, session, customer_id=customer_id, viewer=viewer, status_code=422,
                              state=state, view=view)
    if not _is_htmx(request):
        return _back(customer_id, view, "timeline", done="touch")
    context = _facts_and_tags(session, customer_id=customer_id, viewer=viewer)
    return render(request, "customers/_touch_added.html", new_entries=_entries(session, [touch], viewer), view=view,
                  state=FormState(), **context)


@pages.get("/customers/{customer_id}/touches", response_class=HTMLResponse)
def customer_timeline_more(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                           cursor: str | None = None, view: str = "") -> Response:
    """The timeline's next page: entries for htmx to append; without htmx, the page at that point."""
    view = _view(view)
    if not _is_htmx(request):
        return _back(customer_id, view, "timeline", touches_cursor=cursor or "")
    timeline = _timeline(session, customer_id=customer_id, viewer=viewer, cursor=cursor or None)
    return render(request, "customers/_timeline_more.html", timeline=timeline, customer_id=customer_id,
                  view=view, **_label_context(service.list_custom_fields(session)))


@pages.post("/customers/{customer_id}/addresses", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def customer_address_add(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                         form: FormDep) -> Response:
    service.get_customer(session, customer_id=customer_id, viewer=viewer)
    view = _view(_text(form, "view"))
    values = {k: _text(form, k).strip() for k in ("label", "recipient", "phone", "region", "detail")}
    try:
        service.add_address(session, customer_id=customer_id, data=AddressIn.model_validate(values), viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        state = FormState(form="address", values=values, errors=field_errors(exc))
        return _render_detail(request, session, customer_id=customer_id, viewer=viewer, status_code=422,
                              state=state, view=view)
    return _back(customer_id, view, "addresses", done="address")


@pages.post("/customers/{customer_id}/addresses/{address_id}/delete", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def customer_address_delete(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                            address_id: Id, form: FormDep) -> Response:
    service.delete_address(session, customer_id=customer_id, address_id=address_id, viewer=viewer)
    session.commit()
    return _back(customer_id, _view(_text(form, "view")), "addresses", done="address-deleted")


@pages.post("/customers/{customer_id}/attachments", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def customer_attachment_add(request: Request, session: SessionDep, viewer: PageViewer, customer_id: Id,
                            form: FormDep) -> Response:
    service.get_customer(session, customer_id=customer_id, viewer=viewer)
    view = _view(_text(form, "view"))
    values = {k: _text(form, k).strip() for k in ("account_id", "kind", "title", "url")}
    try:
        data = AttachmentIn.model_validate({
            **values, "account_id": _int_or_none(values["account_id"], field_name="account_id")})
        service.add_attachment(session, customer_id=customer_id, data=data, viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        state = FormState(form="attachment", values=values, errors=field_errors(exc))
        return _render_detail(request, session, customer_id=customer_id, viewer=viewer, status_code=422,
                              state=state, view=view)
    return _back(customer_id, view, "attachments", done="attachment")


# ---------------------------------------------------------------- tags, fields and lifecycle rules


SETTINGS_NOTICES = {"group": N_("Tag group created."), "tag": N_("Tag created."), "field": N_("Custom field created."),
                    "tag_saved": N_("Tag renamed."), "tag_merged": N_("Tags merged: every customer carried over."),
                    "tag_deleted": N_("Tag deleted."), "group_saved": N_("Tag group renamed."),
                    "group_deleted": N_("Tag group deleted."), "field_saved": N_("Custom field saved.")}


def _settings_page(request: Request, session: Session, viewer: Viewer, *, status_code: int = 200,
                   state: FormState | None = None, notice: str = "", job_link: str | None = None) -> Response:
    return render(request, "customers/settings_tags.html", job_link=job_link, status_code=status_code,
                  nav_active="tags",
                  title=_("Tags & fields"), tag_groups=service.list_tag_groups(session),
                  custom_fields=service.list_custom_fields(session, include_retired=True),
                  rules=service.get_rules(session),
                  field_types=[t.value for t in FieldType], is_admin=viewer.is_admin, state=state or FormState(),
                  notice=notice, labels=FIELD_LABELS)


@pages.get("/settings/tags", response_class=HTMLResponse)
def settings_tags(request: Request, session: SessionDep, viewer: PageViewer, done: str = "",
                  job: int | None = None) -> Response:
    notice = _(SETTINGS_NOTICES[done]) if done in SETTINGS_NOTICES else ""
    job_link = None
    if done == "rules":
        notice = _("Rules saved; every customer is being recomputed in the background.")
        job_link = f"/jobs/{job}" if job else None
    return _settings_page(request, session, viewer, notice=notice, job_link=job_link)


def _settings_error(request: Request, session: Session, viewer: Viewer, form_name: str, values: dict[str, str],
                    exc: ValidationError | DomainError) -> Response:
    session.rollback()
    state = FormState(form=form_name, values=values, errors=field_errors(exc))
    return _settings_page(request, session, viewer, status_code=422, state=state)


@pages.post("/settings/tags/groups", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def settings_group_create(request: Request, session: SessionDep, viewer: AdminPageViewer,
                          form: FormDep) -> Response:
    values = {"name": _text(form, "name").strip(), "multi_select": _text(form, "multi_select")}
    try:
        data = TagGroupIn(name=values["name"], multi_select=values["multi_select"] == "1")
        service.create_tag_group(session, name=data.name, multi_select=data.multi_select, actor=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        return _settings_error(request, session, viewer, "group", values, exc)
    return RedirectResponse("/settings/tags?done=group#groups", status_code=303)


@pages.post("/settings/tags/groups/{group_id}/tags", response_class=HTMLResponse,
            dependencies=[FormRead, CsrfChecked])
def settings_tag_create(request: Request, session: SessionDep, viewer: PageViewer, group_id: Id,
                        form: FormDep) -> Response:
    values = {"name": _text(form, "name").strip(), "group_id": str(group_id)}
    try:
        data = TagIn(name=values["name"])
        service.create_tag(session, group_id=group_id, name=data.name, actor=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        return _settings_error(request, session, viewer, f"tag-{group_id}", values, exc)
    return RedirectResponse(f"/settings/tags?done=tag#group-{group_id}", status_code=303)


@pages.post("/settings/fields", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def settings_field_create(request: Request, session: SessionDep, viewer: AdminPageViewer,
                          form: FormDep) -> Response:
    values = {k: _text(form, k).strip() for k in ("key", "label", "field_type", "choices")}
    try:
        data = CustomFieldIn.model_validate({**values, "choices": _split_phones(values["choices"])})
        service.create_custom_field(session, data=data, actor=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        return _settings_error(request, session, viewer, "field", values, exc)
    return RedirectResponse("/settings/tags?done=field#fields", status_code=303)


def _rule_rows(form: FormData, name: str, min_key: str) -> list[dict[str, str]]:
    mins, labels = _texts(form, f"{name}.{min_key}"), _texts(form, f"{name}.label")
    rows = []
    for raw_min, label in zip(mins, labels, strict=False):
        if raw_min.strip() or label.strip():
            rows.append({min_key: raw_min.strip(), "label": label.strip()})
    return rows


@pages.post("/settings/rules", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def settings_rules_save(request: Request, session: SessionDep, viewer: AdminPageViewer,
                        form: FormDep) -> Response:
    raw: dict[str, Any] = {k: _text(form, k).strip() for k in
                           ("user_min_contacts", "customer_min_purchases", "fan_min_purchases", "fan_min_contacts")}
    # A form from before this field existed keeps the stored value.
    raw["fan_new_launch_days"] = (_text(form, "fan_new_launch_days").strip()
                                  or service.get_rules(session).fan_new_launch_days)
    raw["contact_buckets"] = _rule_rows(form, "contact_buckets", "min")
    raw["purchase_buckets"] = _rule_rows(form, "purchase_buckets", "min")
    raw["levels"] = _rule_rows(form, "levels", "min_total")
    try:
        rules = LifecycleRules.model_validate(raw)
        service.save_rules(session, rules=rules, actor=viewer)
        job_id = customers_jobs.submit_recompute(session, actor=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        state = FormState(form="rules", values=raw, errors=field_errors(exc, default_field="rules"))
        return _settings_page(request, session, viewer, status_code=422, state=state)
    return RedirectResponse(f"/settings/tags?done=rules&job={job_id}#rules", status_code=303)
