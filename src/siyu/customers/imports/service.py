"""Customer import from CSV and XLSX: friend lists exported from other tools and phones.

Why it is shaped this way:

- **The whole file is validated before anything is written.** One bad phone at row 9,731
  and nothing changes; the report lists every bad row (spreadsheet numbering: the header is
  row 1, so the operator finds the row in Excel) and column (the file's own header text).
- **Streamed, twice.** The file is read once to validate and once to write, in batches of
  ``BATCH_ROWS``; nothing holds the whole file or 100,000 ORM objects. Each batch looks up
  existing customers with one query per dedup key and inserts with multi-row INSERTs.
- **Dedup order:** WeCom external user id, then phone, then (account, WeChat ID). A row with
  none of these is matched by (account, remark name — or the nickname when there is no
  remark name), so running the same import twice never creates a customer twice.
- **Two rows of one file that are the same customer are an error**, reported with both row
  numbers, not silently merged: only the operator knows which row is right.
- **Cells are text.** A cell starting with ``=`` is imported as those characters; XLSX files
  are read with their formulas as formula text, never as computed values.
- **Existing customers** are either updated — empty fields filled, phones and tags added,
  the friendship with the target account added — or skipped; the user chooses.

The writes keep the customer rules: tags through ``service.resolve_tags`` (a new tag needs
its group named, computed groups are refused), computed facts through
``service.refresh_computed_ids``, the search index through ``search.mark_dirty``, and one
audit entry per import with the counts.
"""

from __future__ import annotations

import codecs
import csv
import enum
import io
import re
import secrets
import unicodedata
import zipfile
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy import Table, insert, or_, select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core import storage
from siyu.core.db import insert_ids as _insert_ids
from siyu.core.db import utcnow
from siyu.core.errors import DomainError, Forbidden, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.ids import parse_id
from siyu.core.spreadsheet import is_masked_phone, unneutralise
from siyu.core.viewer import Viewer
from siyu.customers import service
from siyu.customers.models import (
    Customer,
    CustomerTag,
    Friendship,
    FriendshipStatus,
    Phone,
    Tag,
    Touch,
    TouchKind,
)
from siyu.customers.phones import normalise_mobile
from siyu.customers.search import index as search
from siyu.team import service as team_service

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_ROWS = 1_000_000
BATCH_ROWS = 1000  # rows per flush: small IN lists and transactions, few round trips
BACKGROUND_ROWS = 5000  # larger files are written by a background job, not inside the request
MAX_REPORTED_ERRORS = 500  # the report lists this many; the total is always counted
# An XLSX is a zip: refuse one that unpacks to more than this (a "zip bomb").
MAX_XLSX_UNPACKED_BYTES = 512 * 1024 * 1024
# Python's csv module refuses cells over 128 KB with an error that names no column; let it
# read anything an upload can hold so an over-long cell is reported with its row and column.
CSV_FIELD_LIMIT = 64 * 1024 * 1024
UPLOAD_TTL_SECONDS = 24 * 3600
SAMPLE_ROWS = 3

ZIP_MAGIC = b"PK\x03\x04"
_TOKEN = re.compile(r"^[0-9a-f]{32}$")
TAG_SPLIT = re.compile(r"[,，;；|、\n]+")
PHONE_SPLIT = re.compile(r"[,，;；/、|\n]+")
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9_\-]+")
_BRACKETS = re.compile(r"\(.*?\)|\[.*?\]|【.*?】")
_HEADER_JUNK = re.compile(r"[\s_\-*:]")


class ImportMode(enum.StrEnum):
    update = "update"  # fill empty fields, add phones, tags and the friendship
    skip = "skip"  # leave existing customers exactly as they are


@dataclass(frozen=True)
class FieldSpec:
    key: str
    label: str  # message id
    max_length: int
    aliases: tuple[str, ...]
    repeatable: bool = False  # several columns may feed it (tags, phones)


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("remark_name", N_("Remark name"), 128, ("备注名", "备注", "备注名称", "remark", "remarkname")),
    FieldSpec("name", N_("Nickname"), 128,
              ("昵称", "微信昵称", "客户昵称", "name", "nickname", "姓名", "客户名称", "客户姓名", "名字")),
    FieldSpec("wechat_id", N_("WeChat ID"), 64,
              ("微信号", "微信id", "微信帐号", "微信账号", "wechat", "wechatid", "wxid")),
    FieldSpec("external_userid", N_("WeCom external user ID"), 64,
              ("企业微信id", "外部联系人id", "企微id", "externaluserid", "externalid")),
    FieldSpec("tags", N_("Tags"), 2000, ("标签", "客户标签", "企业标签", "tags", "tag"), repeatable=True),
    FieldSpec("phone", N_("Phone"), 200, ("电话", "手机", "手机号", "手机号码", "电话号码", "联系电话", "phone",
                                          "mobile", "tel"), repeatable=True),
    FieldSpec("description", N_("Description"), 2000, ("描述", "备注描述", "description", "desc")),
    FieldSpec("city", N_("City"), 64, ("地区", "城市", "所在地区", "所在城市", "city", "region")),
    FieldSpec("source", N_("Source"), 64, ("来源", "添加来源", "客户来源", "渠道", "source")),
    FieldSpec("account", N_("Account"), 64, ("账号", "所属账号", "帐号", "添加人", "所属成员", "account")),
    FieldSpec("gender", N_("Gender"), 8, ("性别", "gender", "sex")),
    FieldSpec("job", N_("Job"), 64, ("职业", "job", "occupation")),
)
FIELD_BY_KEY = {spec.key: spec for spec in FIELDS}
CUSTOMER_TEXT_FIELDS = ("wechat_id", "source", "city", "gender", "job")
FRIENDSHIP_TEXT_FIELDS = ("remark_name", "description")


