"""线下活动: the API (``/api/v1/offline-events``), the console (``/offline-events``), the staff check-in page
(``/offline-events/checkin/<ticket>``, opened by scanning a sign-up's QR; login required) and the public
sign-up page (``/e/<signed key>``: no login, CSRF-checked, rate-limited per address).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts import service as accounts_service
from siyu.channels.images import qr_png
from siyu.core.db import utcnow
from siyu.core.deps import ApiViewer, CsrfChecked, PageViewer, SessionDep, client_address
from siyu.core.errors import DomainError, Invalid, NotFound, TooManyAttempts
from siyu.core.i18n import N_, _
from siyu.core.ids import Id, parse_id
from siyu.core.ratelimit import SlidingWindow
from siyu.core.settings import local_today, local_zone
from siyu.core.spreadsheet import neutralise
from siyu.core.viewer import Viewer
from siyu.customers.models import Customer
from siyu.offline import service
from siyu.offline.models import (
    EVENT_KIND_LABELS,
    EVENT_STATUS_LABELS,
    SIGNUP_STATUS_LABELS,
    EventStatus,
    OfflineEvent,
    OfflineSignup,
    SignupSource,
)
from siyu.offline.schemas import (
    EventIn,
    EventList,
    EventOut,
    InviteIn,
    InviteOut,
    SignupIn,
    SignupList,
    SignupOut,
)
from siyu.team import service as team_service
from siyu.web.forms import FormDep, FormRead, field_errors
from siyu.web.render import csrf_token, render, templates

api = APIRouter(tags=["offline events"])
pages = APIRouter(include_in_schema=False)
__all__ = ["api", "pages"]

# The public page, per caller address in this process (core.ratelimit): a person opens it a few times and
# signs up once; a script trying phone numbers or flooding the seats is stopped long before it matters. Room
# for a roomful of guests behind one store Wi-Fi (or a carrier's shared address) scanning the poster together.
PUBLIC_RATE = SlidingWindow(seconds=60.0)
PUBLIC_VIEWS_PER_MINUTE = 120
PUBLIC_SIGNUPS_PER_MINUTE = 20
FIELD_LABELS = {"name": N_("Event name"), "kind": N_("Type"), "starts_at": N_("Starts"), "ends_at": N_("Ends"),
                "place": N_("Place"), "capacity": N_("Seats"), "description": N_("About the event"),
                "invite_text": N_("Invitation"), "attended_text": N_("Follow-up for attendees"),
                "no_show_text": N_("Follow-up for no-shows"), "account_ids": N_("Accounts"),
                "phone": N_("Mobile number"), "customer_id": N_("Customer")}
FILTERS = (("", N_("All")), ("registered", N_("Registered")), ("waitlisted", N_("Waiting list")),
           ("attended", N_("Attended")), ("no_show", N_("No-show")), ("review", N_("To review")),
           ("cancelled", N_("offline.status.cancelled")))


def _labels() -> dict[str, Any]:
    return {"kind_labels": {k.value: _(v) for k, v in EVENT_KIND_LABELS.items()},
            "status_labels": {k.value: _(v) for k, v in EVENT_STATUS_LABELS.items()},
            "signup_labels": {k.value: _(v) for k, v in SIGNUP_STATUS_LABELS.items()}}


def public_url(request: Request, event: OfflineEvent) -> str:
    return str(request.url_for("offline_public", key=service.public_key(event)))


def _event_out(request: Request, event: OfflineEvent, c: service.Counts) -> EventOut:
    return EventOut(id=event.id, name=event.name, kind=event.kind, status=event.status,
                    starts_at=event.starts_at, ends_at=event.ends_at, place=event.place, capacity=event.capacity,
                    registered=c.registered, waitlisted=c.waitlisted, checked_in=c.checked_in, invited=c.invited,
                    public_url=public_url(request, event))


def _signup_out(signup: OfflineSignup, viewer: Viewer, created: bool = False) -> SignupOut:
    return SignupOut(id=signup.id, event_id=signup.event_id, customer_id=signup.customer_id, name=signup.name,
                     phone=viewer.phone(signup.phone or ""), status=signup.status, source=signup.source,
                     checked_in_at=signup.checked_in_at, created=created)


# ---------------------------------------------------------------- API


@api.get("/offline-events", response_model=EventList)
def list_events(request: Request, session: SessionDep, viewer: ApiViewer) -> EventList:
    """The events of the viewer's accounts, latest first, with their sign-up and attendance counts."""
    events = service.list_events(session, viewer=viewer)
    found = service.counts(session, [e.id for e in events])
    return EventList(items=[_event_out(request, e, found[e.id]) for e in events])


