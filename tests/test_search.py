"""Customer search: the bigram index finds fragments of names, remarks and descriptions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from siyu.core.viewer import SYSTEM
from siyu.customers import service
from siyu.customers.merge import service as merge
from siyu.customers.schemas import CustomerUpdate
from siyu.customers.search import index as search


def _found(db: Session, query: str) -> set[str]:
    page = service.list_customers(db, flt=service.CustomerFilter(q=query), viewer=SYSTEM, limit=200)
    return {c.name for c in page.items}


def test_terms_are_character_pairs_of_each_word() -> None:
    assert search.terms_of("白茶礼盒") == ["白茶", "茶礼", "礼盒", "白茶礼", "茶礼盒"]
    assert search.terms_of("Wang Fang") == ["wa", "an", "ng", "wan", "ang", "fa", "fan"]
    assert search.terms_of("王", "🍵") == ["王"]
    assert search.query_terms("王") is None  # too short for the index: scanned instead
    assert search.query_terms("白茶 礼盒") == ["白茶", "礼盒"]
    assert search.query_terms("白茶礼盒") == ["白茶礼", "茶礼盒"]  # triples: few hold them by chance


def test_search_finds_fragments_of_remarks_descriptions_and_names(db: Session, make: Any) -> None:
    shop = make.account()
    make.customer(shop, name="王芳", remark_name="西湖店-王芳-宝妈", description="喜欢白茶礼盒，春节送礼")
    make.customer(shop, name="李雷", remark_name="李雷 程序员", description="只喝咖啡")
    make.customer(shop, name="Han Meimei", wechat_id="hanmm_88")
    assert _found(db, "白茶") == {"王芳"}
    assert _found(db, "宝妈") == {"王芳"}
    assert _found(db, "茶礼盒") == {"王芳"}
    assert _found(db, "程序") == {"李雷"}
    assert _found(db, "meimei") == {"Han Meimei"}
    # Pairs present but not side by side ("白茶" and "礼盒" yes, "白茶礼" no, "茶盒" no).
    assert _found(db, "茶盒") == set()
    assert _found(db, "王") == {"王芳"}  # one character: plain scan, same answer
    assert _found(db, "hanmm_88") == {"Han Meimei"}


def test_index_follows_edits_and_merges(db: Session, make: Any) -> None:
    shop = make.account()
    first = make.customer(shop, name="张三", remark_name="老客")
    second = make.customer(shop, name="张三丰", description="太极拳爱好者")
    service.update_customer(db, customer_id=first.id, data=CustomerUpdate(description="爱喝普洱"), viewer=SYSTEM)
    db.commit()
    assert _found(db, "普洱") == {"张三"}
    service.update_customer(db, customer_id=first.id, data=CustomerUpdate(description="改喝绿茶"), viewer=SYSTEM)
    db.commit()
    assert _found(db, "普洱") == set()
    merge.merge_customers(db, target_id=first.id, source_ids=[second.id], choices={}, viewer=SYSTEM)
    db.commit()
    assert _found(db, "太极") == {"张三"}


def test_rebuild_indexes_every_customer(db: Session, make: Any) -> None:
    shop = make.account()
    make.customer(shop, name="赵敏", description="峨眉派")
    db.execute(text(f"DELETE FROM {search.TABLE}"))  # noqa: S608
    db.commit()
    assert _found(db, "峨眉") == set()
    assert search.rebuild(db) >= 1
    db.commit()
    assert _found(db, "峨眉") == {"赵敏"}


def test_phone_numbers_are_indexed_as_marked_triples_apart_from_the_text() -> None:
    assert search.query_terms("1234") == ["123", "234"]
    assert search.phone_terms("138-0013") == ["t138", "t380", "t800", "t001", "t013"]
    assert not set(search.phone_terms("13812345678")) & set(search.terms_of("13812345678"))


def test_a_phone_fragment_finds_its_customer_and_follows_edits(db: Session, make: Any) -> None:
    shop = make.account()
    customer = make.customer(shop, name="林晓", phones=["13812345678"])
    make.customer(shop, name="王芳", phones=["13900001111"], wechat_id="wx_2345")
    assert _found(db, "2345678") == {"林晓"}
    assert _found(db, "2345") == {"林晓", "王芳"}  # a phone, and a WeChat ID's digits
    service.update_customer(db, customer_id=customer.id, data=CustomerUpdate(phones=["13700009999"]), viewer=SYSTEM)
    db.commit()
    assert _found(db, "2345678") == set()
    assert _found(db, "0009999") == {"林晓"}


def test_many_candidates_and_no_match_read_the_candidates_not_every_customer(
        db: Session, make: Any, monkeypatch: Any) -> None:
    """送礼盒: both pairs are everywhere, never side by side; a sample of candidates shows it."""
    shop = make.account()
    for n in range(12):
        make.customer(shop, name=f"顾客{n}", description="春节送礼，喜欢白茶礼盒")
    monkeypatch.setattr(service, "SEARCH_DRIVE_LIMIT", 5)  # as if there were many candidates
    monkeypatch.setattr(service, "SEARCH_SAMPLE", 10)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    from sqlalchemy import event

    engine = db.get_bind()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert _found(db, "送礼盒") == set()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    listing = statements[-1]
    assert "customer_search" in listing  # driven by the candidates: no walk over every customer
    counted = service.count_customers(db, flt=service.CustomerFilter(q="送礼盒"), viewer=SYSTEM, cap=5)
    assert (counted.value, counted.exact) == (0, True)
    found = service.count_customers(db, flt=service.CustomerFilter(q="白茶礼盒"), viewer=SYSTEM, cap=5)
    assert (found.value, found.exact) == (5, False) and found.estimate is not None and found.estimate >= 6
    assert _found(db, "白茶礼盒") == {f"顾客{n}" for n in range(12)}  # dense: walked, same answer


def test_common_words_walk_the_list_and_find_the_same(db: Session, make: Any, monkeypatch: Any) -> None:
    shop = make.account()
    make.customer(shop, name="王芳", description="喜欢白茶礼盒")
    make.customer(shop, name="李雷", description="白茶爱好者")
    driven = _found(db, "白茶")
    monkeypatch.setattr(service, "SEARCH_DRIVE_LIMIT", 0)  # as if 白茶 were in every other remark
    assert _found(db, "白茶") == driven == {"王芳", "李雷"}
    counted = service.count_customers(db, flt=service.CustomerFilter(q="白茶"), viewer=SYSTEM, cap=10)
    assert (counted.value, counted.exact) == (2, True)


def test_savepoints_index_at_the_real_commit_and_a_failed_one_loses_nothing(db: Session, make: Any) -> None:
    """Event batches run each event in a savepoint: the index is written once, at the commit."""
    from siyu.customers.models import Customer

    shop = make.account()
    with db.begin_nested():
        db.add(Customer(name="批量甲", source="wecom"))
    assert db.execute(text(f"SELECT count(*) FROM {search.TABLE}")).scalar() == 0  # noqa: S608
    try:
        with db.begin_nested():
            db.add(Customer(name="批量乙", source="wecom"))
            db.flush()
            raise RuntimeError("this event fails")
    except RuntimeError:
        pass
    make.customer(shop, name="批量丙")
    db.commit()
    assert _found(db, "批量") == {"批量甲", "批量丙"}


def test_customers_first_met_through_kf_are_found_by_nickname_and_follow_later_edits(db: Session) -> None:
    from siyu.wecom import kf

    ids = kf.resolve_customers(db, ["wmNEW1", "wmNEW2"], {"wmNEW1": {"nickname": "山野茶友小林"},
                                                          "wmNEW2": {"nickname": "Lin Xiaoyu"}})
    db.commit()
    assert _found(db, "茶友") == {"山野茶友小林"}
    assert _found(db, "xiaoyu") == {"Lin Xiaoyu"}
    from siyu.customers.models import Customer

    customer = db.get(Customer, ids["wmNEW1"])
    assert customer is not None
    customer.name = "普洱爱好者小林"
    db.commit()
    assert _found(db, "普洱") == {"普洱爱好者小林"}
    assert _found(db, "茶友") == set()
