"""RFM: recency, frequency and monetary scores and the eight classic segments, as stored facts.

Why stored: "重要挽留客户 who bought tea in 90 days" must be an index lookup at a million
customers, and the dashboard's distribution a GROUP BY over one small table.

How: one aggregate over counted orders (``orders.models.COUNTED_STATUSES``; amounts net of
refunds) per customer goes into a temporary table; each metric is scored 1–5 against four cut
points — the quintiles of this run (a value scores one more for each cut it is above, so equal
values always share a score), or an admin's thresholds — and ``customer_rfm`` is rewritten from
the temporary table in one INSERT … SELECT. A score at or above ``high_from`` is "high"; high or
low R, F and M name the segment (重要价值 = all three high … 一般挽留 = all three low).

The nightly job (``segments.jobs``) refreshes everyone and keeps the cut points;
``refresh_rfm_for`` rescores a few customers after their orders change against the kept cut
points, in the caller's transaction.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Column, Integer, MetaData, Numeric, Table, case, delete, func, insert, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from siyu.core.db import UTCDateTime, utcnow
from siyu.core.models import AppSetting
from siyu.core.viewer import Viewer
from siyu.orders.facts import on_facts_changed
from siyu.orders.models import COUNTED_STATUSES, Order
from siyu.segments.models import CustomerRfm, RfmSegment

SETTINGS_KEY = "rfm_settings"
STATE_KEY = "rfm_state"  # the cut points of the last full refresh
SCORES = 5


class RfmSettings(BaseModel):
    """Quintiles of the current buyers, or fixed thresholds (the minimum for scores 2, 3, 4 and 5)."""

    mode: str = Field("quintile", pattern="^(quintile|thresholds)$")
    # Thresholds mode: bought within this many days scores 5, 4, 3, 2 (ascending days).
    recency_days: list[int] = Field(default_factory=lambda: [30, 60, 120, 240], min_length=4, max_length=4)
    frequency: list[int] = Field(default_factory=lambda: [2, 3, 5, 8], min_length=4, max_length=4)
    monetary: list[Decimal] = Field(default_factory=lambda: [Decimal(200), Decimal(500), Decimal(1000),
                                                              Decimal(3000)], min_length=4, max_length=4)
    high_from: int = Field(3, ge=2, le=5)  # a score from this up counts as "high"

    @model_validator(mode="after")
    def _ascending(self) -> RfmSettings:
        for name in ("recency_days", "frequency", "monetary"):
            values = getattr(self, name)
            if any(b < a for a, b in itertools.pairwise(values)) or any(v < 0 for v in values):
                raise ValueError(f"{name}: thresholds must be ascending and not negative")
        return self


def get_settings(session: Session) -> RfmSettings:
    row = session.get(AppSetting, SETTINGS_KEY)
    return RfmSettings.model_validate(row.value) if row else RfmSettings()


def save_settings(session: Session, *, settings: RfmSettings, actor: Viewer) -> RfmSettings:
    from siyu.team import service as team_service

    row = session.get(AppSetting, SETTINGS_KEY)
    before = row.value if row else None
    value = settings.model_dump(mode="json")
    if row is None:
        session.add(AppSetting(key=SETTINGS_KEY, value=value))
    else:
        row.value = value
    team_service.record_audit(session, actor=actor, action="update", entity_type="rfm_settings",
                              before=before, after=value)
    return settings


@dataclass
class Cuts:
    """Four ascending cut points per metric; a value above k of them scores k + 1."""

    recency: list[datetime]
    frequency: list[int]
    monetary: list[Decimal]
    inclusive: bool  # thresholds: a value equal to a cut reaches it

    def to_json(self) -> dict[str, Any]:
        return {"recency": [v.isoformat() for v in self.recency], "frequency": self.frequency,
                "monetary": [str(v) for v in self.monetary], "inclusive": self.inclusive}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cuts:
        return cls(recency=[datetime.fromisoformat(v) for v in data["recency"]], frequency=list(data["frequency"]),
                   monetary=[Decimal(v) for v in data["monetary"]], inclusive=bool(data["inclusive"]))


@dataclass
class RefreshResult:
    customers: int
    seconds: float
    counts: dict[str, int]


_meta = MetaData()
_agg = Table(
    "rfm_agg", _meta,
    Column("customer_id", Integer, primary_key=True),
    Column("last_at", UTCDateTime()),
    Column("frequency", Integer),
    Column("monetary", Numeric(14, 2)),
    prefixes=["TEMPORARY"],
)


def aggregate_query(customer_ids: list[int] | None = None) -> Any:
    """Per customer: last counted order, counted orders, money kept (paid − refunded)."""
    query = (select(Order.customer_id, func.max(Order.paid_at), func.count(),
                    func.sum(Order.amount - Order.refunded_amount))
             .where(Order.customer_id.is_not(None), Order.status.in_([s.value for s in COUNTED_STATUSES]))
             .group_by(Order.customer_id))
    if customer_ids is not None:
        query = query.where(Order.customer_id.in_(customer_ids))
    return query


def _quintile_cuts(values: list[Any]) -> list[Any]:
    values.sort()
    n = len(values)
    return [values[min(n - 1, (k * n) // SCORES)] for k in range(1, SCORES)]


def _score(column: Any, cuts: list[Any], inclusive: bool, type_: Any) -> ColumnElement[int]:
    """1 + the number of cut points the value is above (or reaches, for thresholds)."""
    whens = []
    for k in range(len(cuts), 0, -1):
        bound = literal(cuts[k - 1], type_)
        whens.append((column >= bound if inclusive else column > bound, k + 1))
    return case(*whens, else_=1)


def segment_case(r: Any, f: Any, m: Any, high_from: int) -> ColumnElement[str]:
    rh, fh, mh = r >= high_from, f >= high_from, m >= high_from
    return case(
        (rh & fh & mh, RfmSegment.important_value.value),
        (rh & ~fh & mh, RfmSegment.important_develop.value),
        (~rh & fh & mh, RfmSegment.important_keep.value),
        (~rh & ~fh & mh, RfmSegment.important_retain.value),
        (rh & fh & ~mh, RfmSegment.general_value.value),
        (rh & ~fh & ~mh, RfmSegment.general_develop.value),
        (~rh & fh & ~mh, RfmSegment.general_keep.value),
        else_=RfmSegment.general_retain.value,
    )


def _threshold_cuts(settings: RfmSettings, now: datetime) -> Cuts:
    # Bought within d days ⇔ last order at or after now − d: ascending times for descending days.
    recency = [now - timedelta(days=d) for d in reversed(settings.recency_days)]
    return Cuts(recency=recency, frequency=list(settings.frequency), monetary=list(settings.monetary),
                inclusive=True)


def _fill_aggregate(session: Session, customer_ids: list[int] | None) -> None:
    bind = session.connection()
    _agg.drop(bind, checkfirst=True)
    _agg.create(bind)
    session.execute(insert(_agg).from_select(["customer_id", "last_at", "frequency", "monetary"],
                                             aggregate_query(customer_ids)))


def _write_scores(session: Session, cuts: Cuts, high_from: int, now: datetime) -> None:
    r = _score(_agg.c.last_at, cuts.recency, cuts.inclusive, UTCDateTime())
    f = _score(_agg.c.frequency, cuts.frequency, cuts.inclusive, Integer())
    m = _score(_agg.c.monetary, cuts.monetary, cuts.inclusive, Numeric(14, 2))
    scored = select(_agg.c.customer_id, _agg.c.last_at, _agg.c.frequency, _agg.c.monetary,
                    r.label("r"), f.label("f"), m.label("m")).subquery()
    rows = select(scored.c.customer_id, scored.c.last_at, scored.c.frequency, scored.c.monetary,
                  scored.c.r, scored.c.f, scored.c.m, segment_case(scored.c.r, scored.c.f, scored.c.m, high_from),
                  literal(now, UTCDateTime()))
    session.execute(insert(CustomerRfm).from_select(
        ["customer_id", "last_order_at", "frequency", "monetary", "r_score", "f_score", "m_score", "segment",
         "computed_at"], rows))


def refresh_all(session: Session, *, now: datetime | None = None) -> RefreshResult:
    """Every buyer scored again (the nightly job); keeps this run's cut points for later rescoring."""
    started = datetime.now(UTC)
    now = now or utcnow()
    settings = get_settings(session)
    _fill_aggregate(session, None)
    if settings.mode == "thresholds":
        cuts = _threshold_cuts(settings, now)
    else:
        rows = session.execute(select(_agg.c.last_at, _agg.c.frequency, _agg.c.monetary)).all()
        if rows:
            recency, frequency, monetary = (list(col) for col in zip(*rows, strict=True))
            cuts = Cuts(recency=_quintile_cuts(recency), frequency=_quintile_cuts(frequency),
                        monetary=_quintile_cuts([Decimal(v) for v in monetary]), inclusive=False)
        else:
            cuts = _threshold_cuts(settings, now)
    session.execute(delete(CustomerRfm))
    _write_scores(session, cuts, settings.high_from, now)
    _agg.drop(session.connection(), checkfirst=True)
    state = {"cuts": cuts.to_json(), "computed_at": now.isoformat(), "high_from": settings.high_from,
             "mode": settings.mode}
    row = session.get(AppSetting, STATE_KEY)
    if row is None:
        session.add(AppSetting(key=STATE_KEY, value=state))
    else:
        row.value = state
    counts = distribution(session)
    return RefreshResult(customers=sum(counts.values()), counts=counts,
                         seconds=(datetime.now(UTC) - started).total_seconds())


