"""Console pages that belong to no single domain: dashboard, language switch, areas not built yet."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from siyu.accounts import service as accounts_service
from siyu.core.deps import PageViewer, SessionDep
from siyu.core.errors import NotFound
from siyu.core.i18n import _, normalise_locale
from siyu.customers import service as customers_service
from siyu.segments import rfm
from siyu.segments.models import RFM_LABELS
from siyu.web.render import render

pages = APIRouter(include_in_schema=False)

# Areas from DESIGN.md that later work builds; the console says so plainly.
PLANNED_AREAS: dict[str, tuple[str, str]] = {}


@pages.get("/", response_class=HTMLResponse)
def dashboard(request: Request, session: SessionDep, viewer: PageViewer) -> Response:
    accounts = accounts_service.list_accounts(session, viewer=viewer)
    stage_counts = customers_service.stage_counts(session, viewer=viewer)
    counts = rfm.distribution(session, scope=customers_service.visible_customer_clause(viewer))
    rfm_chart = {"x": [_(label) for label in RFM_LABELS.values()],
                 "series": [{"name": _("Buyers"), "data": [counts[key.value] for key in RFM_LABELS]}]}
    rfm_links = [(key.value, _(label), counts[key.value]) for key, label in RFM_LABELS.items()]
    from siyu.goals import dashboard as boards  # the role's own 工作台 section (goals, numbers, charts)

    board = boards.build(session, viewer=viewer)
    session.commit()  # the admin figures computed on a first visit before the job ran are kept
    return render(request, "dashboard.html", nav_active="home", accounts=accounts, stage_counts=stage_counts,
                  board=board,
                  rfm_chart=rfm_chart, rfm_links=rfm_links, rfm_total=sum(counts.values()), title=_("Dashboard"))


@pages.get("/lang/{locale}")
def switch_language(request: Request, locale: str) -> Response:
    referer = request.headers.get("referer", "/")
    target = referer if referer.startswith(str(request.base_url)) else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie("siyu_locale", normalise_locale(locale), max_age=365 * 86400, httponly=True,
                        samesite="lax")
    return response


@pages.get("/soon/{area}", response_class=HTMLResponse)
def planned_area(request: Request, area: str, viewer: PageViewer) -> Response:
    if area not in PLANNED_AREAS:
        raise NotFound("Not found")
    title, plan = PLANNED_AREAS[area]
    return render(request, "soon.html", nav_active=area, area_title=_(title), area_plan=_(plan), title=_(title))
