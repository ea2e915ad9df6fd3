"""Lucky-draw rules (抽奖): eligibility, prizes with stock and odds, the seeded and recomputable draw.

Why it is shaped this way: a draw for fans must be fair and seen to be fair. The seed is drawn
at random only when the draw is run, then recorded beside the sorted eligible ids (and their
SHA-256 fingerprint) and shown on the page with ``ALGORITHM``; the algorithm uses nothing but
SHA-256 and exact fractions, so anyone can recompute the winners in any language from the seed
and the ids (``compute_winners`` is that recomputation; ``verify`` runs it against the record).
Winners are told through a 今日任务 for their operator; coupon prizes are codes of a coupon batch
(``coupons.service.issue``), gift prizes stay on the winners' ledger (``DrawWinner``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import Conflict, Forbidden, Invalid, NotFound
from siyu.core.i18n import N_, _
from siyu.core.settings import local_zone
from siyu.core.viewer import Viewer
from siyu.coupons import service as coupons_service
from siyu.coupons.models import CouponBatch, IssuedVia
from siyu.customers import service as customers_service
from siyu.customers.models import Touch, TouchKind
from siyu.draws.models import DrawPrize, DrawStatus, DrawWinner, LuckyDraw
from siyu.draws.schemas import DrawIn
from siyu.team import service as team_service

MANAGING_ROLES = ("admin", "planner")
CHUNK = 1000
SHA_SPACE = 2 ** 256

# The draw, step by step (shown on the page after the draw; ``compute_winners`` follows it to the letter).
ALGORITHM = (
    N_("1. Write the eligible customer ids in ascending order, joined by commas; its SHA-256 is the fingerprint."),
    N_('2. The ticket of each customer is the SHA-256 of "seed:id" (hex); take customers in ascending ticket order.'),
    N_('3. For each, u = the SHA-256 of "seed:id:prize" read as a number, divided by 2^256.'),
    N_("4. The prizes, in listed order, take bands of [0, 1) as wide as their odds (percent ÷ 100)."),
    N_("5. The customer wins the prize whose band holds u while it has stock; stop when all stock is given."),
)


def algorithm_text() -> str:
    return " ".join(_(step) for step in ALGORITHM)


class DrawNotFound(NotFound):
    pass


def _require_manager(viewer: Viewer) -> None:
    if viewer.role not in MANAGING_ROLES:
        raise Forbidden("Only an administrator or a planner may run lucky draws")


def create_draw(session: Session, *, data: DrawIn, viewer: Viewer) -> LuckyDraw:
    from siyu.segments import service as segments_service

    _require_manager(viewer)
    try:
        segments_service.get_segment(session, segment_id=data.segment_id, viewer=viewer)
    except NotFound as exc:
        raise Invalid("Segment {segment_id} not found", field="segment_id", segment_id=data.segment_id) from exc
    if sum(p.odds for p in data.prizes) > 100:
        raise Invalid("The prizes' odds add up to more than 100 %", field="prizes")
    batch_ids = {p.coupon_batch_id for p in data.prizes if p.coupon_batch_id is not None}
    known = set(session.scalars(select(CouponBatch.id).where(CouponBatch.id.in_(batch_ids))))
    if batch_ids - known:
        raise Invalid("Coupon batch {batch_id} not found", field="prizes", batch_id=sorted(batch_ids - known)[0])
    draw = LuckyDraw(name=data.name, segment_id=data.segment_id, exclude_blacklisted=data.exclude_blacklisted,
                     created_by_id=viewer.user_id)
    session.add(draw)
    session.flush()
    for position, prize in enumerate(data.prizes):
        session.add(DrawPrize(draw_id=draw.id, position=position, name=prize.name,
                              coupon_batch_id=prize.coupon_batch_id, stock=prize.stock, odds=prize.odds))
    session.flush()
    team_service.record_audit(session, actor=viewer, action="create", entity_type="lucky_draw", entity_id=draw.id,
                              summary=draw.name, after=data.model_dump(mode="json"))
    return draw


def get_draw(session: Session, *, draw_id: int) -> LuckyDraw:
    draw = session.get(LuckyDraw, draw_id)
    if draw is None:
        raise DrawNotFound("Lucky draw not found")
    return draw


def list_draws(session: Session) -> list[LuckyDraw]:
    return list(session.scalars(select(LuckyDraw).order_by(LuckyDraw.id.desc())))


def prizes_of(session: Session, draw_id: int) -> list[DrawPrize]:
    return list(session.scalars(select(DrawPrize).where(DrawPrize.draw_id == draw_id)
                                .order_by(DrawPrize.position, DrawPrize.id)))


def winners_of(session: Session, draw_id: int) -> list[DrawWinner]:
    return list(session.scalars(select(DrawWinner).where(DrawWinner.draw_id == draw_id)
                                .order_by(DrawWinner.position)))


def eligible_ids(session: Session, *, draw: LuckyDraw, viewer: Viewer) -> list[int]:
    """The segment's customers the viewer may see, less the groups' blacklist when asked; ascending."""
    from siyu.groups.moderation import service as moderation_service
    from siyu.segments import service as segments_service

    if draw.segment_id is None:
        return []
    segment = segments_service.get_segment(session, segment_id=draw.segment_id, viewer=viewer)
    flt = segments_service.segment_filter(segment)
    ids: list[int] = []
    while True:
        part = customers_service.matching_ids(session, flt=flt, viewer=viewer, after_id=ids[-1] if ids else 0,
                                              limit=CHUNK * 10)
        if not part:
            break
        ids += part
    if draw.exclude_blacklisted and ids:
        barred = moderation_service.refused_customers(session, ids)
        ids = [i for i in ids if i not in barred]
    return sorted(ids)


def ids_text(ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in sorted(ids))


def digest(ids: Sequence[int]) -> str:
    return hashlib.sha256(ids_text(ids).encode()).hexdigest()


@dataclass(frozen=True)
class Prize:
    id: int
    stock: int
    odds: Decimal  # percent


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def compute_winners(seed: str, ids: Sequence[int], prizes: Sequence[Prize]) -> list[tuple[int, int, int]]:
    """``ALGORITHM``: (position in the ticket order, customer id, prize id) for every winner, in order."""
    left = {p.id: p.stock for p in prizes}
    bands: list[tuple[Fraction, int]] = []  # (upper edge, prize id)
    edge = Fraction(0)
    for prize in prizes:
        edge += Fraction(prize.odds) / 100
        bands.append((edge, prize.id))
    order = sorted(sorted(set(ids)), key=lambda i: _sha(f"{seed}:{i}"))
    winners: list[tuple[int, int, int]] = []
    for position, customer_id in enumerate(order, start=1):
        if not any(left.values()):
            break
        u = Fraction(int(_sha(f"{seed}:{customer_id}:prize"), 16), SHA_SPACE)
        prize_id = next((pid for upper, pid in bands if u < upper), None)
        if prize_id is not None and left[prize_id] > 0:
            left[prize_id] -= 1
            winners.append((position, customer_id, prize_id))
    return winners


def run_draw(session: Session, *, draw_id: int, viewer: Viewer, seed: str | None = None) -> list[DrawWinner]:
    """Draw now: the seed is made here, recorded with the eligible ids, and the winners told and given their prizes."""
    _require_manager(viewer)
    draw = get_draw(session, draw_id=draw_id)
    if draw.status == DrawStatus.drawn.value:
        raise Conflict("This draw was drawn already; its seed and winners are on its page")
    ids = eligible_ids(session, draw=draw, viewer=viewer)
    if not ids:
        raise Invalid("Nobody is eligible: the segment is empty for you, or all are blacklisted. Nothing was drawn.",
                      field="segment_id")
    prizes = prizes_of(session, draw.id)
    now = utcnow()
    draw.seed = seed or secrets.token_hex(16)
    draw.eligible_count, draw.eligible_ids, draw.eligible_digest = len(ids), ids_text(ids), digest(ids)
    draw.status, draw.drawn_at, draw.drawn_by_id = DrawStatus.drawn.value, now, viewer.user_id
    picked = compute_winners(draw.seed, ids, [Prize(p.id, p.stock, Decimal(p.odds)) for p in prizes])
    by_id = {p.id: p for p in prizes}
    codes: dict[int, str] = {}
    for prize in prizes:
        won = [c for _pos, c, pid in picked if pid == prize.id]
        if prize.coupon_batch_id is not None and won:
            # A batch that expired meanwhile: the winner is still a winner; the task shows no code.
            with suppress(Invalid):
                codes.update(coupons_service.issue(session, prize.coupon_batch_id, won, via=IssuedVia.draw.value,
                                                   viewer=viewer, at=now).codes)
    winners = [DrawWinner(draw_id=draw.id, prize_id=pid, customer_id=c, position=pos, code=codes.get(c, ""))
               for pos, c, pid in picked]
    session.add_all(winners)
    _notify(session, draw, winners, by_id, now=now)
    team_service.record_audit(session, actor=viewer, action="draw", entity_type="lucky_draw", entity_id=draw.id,
                              summary=draw.name, after={"seed": draw.seed, "eligible": len(ids),
                                                        "digest": draw.eligible_digest, "winners": len(winners)})
    session.flush()
    return winners


def _notify(session: Session, draw: LuckyDraw, winners: list[DrawWinner], prizes: dict[int, DrawPrize], *,
            now: datetime) -> None:
    from siyu.maintenance import service as maintenance_service
    from siyu.maintenance.models import TaskKind

    if not winners:
        return
    accounts = coupons_service.first_accounts(session, [w.customer_id for w in winners])
    rows = []
    for winner in winners:
        prize = prizes[winner.prize_id]
        what = f"{prize.name} {winner.code}".strip()
        session.add(Touch(customer_id=winner.customer_id, account_id=accounts.get(winner.customer_id),
                          kind=TouchKind.system.value, content=what, occurred_at=now,
                          details={"event": "draw_won", "draw_id": draw.id, "prize_id": prize.id}))
        if winner.customer_id in accounts:
            winner.notified = True
            rows.append({"customer_id": winner.customer_id, "account_id": accounts[winner.customer_id],
                         "ref_id": draw.id, "detail": _("{draw}: won {prize}", draw=draw.name, prize=what)})
    if rows:
        maintenance_service.add_tasks(session, rows, kind=TaskKind.draw_win, day=now.astimezone(local_zone()).date(),
                                      now=now)


def verify(draw: LuckyDraw, prizes: Sequence[DrawPrize], winners: Sequence[DrawWinner]) -> bool:
    """Recompute the draw from its recorded seed and eligible ids: True when the recorded winners match."""
    ids = [int(i) for i in draw.eligible_ids.split(",") if i]
    if digest(ids) != draw.eligible_digest:
        return False
    again = compute_winners(draw.seed, ids, [Prize(p.id, p.stock, Decimal(p.odds)) for p in prizes])
    return again == [(w.position, w.customer_id, w.prize_id) for w in winners]


def winner_counts(session: Session, draw_ids: Sequence[int]) -> dict[int, int]:
    rows = session.execute(select(DrawWinner.draw_id, func.count()).where(DrawWinner.draw_id.in_(list(draw_ids)))
                           .group_by(DrawWinner.draw_id))
    found = {int(d): int(n) for d, n in rows}
    return {d: found.get(d, 0) for d in draw_ids}