def _header_key(text: str) -> str:
    """A header as compared with the aliases: ``手机号（必填）`` and ``Mobile`` find their field."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _HEADER_JUNK.sub("", _BRACKETS.sub("", folded))


ALIASES = {_header_key(alias): spec.key for spec in FIELDS for alias in spec.aliases}


# ---------------------------------------------------------------- errors


@dataclass(frozen=True)
class RowError:
    row: int  # spreadsheet row (header = 1); 0 for the file as a whole
    column: str  # the file's header text
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "message": self.message}


class ImportInvalid(Invalid):
    """The file has errors; nothing was written. ``errors`` lists them (up to MAX_REPORTED_ERRORS)."""

    def __init__(self, errors: list[RowError], *, total: int | None = None) -> None:
        count = total if total is not None else len(errors)
        super().__init__("The file has {n} errors; nothing was imported", n=count)
        self.errors = errors
        self.total = count


class UploadTooLarge(DomainError):
    status_code = 413


def _file_error(message: str, **params: Any) -> ImportInvalid:
    return ImportInvalid([RowError(0, "", _(message, **params))])


def ensure_may_import(viewer: Viewer) -> None:
    if viewer.role == "service":
        raise Forbidden("Service staff cannot import customers")


# ---------------------------------------------------------------- reading files


@dataclass(frozen=True)
class Source:
    """A readable file — a stored upload (``key``, any host reads it) or a local file (``path``, the
    CLI) — with its format and, for CSV, the text encoding and delimiter found."""

    kind: str  # "csv" or "xlsx"
    encoding: str = ""
    delimiter: str = ","
    path: Path | None = None
    key: str = ""

    def open(self) -> IO[bytes]:
        """The file's bytes, from the start. Always through a file object: openpyxl would judge a
        path by its suffix (an upload has none) where the content is what counts."""
        if self.key:
            try:
                return storage.open_file(self.key)
            except FileNotFoundError as exc:
                raise NotFound("This upload is gone; upload the file again") from exc
        if self.path is None:
            raise ValueError("a source needs a stored key or a path")
        return self.path.open("rb")

    def describe(self) -> dict[str, str]:
        return {"key": self.key, "path": str(self.path) if self.path else "", "kind": self.kind,
                "encoding": self.encoding, "delimiter": self.delimiter}

    @classmethod
    def from_description(cls, data: dict[str, str]) -> Source:
        return cls(kind=data["kind"], encoding=data.get("encoding", ""), delimiter=data.get("delimiter", ","),
                   path=Path(data["path"]) if data.get("path") else None, key=data.get("key", ""))


NOT_SPREADSHEET = N_("This is not a CSV or XLSX file; save it from Excel or WPS as CSV or XLSX")


def open_source(path: Path) -> Source:
    """A local file (the CLI), its format sniffed by content."""
    return sniff(Source(kind="", path=path))


def open_stored(key: str) -> Source:
    """A stored upload, its format sniffed by content."""
    return sniff(Source(kind="", key=key))


def sniff(unknown: Source) -> Source:
    """Sniff the format by content (not by name): XLSX by its zip signature, else CSV text."""
    with unknown.open() as handle:
        head = handle.read(65536)
    if not head.strip():
        raise _file_error(N_("The file is empty"))
    if head.startswith(ZIP_MAGIC):
        _check_xlsx(unknown)
        return replace(unknown, kind="xlsx")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"  # Excel's "Unicode text"
    elif b"\x00" in head:
        raise _file_error(NOT_SPREADSHEET)  # a binary file: image, PDF, old .xls …
    else:
        encoding = _detect_encoding(unknown)
    return replace(unknown, kind="csv", encoding=encoding, delimiter=_sniff_delimiter(unknown, encoding))


def _check_xlsx(source: Source) -> None:
    try:
        with source.open() as handle, zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise _file_error(NOT_SPREADSHEET) from exc
    if "xl/workbook.xml" not in {info.filename for info in infos}:
        raise _file_error(NOT_SPREADSHEET)  # a .docx, a plain zip …
    if sum(info.file_size for info in infos) > MAX_XLSX_UNPACKED_BYTES:
        raise _file_error(N_("This XLSX file unpacks to more than {mb} MB; split it into smaller files"),
                          mb=MAX_XLSX_UNPACKED_BYTES // (1024 * 1024))


def _decodes(source: Source, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    with source.open() as handle:
        try:
            while chunk := handle.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _detect_encoding(source: Source) -> str:
    # UTF-8 (with or without BOM) first, then GB18030 (a superset of GBK, what Excel and WPS
    # write on Chinese Windows); only then a statistical guess.
    for encoding in ("utf-8-sig", "gb18030"):
        if _decodes(source, encoding):
            return encoding
    from charset_normalizer import from_bytes

    with source.open() as handle:  # the guess reads a sample, not the whole file
        best = from_bytes(handle.read(1 << 20)).best()
    if best is None:
        raise _file_error(NOT_SPREADSHEET)
    return str(best.encoding)


def _text(source: Source, encoding: str, errors: str) -> IO[str]:
    return io.TextIOWrapper(source.open(), encoding=encoding, errors=errors, newline="")


def _sniff_delimiter(source: Source, encoding: str) -> str:
    with _text(source, encoding, "replace") as handle:
        first = handle.readline(65536)
    counts = {delimiter: first.count(delimiter) for delimiter in (",", "\t", ";")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # Phone numbers typed into Excel become numbers: 13812345678.0 is "13812345678".
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time_of_day() else value.isoformat(sep=" ")
    if isinstance(value, date | time_of_day):
        return value.isoformat()
    text = getattr(value, "text", None)  # an array formula: its formula text
    return text if isinstance(text, str) else str(value)


Rows = Generator[tuple[int, list[str]], None, None]


def iter_rows(source: Source) -> Rows:
    """(spreadsheet row number, cells as text) for every row, the header row included."""
    if source.kind == "xlsx":
        yield from _xlsx_rows(source)
    else:
        yield from _csv_rows(source)


def _csv_rows(source: Source) -> Rows:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    number = 0
    with _text(source, source.encoding, "strict") as handle:
        reader = csv.reader(handle, delimiter=source.delimiter)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise ImportInvalid([RowError(number + 1, "", _("This row cannot be read: {reason}",
                                                                reason=str(exc)[:200]))]) from exc
            number += 1
            yield number, cells


def _xlsx_rows(source: Source) -> Rows:
    import openpyxl

    handle = source.open()
    try:
        # data_only=False: a formula cell gives its formula text, never a computed value. A file
        # object, not a path: openpyxl refuses a path whose suffix is not .xlsx (an upload's).
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=False)
    except Exception as exc:  # any parse failure of an untrusted file is the user's to fix
        handle.close()
        raise _file_error(N_("This XLSX file cannot be read; open it in Excel or WPS and save it again")) from exc
    try:
        if not workbook.worksheets:
            raise _file_error(N_("The file is empty"))
        sheet = workbook.worksheets[0]
        number = 0
        try:
            for values in sheet.iter_rows(values_only=True):
                number += 1
                yield number, [_cell_text(v) for v in values]
        except DomainError:
            raise
        except Exception as exc:  # a damaged sheet part
            raise ImportInvalid([RowError(number + 1, "", _("This row cannot be read: {reason}",
                                                            reason=type(exc).__name__))]) from exc
    finally:
        workbook.close()
        handle.close()


def column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def column_labels(header: list[str]) -> list[str]:
    """What the report calls each column: its header text, or its letter when it has none."""
    labels = []
    for index, text in enumerate(header):
        text = text.strip()
        if len(text) > 64:
            text = text[:64] + "…"
        labels.append(text or column_letter(index))
    return labels


@dataclass
class Preview:
    headers: list[str]
    mapping: list[str]
    samples: list[list[str]]


def preview(source: Source) -> Preview:
    """The header, the recognised field of each column and a few sample rows (the mapping step)."""
    rows = iter_rows(source)
    header: list[str] | None = None
    samples: list[list[str]] = []
    try:
        for _number, cells in rows:
            if header is None:
                header = cells
                continue
            if any(c.strip() for c in cells):
                samples.append([c[:80] for c in cells])
            if len(samples) >= SAMPLE_ROWS:
                break
    finally:
        rows.close()
    if not header or not any(c.strip() for c in header):
        raise _file_error(N_("The first row must be the header (备注名, 昵称, 手机号 …)"))
    headers = column_labels(header)
    return Preview(headers=headers, mapping=detect_mapping(header),
                   samples=[(s + [""] * len(headers))[:len(headers)] for s in samples])


def detect_mapping(header: list[str]) -> list[str]:
    """The field each column feeds, recognised from Chinese and English header names."""
    taken: set[str] = set()
    mapping = []
    for text in header:
        key = ALIASES.get(_header_key(text[:200]), "")
        if key and key in taken and not FIELD_BY_KEY[key].repeatable:
            key = ""  # a second 备注 column: ignored unless the user maps it
        if key:
            taken.add(key)
        mapping.append(key)
    return mapping


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class ImportOptions:
    mapping: tuple[str, ...] | None = None  # field per column ("" ignores it); None: recognised
    account_id: int | None = None  # the account of every row without an account column value
    mode: ImportMode = ImportMode.update


@dataclass(frozen=True)
class TagRef:
    id: int | None  # None: a new tag of a named group, created when the import is written
    group_id: int
    single: bool  # the group allows one tag per customer


@dataclass(slots=True)
class ParsedRow:
    row: int
    account_id: int
    name: str
    values: dict[str, str]  # non-empty text fields
    phones: list[str]
    tags: list[str]  # raw tag texts, keys of ImportPlan.tags


@dataclass
class ImportPlan:
    """A validated file: how to read it and everything the batches need (ids only, no ORM objects)."""

    source: Source
    headers: list[str]
    mapping: list[str]
    account_id: int | None
    mode: ImportMode
    rows: int = 0
    accounts: dict[str, int] = field(default_factory=dict)  # account cell text → account id
    tags: dict[str, TagRef] = field(default_factory=dict)  # tag text → tag


class _Checker:
    """Validates rows one by one; resolves account and tag texts once each, with the session."""

    def __init__(self, session: Session | None, plan: ImportPlan, viewer: Viewer) -> None:
        self.session = session
        self.plan = plan
        self.viewer = viewer
        self.columns = {key: plan.headers[i] for i, key in reversed(list(enumerate(plan.mapping))) if key}
        self._account_errors: dict[str, str] = {}
        self._tag_errors: dict[str, str] = {}
        self._accounts: dict[str, set[int]] | None = None
        self._groups: Any = None

    def column(self, key: str) -> str:
        return self.columns.get(key, "")

    def parse(self, number: int, cells: list[str]) -> tuple[ParsedRow | None, list[RowError]]:
        errors: list[RowError] = []
        values: dict[str, str] = {}
        phones: list[str] = []
        tags: list[str] = []
        account_text = ""
        blank = True
        for index, key in enumerate(self.plan.mapping):
            # A cell Siyu's export neutralised ('=…) reads back as written.
            cell = unneutralise(cells[index].strip()) if key and index < len(cells) else ""
            if not cell:
                continue
            blank = False
            column = self.plan.headers[index]
            spec = FIELD_BY_KEY[key]
            if len(cell) > spec.max_length:
                errors.append(RowError(number, column, _("Too long: at most {max} characters (this has {n})",
                                                         max=spec.max_length, n=len(cell))))
                continue
            if key == "phone":
                for part in filter(None, (p.strip() for p in PHONE_SPLIT.split(cell))):
                    if is_masked_phone(part):
                        continue  # exported for someone who may not see phones: nothing to import
                    mobile = normalise_mobile(part)
                    if mobile is None:
                        errors.append(RowError(number, column, _("Not a mainland mobile number: {value}",
                                                                 value=part[:40])))
                    elif mobile not in phones:
                        phones.append(mobile)
            elif key == "tags":
                for part in filter(None, (t.strip() for t in TAG_SPLIT.split(cell))):
                    problem = self._tag(part)
                    if problem:
                        errors.append(RowError(number, column, problem))
                    elif part not in tags:
                        tags.append(part)
            elif key == "account":
                account_text = cell
            elif key == "external_userid" and not _EXTERNAL_ID.fullmatch(cell):
                errors.append(RowError(number, column, _("Not a WeCom external user ID: {value}", value=cell[:40])))
            else:
                values[key] = cell
        if blank:
            return None, []  # an empty line: not a customer, not an error
        name = values.get("name") or values.get("remark_name") or ""
        if not name and not any(e.column in (self.column("name"), self.column("remark_name")) for e in errors):
            errors.append(RowError(number, self.column("remark_name") or self.column("name"),
                                   _("A name is required: fill in the remark name or the nickname")))
        account_id = self.plan.account_id
        if account_text:
            problem = self._account(account_text)
            if problem:
                errors.append(RowError(number, self.column("account"), problem))
            else:
                account_id = self.plan.accounts[account_text]
        elif account_id is None:
            errors.append(RowError(number, self.column("account"),
                                   _("Which account is this customer a friend of? Fill in the account")))
        if errors or account_id is None:
            return None, errors
        return ParsedRow(row=number, account_id=account_id, name=name, values=values, phones=phones,
                         tags=tags), []

    # -- accounts: by id, display name or WeChat ID, among the accounts the viewer works on

    def _account(self, text: str) -> str | None:
        if text in self.plan.accounts:
            return None
        if text in self._account_errors:
            return self._account_errors[text]
        if self._accounts is None:
            if self.session is None:
                raise RuntimeError("account lookups need a session")
            index: dict[str, set[int]] = defaultdict(set)
            for account in self.session.scalars(select(Account)):
                if self.viewer.can_see_account(account.id):
                    for key in (str(account.id), account.display_name, account.wechat_id):
                        if key:
                            index[key.strip()].add(account.id)
            self._accounts = index
        found = self._accounts.get(text, set())
        if (account_id := parse_id(text)) in found:
            found = {account_id}
        if len(found) == 1:
            self.plan.accounts[text] = next(iter(found))
            return None
        problem = (_("Several accounts are called {value}; write the account ID instead", value=text[:64]) if found
                   else _("No account {value} among the accounts you work on", value=text[:64]))
        self._account_errors[text] = problem
        return problem

    # -- tags: the rules of service.resolve_tags, checked without creating anything yet

    def _tag(self, raw: str) -> str | None:
        if raw in self.plan.tags:
            return None
        if raw in self._tag_errors:
            return self._tag_errors[raw]
        problem, ref = self._resolve_tag(raw)
        if ref is not None:
            self.plan.tags[raw] = ref
            return None
        self._tag_errors[raw] = problem
        return problem

    def _resolve_tag(self, raw: str) -> tuple[str, TagRef | None]:
        if self._groups is None:
            if self.session is None:
                raise RuntimeError("tag lookups need a session")
            self._groups = service.list_tag_groups(self.session)
        group_name, tag_name = service._split_tag_name(raw)  # the same "组:标签" reading as resolve_tags
        if not tag_name:
            return _("Empty tag name in {value}", value=raw[:64]), None
        if group_name is None:
            matches = [(g, t) for g in self._groups for t in g.tags if t.name == tag_name]
            if len(matches) != 1:
                return (_("Tag {name} is in several groups; write it as group:tag", name=tag_name[:64]) if matches
                        else _("Unknown tag {name}; write it as group:tag to create it", name=tag_name[:64])), None
            group, tag = matches[0]
        else:
            group = next((g for g in self._groups if g.name == group_name), None)
            if group is None:
                return _("Unknown tag group {group}", group=group_name[:64]), None
            tag = next((t for t in group.tags if t.name == tag_name), None)
        if group.is_computed:
            return _("Tags of group {group} are computed and cannot be edited", group=group.name), None
        if tag is None and len(tag_name) > 64:
            return _("Too long: at most {max} characters (this has {n})", max=64, n=len(tag_name)), None
        return "", TagRef(id=tag.id if tag is not None else None, group_id=group.id, single=not group.multi_select)


def _mapping_errors(plan: ImportPlan) -> list[RowError]:
    errors: list[RowError] = []
    seen: dict[str, str] = {}
    for column, key in zip(plan.headers, plan.mapping, strict=True):
        if not key:
            continue
        if key not in FIELD_BY_KEY:
            errors.append(RowError(1, column, _("Unknown field {field}", field=key[:40])))
        elif key in seen and not FIELD_BY_KEY[key].repeatable:
            errors.append(RowError(1, column, _("{field} is already read from column {other}",
                                                field=_(FIELD_BY_KEY[key].label), other=seen[key])))
        seen.setdefault(key, column)
    if "name" not in seen and "remark_name" not in seen:
        errors.append(RowError(1, "", _("The file needs a name column: 备注名 (remark name) or 昵称 (nickname)")))
    if "account" not in seen and plan.account_id is None:
        errors.append(RowError(0, "", _("Choose the account of these customers, or map an account column")))
    return errors


def _dedup_keys(row: ParsedRow, checker: _Checker) -> list[tuple[str, str]]:
    keys = []
    external = row.values.get("external_userid")
    if external:
        keys.append((f"x:{external}", checker.column("external_userid")))
    keys.extend((f"p:{phone}", checker.column("phone")) for phone in row.phones)
    wechat_id = row.values.get("wechat_id")
    if wechat_id:
        keys.append((f"w:{row.account_id}:{wechat_id}", checker.column("wechat_id")))
    if not keys:
        remark = row.values.get("remark_name")
        keys.append((f"n:{row.account_id}:{remark or row.name}",
                     checker.column("remark_name") if remark else checker.column("name")))
    return keys


def check_file(session: Session, *, source: Source, options: ImportOptions, viewer: Viewer) -> ImportPlan:
    """Read the whole file and validate every row; ImportInvalid lists every problem."""
    ensure_may_import(viewer)
    rows = iter_rows(source)
    first = next(rows, None)
    if first is None or not any(c.strip() for c in first[1]):
        raise _file_error(N_("The first row must be the header (备注名, 昵称, 手机号 …)"))
    header = first[1]
    headers = column_labels(header)
    mapping = list(options.mapping) if options.mapping is not None else detect_mapping(header)
    mapping = (mapping + [""] * len(headers))[:len(headers)]
    plan = ImportPlan(source=source, headers=headers, mapping=mapping, account_id=options.account_id,
                      mode=options.mode)
    errors = _mapping_errors(plan)
    if options.account_id is not None:
        account = session.get(Account, options.account_id)
        if account is None or not viewer.can_see_account(options.account_id):
            errors.append(RowError(0, "", _("Account {account_id} not found", account_id=options.account_id)))
            plan.account_id = None
    if errors:
        rows.close()
        raise ImportInvalid(errors)
    checker = _Checker(session, plan, viewer)
    seen: dict[str, int] = {}
    total_errors = 0
    reported: list[RowError] = []
    for number, cells in rows:
        parsed, row_errors = checker.parse(number, cells)
        if parsed is not None:
            plan.rows += 1
            keys = _dedup_keys(parsed, checker)
            for key, column in keys:
                other = seen.get(key)
                if other is not None:
                    row_errors = [RowError(number, column, _("Same customer as row {other} (same {what})",
                                                             other=other, what=column))]
                    break
            for key, _column in keys:
                seen.setdefault(key, number)
            if plan.rows > MAX_ROWS:
                row_errors = [RowError(number, "", _("Too many rows: at most {max} per file", max=MAX_ROWS))]
        total_errors += len(row_errors)
        reported.extend(row_errors[:max(0, MAX_REPORTED_ERRORS - len(reported))])
        if plan.rows > MAX_ROWS:
            break
    if total_errors:
        raise ImportInvalid(reported, total=total_errors)
    if not plan.rows:
        raise _file_error(N_("The file has a header but no customers"))
    return plan


def iter_batches(plan: ImportPlan, viewer: Viewer, *, size: int = BATCH_ROWS) -> Iterator[list[ParsedRow]]:
    """The validated rows again, in batches; every account and tag text is already resolved."""
    checker = _Checker(None, plan, viewer)
    batch: list[ParsedRow] = []
    rows = iter_rows(plan.source)
    next(rows, None)  # the header
    for number, cells in rows:
        parsed, errors = checker.parse(number, cells)
        if errors:  # the file changed since it was checked
            raise ImportInvalid(errors)
        if parsed is not None:
            batch.append(parsed)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------- writing


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    skipped: int = 0

    def add(self, other: Counts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.skipped += other.skipped


@dataclass
class ImportResult:
    rows: int
    counts: Counts
    dry_run: bool

    def summary(self) -> dict[str, Any]:
        return {"created": self.counts.created, "updated": self.counts.updated, "skipped": self.counts.skipped,
                "rows": self.rows, "dry_run": self.dry_run}


def _create_pending_tags(session: Session, plan: ImportPlan, rows: list[ParsedRow]) -> None:
    pending = sorted({raw for row in rows for raw in row.tags if plan.tags[raw].id is None})
    if not pending:
        return
    for raw, tag in zip(pending, service.resolve_tags(session, names=pending, create_missing=True), strict=True):
        plan.tags[raw] = TagRef(id=tag.id, group_id=tag.group_id, single=plan.tags[raw].single)


def _phone_variants(phones: set[str]) -> dict[str, str]:
    # Phones saved elsewhere may carry the country code; all of them are the same number.
    return {variant: p for p in phones for variant in (p, f"+86{p}", f"86{p}", f"0086{p}")}


def _find_existing(session: Session, rows: list[ParsedRow]) -> dict[int, int]:
    """Row position → id of the existing customer it is, in the dedup order."""
    externals = sorted({r.values["external_userid"] for r in rows if "external_userid" in r.values})
    by_external: dict[str, int] = {}
    if externals:
        for customer_id, merged_into, external in session.execute(
                select(Customer.id, Customer.merged_into_id, Customer.wecom_external_userid)
                .where(Customer.wecom_external_userid.in_(externals))):
            if external:
                by_external[external] = merged_into or customer_id
    variants = _phone_variants({p for r in rows for p in r.phones})
    by_phone: dict[str, int] = {}
    if variants:
        for number, customer_id in session.execute(
                select(Phone.number, Phone.customer_id).join(Customer, Customer.id == Phone.customer_id)
                .where(Phone.number.in_(sorted(variants)), Customer.merged_into_id.is_(None))
                .order_by(Phone.customer_id)):
            by_phone.setdefault(variants[number], customer_id)
    accounts = sorted({r.account_id for r in rows})
    wechat_ids = sorted({r.values["wechat_id"] for r in rows if "wechat_id" in r.values})
    by_wechat: dict[tuple[int, str], int] = {}
    if wechat_ids:
        for account_id, known_wechat_id, customer_id in session.execute(
                select(Friendship.account_id, Customer.wechat_id, Customer.id)
                .join(Customer, Customer.id == Friendship.customer_id)
                .where(Customer.wechat_id.in_(wechat_ids), Friendship.account_id.in_(accounts),
                       Customer.merged_into_id.is_(None)).order_by(Customer.id)):
            by_wechat.setdefault((account_id, known_wechat_id), customer_id)
    weak = {position for position, r in enumerate(rows)
            if not r.phones and not ({"external_userid", "wechat_id"} & r.values.keys())}
    remarks = sorted({rows[p].values["remark_name"] for p in weak if "remark_name" in rows[p].values})
    names = sorted({rows[p].name for p in weak if "remark_name" not in rows[p].values})
    by_remark: dict[tuple[int, str], int] = {}
    by_name: dict[tuple[int, str], int] = {}
    if weak:
        for account_id, known_remark, known_name, customer_id in session.execute(
                select(Friendship.account_id, Friendship.remark_name, Customer.name, Customer.id)
                .join(Customer, Customer.id == Friendship.customer_id)
                .where(Friendship.account_id.in_(accounts), Customer.merged_into_id.is_(None),
                       or_(Friendship.remark_name.in_(remarks), Customer.name.in_(names)))
                .order_by(Customer.id)):
            by_remark.setdefault((account_id, known_remark), customer_id)
            by_name.setdefault((account_id, known_name), customer_id)
    found: dict[int, int] = {}
    for position, row in enumerate(rows):
        external = row.values.get("external_userid")
        match: int | None = by_external.get(external) if external else None
        match = match or next((by_phone[p] for p in row.phones if p in by_phone), None)
        wechat_id = row.values.get("wechat_id")
        if match is None and wechat_id:
            match = by_wechat.get((row.account_id, wechat_id))
        if match is None and position in weak:
            remark = row.values.get("remark_name")
            match = by_remark.get((row.account_id, remark)) if remark else by_name.get((row.account_id, row.name))
        if match is not None:
            found[position] = match
    return found


def _tags_to_add(plan: ImportPlan, raws: list[str], have: set[int | None],
                 have_groups: set[int]) -> list[TagRef]:
    """Tags a row adds: new ones only; a one-tag-per-customer group keeps the tag it has."""
    chosen: dict[Any, TagRef] = {}
    for raw in raws:
        ref = plan.tags[raw]
        if ref.id is not None and ref.id in have:
            continue
        if ref.single:
            if ref.group_id in have_groups:
                continue
            chosen[("group", ref.group_id)] = ref  # the last one of the row wins
        else:
            chosen[("tag", ref.id if ref.id is not None else raw)] = ref
    return list(chosen.values())


def apply_batch(session: Session, *, plan: ImportPlan, rows: list[ParsedRow], viewer: Viewer,
                write: bool = True) -> Counts:
    """Create the new customers of a validated batch and update (or skip) the existing ones.

    With ``write=False`` nothing is changed: the counts say what an import would do.
    """
    if write:
        _create_pending_tags(session, plan, rows)
    matches = _find_existing(session, rows)
    counts = Counts()
    new_rows = [row for position, row in enumerate(rows) if position not in matches]
    counts.created = len(new_rows)
    touched: list[int] = []
    if write and new_rows:
        touched.extend(_insert_new(session, plan=plan, rows=new_rows, viewer=viewer))
    if matches and plan.mode is ImportMode.skip:
        counts.skipped = len(matches)
    elif matches:
        updated = _update_existing(session, plan=plan, rows=rows, matches=matches, viewer=viewer, write=write)
        counts.updated = len(updated)
        counts.skipped = len(matches) - len(updated)
        touched.extend(updated)
    if write and touched:
        service.refresh_computed_ids(session, customer_ids=touched)
    return counts


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


def _insert_new(session: Session, *, plan: ImportPlan, rows: list[ParsedRow], viewer: Viewer) -> list[int]:
    # Core INSERTs of plain dicts (no ORM objects, no ORM bulk bookkeeping): the hot loop of an import.
    now = utcnow()
    customer_ids = _insert_ids(session, _table(Customer), [
        {"name": r.name, "wecom_external_userid": r.values.get("external_userid") or None,
         **{key: r.values.get(key, "") for key in CUSTOMER_TEXT_FIELDS},
         "created_at": now, "updated_at": now} for r in rows])
    friendship_ids = _insert_ids(session, _table(Friendship), [
        {"customer_id": cid, "account_id": r.account_id,
         **{key: r.values.get(key, "") for key in FRIENDSHIP_TEXT_FIELDS},
         "status": FriendshipStatus.active.value, "channel_state": "", "added_at": now}
        for cid, r in zip(customer_ids, rows, strict=True)])
    phones = [{"friendship_id": fid, "customer_id": cid, "number": number}
              for cid, fid, r in zip(customer_ids, friendship_ids, rows, strict=True) for number in r.phones]
    if phones:
        session.execute(insert(_table(Phone)), phones)
    links = [{"customer_id": cid, "tag_id": ref.id, "created_at": now}
             for cid, r in zip(customer_ids, rows, strict=True)
             for ref in _tags_to_add(plan, r.tags, set(), set())]
    if links:
        session.execute(insert(_table(CustomerTag)), links)
    session.execute(insert(_table(Touch)), [
        {"customer_id": cid, "account_id": r.account_id, "user_id": viewer.user_id, "kind": TouchKind.system.value,
         "content": "", "amount": None, "details": {"event": "created", "via": "import"}, "occurred_at": now,
         "created_at": now} for cid, r in zip(customer_ids, rows, strict=True)])
    search.mark_dirty(session, customer_ids)  # rows inserted without the ORM
    return customer_ids


def _update_existing(session: Session, *, plan: ImportPlan, rows: list[ParsedRow], matches: dict[int, int],
                     viewer: Viewer, write: bool) -> list[int]:
    """Fill empty fields, add phones, tags and friendships; the ids of the customers that changed."""
    ids = sorted(set(matches.values()))
    customers = {c.id: c for c in session.scalars(select(Customer).where(Customer.id.in_(ids)))}
    friendships = {(f.customer_id, f.account_id): f
                   for f in session.scalars(select(Friendship).where(Friendship.customer_id.in_(ids)))}
    phones: dict[int, set[str]] = defaultdict(set)
    for customer_id, number in session.execute(select(Phone.customer_id, Phone.number)
                                               .where(Phone.customer_id.in_(ids))):
        phones[customer_id].add(normalise_mobile(number) or number)
    tags: dict[int, set[int | None]] = defaultdict(set)
    groups: dict[int, set[int]] = defaultdict(set)
    for customer_id, tag_id, group_id in session.execute(
            select(CustomerTag.customer_id, CustomerTag.tag_id, Tag.group_id)
            .join(Tag, Tag.id == CustomerTag.tag_id).where(CustomerTag.customer_id.in_(ids))):
        tags[customer_id].add(tag_id)
        groups[customer_id].add(group_id)
    now = utcnow()
    changed_ids: list[int] = []
    for position, customer_id in sorted(matches.items()):
        row, customer = rows[position], customers[customer_id]
        changed: list[str] = []
        for key in CUSTOMER_TEXT_FIELDS:
            value = row.values.get(key)
            if value and not getattr(customer, key):
                changed.append(key)
                if write:
                    setattr(customer, key, value)
        external = row.values.get("external_userid")
        if external and not customer.wecom_external_userid:
            changed.append("wecom_external_userid")
            if write:
                customer.wecom_external_userid = external
        friendship = friendships.get((customer_id, row.account_id))
        if friendship is None or friendship.status != FriendshipStatus.active.value:
            changed.append("account_id")
        if write:
            if friendship is None:
                friendship = Friendship(customer_id=customer_id, account_id=row.account_id)
                session.add(friendship)
                friendships[(customer_id, row.account_id)] = friendship
            elif friendship.status != FriendshipStatus.active.value:  # they are friends again
                friendship.status, friendship.removed_at = FriendshipStatus.active.value, None
        for key in FRIENDSHIP_TEXT_FIELDS:
            value = row.values.get(key)
            if value and (friendship is None or not getattr(friendship, key)):
                changed.append(key)
                if write and friendship is not None:
                    setattr(friendship, key, value)
        new_phones = [p for p in row.phones if p not in phones[customer_id]]
        if new_phones:
            changed.append("phones")
            phones[customer_id].update(new_phones)
            if write and friendship is not None:
                # A new friendship has no id yet: its phones ride on the relationship (no query either way).
                if friendship.id is None:
                    friendship.phones.extend(Phone(customer_id=customer_id, number=p) for p in new_phones)
                else:
                    session.add_all(Phone(friendship_id=friendship.id, customer_id=customer_id, number=p)
                                    for p in new_phones)
        new_tags = _tags_to_add(plan, row.tags, tags[customer_id], groups[customer_id])
        if new_tags:
            changed.append("tags")
            tags[customer_id].update(ref.id for ref in new_tags)
            groups[customer_id].update(ref.group_id for ref in new_tags)
            if write:
                session.add_all(CustomerTag(customer_id=customer_id, tag_id=ref.id) for ref in new_tags)
        if not changed:
            continue
        changed_ids.append(customer_id)
        if write:
            customer.updated_at = now
            session.add(Touch(customer_id=customer_id, account_id=row.account_id, user_id=viewer.user_id,
                              kind=TouchKind.field_change.value,
                              details={"fields": list(dict.fromkeys(changed)), "via": "import"}))
    return changed_ids


def record_import(session: Session, *, viewer: Viewer, filename: str, plan: ImportPlan, result: ImportResult) -> None:
    """The one audit entry of an import, with its counts."""
    team_service.record_audit(
        session, actor=viewer, action="import", entity_type="customers", summary=filename,
        after={**result.summary(), "file": filename, "mode": plan.mode.value, "account_id": plan.account_id,
               "columns": {h: k for h, k in zip(plan.headers, plan.mapping, strict=True) if k}})


def run_import(session: Session, *, source: Source, options: ImportOptions, viewer: Viewer, filename: str,
               dry_run: bool = False) -> ImportResult:
    """Validate, then write everything in the caller's transaction (the caller commits).

    For files up to a few thousand rows; larger ones go through ``run_in_batches``.
    """
    plan = check_file(session, source=source, options=options, viewer=viewer)
    return execute(session, plan=plan, viewer=viewer, filename=filename, dry_run=dry_run)


def execute(session: Session, *, plan: ImportPlan, viewer: Viewer, filename: str,
            dry_run: bool = False) -> ImportResult:
    """Write a checked plan in the caller's transaction (or, for a dry run, only count)."""
    counts = Counts()
    for batch in iter_batches(plan, viewer):
        counts.add(apply_batch(session, plan=plan, rows=batch, viewer=viewer, write=not dry_run))
    result = ImportResult(rows=plan.rows, counts=counts, dry_run=dry_run)
    if not dry_run:
        record_import(session, viewer=viewer, filename=filename, plan=plan, result=result)
    return result


