"""Demo data for 抽奖: a finished fan draw (粉丝节转发抽奖) with its seed shown and its winners told."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from siyu.core.viewer import Viewer
from siyu.coupons.models import CouponBatch
from siyu.draws import service
from siyu.draws.models import LuckyDraw
from siyu.draws.schemas import DrawIn, PrizeIn
from siyu.segments import service as segments_service
from siyu.segments.schemas import SegmentIn, parse_tree


def build(session: Session, *, admin: Viewer, now: datetime, batch: CouponBatch | None) -> LuckyDraw:
    fans_only = {"kind": "and", "conditions": [{"kind": "stage", "stages": ["fan"]}]}
    fans = segments_service.create_segment(session, viewer=admin, data=SegmentIn(
        name="粉丝（抽奖）", conditions=parse_tree(fans_only)))
    prizes = [PrizeIn(name="一等奖·紫砂壶", stock=1, odds=Decimal("3")),
              PrizeIn(name="二等奖·明前龙井礼盒", stock=3, odds=Decimal("10"))]
    if batch is not None:
        prizes.append(PrizeIn(name="三等奖·20 元茶饮券", coupon_batch_id=batch.id, stock=20, odds=Decimal("40")))
    draw = service.create_draw(session, viewer=admin, data=DrawIn(name="粉丝节转发抽奖", segment_id=fans.id,
                                                                   prizes=prizes))
    service.run_draw(session, draw_id=draw.id, viewer=admin)
    return draw
