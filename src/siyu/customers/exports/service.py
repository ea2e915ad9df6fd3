"""Customer export to CSV (UTF-8 with BOM, so Excel reads Chinese) and XLSX.

Why it is shaped this way:

- **The list's own filter and query.** An export takes the ``service.CustomerFilter`` the
  customer list takes and reads it with ``service.list_customers``, so it holds exactly the
  customers the viewer could page through: an operator's export holds only customers of
  their accounts, and only their accounts' remark names, descriptions and phones. A filter
  the list refuses (an account that is not theirs) is refused here with the same message.
- **Streamed in keyset batches.** ``BATCH_ROWS`` customers per query, written and then
  dropped from the session, so a million customers never sit in memory.
- **Newest added first, whatever the list's sort.** ``created_at`` never changes, so a
  keyset walk over a long export never skips or repeats a customer, even while others are
  touched (which moves them in last-touch order) or renamed.
- **The import's own headers.** The columns the import reads (备注名, 昵称, 手机号, 标签 …) are
  named as the import recognises them, so an exported file imports back: with mode skip
  it creates nothing. 标签 holds the manual tags as ``组:标签`` joined by ``、``; the computed
  ones (沟通次数, 购买, 等级) are their own columns, because an import refuses computed tags.
  One row per customer: 账号, 备注名 and 描述 come from one friendship (the filtered account's,
  else the first active one), phones from all the viewer's friendships with the customer.
- **Every text cell is neutralised** (``siyu.core.spreadsheet.neutralise``): a remark such as
  ``=HYPERLINK(…)`` opens as text in Excel and WPS, never as a formula.
- **Phones masked** (``138****1234``) for viewers who may not see them, as on the customer page.
- **One audit entry per export**, with the filter and the number of rows.
- Small exports are answered within the request; larger ones are written by a background
  job (``customers.jobs.export_customers``) into the shared storage (``core/storage.py``: every
  app host serves the download) under a random token that
  only the exporting user can download, for ``EXPORT_TTL_SECONDS``.
"""

from __future__ import annotations

import csv
import enum
import io
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core import storage
from siyu.core.db import utcnow
from siyu.core.errors import Invalid, NotFound
from siyu.core.i18n import _, catalogue
from siyu.core.settings import local_zone
from siyu.core.spreadsheet import neutralise
from siyu.core.viewer import Viewer
from siyu.customers import service
from siyu.customers.exports import policy as export_policy
from siyu.customers.models import Customer, Friendship, FriendshipStatus, Tag, TagGroup
from siyu.customers.phones import normalise_mobile
from siyu.customers.service import CustomerFilter
from siyu.customers.sources import source_label
from siyu.team import service as team_service

BATCH_ROWS = 200  # customers per query (the most service.list_customers gives at once)
DIRECT_ROWS = 500  # up to this many rows are exported within the request; more by a background job with progress
EXPORT_TTL_SECONDS = 24 * 3600  # a stored export can be downloaded this long, then it is deleted
XLSX_CELL_MAX = 32767  # Excel's limit on the characters of one cell
EXPORT_SORT = "created"  # see the module docstring: a stable order for a long keyset walk
# Characters XML 1.0 cannot hold: openpyxl refuses them, so XLSX cells drop them.
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_TOKEN = re.compile(r"^[0-9a-f]{32}$")
# Text openpyxl would store as an error value rather than as text.
_XLSX_ERROR_CODES = frozenset({"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A"})
TAG_JOIN = "、"  # the import splits 标签 and 手机号 cells at 、 (and , ; |)


class ExportFormat(enum.StrEnum):
    csv = "csv"
    xlsx = "xlsx"

    @property
    def media_type(self) -> str:
        if self is ExportFormat.csv:
            return "text/csv; charset=utf-8"
        return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

    @classmethod
    def for_path(cls, path: Path) -> ExportFormat | None:
        """The format a file name asks for (``.csv`` / ``.xlsx``), or None."""
        try:
            return cls(path.suffix.lower().lstrip("."))
        except ValueError:
            return None


# ---------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    imported: bool  # the import reads this column back (its header is one of the import's aliases)


