"""Customer search: the bigram index finds fragments of names, remarks and descriptions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from siyu.core.viewer import SYSTEM
from siyu.customers import merge, search, service
from siyu.customers.schemas import CustomerUpdate


def _found(db: Session, query: str) -> set[str]:
    page = service.list_customers(db, flt=service.CustomerFilter(q=query), viewer=SYSTEM, limit=200)
    return {c.name for c in page.items}


def test_terms_are_character_pairs_of_each_word() -> None:
    assert search.terms_of("白茶礼盒") == ["白茶", "茶礼", "礼盒"]
    assert search.terms_of("Wang Fang") == ["wa", "an", "ng", "fa"]
    assert search.terms_of("王", "🍵") == ["王"]
    assert search.query_terms("王") is None  # too short for the index: scanned instead
    assert search.query_terms("白茶 礼盒") == ["白茶", "礼盒"]


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