Transaction = Callable[[], AbstractContextManager[Session]]


def run_in_batches(transaction: Transaction, *, source: Source, options: ImportOptions, viewer: Viewer,
                   filename: str, progress: Callable[[int, int], None] | None = None,
                   checkpoint: Callable[[Session, dict[str, Any]], None] | None = None,
                   resume: dict[str, Any] | None = None) -> ImportResult:
    """Validate the whole file, then write it one batch per transaction — resumable after a crash.

    Why per batch and not one transaction: SQLite has one writer, and one transaction over
    100,000 rows would hold every other write — WeCom callbacks, which must answer within
    seconds, included — for the whole import. Instead the import is made to always reach its
    end: ``checkpoint(session, state)`` is called inside each batch's transaction (and the
    audit's), so the position (rows written, counts) commits atomically with the rows it
    counts; a run given that state as ``resume`` skips exactly the rows already written and
    continues. The background job keeps the state on its ``Job`` row and the sweep restarts a
    job whose worker died (``core/jobs.py``), so a killed import ends complete, each row
    written once. The file was validated first, so a batch fails only on an outside problem.
    """
    state = dict(resume or {})
    written = int(state.get("written", 0))
    counts = Counts(**{key: int(state.get(key, 0)) for key in ("created", "updated", "skipped")})
    with transaction() as session:
        plan = check_file(session, source=source, options=options, viewer=viewer)
    if progress:
        progress(written, plan.rows)
    skip = written
    for batch in iter_batches(plan, viewer):
        if skip >= len(batch):  # written by an earlier attempt
            skip -= len(batch)
            continue
        batch, skip = batch[skip:], 0
        with transaction() as session:
            batch_counts = apply_batch(session, plan=plan, rows=batch, viewer=viewer)
            if checkpoint:
                checkpoint(session, {"written": written + len(batch), **_counts_after(counts, batch_counts)})
        counts.add(batch_counts)
        written += len(batch)
        if progress:
            progress(written, plan.rows)
    result = ImportResult(rows=plan.rows, counts=counts, dry_run=False)
    if not state.get("recorded"):
        with transaction() as session:
            record_import(session, viewer=viewer, filename=filename, plan=plan, result=result)
            if checkpoint:
                checkpoint(session, {"written": written, **_counts_after(counts, Counts()), "recorded": True})
    return result