def refresh_rfm_for(session: Session, customer_ids: list[int] | set[int], now: datetime | None = None) -> None:
    """Rescore these customers after their orders changed, in the caller's transaction.

    Scored against the cut points of the last full refresh (before the first one, and in
    thresholds mode, against the thresholds); a customer with no counted order left loses their
    row. Cheap enough for every order write: one aggregate over these customers' orders.
    """
    ids = sorted({int(i) for i in customer_ids})
    if not ids:
        return
    now = now or utcnow()
    settings = get_settings(session)
    state = session.get(AppSetting, STATE_KEY)
    if settings.mode == "thresholds" or state is None:
        cuts = _threshold_cuts(settings, now)
    else:
        cuts = Cuts.from_json(state.value["cuts"])
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        session.execute(delete(CustomerRfm).where(CustomerRfm.customer_id.in_(chunk)))
        _fill_aggregate(session, chunk)
        _write_scores(session, cuts, settings.high_from, now)
    _agg.drop(session.connection(), checkfirst=True)


def distribution(session: Session, *, scope: ColumnElement[bool] | None = None) -> dict[str, int]:
    """Buyers per RFM segment (every segment present, zero when empty)."""
    query = select(CustomerRfm.segment, func.count()).group_by(CustomerRfm.segment)
    if scope is not None:
        from siyu.customers.models import Customer

        query = query.join(Customer, Customer.id == CustomerRfm.customer_id).where(scope)
    counts = {s.value: 0 for s in RfmSegment}
    counts.update({segment: int(count) for segment, count in session.execute(query)})
    return counts


def segment_of(session: Session, *, customer_id: int) -> str | None:
    return session.scalar(select(CustomerRfm.segment).where(CustomerRfm.customer_id == customer_id))


# RFM follows every change of a customer's purchase facts (an order, a refund, a match, a merge),
# in the same transaction: the orders domain calls its listeners after writing the facts.
on_facts_changed(refresh_rfm_for)