@api.post("/offline-events", response_model=EventOut, status_code=201)
def create_event(request: Request, session: SessionDep, viewer: ApiViewer, data: EventIn) -> EventOut:
    """A new event (administrators and planners); naive times are Asia/Shanghai local times."""
    event = service.create_event(session, data=data, viewer=viewer)
    session.commit()
    return _event_out(request, event, service.Counts())


@api.get("/offline-events/{event_id}", response_model=EventOut)
def get_event(request: Request, session: SessionDep, viewer: ApiViewer, event_id: Id) -> EventOut:
    event = service.get_event(session, event_id=event_id, viewer=viewer)
    return _event_out(request, event, service.counts(session, [event.id])[event.id])


@api.put("/offline-events/{event_id}", response_model=EventOut)
def update_event(request: Request, session: SessionDep, viewer: ApiViewer, event_id: Id, data: EventIn) -> EventOut:
    event = service.update_event(session, event_id=event_id, data=data, viewer=viewer)
    session.commit()
    return _event_out(request, event, service.counts(session, [event.id])[event.id])


@api.get("/offline-events/{event_id}/signups", response_model=SignupList)
def list_signups(session: SessionDep, viewer: ApiViewer, event_id: Id,
                 status: Annotated[str, Query(max_length=16)] = "") -> SignupList:
    """Sign-ups; ``status``: registered, waitlisted, cancelled, attended, no_show or review."""
    found = service.list_signups(session, event_id=event_id, viewer=viewer, status=status)
    return SignupList(items=[_signup_out(s, viewer) for s in found])


@api.post("/offline-events/{event_id}/signups", response_model=SignupOut, status_code=201)
def add_signup(session: SessionDep, viewer: ApiViewer, event_id: Id, data: SignupIn) -> SignupOut:
    """Sign a customer up (``customer_id``) or a person (``name`` and ``phone``); full: the waiting list."""
    if data.customer_id is not None:
        result = service.sign_up_customer(session, event_id=event_id, customer_id=data.customer_id, viewer=viewer)
    else:
        event = service.get_event(session, event_id=event_id, viewer=viewer)
        result = service.sign_up_person(session, event=event, name=data.name, phone=data.phone,
                                        source=SignupSource.console, viewer=viewer)
    session.commit()
    return _signup_out(result.signup, viewer, created=result.created)


@api.post("/offline-events/{event_id}/signups/{signup_id}/cancel", response_model=SignupOut)
def cancel_signup(session: SessionDep, viewer: ApiViewer, event_id: Id, signup_id: Id) -> SignupOut:
    signup = service.cancel_signup(session, signup_id=signup_id, viewer=viewer)
    if signup.event_id != event_id:
        raise service.SignupNotFound("Sign-up not found")
    session.commit()
    return _signup_out(signup, viewer)


@api.post("/offline-events/{event_id}/invite", response_model=InviteOut)
def invite(request: Request, session: SessionDep, viewer: ApiViewer, event_id: Id, data: InviteIn) -> InviteOut:
    """Invite a segment: a task per customer for their account's operator, with the invitation and link."""
    event = service.get_event(session, event_id=event_id, viewer=viewer)
    result = service.invite_segment(session, event_id=event.id, segment_id=data.segment_id,
                                    link=public_url(request, event), viewer=viewer)
    session.commit()
    return InviteOut(invited=result.invited, already=result.already, no_account=result.no_account,
                     tasks=result.tasks)