def _counts_after(counts: Counts, more: Counts) -> dict[str, int]:
    return {"created": counts.created + more.created, "updated": counts.updated + more.updated,
            "skipped": counts.skipped + more.skipped}


# ---------------------------------------------------------------- uploads kept for the wizard and workers


@dataclass(frozen=True)
class StoredUpload:
    token: str
    user_id: int | None
    filename: str
    source: Source


UPLOAD_AREA = "uploads"


def _upload_key(token: str) -> str:
    return f"{UPLOAD_AREA}/{token}"


def store_upload(stream: IO[bytes], *, filename: str, viewer: Viewer,
                 max_bytes: int | None = MAX_UPLOAD_BYTES) -> StoredUpload:
    """Keep an upload in the shared storage (any host's worker reads it), refusing files over the limit
    (the CLI's local files have none)."""
    ensure_may_import(viewer)
    _sweep_uploads()
    token = secrets.token_hex(16)
    key = _upload_key(token)
    name = Path(filename.replace("\\", "/")).name[:200] or "upload"
    meta: dict[str, Any] = {"user_id": viewer.user_id, "filename": name}
    try:
        storage.put(key, stream, meta=meta, max_bytes=max_bytes)
    except storage.FileTooLarge as exc:
        raise UploadTooLarge("The file is larger than {mb} MB; split it into smaller files",
                             mb=MAX_UPLOAD_BYTES // (1024 * 1024)) from exc
    try:
        source = open_stored(key)
    except ImportInvalid:
        storage.delete_file(key)
        raise
    storage.update_meta(key, {**meta, "source": source.describe()})
    return StoredUpload(token=token, user_id=viewer.user_id, filename=name, source=source)


def get_upload(token: str, *, viewer: Viewer) -> StoredUpload:
    """An upload of this user (someone else's token is not found)."""
    found = storage.info(_upload_key(token)) if _TOKEN.match(token) else None
    if found is None or "source" not in found.meta or found.meta.get("user_id") != viewer.user_id:
        raise NotFound("This upload is gone; upload the file again")
    source = Source.from_description(found.meta["source"])
    return StoredUpload(token=token, user_id=found.meta["user_id"], filename=found.meta["filename"], source=source)


def discard_upload(token: str) -> None:
    if _TOKEN.match(token):
        storage.delete_file(_upload_key(token))


def _sweep_uploads() -> None:
    """Forget uploads nobody finished within a day."""
    storage.sweep(UPLOAD_AREA, older_than=utcnow() - timedelta(seconds=UPLOAD_TTL_SECONDS))