COLUMNS: tuple[Column, ...] = (
    Column("备注名", "remark_name", True),
    Column("昵称", "name", True),
    Column("微信号", "wechat_id", True),
    Column("企业微信ID", "external_userid", True),
    Column("手机号", "phones", True),
    Column("标签", "tags", True),
    Column("描述", "description", True),
    Column("地区", "city", True),
    Column("来源", "source", True),
    Column("账号", "account", True),
    Column("性别", "gender", True),
    Column("职业", "job", True),
    Column("其他账号", "other_accounts", False),
    Column("阶段", "stage", False),
    Column("等级", "level", False),
    Column("沟通次数", "contact_count", False),
    Column("购买次数", "purchase_count", False),
    Column("累计消费", "purchase_total", False),
    Column("最近互动", "last_touch_at", False),
    Column("添加时间", "added_at", False),
    Column("客户ID", "id", False),
)
HEADERS: tuple[str, ...] = tuple(c.header for c in COLUMNS)

Cell = str | int


def _local_time(moment: datetime | None) -> str:
    return moment.astimezone(local_zone()).strftime("%Y-%m-%d %H:%M") if moment else ""


class _RowBuilder:
    """Turns a batch of customers into rows; looks tag groups and accounts up once per export."""

    def __init__(self, session: Session, *, viewer: Viewer, account_id: int | None) -> None:
        self.viewer = viewer
        self.account_id = account_id
        self.groups: dict[int, tuple[str, bool]] = {}
        self._load_groups(session)
        self.accounts = self._account_labels(session)
        self.stages = catalogue("zh-CN")  # the headers are Chinese; so are the stage names

    def _load_groups(self, session: Session) -> None:
        self.groups = {g.id: (g.name, g.is_computed) for g in session.scalars(select(TagGroup))}

    @staticmethod
    def _account_labels(session: Session) -> dict[int, str]:
        """Each account as the import finds it again: its display name, or its id when the name is ambiguous."""
        accounts = list(session.scalars(select(Account)))
        owners: dict[str, set[int]] = {}
        for account in accounts:
            for key in (str(account.id), account.display_name, account.wechat_id):
                if key:
                    owners.setdefault(key.strip(), set()).add(account.id)
        labels = {}
        for account in accounts:
            name = account.display_name.strip()
            unique = bool(name) and owners.get(name) == {account.id} and name == neutralise(name)
            labels[account.id] = name if unique else str(account.id)
        return labels

    def _phone(self, number: str) -> str:
        shown = normalise_mobile(number) or number  # +86 138… as the import writes it: 138…
        return self.viewer.phone(shown)

    def _primary(self, friendships: list[Friendship]) -> Friendship | None:
        if self.account_id is not None:
            chosen = next((f for f in friendships if f.account_id == self.account_id), None)
            if chosen is not None:
                return chosen
        active = [f for f in friendships if f.status == FriendshipStatus.active.value]
        return next(iter(active or friendships), None)

    def rows(self, session: Session, customers: list[Customer]) -> list[list[Cell]]:
        ids = [c.id for c in customers]
        friendships = service.load_friendships(session, customer_ids=ids)
        tags = service.customer_tags(session, customer_ids=ids)
        if any(t.group_id not in self.groups for ts in tags.values() for t in ts):
            self._load_groups(session)  # a group created during the export
        return [self._row(c, friendships.get(c.id, []), tags.get(c.id, [])) for c in customers]

    def _row(self, customer: Customer, friendships: list[Friendship], tags: list[Tag]) -> list[Cell]:
        mine = [f for f in friendships if self.viewer.can_see_account(f.account_id)]
        primary = self._primary(mine)
        others = [f for f in mine if f is not primary]
        phones: list[str] = []
        for friendship in [primary, *others] if primary else []:
            for phone in friendship.phones:
                shown = self._phone(phone.number)
                if shown not in phones:
                    phones.append(shown)
        manual = []
        for tag in tags:
            group_name, computed = self.groups.get(tag.group_id, ("", False))
            if not computed:
                manual.append(f"{group_name}:{tag.name}" if group_name else tag.name)
        values: dict[str, Cell] = {
            "remark_name": primary.remark_name if primary else "",
            "name": customer.name,
            "wechat_id": customer.wechat_id,
            "external_userid": customer.wecom_external_userid or "",
            "phones": TAG_JOIN.join(phones),
            "tags": TAG_JOIN.join(manual),
            "description": self.viewer.text(primary.description) if primary else "",
            "city": customer.city,
            "source": source_label(customer.source),
            "account": self.accounts.get(primary.account_id, str(primary.account_id)) if primary else "",
            "gender": customer.gender,
            "job": customer.job,
            "other_accounts": TAG_JOIN.join(self.accounts.get(f.account_id, str(f.account_id)) for f in others),
            "stage": self.stages.get(f"stage.{customer.stage}", customer.stage),
            "level": customer.level,
            "contact_count": customer.contact_count,
            "purchase_count": customer.purchase_count,
            "purchase_total": str(customer.purchase_total or 0),
            "last_touch_at": _local_time(customer.last_touch_at),
            "added_at": _local_time(primary.added_at if primary else customer.created_at),
            "id": customer.id,
        }
        return [values[column.key] for column in COLUMNS]


