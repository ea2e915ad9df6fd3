"""`siyu wecom …`: the WeCom connection from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer

wecom_app = typer.Typer(help="WeCom: sync the corp into Siyu.", no_args_is_help=True)


@wecom_app.command("sync")
def sync_command(
    restart: Annotated[bool, typer.Option(
        "--restart", help="Start a new full sync even if an interrupted one could be resumed.")] = False,
) -> None:
    """Pull members, corp tags, every customer and group from WeCom; resumes an interrupted sync."""
    from siyu.bootstrap import init_database
    from siyu.core import db as core_db
    from siyu.core.i18n import _
    from siyu.core.settings import get_settings
    from siyu.wecom import sync
    from siyu.wecom.client import WecomApiError, client_for

    init_database(get_settings().database_url)

    def report(state: dict[str, Any]) -> None:
        counts = state["counts"]
        typer.echo(f"\r{state['phase']:<10} {counts.get('contacts', 0):>9,} contacts", nl=False)

    try:
        with core_db.transaction() as session:
            api = client_for(session)
        state = sync.run(core_db.transaction, api, restart=restart, progress=report)
    except WecomApiError as exc:
        typer.echo("")
        typer.echo(f"error: {exc.display()}", err=True)
        raise typer.Exit(2) from exc
    typer.echo("")
    counts = state["counts"]
    typer.echo(_(
        "Synced {contacts} contacts of {members} members: {created} new customers, {gone} gone, {groups} groups",
        contacts=counts["contacts"], members=counts["members"], created=counts["customers_created"],
        gone=counts["gone"], groups=counts["groups"]))


@wecom_app.command("kf-accounts")
def kf_accounts_command() -> None:
    """List the corp's 微信客服 accounts (kf/account/list) into Siyu's accounts."""
    from siyu.bootstrap import init_database
    from siyu.core.i18n import _
    from siyu.core.settings import get_settings
    from siyu.wecom import kf_jobs
    from siyu.wecom.client import WecomApiError

    init_database(get_settings().database_url)
    try:
        created = kf_jobs.sync_accounts()
    except WecomApiError as exc:
        typer.echo(f"error: {exc.display()}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(_("WeChat customer service accounts synced: {created} new", created=created))
