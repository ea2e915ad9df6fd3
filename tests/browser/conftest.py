"""A live Siyu server and Debian's Chromium for the browser tests (marker ``browser``).

The server runs uvicorn in a background thread on a free port, against its own
migrated SQLite file seeded through the real services (the same factories as the
fast tests). It uses its own engine through a dependency override, so the fast tests'
per-test databases never touch it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from siyu.core import db as core_db
from siyu.core.db import get_session, make_engine
from siyu.core.migrate import upgrade
from siyu.core.settings import get_settings
from siyu.customers import service as customers_service
from tests.conftest import TEST_PASSWORD, Factory

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class LiveSite:
    url: str
    password: str
    ids: dict[str, int] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed(session: Session) -> dict[str, int]:
    customers_service.ensure_default_tag_groups(session)
    session.commit()
    make = Factory(session)
    admin = make.user("admin", username="admin")
    make.user("operator", username="xiaoman")
    shop = make.account(display_name="山野茶舍·西湖店", positioning="茶小满：门店福利官", signature="每天一杯好茶",
                        greeting="你好呀，我是茶小满～", friend_capacity=20, owner_user_id=admin.id)
    online = make.account(display_name="山野茶舍·线上", kind="personal", wecom_userid=None, friend_capacity=5000)
    ids = {}
    wangfang = make.customer(shop, name="王芳", remark_name="王芳-两娃宝妈爱岩茶", salutation="王姐",
                             tags=["来源:门店", "人群:宝妈"],
                             phones=["13812341234"], description="住西湖边，周末常带孩子来店里。", city="杭州",
                             emotional_notes="说话温柔，喜欢听茶的故事")
    ids["wangfang"] = wangfang.id
    ids["lina"] = make.customer(shop, name="李娜", remark_name="李娜-白领午休喝茶", tags=["来源:门店", "人群:白领"]).id
    ids["zhangwei"] = make.customer(online, name="张伟", remark_name="张伟-包裹卡宝爸",
                                    tags=["来源:包裹卡", "人群:宝妈"]).id
    for n in range(12):
        customer = make.customer(online if n % 2 else shop, name=f"顾客{n:02d}", remark_name=f"顾客{n:02d}-学生党",
                                 tags=["来源:线上广告", "人群:学生"])
        if n % 3 == 0:
            make.touch(customer, kind="chat", content="问了新品")
    make.touch(wangfang, kind="purchase", content="明前龙井 250g", amount="368", account_id=shop.id)
    ids["nasty"] = make.customer(online, name="<script>alert(1)</script>🍵 مرحبا",
                                 remark_name="<img src=x onerror=alert(1)>").id
    # The service inbox: two agents on the store account and a quick reply.
    from siyu.inbox.models import CannedReply

    make.user("service", username="kefu.a", accounts=[shop])
    make.user("service", username="kefu.b", accounts=[shop])
    session.add(CannedReply(shortcut="hi", title="问候", body="{称呼}您好，我是{账号}，有什么可以帮您？"))
    session.commit()
    ids["shop"] = shop.id
    ids["online"] = online.id
    from siyu.channels import service as channels_service
    session.get(type(online), online.id).wechat_id = "shanye-online"  # type: ignore[union-attr]
    # The row itself: saving through the service would queue the contact-way job against another database.
    from siyu.channels.models import Channel

    channel = Channel(key=channels_service.new_key(session), name="内部·包裹卡第2批", account_ids=[online.id],
                      incentive_text="加好友领 5 元无门槛券")
    session.add(channel)
    session.commit()
    ids["channel"] = channel.id
    return ids


@pytest.fixture(scope="session")
def live_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSite]:
    import uvicorn

    from siyu.app import create_app

    path = tmp_path_factory.mktemp("live") / "browser.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    maker = sessionmaker(bind=engine, expire_on_commit=False)
    with maker() as session:
        ids = _seed(session)

    saved = {k: os.environ.get(k) for k in ("SIYU_SECRET_KEY", "SIYU_DATABASE_URL")}
    os.environ["SIYU_SECRET_KEY"] = "browser-test-secret"
    os.environ["SIYU_DATABASE_URL"] = url
    get_settings.cache_clear()
    # Code that opens its own session (jobs, the inbox stream) must find this database too,
    # whatever engine an earlier test left cached.
    core_db.reset_engine()
    app = create_app()

    def session_for_live_site() -> Iterator[Session]:
        session = maker()
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    app.dependency_overrides[get_session] = session_for_live_site
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="siyu-live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live Siyu server did not start")
        time.sleep(0.02)
    try:
        yield LiveSite(url=f"http://127.0.0.1:{port}", password=TEST_PASSWORD, ids=ids)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        core_db.reset_engine()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (the browser tests need it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """One browser tab plus every console error and failed page script it produced."""

    page: Any
    site: LiveSite
    errors: list[str]

    def go(self, path: str) -> Any:
        return self.page.goto(self.site.url + path)

    def login(self, username: str = "admin") -> None:
        self.go("/login")
        self.page.fill("#username", username)
        self.page.fill("#password", self.site.password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.site.url + "/")

    def screenshot(self, name: str, *, full_page: bool = True) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def _open_tab(chromium: Any, live_site: LiveSite, **context_args: Any) -> Iterator[Tab]:
    context = chromium.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", **context_args)
    context.set_default_timeout(5000)
    page = context.new_page()
    errors: list[str] = []
    def on_console(msg: Any) -> None:
        where = (msg.location or {}).get("url", "")
        expected = where.endswith("/favicon.ico") or "status of 422" in msg.text  # 422: a form answered "fix this"
        if msg.type == "error" and not expected:
            errors.append(f"{msg.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield Tab(page=page, site=live_site, errors=errors)
    context.close()


@pytest.fixture
def tab(chromium: Any, live_site: LiveSite) -> Iterator[Tab]:
    yield from _open_tab(chromium, live_site, viewport={"width": 1366, "height": 900})


@pytest.fixture
def phone(chromium: Any, live_site: LiveSite) -> Iterator[Tab]:
    yield from _open_tab(chromium, live_site, viewport={"width": 390, "height": 844}, device_scale_factor=2,
                         is_mobile=True, has_touch=True)
