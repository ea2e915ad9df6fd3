"""FastAPI application factory: middleware, static assets, every domain's routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siyu import __version__
from siyu.core import i18n
from siyu.core.body_limit import BodyLimit
from siyu.core.deps import LoginRequired
from siyu.core.errors import install_error_handlers
from siyu.core.openapi import install_openapi
from siyu.core.process import freeze_startup_objects
from siyu.core.settings import get_settings

log = logging.getLogger(__name__)
LOCALE_COOKIE = "siyu_locale"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "same-origin",
    # No inline scripts, nothing from other origins: user text can never become code.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: https:; style-src 'self' 'unsafe-inline'; "
    # frame-ancestors 'self', not 'none': the inbox shows the customer's portrait in a frame of its own.
    "script-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'",
}
# Pages and API answers hold customers' data: no browser or proxy keeps a copy (the back button after
# logout, a shared computer). Static assets are the only responses that may be cached.
NO_STORE = (b"cache-control", b"no-store")



def static_dir() -> Path:
    configured = get_settings().static_dir
    return Path(configured) if configured else Path(__file__).resolve().parent / "web" / "static"


class Locale:
    """Sets the request's locale from its cookie (the security headers are added by ``SiyuApp``).

    A plain ASGI middleware rather than ``@app.middleware("http")``: that one runs each request
    in an extra task and re-wraps the response, which cost a third of a WeCom callback's time.
    """

    def __init__(self, app: ASGIApp, *, default_locale: str) -> None:
        self.app = app
        self.default_locale = default_locale

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            i18n.set_locale(Request(scope).cookies.get(LOCALE_COOKIE) or self.default_locale)
        await self.app(scope, receive, send)


def _with_security_headers(scope: Scope, send: Send) -> Send:
    """``send``, adding the security headers (and ``no-store``) to the response's start."""
    path: str = scope["path"]
    skip_csp = path.startswith("/docs")  # Swagger UI needs its own inline bootstrap
    cacheable = path.startswith("/static/")

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS.items():
                if name not in headers and not (skip_csp and name == "Content-Security-Policy"):
                    headers[name] = value
            if not cacheable and "cache-control" not in headers:
                headers.append("Cache-Control", "no-store")
        await send(message)

    return send_with_headers


