"""The `siyu` command: one command group per domain."""

from __future__ import annotations

import json
import os
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from siyu.bootstrap import init_database
from siyu.core import db as core_db
from siyu.core.settings import get_settings
from siyu.customers.cli import customers_app
from siyu.simulator.cli import simulator_app
from siyu.wecom.cli import wecom_app

app = typer.Typer(help="Siyu (私域): WeChat customer relationships and the operations console.",
                  no_args_is_help=True, add_completion=False)
user_app = typer.Typer(help="Manage console users.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(simulator_app, name="simulator")
app.add_typer(customers_app, name="customers")
app.add_typer(wecom_app, name="wecom")

DEMO_DATABASE_URL = "sqlite:///./siyu-demo.db"


def _use_database(url: str) -> None:
    os.environ["SIYU_DATABASE_URL"] = url
    get_settings.cache_clear()
    core_db.reset_engine()


def _wipe_database(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(parsed.database + suffix).unlink(missing_ok=True)
        return
    engine = core_db.make_engine(url)
    import siyu.core.models_registry  # noqa: F401

    with engine.begin() as conn:
        core_db.Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


def _has_data(url: str) -> bool:
    engine = core_db.make_engine(url)
    try:
        if "customer" not in inspect(engine).get_table_names():
            return False
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1 FROM customer LIMIT 1")).first() is not None
    finally:
        engine.dispose()


def _worker_in_process(enabled: bool) -> None:
    os.environ["SIYU_WORKER_IN_PROCESS"] = "1" if enabled else "0"
    get_settings.cache_clear()


SIMULATOR_PORT = 8900


def _start_simulation(target: str) -> None:
    """The WeCom simulator on :8900 plus a stream of friend adds, chats and group changes."""
    import base64
    import secrets

    from sqlalchemy import select

    from siyu.accounts.models import Account
    from siyu.channels.models import Channel
    from siyu.customers.models import Customer, Friendship, FriendshipStatus
    from siyu.simulator.driver import start_simulated_traffic

    settings = {"SIYU_WECOM_CORP_ID": "wwSHANYEDEMO", "SIYU_WECOM_TOKEN": secrets.token_urlsafe(16),
                "SIYU_WECOM_AES_KEY": base64.b64encode(secrets.token_bytes(32)).decode()[:-1],
                "SIYU_WECOM_SECRET": secrets.token_urlsafe(24),
                "SIYU_WECOM_API_BASE": f"http://127.0.0.1:{SIMULATOR_PORT}/cgi-bin/",
                # The simulator's 公众号: followers' pushes reach /mp/callback in safe mode.
                "SIYU_MP_APPID": "wxSHANYEDEMO0001", "SIYU_MP_TOKEN": secrets.token_urlsafe(16),
                "SIYU_MP_AES_KEY": base64.b64encode(secrets.token_bytes(32)).decode()[:-1],
                "SIYU_MP_SECRET": secrets.token_urlsafe(24),
                "SIYU_MP_API_BASE": f"http://127.0.0.1:{SIMULATOR_PORT}/mp/cgi-bin/"}
    for name, value in settings.items():
        os.environ.setdefault(name, value)  # the app and the simulator read the same settings
    # 会话存档: the simulator's archive encrypts each random key to this corp key; Siyu holds its private half.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    archive_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    archive_public = archive_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    os.environ["SIYU_WECOM_ARCHIVE_SOURCE"] = "simulator"
    os.environ["SIYU_WECOM_ARCHIVE_PRIVATE_KEYS"] = json.dumps({"1": archive_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()})
    get_settings.cache_clear()
    with core_db.transaction() as session:
        states = [c.key for c in session.query(Channel).all()]
        # The simulator's corp knows the demo's WeCom customers, so replies to them are delivered.
        rows = session.execute(
            select(Customer.wecom_external_userid, Customer.name, Account.wecom_userid, Friendship.remark_name,
                   Friendship.added_at).join(Friendship, Friendship.customer_id == Customer.id)
            .join(Account, Account.id == Friendship.account_id)
            .where(Customer.wecom_external_userid.is_not(None), Account.wecom_userid.is_not(None),
                   Friendship.status == FriendshipStatus.active.value))
        known = [{"external_userid": external_userid, "name": name, "userid": userid, "remark": remark,
                  "added_at": added_at.timestamp()} for external_userid, name, userid, remark, added_at in rows]
        kf = session.execute(select(Account.open_kfid, Account.display_name)
                             .where(Account.open_kfid.is_not(None)).order_by(Account.id).limit(1)).first()
    def mp_qr_codes() -> list[str]:
        """The demo's 公众号 channel and its parametric QR code, made through the simulator's qrcode/create."""
        from siyu.demo import mp_qr_channel
        from siyu.mp import client as mp_client

        try:
            with core_db.transaction() as session:
                api = mp_client.api_for(session)
                return mp_qr_channel(session, appid=get_settings().mp_appid, api=api) if api is not None else []
        except Exception as exc:  # the demo goes on without the QR code
            typer.echo(f"公众号 QR code not made ({exc}); followers follow through the channels' keys", err=True)
            return []

    start_simulated_traffic(target, serve_port=SIMULATOR_PORT, states=states, count=40, rate=2.0,
                            known_contacts=known, kf_account=(str(kf[0]), str(kf[1])) if kf else None,
                            mp_messages=40, archive_messages=60, archive_public_key=(1, archive_public),
                            before_traffic=mp_qr_codes)
    with core_db.transaction() as session:  # 数据分析: WeCom's per-member statistics, from the simulator
        from siyu.analytics.demo import fetch_behaviour

        fetch_behaviour(session)
    typer.echo(f"WeCom simulator on http://127.0.0.1:{SIMULATOR_PORT}/ — live callbacks are coming in "
               "(企业微信 → 事件日志), members' own chats through the chat archive (收件箱, 渠道: 会话存档; "
               "客户群 → 群消息), and 公众号 followers' messages (收件箱, 渠道: 公众号)")


@app.command()
def worker(
    queue: Annotated[list[str] | None, typer.Option(
        help="Queue to consume: inbound (WeCom events) or bulk (imports, exports, bulk changes); "
             "repeatable; default both.")] = None,
    inbound_threads: Annotated[int, typer.Option(help="Worker threads for the inbound queue.")] = 2,
    bulk_threads: Annotated[int, typer.Option(help="Worker threads for the bulk queue.")] = 1,
) -> None:
    """Run background job workers until stopped (Ctrl-C or SIGTERM finishes running tasks first)."""
    import logging

    from siyu.core.jobs import QUEUE_NAMES, Workers
    from siyu.core.models_registry import load_tasks
    from siyu.core.process import freeze_startup_objects

    chosen = tuple(queue or QUEUE_NAMES)
    unknown = [name for name in chosen if name not in QUEUE_NAMES]
    if unknown:
        typer.echo(f"unknown queue: {', '.join(unknown)} (choose from {', '.join(QUEUE_NAMES)})", err=True)
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    init_database(get_settings().database_url)
    modules = load_tasks()
    from siyu.wecom import connectors as wecom_connector

    wecom_connector.register()  # deliveries to WeCom accounts run here
    typer.echo(f"workers for {', '.join(chosen)}; tasks from {', '.join(modules) or 'no modules'}")
    freeze_startup_objects()
    Workers(inbound_threads=inbound_threads, bulk_threads=bulk_threads, queues=chosen).run_forever()


@app.command()
def init() -> None:
    """Create the database or migrate it to the latest schema (SIYU_DATABASE_URL)."""
    url = get_settings().database_url
    init_database(url)
    typer.echo(f"database ready: {make_url(url).render_as_string(hide_password=True)}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Web worker processes (use PostgreSQL for more than one).")] = 1,
    worker: Annotated[bool, typer.Option(
        help="Also run the job workers inside the web process (turn off when `siyu worker` runs elsewhere).")] = True,
) -> None:
    """Serve the web console and the API (migrates the database first)."""
    import uvicorn

    init_database(get_settings().database_url)
    _worker_in_process(worker and workers == 1)
    uvicorn.run("siyu.app:create_app", factory=True, host=host, port=port, workers=workers,
                proxy_headers=True, log_level="info")


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = False,
    customers: Annotated[int, typer.Option(help="How many demo customers to create.")] = 2000,
    database: Annotated[str | None, typer.Option(
        help="Database for the demo, wiped first (default: SIYU_DATABASE_URL when set, else siyu-demo.db).")] = None,
    force: Annotated[bool, typer.Option(help="Allow wiping another database that holds data.")] = False,
    worker: Annotated[bool, typer.Option(help="Run the job workers inside the web process.")] = True,
    simulate: Annotated[bool, typer.Option(
        help="Also run the WeCom simulator and send live, encrypted callbacks to the demo.")] = False,
) -> None:
    """Build fresh demo data (a tea brand with several stores), then serve the console."""
    import uvicorn

    from siyu.core.security import generate_password
    from siyu.demo import build_demo

    settings = get_settings()
    url = database or (settings.database_url if "database_url" in settings.model_fields_set else DEMO_DATABASE_URL)
    password = get_settings().admin_password or generate_password()
    if len(password) < 8:
        typer.echo("SIYU_ADMIN_PASSWORD must be at least 8 characters long.", err=True)
        raise typer.Exit(2)
    if url != DEMO_DATABASE_URL and _has_data(url) and not force:
        typer.echo(f"{make_url(url).render_as_string(hide_password=True)} already holds customers; "
                   "the demo wipes its database, so pass --force if that is really what you want.", err=True)
        raise typer.Exit(2)
    _use_database(url)
    _wipe_database(url)
    init_database(url)
    typer.echo("building demo data …")
    with core_db.transaction() as session:
        summary = build_demo(session, admin_password=password, customers=customers)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    address = f"http://{shown_host}:{port}/"
    typer.echo(f"demo ready: {summary.customers} customers, {summary.accounts} accounts")
    typer.echo(f"open {address}")
    typer.echo(f"log in as: admin / {password}")
    if simulate:
        _start_simulation(f"http://{shown_host}:{port}")
    if not no_browser:
        webbrowser.open(address)
    _worker_in_process(worker or simulate)
    uvicorn.run("siyu.app:create_app", factory=True, host=host, port=port, log_level="info")


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Login name (letters, digits, . _ -).")],
    role: Annotated[str, typer.Option(help="admin, planner, operator or service.")] = "operator",
    display_name: Annotated[str, typer.Option(help="Name shown in the console.")] = "",
    account: Annotated[list[int] | None, typer.Option(help="Account id this user works on (repeatable).")] = None,
    password: Annotated[str | None, typer.Option(help="Password; prompted for when omitted.")] = None,
) -> None:
    """Create a console user."""
    from pydantic import ValidationError

    from siyu.core.errors import DomainError
    from siyu.core.viewer import SYSTEM
    from siyu.team import service as team_service
    from siyu.team.schemas import UserIn

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    init_database(get_settings().database_url)
    try:
        data = UserIn(username=username, password=password, role=role,
                      display_name=display_name, account_ids=account or [])
        with core_db.transaction() as session:
            user = team_service.create_user(session, data=data, actor=SYSTEM)
            user_id = user.id
    except ValidationError as exc:
        for error in exc.errors():
            typer.echo(f"error: {'.'.join(str(p) for p in error['loc'])}: {error['msg']}", err=True)
        raise typer.Exit(2) from exc
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"created user {username} (id {user_id}, role {role})")


if __name__ == "__main__":
    app()
