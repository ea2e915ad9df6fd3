"""``siyu simulator``: serve the simulated WeCom API, or play a scenario of callbacks against Siyu."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from siyu.simulator.corp import VirtualCorp

simulator_app = typer.Typer(
    help="The WeCom simulator (not WeCom): its server API for Siyu to call, and scenarios of real encrypted "
         "callbacks sent to Siyu. Uses the same SIYU_WECOM_* settings as Siyu.",
    no_args_is_help=True)

MemberOption = Annotated[list[str] | None, typer.Option(
    "--member", help="A member as userid or userid:name (repeatable); default: the demo's WeCom accounts.")]
MembersFile = Annotated[Path | None, typer.Option(
    help='JSON file with members: ["userid", …] or [{"userid": …, "name": …}, …].')]


def _members(member: list[str] | None, members_file: Path | None) -> list[tuple[str, str]] | None:
    found: list[tuple[str, str]] = []
    if members_file is not None:
        for item in json.loads(members_file.read_text(encoding="utf-8")):
            if isinstance(item, str):
                found.append((item, item))
            elif isinstance(item, dict) and item.get("userid"):
                found.append((str(item["userid"]), str(item.get("name") or item["userid"])))
            else:
                raise typer.BadParameter(f"not a member: {item!r}", param_hint="--members-file")
    for text in member or []:
        userid, _sep, name = text.partition(":")
        found.append((userid, name or userid))
    return found or None


def _corp(seed: int, corp_id: str, state: Path | None, members: list[tuple[str, str]] | None,
          contacts_per_member: int) -> VirtualCorp:
    from siyu.simulator.corp import DEFAULT_MEMBERS, VirtualCorp

    if state is not None and state.exists():
        corp = VirtualCorp.from_file(state)
        typer.echo(f"virtual corp loaded from {state}")
        return corp
    return VirtualCorp.seeded(seed, corp_id=corp_id, members=members or DEFAULT_MEMBERS,
                              contacts_per_member=contacts_per_member)


@simulator_app.command()
def serve(
    port: Annotated[int, typer.Option(help="TCP port.")] = 8900,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    corp_id: Annotated[str | None, typer.Option(help="Corp id (default SIYU_WECOM_CORP_ID).")] = None,
    secret: Annotated[str | None, typer.Option(help="Secret gettoken accepts (default SIYU_WECOM_SECRET).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the virtual corp's members, customers, tags and groups.")] = 1,
    state: Annotated[Path | None, typer.Option(
        help="JSON state file: loaded when it exists, saved on shutdown (so a demo can restart).")] = None,
    member: MemberOption = None,
    members_file: MembersFile = None,
    contacts_per_member: Annotated[int, typer.Option(help="Existing customers per member in a new corp.")] = 12,
    rate_limit: Annotated[int, typer.Option(
        help="API calls per access token per minute before errcode 45009; 0 = no limit.")] = 0,
    token_ttl: Annotated[int, typer.Option(help="Access-token lifetime in seconds (expires_in).")] = 7200,
    access_log: Annotated[bool, typer.Option(help="Log every request (noisy under a scenario).")] = False,
    callback_target: Annotated[str | None, typer.Option(
        help="Siyu's address: /_simulator/kf_… controls (a customer writes to 微信客服 …) then send it "
             "kf_msg_or_event callbacks, encrypted with SIYU_WECOM_TOKEN / SIYU_WECOM_AES_KEY.")] = None,
) -> None:
    """Serve the simulated WeCom server API under /cgi-bin/ (point SIYU_WECOM_API_BASE at it)."""
    import logging

    import uvicorn

    from siyu.simulator import settings
    from siyu.simulator.callbacks import Encrypter
    from siyu.simulator.server import NAME, ServerOptions, create_app

    configured = settings.load()
    corp = _corp(seed, corp_id or configured.corp_id or settings.DEFAULT_CORP_ID, state,
                 _members(member, members_file), contacts_per_member)
    used_secret = secret or configured.secret or settings.DEFAULT_SECRET
    encrypter = None
    if callback_target:
        try:
            encrypter = Encrypter(corp_id=corp.state.corp_id, token=configured.token, aes_key=configured.aes_key)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    app = create_app(corp, ServerOptions(secret=used_secret, token_ttl=token_ttl, rate_limit=rate_limit,
                                         state_path=state, callback_target=callback_target or "",
                                         encrypter=encrypter))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    typer.echo(f"{NAME} — corp {corp.state.corp_id}, members {', '.join(m.userid for m in corp.state.members)}")
    typer.echo(f"  SIYU_WECOM_API_BASE=http://{shown}:{port}/cgi-bin/")
    typer.echo(f"  SIYU_WECOM_CORP_ID={corp.state.corp_id}")
    for account in corp.kf.overview()["accounts"]:
        typer.echo(f"  微信客服 {account['name']}: open_kfid {account['open_kfid']}")
    if not (secret or configured.secret):
        typer.echo(f"  SIYU_WECOM_SECRET={used_secret}")
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False, access_log=access_log)


@simulator_app.command()
def scenario(
    name: Annotated[str, typer.Argument(help="friends, chat, groups, campaign, tags or archive (会话存档: members' "
                                             "private and group chats, pulled by Siyu).")],
    target: Annotated[str, typer.Option(help="Siyu's address (its /wecom/callback receives the callbacks).")]
        = "http://127.0.0.1:8000",
    count: Annotated[int | None, typer.Option(
        help="Events in the main phase (default: friends 50, chat 200, groups 30, campaign 170000, tags 10); "
             "for chat and campaign, customers' messages.")] = None,
    rate: Annotated[float, typer.Option(help="Callbacks per second; 0 = as fast as the concurrency allows.")] = 0.0,
    concurrency: Annotated[int, typer.Option(help="Steps (customers' acts and their callbacks) in flight at once.")]
        = 8,
    channel: Annotated[str, typer.Option(
        help="chat and campaign: the path customers' messages take — kf (微信客服: kf_msg_or_event callbacks, "
             "Siyu pulls kf/sync_msg).")] = "kf",
    simulator: Annotated[str | None, typer.Option(
        help="A running simulator's address (its corp is changed before each callback); default: a virtual "
             "corp in this process.")] = None,
    serve_port: Annotated[int | None, typer.Option(
        help="Also serve this process's virtual corp's API on this port while the scenario runs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the virtual corp and of the scenario's choices.")] = 1,
    state: Annotated[Path | None, typer.Option(help="State file of the in-process corp (loaded, then saved).")]
        = None,
    state_key: Annotated[list[str] | None, typer.Option(
        help="Contact-way state (Siyu's channel key) to add friends through (repeatable); default: the corp's.")]
        = None,
    member: MemberOption = None,
    members_file: MembersFile = None,
    corp_id: Annotated[str | None, typer.Option(help="Default SIYU_WECOM_CORP_ID.")] = None,
    token: Annotated[str | None, typer.Option(help="Default SIYU_WECOM_TOKEN.")] = None,
    aes_key: Annotated[str | None, typer.Option(help="Default SIYU_WECOM_AES_KEY.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for `success` before resending.")] = 5.0,
    retries: Annotated[int, typer.Option(help="Resends of an unacknowledged callback.")] = 3,
    duplicates: Annotated[float, typer.Option(
        help="Share of chat and campaign callbacks (kf_msg_or_event) delivered twice.")] = 0.01,
    same_envelope: Annotated[bool, typer.Option(
        help="Resend the identical request (same nonce) instead of the same event in a fresh envelope.")] = False,
    public_key: Annotated[Path | None, typer.Option(
        help="archive: the corp's RSA public key (PEM) the archive's random keys are encrypted to.")] = None,
    key_version: Annotated[int, typer.Option(help="archive: the public key's version (publickey_ver).")] = 1,
) -> None:
    """Send a scenario of real encrypted WeCom callbacks to Siyu and print a summary."""
    from siyu.simulator import settings
    from siyu.simulator.callbacks import Encrypter
    from siyu.simulator.driver import CHANNELS, DEFAULT_COUNTS, DriverError, Options, run_scenario
    from siyu.simulator.server import RunningServer, ServerOptions, create_app

    if name == "archive":
        _archive_scenario(target=target, simulator=simulator, count=count or 1000, public_key=public_key,
                          key_version=key_version, corp_id=corp_id, token=token, aes_key=aes_key)
        return
    if name not in DEFAULT_COUNTS:
        raise typer.BadParameter(f"choose from {', '.join(DEFAULT_COUNTS)}", param_hint="NAME")
    if channel not in CHANNELS:
        raise typer.BadParameter(f"choose from {', '.join(CHANNELS)}", param_hint="--channel")
    configured = settings.load()
    used_corp_id = corp_id or configured.corp_id or settings.DEFAULT_CORP_ID
    try:
        encrypter = Encrypter(corp_id=used_corp_id, token=token or configured.token,
                              aes_key=aes_key or configured.aes_key)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    corp = None
    server = None
    if simulator is None:
        corp = _corp(seed, used_corp_id, state, _members(member, members_file), 12)
        if serve_port is not None:
            secret = configured.secret or settings.DEFAULT_SECRET
            server = RunningServer(create_app(corp, ServerOptions(secret=secret)), port=serve_port).start()
            typer.echo(f"simulator API at {server.url}/cgi-bin/")
    options = Options(count=count if count is not None else DEFAULT_COUNTS[name], rate=rate,
                      concurrency=concurrency, seed=seed, states=list(state_key or []), duplicate_share=duplicates,
                      channel=channel)
    try:
        summary = run_scenario(name, target=target, encrypter=encrypter, options=options, corp=corp,
                               simulator_url=simulator, timeout=timeout, retries=retries,
                               same_envelope=same_envelope, echo=typer.echo)
    except DriverError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        if corp is not None and state is not None:
            corp.save(state)
        if server is not None:
            server.stop()
    if summary.failed:
        raise typer.Exit(1)


def _archive_scenario(*, target: str, simulator: str | None, count: int, public_key: Path | None, key_version: int,
                      corp_id: str | None, token: str | None, aes_key: str | None) -> None:
    """Private and group chats into a running simulator's archive, then one msgaudit_notify to Siyu (which pulls
    them from the simulator's stand-in for GetChatData)."""
    import httpx

    from siyu.simulator import settings
    from siyu.simulator.callbacks import Clients, Encrypter, Sender, Stats, callback_url, msgaudit_notify

    if simulator is None:
        raise typer.BadParameter("the archive is pulled by Siyu from a running simulator: give --simulator",
                                 param_hint="--simulator")
    configured = settings.load()
    base = simulator.rstrip("/")
    with httpx.Client(timeout=600.0) as http:
        if public_key is not None:
            answer = http.post(f"{base}/_simulator/archive_public_key",
                               json={"version": key_version, "pem": public_key.read_text()})
            if answer.status_code != 200:
                typer.echo(f"error: {answer.text}", err=True)
                raise typer.Exit(2)
        answer = http.post(f"{base}/_simulator/archive_scenario", json={"count": count, "notify": False})
        if answer.status_code != 200:
            typer.echo(f"error: {answer.text}", err=True)
            raise typer.Exit(2)
        made = answer.json()
    encrypter = Encrypter(corp_id=corp_id or configured.corp_id or settings.DEFAULT_CORP_ID,
                          token=token or configured.token, aes_key=aes_key or configured.aes_key)
    import time

    sender = Sender(callback_url(target), encrypter, Clients(httpx.Client), Stats())
    acknowledged = sender.deliver(msgaudit_notify(encrypter.corp_id, create_time=int(time.time())))
    typer.echo(f"archive: {made['private']} private and {made['group']} group messages archived "
               f"({made['not_archived']} not archived: no consent), last seq {made['last_seq']}; "
               f"msgaudit_notify {'acknowledged' if acknowledged else 'NOT acknowledged'}")
    if not acknowledged:
        raise typer.Exit(1)