class SiyuApp(FastAPI):
    """The FastAPI app, with a few machine-to-machine endpoints served ahead of its whole stack.

    A WeCom callback needs none of the console's middleware, session, routing or error pages,
    and passing through them cost more than verifying and storing it. These endpoints get the
    security headers and a plain error answer here instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_routes: dict[tuple[str, str], ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        endpoint = self.direct_routes.get((scope["method"], scope["path"]))
        if endpoint is None:
            # Outside the whole stack, so error pages (even the 500 of the last-resort handler) get them too.
            await super().__call__(scope, receive, _with_security_headers(scope, send))
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *_ENCODED_SECURITY_HEADERS]
            await send(message)

        try:
            await endpoint(scope, receive, send_with_headers)
        except Exception:  # logged here; the caller sees a plain answer, never a stack trace
            log.exception("%s %s failed", scope["method"], scope["path"])
            if not started:
                await send_with_headers({"type": "http.response.start", "status": 500,
                                         "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": b"internal error"})


_ENCODED_SECURITY_HEADERS = [*((name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()),
                             NO_STORE]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    workers = None
    freeze_startup_objects()
    if get_settings().worker_in_process:
        # Single-machine default: job workers as threads of the web process.
        from siyu.core.jobs import Workers
        from siyu.core.models_registry import load_tasks

        load_tasks()
        workers = Workers()
        workers.start()
    try:
        yield
    finally:
        from siyu.core.jobs import finish_handovers

        finish_handovers()
        if workers is not None:
            workers.stop()


def large_bodies() -> list[tuple[str, int]]:
    """The paths that take files, each with the limit of its largest upload (the rest: SIYU_MAX_BODY_BYTES)."""
    from siyu.channels.service import MAX_CODES_PER_UPLOAD
    from siyu.customers.imports.chat import MAX_BYTES as CHAT_EXPORT_BYTES
    from siyu.customers.imports.routes import MULTIPART_OVERHEAD
    from siyu.customers.imports.service import MAX_UPLOAD_BYTES
    from siyu.library.routes import UPLOAD_BODY_BYTES as LIBRARY_UPLOAD_BYTES

    # A coupon code is at most 64 characters; as JSON or a form, with quotes/escapes and separators.
    codes_bytes = MAX_CODES_PER_UPLOAD * (64 * 3 + 8)
    from siyu.moments.service import IMAGE_MAX_BYTES, IMAGES_MAX

    moments_bytes = IMAGES_MAX * IMAGE_MAX_BYTES * 4 // 3 + MULTIPART_OVERHEAD  # 9 images, as base64 in JSON
    return [
        (r"(/api/v1)?/customers/import", MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD),
        (r"(/api/v1)?/orders/import", MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD),
        (r"(/api/v1)?/customers/[0-9]+/chat-import", CHAT_EXPORT_BYTES + MULTIPART_OVERHEAD),
        (r"(/api/v1)?/channels/[0-9]+/codes", codes_bytes),
        (r"/api/v1/library/materials|/library/(new|[0-9]+)", LIBRARY_UPLOAD_BYTES),
        (r"(/api/v1)?/moments(/new)?", moments_bytes),
    ]


def create_app() -> FastAPI:
    settings = get_settings()
    app = SiyuApp(title="Siyu 私域 API", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> Response:
        # Swagger UI from the npm-installed assets: the console never loads anything from a CDN.
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Siyu 私域 API",
                                   swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="data:,")

    # Added first, so it runs inside the session (an HTML 413 page needs it), before routing,
    # authentication and parsing.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, large_bodies=large_bodies())
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.resolved_secret_key(),
        session_cookie="siyu_session",
        max_age=settings.session_ttl_hours * 3600,
        same_site="lax",
        https_only=settings.cookie_secure,
    )
    from siyu.mp.routes import receive_callback as mp_callback
    from siyu.wecom.routes import receive_callback as wecom_callback

    # Served ahead of everything, each with its own 2 MB cap.
    app.direct_routes = {("POST", "/wecom/callback"): wecom_callback,
                         ("POST", "/mp/callback"): mp_callback, ("GET", "/mp/callback"): mp_callback}
    # Added last, so it runs first: the locale is set before the session is read.
    app.add_middleware(Locale, default_locale=settings.locale)
    install_error_handlers(app)
    install_openapi(app)

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path
        if request.headers.get("hx-request") == "true":
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse(f"/login?next={target}", status_code=303)

    app.mount("/static", StaticFiles(directory=static_dir(), check_dir=False), name="static")

    from siyu.accounts.handover_routes import api as handover_api
    from siyu.accounts.handover_routes import pages as handover_pages
    from siyu.accounts.routes import api as accounts_api
    from siyu.accounts.routes import pages as accounts_pages
    from siyu.autoreply.routes import api as autoreply_api
    from siyu.autoreply.routes import pages as autoreply_pages
    from siyu.channels.routes import api as channels_api
    from siyu.channels.routes import pages as channels_pages
    from siyu.customers.bulk_routes import api as bulk_api
    from siyu.customers.bulk_routes import pages as bulk_pages
    from siyu.customers.exports.routes import api as export_api
    from siyu.customers.exports.routes import pages as export_pages
    from siyu.customers.imports.chat_routes import api as chat_api
    from siyu.customers.imports.chat_routes import pages as chat_pages
    from siyu.customers.imports.routes import api as import_api
    from siyu.customers.imports.routes import pages as import_pages
    from siyu.customers.merge.routes import api as merge_api
    from siyu.customers.merge.routes import pages as merge_pages
    from siyu.customers.pages import pages as customers_pages
    from siyu.customers.routes import api as customers_api
    from siyu.customers.sidebar_routes import pages as sidebar_pages
    from siyu.groups.moderation.routes import api as moderation_api
    from siyu.groups.moderation.routes import pages as moderation_pages
    from siyu.groups.routes import api as groups_api
    from siyu.groups.routes import pages as groups_pages
    from siyu.inbox.routes import api as inbox_api
    from siyu.inbox.routes import pages as inbox_pages
    from siyu.jobs.routes import api as jobs_api
    from siyu.jobs.routes import pages as jobs_pages
    from siyu.library.routes import api as library_api
    from siyu.library.routes import pages as library_pages
    from siyu.maintenance.routes import api as maintenance_api
    from siyu.maintenance.routes import pages as maintenance_pages
    from siyu.moments.routes import api as moments_api
    from siyu.moments.routes import pages as moments_pages
    from siyu.mp.routes import api as mp_api
    from siyu.mp.routes import pages as mp_pages
    from siyu.orders.routes import api as orders_api
    from siyu.orders.routes import pages as orders_pages
    from siyu.segments.routes import api as segments_api
    from siyu.segments.routes import pages as segments_pages
    from siyu.sops.routes import api as sops_api
    from siyu.sops.routes import pages as sops_pages
    from siyu.team.routes import api as team_api
    from siyu.team.routes import pages as team_pages
    from siyu.web.routes import pages as web_pages
    from siyu.wecom.routes import callbacks as wecom_callbacks
    from siyu.wecom.routes import pages as wecom_pages

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # The callback check (GET; POSTs are served ahead of the stack by SiyuApp) and the health check first:
    # the router tries routes in order.
    app.include_router(wecom_callbacks)
    # Fixed paths such as /customers/merge go before /customers/{customer_id}.
    for router in (team_api, accounts_api, handover_api, export_api, import_api, bulk_api, chat_api, merge_api,
                   orders_api, customers_api, jobs_api, inbox_api, autoreply_api, channels_api, groups_api, mp_api,
                   segments_api, maintenance_api, library_api):
        app.include_router(router, prefix="/api/v1")
    app.include_router(moments_api, prefix="/api/v1")
    app.include_router(moderation_api, prefix="/api/v1")
    app.include_router(moderation_pages)  # /groups/rules … before the groups pages' /groups/{group_id}
    # Group operations (issue 22): welcome templates, intake plans, the posts calendar (群SOP).
    from siyu.groups.ops_routes import api as group_ops_api
    from siyu.groups.ops_routes import pages as group_ops_pages

    app.include_router(group_ops_api, prefix="/api/v1")
    app.include_router(group_ops_pages)
    # The console's editing pages (issue 21): /customers/new goes before /customers/{customer_id}.
    from siyu.customers.manual_routes import pages as manual_customer_pages
    from siyu.customers.tag_settings_routes import pages as tag_settings_pages

    app.include_router(manual_customer_pages)
    app.include_router(tag_settings_pages)
    for router in (web_pages, team_pages, accounts_pages, handover_pages, export_pages, import_pages, bulk_pages,
                   chat_pages, sidebar_pages, merge_pages, orders_pages, maintenance_pages, customers_pages,
                   jobs_pages, inbox_pages, autoreply_pages, channels_pages, groups_pages, wecom_pages, mp_pages,
                   segments_pages, library_pages):
        app.include_router(router)
    # 数据分析 (analytics): the metrics API and the console pages.
    from siyu.analytics.routes import api as analytics_api
    from siyu.analytics.routes import pages as analytics_pages

    app.include_router(analytics_api, prefix="/api/v1")
    app.include_router(analytics_pages)
    # 目标 (SMART goals) and the 工作台's chart exports.
    from siyu.goals.routes import api as goals_api
    from siyu.goals.routes import pages as goals_pages

    app.include_router(goals_api, prefix="/api/v1")
    app.include_router(goals_pages)
    app.include_router(moments_pages)
    app.include_router(sops_api, prefix="/api/v1")  # 客户SOP and the send-quota ledger's setting
    app.include_router(sops_pages)
    # 线下活动 (offline events): the API, the console, staff check-in and the public sign-up page /e/<key>.
    from siyu.offline.routes import api as offline_api
    from siyu.offline.routes import pages as offline_pages

    app.include_router(offline_api, prefix="/api/v1")
    app.include_router(offline_pages)
    # 群发 campaigns: mass sends to a segment within the send quota, and what they earned.
    from siyu.campaigns.routes import api as campaigns_api
    from siyu.campaigns.routes import pages as campaigns_pages

    app.include_router(campaigns_api, prefix="/api/v1")
    app.include_router(campaigns_pages)
    # 用户转化 (issue 23): coupons, referral and fission (老带新, 任务宝), lucky draws.
    from siyu.coupons.routes import api as coupons_api
    from siyu.coupons.routes import pages as coupons_pages
    from siyu.draws.routes import api as draws_api
    from siyu.draws.routes import pages as draws_pages
    from siyu.referrals.routes import api as referrals_api
    from siyu.referrals.routes import pages as referrals_pages

    for router in (coupons_api, referrals_api, draws_api):
        app.include_router(router, prefix="/api/v1")
    for router in (coupons_pages, referrals_pages, draws_pages):
        app.include_router(router)

    # Replies to WeCom customers leave through the WeCom connector (while the corp is configured).
    from siyu.wecom import connectors as wecom_connector

    wecom_connector.register()
    # Replies to 公众号 followers leave through the customer-service API (while the appid and AppSecret are set).
    from siyu.mp import service as mp_service

    mp_service.register()

    return app