@api.post("/offline-events/checkin/{ticket}", response_model=SignupOut)
def api_check_in(session: SessionDep, viewer: ApiViewer, ticket: str) -> SignupOut:
    """Check in the sign-up whose QR was scanned (once; a second scan answers the same sign-up)."""
    done = service.check_in(session, ticket=ticket, viewer=viewer)
    session.commit()
    return _signup_out(done.signup, viewer)


@api.post("/offline-events/{event_id}/follow-up")
def api_follow_up(session: SessionDep, viewer: ApiViewer, event_id: Id) -> dict[str, int]:
    """After the event: follow-up tasks for attendees and no-shows (once)."""
    result = service.follow_up(session, event_id=event_id, viewer=viewer)
    session.commit()
    return {"attended": result.attended, "no_shows": result.no_shows, "unmatched": result.unmatched}


# ---------------------------------------------------------------- console


def _local_input(value: datetime | None) -> str:
    return value.astimezone(local_zone()).strftime("%Y-%m-%dT%H:%M") if value else ""


def _parse_local(text: str, field: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip()).replace(tzinfo=local_zone())
    except ValueError as exc:
        raise Invalid("Enter a date and time", field=field) from exc


def _form_event(form: Any) -> EventIn:
    values = {k: str(form.get(k, "") or "") for k in ("name", "kind", "place", "capacity", "description",
                                                     "invite_text", "attended_text", "no_show_text")}
    accounts = [i for v in form.getlist("account_ids") if isinstance(v, str) and (i := parse_id(v)) is not None]
    return EventIn.model_validate({**values, "capacity": values["capacity"] or "0",
                                   "starts_at": _parse_local(str(form.get("starts_at", "") or ""), "starts_at"),
                                   "ends_at": _parse_local(str(form.get("ends_at", "") or ""), "ends_at"),
                                   "account_ids": accounts})


