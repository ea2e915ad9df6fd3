from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import Invalid
from siyu.core.viewer import SYSTEM
from siyu.customers import service
from siyu.customers.lifecycle import LifecycleRules
from siyu.customers.schemas import AddressIn, CustomerUpdate, TouchIn
from siyu.customers.service import CustomerFilter
from tests.conftest import viewer_of


def _tag_names(db: Session, customer_id: int) -> set[str]:
    return {f"{t.group.name}:{t.name}" for t in service.customer_tags(db, customer_ids=[customer_id])[customer_id]}


def test_fan_needs_both_purchases_and_contacts(db: Session, make: Any) -> None:
    customer = make.customer(make.account())
    for _ in range(3):
        make.touch(customer, "purchase", amount=Decimal("100"))
    assert customer.stage == "customer"
    for _ in range(10):
        make.touch(customer, "moments_comment", content="好美的茶园")
    db.refresh(customer)
    assert customer.stage == "fan"
    assert customer.contact_count == 10
    assert customer.purchase_total == Decimal("300")
    assert "等级:V2 老朋友" in _tag_names(db, customer.id)
    assert "沟通次数:沟通10次以上" in _tag_names(db, customer.id)


def test_notes_and_tag_changes_do_not_count_as_contact(db: Session, make: Any) -> None:
    customer = make.customer(make.account())
    make.touch(customer, "note", content="记得问她孩子的考试")
    db.refresh(customer)
    assert customer.stage == "traffic"
    assert customer.contact_count == 0
    assert customer.last_touch_at is not None


def test_changing_the_rules_recomputes_every_customer(db: Session, make: Any) -> None:
    account = make.account()
    customers = [make.customer(account) for _ in range(3)]
    for customer in customers:
        make.touch(customer, "purchase", amount=Decimal("50"))
    rules = service.get_rules(db)
    stricter = LifecycleRules.model_validate(rules.model_dump() | {"customer_min_purchases": 2})
    service.save_rules(db, rules=stricter, actor=SYSTEM)
    assert service.recompute_all(db, batch_size=2) == 3
    db.commit()
    for customer in customers:
        db.refresh(customer)
        assert customer.stage == "traffic"


def test_single_select_group_keeps_only_the_newest_tag(db: Session, make: Any) -> None:
    group = service.create_tag_group(db, name="会员卡", multi_select=False, actor=SYSTEM)
    gold = service.create_tag(db, group_id=group.id, name="金卡", actor=SYSTEM)
    silver = service.create_tag(db, group_id=group.id, name="银卡", actor=SYSTEM)
    customer = make.customer(make.account())
    service.set_customer_tags(db, customer_id=customer.id, add=[gold], remove=[], viewer=SYSTEM)
    service.set_customer_tags(db, customer_id=customer.id, add=[silver], remove=[], viewer=SYSTEM)
    names = _tag_names(db, customer.id)
    assert "会员卡:银卡" in names and "会员卡:金卡" not in names


def test_tag_change_lands_on_the_timeline(db: Session, make: Any) -> None:
    customer = make.customer(make.account())
    (tag,) = service.resolve_tags(db, names=["人群:吃货"])
    service.set_customer_tags(db, customer_id=customer.id, add=[tag], remove=[], viewer=SYSTEM)
    page = service.list_touches(db, customer_id=customer.id, viewer=SYSTEM)
    assert page.items[0].kind == "tag_change"
    assert page.items[0].details == {"added": ["人群:吃货"], "removed": []}


def test_completeness_grows_as_the_portrait_fills(db: Session, make: Any) -> None:
    account = make.account()
    customer = make.customer(account, remark_name="")
    empty = customer.completeness
    service.update_customer(db, customer_id=customer.id, viewer=SYSTEM, data=CustomerUpdate(
        remark_name="赵敏-爱喝白茶", phones=["13911112222"], description="做设计的", gender="女", city="杭州",
        job="设计师", age_band="30-39", objective_notes="两个孩子", emotional_notes="讲话很快，很爽朗",
        tags=["人群:白领"]))
    service.add_address(db, customer_id=customer.id, data=AddressIn(region="浙江 杭州", detail="文三路 1 号"),
                        viewer=SYSTEM)
    db.commit()
    assert empty < customer.completeness < 100
    assert customer.completeness == round(100 * 11 / 12)