def checked_filter(flt: CustomerFilter) -> CustomerFilter:
    """The filter an export runs: refused here (before any job is queued) when the list would refuse it."""
    if flt.sort not in service.SORTS:  # the list would refuse it; so does the export
        raise Invalid("Unknown sort {sort}", field="sort", sort=flt.sort)
    return replace(flt, sort=EXPORT_SORT)


def iter_rows(session: Session, *, flt: CustomerFilter, viewer: Viewer,
              batch_size: int = BATCH_ROWS) -> Iterator[list[list[Cell]]]:
    """The export's rows (without the header), a batch at a time, in the viewer's scope.

    After each batch the session forgets what it loaded (it is flushed first, so nothing
    the caller added is lost): memory stays flat however many customers there are.
    """
    flt = checked_filter(flt)
    builder = _RowBuilder(session, viewer=viewer, account_id=flt.account_id)
    cursor: str | None = None
    while True:
        page = service.list_customers(session, flt=flt, viewer=viewer, limit=batch_size, cursor=cursor)
        if page.items:
            rows = builder.rows(session, page.items)
            session.flush()
            session.expunge_all()
            yield rows
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


# ---------------------------------------------------------------- writers


class _CsvWriter:
    def __init__(self, out: IO[bytes]) -> None:
        # utf-8-sig writes the BOM Excel needs to read the file as UTF-8 (else it guesses GBK).
        self.text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="")
        self.writer = csv.writer(self.text)

    def row(self, cells: list[Cell] | tuple[str, ...]) -> None:
        self.writer.writerow([neutralise(c.replace("\x00", "")) if isinstance(c, str) else c for c in cells])

    def close(self) -> None:
        self.text.flush()
        self.text.detach()  # the caller's stream stays open


class _XlsxWriter:
    def __init__(self, out: IO[bytes]) -> None:
        from openpyxl import Workbook

        self.out = out
        # write_only: rows go straight to a temporary file, never a million cells in memory.
        self.book = Workbook(write_only=True)
        self.sheet = self.book.create_sheet(title="客户")

    def _cell(self, value: Cell) -> Any:
        if not isinstance(value, str):
            return value
        text = neutralise(_XML_ILLEGAL.sub("", value))[:XLSX_CELL_MAX]
        if text in _XLSX_ERROR_CODES:
            from openpyxl.cell import WriteOnlyCell

            cell = WriteOnlyCell(self.sheet, value=text)
            cell.data_type = "s"
            return cell
        return text

    def row(self, cells: list[Cell] | tuple[str, ...]) -> None:
        self.sheet.append([self._cell(c) for c in cells])

    def close(self) -> None:
        self.book.save(self.out)


def write_export(session: Session, *, flt: CustomerFilter, viewer: Viewer, fmt: ExportFormat, out: IO[bytes],
                 progress: Callable[[int], None] | None = None) -> int:
    """Write the header and every customer of the filter to ``out``; the number of customers."""
    writer = _CsvWriter(out) if fmt is ExportFormat.csv else _XlsxWriter(out)
    writer.row(HEADERS)
    count = 0
    for batch in iter_rows(session, flt=flt, viewer=viewer):
        for cells in batch:
            writer.row(cells)
        count += len(batch)
        if progress:
            progress(count)
    writer.close()
    return count


# ---------------------------------------------------------------- audit and filters as data


