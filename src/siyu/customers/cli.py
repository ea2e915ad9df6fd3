"""`siyu customers …`: customer data in and out from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

customers_app = typer.Typer(help="Customers: import friend lists from CSV/XLSX, export customer lists.",
                            no_args_is_help=True)


@customers_app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="CSV (UTF-8, UTF-8 with BOM or GBK) or XLSX; the first row is the "
                                              "header (备注名, 昵称, 手机号, 标签 …).",
                                         exists=True, dir_okay=False, readable=True)],
    account: Annotated[int | None, typer.Option(
        help="Account id of the customers (rows may name their own account in a 账号 column instead).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and count only; write nothing.")] = False,
    update: Annotated[bool, typer.Option(
        "--update/--skip-existing",
        help="Existing customers: fill empty fields and add phones, tags and the account (default), or skip them.",
    )] = True,
) -> None:
    """Import customers: the whole file is validated first; with any error nothing is written (exit code 2)."""
    from siyu.bootstrap import init_database
    from siyu.core import db as core_db
    from siyu.core.errors import DomainError
    from siyu.core.i18n import _
    from siyu.core.models import JobStatus
    from siyu.core.settings import get_settings
    from siyu.core.viewer import SYSTEM
    from siyu.customers.imports import service as imports

    init_database(get_settings().database_url)
    options = imports.ImportOptions(account_id=account,
                                    mode=imports.ImportMode.update if update else imports.ImportMode.skip)
    try:
        source = imports.open_source(file)
        if dry_run:
            with core_db.transaction() as session:
                result = imports.run_import(session, source=source, options=options, viewer=SYSTEM,
                                            filename=file.name, dry_run=True)
        else:
            from siyu.customers import jobs as customers_jobs

            job = customers_jobs.import_here(file, options=options, actor=SYSTEM)
            if job.status != JobStatus.succeeded or job.result is None:
                typer.echo(_("The import stopped (job {id}): {error}", id=job.id, error=job.error), err=True)
                raise typer.Exit(1)
            result = imports.ImportResult(rows=int(job.result["rows"]), dry_run=False, counts=imports.Counts(
                created=job.result["created"], updated=job.result["updated"], skipped=job.result["skipped"]))
    except imports.ImportInvalid as exc:
        typer.echo(exc.message, err=True)
        for error in exc.errors:
            typer.echo(_("Row {row}, column {column}: {message}", row=error.row, column=error.column or "—",
                         message=error.message), err=True)
        raise typer.Exit(2) from exc
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    counts = result.counts
    typer.echo(_("{rows} rows: {created} created, {updated} updated, {skipped} skipped", rows=result.rows,
                 created=counts.created, updated=counts.updated, skipped=counts.skipped))
    if dry_run:
        typer.echo(_("Dry run: nothing was written."))


@customers_app.command("export")
def export_file(
    file: Annotated[Path, typer.Argument(help="The file to write: .csv (UTF-8 with BOM) or .xlsx.", dir_okay=False)],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="csv or xlsx (default: from the file name's suffix).")] = None,
    account: Annotated[int | None, typer.Option(help="Only friends of this account (its id).")] = None,
    tag: Annotated[list[str] | None, typer.Option(
        help="Only customers with this tag (标签, 组:标签 or a tag id); repeat it: all groups must match, "
             "tags of one group any.")] = None,
    stage: Annotated[str | None, typer.Option(help="Only this stage: traffic, user, customer or fan.")] = None,
    q: Annotated[str, typer.Option("--q", help="Search: name, remark, description, WeChat ID or phone.")] = "",
    source: Annotated[str | None, typer.Option(help="Only customers of this source (来源).")] = None,
) -> None:
    """Export customers (all, or those of the filters) with the import's column headers; audited."""
    from siyu.bootstrap import init_database
    from siyu.core import db as core_db
    from siyu.core.errors import DomainError
    from siyu.core.i18n import _
    from siyu.core.settings import get_settings
    from siyu.core.viewer import SYSTEM
    from siyu.customers.exports import service as exports
    from siyu.customers.filters import filter_from_params

    try:
        chosen = exports.ExportFormat(fmt.lower()) if fmt else exports.ExportFormat.for_path(file)
    except ValueError:
        chosen = None
    if chosen is None:
        typer.echo(_("error: give --format csv or xlsx, or name the file .csv or .xlsx"), err=True)
        raise typer.Exit(2)
    if not file.parent.is_dir():
        typer.echo(_("error: folder {folder} does not exist", folder=str(file.parent)), err=True)
        raise typer.Exit(2)
    init_database(get_settings().database_url)
    flt = filter_from_params(q, tag, stage, account, source)
    partial = file.with_name(f".{file.name}.part")  # a failed export never leaves half a file under FILE
    try:
        with core_db.transaction() as session, partial.open("wb") as out:
            rows = exports.write_export(session, flt=flt, viewer=SYSTEM, fmt=chosen, out=out)
            exports.record_export(session, viewer=SYSTEM, flt=flt, fmt=chosen, rows=rows, via="cli")
        partial.replace(file)
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    finally:
        partial.unlink(missing_ok=True)
    typer.echo(_("{n} customers exported to {file}", n=rows, file=str(file)))


@customers_app.command("import-chat")
def import_chat_file(
    file: Annotated[Path, typer.Argument(help="A chat export: TXT (“YYYY-MM-DD HH:MM:SS sender” above each message) "
                                              "or WeChatMsg CSV.", exists=True, dir_okay=False, readable=True)],
    customer: Annotated[int, typer.Option(help="The customer the chat is with (their id).")],
    account: Annotated[int | None, typer.Option(
        help="Our account the chat was exported from (needed when the customer is a friend of several).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and count only; write nothing.")] = False,
) -> None:
    """Add a personal-WeChat chat export to a customer's timeline; re-imports add only new messages."""
    from siyu.bootstrap import init_database
    from siyu.core import db as core_db
    from siyu.core.errors import DomainError
    from siyu.core.i18n import _
    from siyu.core.settings import get_settings
    from siyu.core.viewer import SYSTEM
    from siyu.customers.imports import chat as chat_imports

    init_database(get_settings().database_url)
    try:
        with core_db.transaction() as session:
            result = chat_imports.import_chat(session, customer_id=customer, data=file.read_bytes(),
                                              filename=file.name, viewer=SYSTEM, account_id=account, dry_run=dry_run)
    except chat_imports.ChatInvalid as exc:
        typer.echo(exc.message, err=True)
        for error in exc.errors:
            typer.echo(_("Line {line}: {message}", line=error.line, message=error.message), err=True)
        raise typer.Exit(2) from exc
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(_("{messages} messages: {new} new on {days} days, {dup} already imported", messages=result.messages,
                 new=result.new_messages, days=result.days, dup=result.duplicates))
    if dry_run:
        typer.echo(_("Dry run: nothing was written."))