def test_custom_fields_are_validated_by_type(db: Session, make: Any) -> None:
    from siyu.customers.schemas import CustomFieldIn

    service.create_custom_field(db, data=CustomFieldIn(key="birthday", label="生日", field_type="date"),  # type: ignore[arg-type]
                                actor=SYSTEM)
    service.create_custom_field(db, data=CustomFieldIn(key="tea", label="偏好茶类", field_type="choice",  # type: ignore[arg-type]
                                                       choices=["绿茶", "红茶"]), actor=SYSTEM)
    customer = make.customer(make.account())
    with pytest.raises(Invalid) as bad_date:
        service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                                data=CustomerUpdate(custom_fields={"birthday": "去年"}))
    assert bad_date.value.field == "custom_fields.birthday"
    with pytest.raises(Invalid):
        service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                                data=CustomerUpdate(custom_fields={"tea": "咖啡"}))
    with pytest.raises(Invalid):
        service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                                data=CustomerUpdate(custom_fields={"horoscope": "天蝎"}))
    service.update_customer(db, customer_id=customer.id, viewer=SYSTEM,
                            data=CustomerUpdate(custom_fields={"birthday": "1990-05-01", "tea": "红茶"}))
    assert service.custom_values(db, customer_id=customer.id) == {"birthday": "1990-05-01", "tea": "红茶"}


def test_future_touches_are_refused(db: Session, make: Any) -> None:
    customer = make.customer(make.account())
    with pytest.raises(Invalid):
        service.add_touch(db, customer_id=customer.id, viewer=SYSTEM,
                          data=TouchIn(kind="chat", occurred_at=utcnow() + timedelta(days=1)))  # type: ignore[arg-type]


def test_last_touch_filters_and_stage_filter(db: Session, make: Any) -> None:
    account = make.account()
    old, recent, never = make.customer(account), make.customer(account), make.customer(account)
    make.touch(old, occurred_at=utcnow() - timedelta(days=40))
    make.touch(recent, occurred_at=utcnow() - timedelta(days=2))
    cutoff = utcnow() - timedelta(days=30)

    def ids(**kwargs: Any) -> set[int]:
        page = service.list_customers(db, flt=CustomerFilter(**kwargs), viewer=SYSTEM)
        return {c.id for c in page.items}

    assert ids(last_touch_before=cutoff) == {old.id}
    assert ids(last_touch_after=cutoff) == {recent.id}
    assert ids(stage="traffic") == {never.id}
    with pytest.raises(Invalid):
        ids(stage="vip")


def test_operator_scope_in_the_service(db: Session, make: Any) -> None:
    mine, theirs = make.account(), make.account()
    operator = viewer_of(make.user("operator", accounts=[mine]))
    shared = make.customer(theirs)
    service.add_friendship(db, customer_id=shared.id, account_id=mine.id, viewer=SYSTEM)
    only_theirs = make.customer(theirs)
    db.commit()
    visible = {c.id for c in service.list_customers(db, flt=CustomerFilter(), viewer=operator).items}
    assert visible == {shared.id}
    detail = service.to_detail(db, customer=service.get_customer(db, customer_id=shared.id, viewer=operator),
                               viewer=operator)
    assert [f.account_id for f in detail.friendships] == [mine.id]
    with pytest.raises(service.CustomerNotFound):
        service.get_customer(db, customer_id=only_theirs.id, viewer=operator)


def test_exact_count_is_capped(db: Session, make: Any) -> None:
    account = make.account()
    for _ in range(5):
        make.customer(account)
    capped = service.count_customers(db, flt=CustomerFilter(), viewer=SYSTEM, cap=3)
    assert (capped.value, capped.exact, capped.estimate) == (3, False, 5)
    exact = service.count_customers(db, flt=CustomerFilter(), viewer=SYSTEM, cap=10)
    assert (exact.value, exact.exact, exact.estimate) == (5, True, None)


def test_large_counts_are_estimated_from_spread_samples(db: Session, make: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "ESTIMATE_WINDOWS", 4)
    monkeypatch.setattr(service, "ESTIMATE_WINDOW_IDS", 4)
    account = make.account()
    for n in range(80):  # every other customer carries the tag: about 40 match
        make.customer(account, tags=["人群:宝妈"] if n % 2 else [])
    flt = CustomerFilter(tag_names=["人群:宝妈"])
    result = service.count_customers(db, flt=flt, viewer=SYSTEM, cap=10)
    assert not result.exact and result.estimate is not None
    assert 30 <= result.estimate <= 50


def test_approximate_counts_read_naturally() -> None:
    from siyu.core import i18n
    from siyu.web.render import approximate

    i18n.set_locale("zh-CN")
    assert [approximate(n) for n in (42, 123_456, 1_000_000, 230_000_000)] == ["42", "12 万", "100 万", "2.3 亿"]
    i18n.set_locale("en")
    assert approximate(123_456) == "120,000"
    i18n.set_locale("zh-CN")