def describe_filter(session: Session, flt: CustomerFilter) -> dict[str, Any]:
    """The filter as the audit log shows it: only what was set, tags by name."""
    data = {k: v for k, v in flt.to_json().items() if v not in (None, "", []) and k != "sort"}
    if flt.tag_ids:
        names = {tag_id: f"{group}:{name}" for tag_id, group, name in session.execute(
            select(Tag.id, TagGroup.name, Tag.name).join(TagGroup, TagGroup.id == Tag.group_id)
            .where(Tag.id.in_(flt.tag_ids)))}
        data["tags"] = [names.get(i, str(i)) for i in flt.tag_ids]
    return data


def record_export(session: Session, *, viewer: Viewer, flt: CustomerFilter, fmt: ExportFormat, rows: int,
                  via: str) -> None:
    """The one audit entry of an export: who, which filter, how many customers, which way."""
    team_service.record_audit(
        session, actor=viewer, action="export", entity_type="customers",
        summary=_("{n} customers exported as {format}", n=rows, format=fmt.value.upper()),
        after={"filter": describe_filter(session, flt), "rows": rows, "format": fmt.value, "via": via,
               "phones_masked": not viewer.may_see_phones, "phones_included": viewer.may_see_phones})


def download_name(fmt: ExportFormat) -> str:
    return f"customers-{datetime.now(local_zone()):%Y%m%d-%H%M}.{fmt.value}"


# ---------------------------------------------------------------- stored exports (background jobs)


@dataclass(frozen=True)
class StoredExport:
    token: str
    user_id: int | None
    filename: str
    fmt: ExportFormat
    rows: int
    size: int = 0

    @property
    def key(self) -> str:
        return _export_key(self.token)

    @property
    def download_url(self) -> str:
        return f"/customers/exports/{self.token}"

    @property
    def api_download_url(self) -> str:
        return f"/api/v1/customers/exports/{self.token}"


EXPORT_AREA = "exports"


def _export_key(token: str) -> str:
    return f"{EXPORT_AREA}/{token}"


def store_export(session: Session, *, flt: CustomerFilter, viewer: Viewer, fmt: ExportFormat, via: str,
                 progress: Callable[[int], None] | None = None) -> StoredExport:
    """Write an export into the shared storage (any app host serves it) under a new random token, and audit it.

    The file is built in a local temporary file first (an XLSX is a zip: it needs to seek), then
    stored in one go; a crash leaves nothing but the temporary file, which the system removes.
    """
    viewer = export_policy.export_viewer(session, viewer)  # the role's right as it stands now
    sweep_exports()
    token = secrets.token_hex(16)
    with tempfile.TemporaryFile() as scratch:
        rows = write_export(session, flt=flt, viewer=viewer, fmt=fmt, out=scratch, progress=progress)
        scratch.seek(0)
        filename = download_name(fmt)
        stored = storage.put(_export_key(token), scratch, meta={"user_id": viewer.user_id, "filename": filename,
                                                                "format": fmt.value, "rows": rows})
    record_export(session, viewer=viewer, flt=flt, fmt=fmt, rows=rows, via=via)
    return StoredExport(token=token, user_id=viewer.user_id, filename=filename, fmt=fmt, rows=rows, size=stored.size)


def get_export(token: str, *, viewer: Viewer) -> StoredExport:
    """A stored export of this user; someone else's token is not found, an old one has expired."""
    found = storage.info(_export_key(token)) if _TOKEN.match(token) else None
    if found is None:
        raise NotFound("This export is gone; export the list again")
    meta = found.meta
    if meta.get("user_id") is None or meta.get("user_id") != viewer.user_id:
        raise NotFound("This export is gone; export the list again")
    if utcnow() - found.created_at > timedelta(seconds=EXPORT_TTL_SECONDS):
        discard_export(token)
        raise NotFound("This export has expired; export the list again")
    return StoredExport(token=token, user_id=meta["user_id"], filename=meta["filename"],
                        fmt=ExportFormat(meta["format"]), rows=int(meta.get("rows", 0)), size=found.size)


def discard_export(token: str) -> None:
    if _TOKEN.match(token):
        storage.delete_file(_export_key(token))


def sweep_exports() -> None:
    """Delete exports older than EXPORT_TTL_SECONDS: they hold personal data."""
    storage.sweep(EXPORT_AREA, older_than=utcnow() - timedelta(seconds=EXPORT_TTL_SECONDS))