def _editor(request: Request, session: Session, viewer: Viewer, *, event: OfflineEvent | None,
            values: dict[str, Any], errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    return render(request, "offline/edit.html", status_code=status_code, nav_active="offline",
                  title=event.name if event else _("New offline event"), event=event, values=values,
                  errors=errors or {}, accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  labels={k: _(v) for k, v in FIELD_LABELS.items()}, **_labels())


def _values(event: OfflineEvent) -> dict[str, Any]:
    return {"name": event.name, "kind": event.kind, "starts_at": _local_input(event.starts_at),
            "ends_at": _local_input(event.ends_at), "place": event.place, "capacity": str(event.capacity),
            "description": event.description, "invite_text": event.invite_text,
            "attended_text": event.attended_text, "no_show_text": event.no_show_text,
            "account_ids": list(event.account_ids)}


def _form_values(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    values["account_ids"] = [i for v in form.getlist("account_ids") if isinstance(v, str)
                             and (i := parse_id(v)) is not None]
    return values


@pages.get("/offline-events", response_class=HTMLResponse)
def events_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    events = service.list_events(session, viewer=viewer)
    return render(request, "offline/list.html", nav_active="offline", title=_("Offline events"), events=events,
                  counts=service.counts(session, [e.id for e in events]), now=utcnow(), **_labels())


@pages.get("/offline-events/new", response_class=HTMLResponse)
def new_page(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    return _editor(request, session, viewer, event=None, values={"kind": "tasting", "capacity": "20",
                                                                 "account_ids": []})


@pages.post("/offline-events/new", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def new_submit(request: Request, session: SessionDep, viewer: PageViewer, form: FormDep) -> Response:
    try:
        event = service.create_event(session, data=_form_event(form), viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _editor(request, session, viewer, event=None, values=_form_values(form),
                       errors=field_errors(exc, labels=FIELD_LABELS), status_code=422)
    return RedirectResponse(f"/offline-events/{event.id}", status_code=303)


@pages.get("/offline-events/checkin/{ticket}", response_class=HTMLResponse, name="offline_checkin")
def checkin_page(request: Request, session: SessionDep, viewer: PageViewer, ticket: str) -> Response:
    """What staff's phone opens when it scans a sign-up's QR: who it is, and one button."""
    signup, event = service.signup_for_ticket(session, ticket=ticket, viewer=viewer)
    return render(request, "offline/checkin.html", nav_active="offline", title=_("Check-in"), signup=signup,
                  event=event, done=None, error="", masked=viewer.phone(signup.phone or ""), **_labels())


@pages.post("/offline-events/checkin/{ticket}", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def checkin_submit(request: Request, session: SessionDep, viewer: PageViewer, ticket: str) -> Response:
    try:
        done = service.check_in(session, ticket=ticket, viewer=viewer)
        session.commit()
    except Invalid as exc:
        session.rollback()
        signup, event = service.signup_for_ticket(session, ticket=ticket, viewer=viewer)
        return render(request, "offline/checkin.html", status_code=422, nav_active="offline", title=_("Check-in"),
                      signup=signup, event=event, done=None, error=exc.message,
                      masked=viewer.phone(signup.phone or ""), **_labels())
    return render(request, "offline/checkin.html", nav_active="offline", title=_("Check-in"), signup=done.signup,
                  event=done.event, done=done, error="", masked=viewer.phone(done.signup.phone or ""), **_labels())


def _detail(request: Request, session: Session, viewer: Viewer, event: OfflineEvent, *, message: str = "",
            error: str = "", status_code: int = 200) -> Response:
    from siyu.segments import service as segments_service

    status = request.query_params.get("status", "")
    if status not in {k for k, _label in FILTERS}:
        status = ""
    signups = service.list_signups(session, event_id=event.id, viewer=viewer, status=status)
    customers = {c.id: c for c in session.scalars(select(Customer).where(
        Customer.id.in_(sorted({s.customer_id for s in signups if s.customer_id is not None}))))}
    return render(request, "offline/detail.html", status_code=status_code, nav_active="offline", title=event.name,
                  event=event, c=service.counts(session, [event.id])[event.id], signups=signups, customers=customers,
                  status=status, filters=[(k, _(v)) for k, v in FILTERS], link=public_url(request, event),
                  ended=service.has_ended(event), message=message, error=error,
                  segments=segments_service.list_segments(session, viewer=viewer),
                  accounts=accounts_service.visible_accounts(session, viewer=viewer),
                  phone=viewer.phone, may_edit=viewer.role in service.EDITING_ROLES, **_labels())


@pages.get("/offline-events/{event_id}", response_class=HTMLResponse)
def event_page(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id) -> Response:
    event = service.get_event(session, event_id=event_id, viewer=viewer)
    return _detail(request, session, viewer, event, message=request.query_params.get("message", "")[:200])


@pages.get("/offline-events/{event_id}/edit", response_class=HTMLResponse)
def edit_page(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id) -> Response:
    event = service.get_event(session, event_id=event_id, viewer=viewer)
    return _editor(request, session, viewer, event=event, values=_values(event))


@pages.post("/offline-events/{event_id}/edit", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def edit_submit(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id, form: FormDep) -> Response:
    event = service.get_event(session, event_id=event_id, viewer=viewer)
    try:
        service.update_event(session, event_id=event.id, data=_form_event(form), viewer=viewer)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        return _editor(request, session, viewer, event=service.get_event(session, event_id=event_id, viewer=viewer),
                       values=_form_values(form), errors=field_errors(exc, labels=FIELD_LABELS), status_code=422)
    return RedirectResponse(f"/offline-events/{event_id}", status_code=303)


def _action(request: Request, session: Session, viewer: Viewer, event_id: int, work: Any) -> Response:
    """Run one console action on the event; its message on the page, or the error in place."""
    event = service.get_event(session, event_id=event_id, viewer=viewer)
    try:
        message = work(event)
        session.commit()
    except (ValidationError, DomainError) as exc:
        session.rollback()
        errors = field_errors(exc, labels=FIELD_LABELS)
        return _detail(request, session, viewer, service.get_event(session, event_id=event_id, viewer=viewer),
                       error="；".join(errors.values()), status_code=422)
    from urllib.parse import quote

    return RedirectResponse(f"/offline-events/{event_id}?message={quote(message)}#signups", status_code=303)


@pages.post("/offline-events/{event_id}/signups", dependencies=[FormRead, CsrfChecked])
def signup_submit(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id,
                  form: FormDep) -> Response:
    """An operator signs someone up: a customer by id, or a person by name and mobile number."""
    def work(event: OfflineEvent) -> str:
        customer_text = str(form.get("customer_id", "") or "").strip()
        if customer_text:
            customer_id = parse_id(customer_text)
            if customer_id is None:
                raise Invalid("Enter the customer's number", field="customer_id")
            result = service.sign_up_customer(session, event_id=event.id, customer_id=customer_id, viewer=viewer)
        else:
            result = service.sign_up_person(session, event=event, name=str(form.get("name", "") or ""),
                                            phone=str(form.get("phone", "") or ""), source=SignupSource.console,
                                            viewer=viewer)
        return _signup_message(result)

    return _action(request, session, viewer, event_id, work)


def _signup_message(result: service.SignupResult) -> str:
    if not result.created:
        return _("Already signed up: {name}", name=result.signup.name)
    if result.signup.status == "waitlisted":
        return _("The event is full: {name} is on the waiting list", name=result.signup.name)
    return _("Signed up: {name}", name=result.signup.name)


@pages.post("/offline-events/{event_id}/signups/{signup_id}", dependencies=[FormRead, CsrfChecked])
def signup_action(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id, signup_id: Id,
                  form: FormDep) -> Response:
    """Cancel a sign-up, link it to a customer, or create the customer (for sign-ups no phone matched)."""
    action = str(form.get("action", "") or "")

    def work(event: OfflineEvent) -> str:
        signup, owner = service.get_signup(session, signup_id=signup_id, viewer=viewer)
        if owner.id != event.id:
            raise service.SignupNotFound("Sign-up not found")
        if action == "cancel":
            service.cancel_signup(session, signup_id=signup.id, viewer=viewer)
            return _("Sign-up cancelled: {name}", name=signup.name)
        if action == "link":
            customer_id = parse_id(str(form.get("customer_id", "") or ""))
            if customer_id is None:
                raise Invalid("Enter the customer's number", field="customer_id")
            service.link_customer(session, signup_id=signup.id, customer_id=customer_id, viewer=viewer)
            return _("Linked to the customer: {name}", name=signup.name)
        if action == "create":
            account_id = parse_id(str(form.get("account_id", "") or ""))
            if account_id is None:
                raise Invalid("Choose an account", field="account_id")
            service.create_customer_for(session, signup_id=signup.id, account_id=account_id, viewer=viewer)
            return _("Customer created: {name}", name=signup.name)
        if action == "checkin":
            service.check_in(session, ticket=signup.ticket, viewer=viewer)
            return _("Checked in: {name}", name=signup.name)
        raise Invalid("Unknown action", field="action")

    return _action(request, session, viewer, event_id, work)


@pages.post("/offline-events/{event_id}/invite", dependencies=[FormRead, CsrfChecked])
def invite_submit(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id,
                  form: FormDep) -> Response:
    def work(event: OfflineEvent) -> str:
        segment_id = parse_id(str(form.get("segment_id", "") or ""))
        if segment_id is None:
            raise Invalid("Choose a segment", field="segment_id")
        result = service.invite_segment(session, event_id=event.id, segment_id=segment_id,
                                        link=public_url(request, event), viewer=viewer)
        return _("Invited {n}; {already} already invited or signed up; {none} not friends of its accounts",
                 n=result.invited, already=result.already, none=result.no_account)

    return _action(request, session, viewer, event_id, work)


@pages.post("/offline-events/{event_id}/follow-up", dependencies=[FormRead, CsrfChecked])
def follow_up_submit(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id) -> Response:
    def work(event: OfflineEvent) -> str:
        result = service.follow_up(session, event_id=event.id, viewer=viewer)
        return _("Follow-up tasks created: {attended} attendees, {missed} no-shows", attended=result.attended,
                 missed=result.no_shows)

    return _action(request, session, viewer, event_id, work)


@pages.post("/offline-events/{event_id}/status", dependencies=[FormRead, CsrfChecked])
def status_submit(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id,
                  form: FormDep) -> Response:
    value = str(form.get("status", "") or "")

    def work(event: OfflineEvent) -> str:
        if value == "renew_link":
            service.renew_public_key(session, event_id=event.id, viewer=viewer)
            return _("A new sign-up link was made; the old link and QR no longer work")
        if value not in {s.value for s in EventStatus}:
            raise Invalid("Unknown status", field="status")
        service.set_status(session, event_id=event.id, status=EventStatus(value), viewer=viewer)
        return _(EVENT_STATUS_LABELS[EventStatus(value)])

    return _action(request, session, viewer, event_id, work)


@pages.get("/offline-events/{event_id}/qr.png")
def event_qr(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id) -> Response:
    """The QR of the public sign-up page, to print on a poster or post in a group."""
    event = service.get_event(session, event_id=event_id, viewer=viewer)
    return Response(qr_png(public_url(request, event)), media_type="image/png",
                    headers={"Content-Disposition": f'inline; filename="event-{event.id}.png"'})


@pages.get("/offline-events/{event_id}/signups/{signup_id}/qr.png")
def signup_qr(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id, signup_id: Id) -> Response:
    """A sign-up's check-in QR (to send to the customer when an operator signed them up)."""
    signup, event = service.get_signup(session, signup_id=signup_id, viewer=viewer)
    if event.id != event_id:
        raise service.SignupNotFound("Sign-up not found")
    return Response(qr_png(str(request.url_for("offline_checkin", ticket=signup.ticket))), media_type="image/png")


EXPORT_COLUMNS = (N_("Name"), N_("Mobile number"), N_("Customer"), N_("Status"), N_("Signed up via"),
                  N_("Signed up at"), N_("Checked in at"))


@pages.get("/offline-events/{event_id}/export.csv")
def export_signups(request: Request, session: SessionDep, viewer: PageViewer, event_id: Id) -> Response:
    """Sign-ups and attendance as CSV (phones as this viewer may see them; formulas neutralised)."""
    event = service.get_event(session, event_id=event_id, viewer=viewer)
    signups = service.list_signups(session, event_id=event.id, viewer=viewer)
    names = {c: n for c, n in session.execute(select(Customer.id, Customer.name).where(
        Customer.id.in_(sorted({s.customer_id for s in signups if s.customer_id is not None}))))}
    labels = _labels()["signup_labels"]
    sources = {"console": _("Console"), "public": _("Public page")}
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow([_(c) for c in EXPORT_COLUMNS])
    for s in signups:
        writer.writerow([neutralise(s.name), viewer.phone(s.phone or ""),
                         neutralise(names.get(s.customer_id, "")) if s.customer_id else "",
                         labels.get(s.status, s.status), sources.get(s.source, s.source),
                         s.created_at.astimezone(local_zone()).strftime("%Y-%m-%d %H:%M"),
                         s.checked_in_at.astimezone(local_zone()).strftime("%Y-%m-%d %H:%M")
                         if s.checked_in_at else ""])
    team_service.record_audit(session, actor=viewer, action="export", entity_type="offline_event",
                              entity_id=event.id, entity_name=event.name, after={"rows": len(signups)})
    session.commit()
    filename = f"event-{event.id}-{local_today():%Y%m%d}.csv"
    return Response(out.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# ---------------------------------------------------------------- the public page (no login)


def _limit(request: Request, kind: str, limit: int) -> None:
    if not PUBLIC_RATE.allow((client_address(request), kind), limit):
        raise TooManyAttempts("Too many requests from your network; please wait a minute and try again")


def _public(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    context.update(csrf_token=csrf_token(request), **_labels())
    return templates.TemplateResponse(request, template, context, status_code=status_code)


@pages.get("/e/{key}", response_class=HTMLResponse, name="offline_public")
def public_page(request: Request, session: SessionDep, key: str) -> Response:
    """The event's sign-up page, from a link or QR: what, when, where, seats left, and a name + phone form."""
    _limit(request, "view", PUBLIC_VIEWS_PER_MINUTE)
    event = service.event_for_key(session, key)
    return _public(request, "offline/public.html", event=event, key=key, values={}, errors={},
                   left=max(event.capacity - event.seats_taken, 0))


@pages.post("/e/{key}", response_class=HTMLResponse, dependencies=[FormRead, CsrfChecked])
def public_submit(request: Request, session: SessionDep, key: str, form: FormDep) -> Response:
    _limit(request, "signup", PUBLIC_SIGNUPS_PER_MINUTE)
    event = service.event_for_key(session, key)
    values = {"name": str(form.get("name", "") or "")[:64], "phone": str(form.get("phone", "") or "")[:32]}
    try:
        result = service.sign_up_person(session, event=event, name=values["name"], phone=values["phone"],
                                        source=SignupSource.public)
        session.commit()
    except DomainError as exc:
        session.rollback()
        event = service.event_for_key(session, key)
        return _public(request, "offline/public.html", status_code=422, event=event, key=key, values=values,
                       errors=field_errors(exc, labels=FIELD_LABELS),
                       left=max(event.capacity - event.seats_taken, 0))
    suffix = "" if result.created else "?again=1"
    return RedirectResponse(f"/e/{key}/t/{result.signup.ticket}{suffix}", status_code=303)


def _ticket(session: Session, key: str, ticket: str) -> tuple[OfflineEvent, OfflineSignup]:
    event = service.event_for_key(session, key)
    signup = session.scalar(select(OfflineSignup).where(OfflineSignup.ticket == ticket[:32],
                                                        OfflineSignup.event_id == event.id))
    if signup is None:
        raise NotFound("This sign-up link is not valid or has expired")
    return event, signup


@pages.get("/e/{key}/t/{ticket}", response_class=HTMLResponse, name="offline_ticket")
def public_ticket(request: Request, session: SessionDep, key: str, ticket: str) -> Response:
    """The customer's own sign-up: seat or waiting list, and the QR to show at the door."""
    _limit(request, "view", PUBLIC_VIEWS_PER_MINUTE)
    event, signup = _ticket(session, key, ticket)
    return _public(request, "offline/ticket.html", event=event, signup=signup, key=key,
                   again=request.query_params.get("again") == "1")


@pages.get("/e/{key}/t/{ticket}/qr.png")
def public_ticket_qr(request: Request, session: SessionDep, key: str, ticket: str) -> Response:
    """The door QR: it opens the staff check-in page for this sign-up (staff must be logged in)."""
    _limit(request, "view", PUBLIC_VIEWS_PER_MINUTE)
    _event, signup = _ticket(session, key, ticket)
    return Response(qr_png(str(request.url_for("offline_checkin", ticket=signup.ticket)), box_size=8),
                    media_type="image/png")
