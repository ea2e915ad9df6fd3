"""Merging duplicate customers: preview, field choices, what moves, undo within 30 days, suggestions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.errors import Conflict, Forbidden, Invalid, NotFound
from siyu.core.viewer import SYSTEM
from siyu.customers import service
from siyu.customers.merge import service as merge
from siyu.customers.models import Customer, CustomerMerge, CustomerTag, Friendship, Phone, Touch
from siyu.customers.schemas import AddressIn, CustomerUpdate, CustomFieldIn
from siyu.team.models import AuditEntry
from tests.conftest import viewer_of
from tests.test_pages import Console


def _tag_names(session: Session, customer_id: int) -> set[str]:
    return {f"{t.group.name}:{t.name}" for t in service.customer_tags(session, customer_ids=[customer_id])
            .get(customer_id, []) if not t.group.is_computed}


@pytest.fixture
def pair(make: Any, db: Session) -> tuple[Any, Any, Any, Any]:
    store, online = make.account(), make.account()
    kept = make.customer(store, name="王芳", phones=["13800001111"], tags=["人群:宝妈"], city="杭州")
    dup = make.customer(online, name="王芳芳", phones=["13900002222"], tags=["人群:白领"], city="上海",
                        wechat_id="wangfang88", job="教师", remark_name="线上王芳", description="买过白茶")
    make.touch(dup, "purchase", amount=300, content="白茶礼盒")
    make.touch(dup, "chat", content="问新茶")
    service.add_address(db, customer_id=dup.id, data=AddressIn(recipient="王芳", phone="13900002222",
                                                               region="上海", detail="静安区"), viewer=SYSTEM)
    db.commit()
    return kept, dup, store, online


def test_preview_shows_conflicting_fields_with_the_kept_value_chosen(db: Session, pair: Any) -> None:
    kept, dup, *_ = pair
    preview = merge.preview_merge(db, target_id=kept.id, source_ids=[dup.id], viewer=SYSTEM)
    fields = {f.name: f for f in preview.fields}
    assert fields["name"].conflict and fields["name"].chosen == kept.id
    assert fields["city"].conflict and fields["city"].values == {kept.id: "杭州", dup.id: "上海"}
    # Only the duplicate knows the job: no conflict, its value is the default.
    assert not fields["job"].conflict and fields["job"].chosen == dup.id
    assert preview.touch_counts[dup.id] >= 2


def test_merge_moves_everything_and_follows_the_choices(db: Session, pair: Any) -> None:
    kept, dup, store, online = pair
    record = merge.merge_customers(db, target_id=kept.id, source_ids=[dup.id], choices={"city": dup.id},
                                   viewer=SYSTEM)
    db.commit()
    db.expire_all()
    survivor = db.get(Customer, kept.id)
    gone = db.get(Customer, dup.id)
    assert survivor is not None and gone is not None
    assert gone.merged_into_id == kept.id
    assert (survivor.name, survivor.city, survivor.job, survivor.wechat_id) == ("王芳", "上海", "教师", "wangfang88")
    assert {f.account_id for f in survivor.friendships} == {store.id, online.id}
    assert set(db.scalars(select(Phone.number).where(Phone.customer_id == kept.id))) == {"13800001111",
                                                                                        "13900002222"}
    assert _tag_names(db, kept.id) == {"人群:宝妈", "人群:白领"}
    assert [a.detail for a in survivor.addresses] == ["静安区"]
    # The purchase moved, so the computed facts moved with it.
    assert survivor.purchase_count == 1 and survivor.stage != "traffic"
    assert db.scalar(select(Touch).where(Touch.customer_id == dup.id)) is None
    with pytest.raises(NotFound):
        service.get_customer(db, customer_id=dup.id, viewer=SYSTEM)
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "merge"))
    assert entry is not None and entry.after is not None and entry.after["merge_id"] == record.id
    page = service.list_customers(db, flt=service.CustomerFilter(), viewer=SYSTEM, limit=50)
    assert [c.id for c in page.items] == [kept.id]


def test_same_account_friendships_fold_into_one_card(db: Session, make: Any) -> None:
    store = make.account()
    kept = make.customer(store, name="李雷", remark_name="", phones=["13700000001"])
    dup = make.customer(store, name="李雷", remark_name="老顾客李雷", phones=["13700000002"])
    merge.merge_customers(db, target_id=kept.id, source_ids=[dup.id], choices={}, viewer=SYSTEM)
    db.commit()
    db.expire_all()
    (card,) = db.scalars(select(Friendship).where(Friendship.customer_id == kept.id))
    assert card.remark_name == "老顾客李雷"
    assert sorted(p.number for p in card.phones) == ["13700000001", "13700000002"]


def test_undo_puts_every_customer_back_as_it_was(db: Session, pair: Any, make: Any) -> None:
    kept, dup, store, online = pair
    service.create_custom_field(db, data=CustomFieldIn(key="tea", label="喜欢的茶"), actor=SYSTEM)
    service.update_customer(db, customer_id=dup.id, data=CustomerUpdate(custom_fields={"tea": "白茶"}),
                            viewer=SYSTEM)
    db.commit()
    before_tags = _tag_names(db, kept.id)
    record = merge.merge_customers(db, target_id=kept.id, source_ids=[dup.id], choices={"name": dup.id},
                                   viewer=SYSTEM)
    db.commit()
    assert service.custom_values(db, customer_id=kept.id) == {"tea": "白茶"}
    merge.undo_merge(db, merge_id=record.id, viewer=SYSTEM)
    db.commit()
    db.expire_all()
    restored = service.get_customer(db, customer_id=dup.id, viewer=SYSTEM)
    survivor = service.get_customer(db, customer_id=kept.id, viewer=SYSTEM)
    assert (survivor.name, survivor.city, survivor.wechat_id) == ("王芳", "杭州", "")
    assert (restored.name, restored.city, restored.wechat_id) == ("王芳芳", "上海", "wangfang88")
    assert [f.account_id for f in restored.friendships] == [online.id]
    assert [f.account_id for f in survivor.friendships] == [store.id]
    assert _tag_names(db, kept.id) == before_tags
    assert _tag_names(db, dup.id) == {"人群:白领"}
    assert restored.purchase_count == 1 and survivor.purchase_count == 0
    assert service.custom_values(db, customer_id=kept.id) == {}
    assert [a.detail for a in restored.addresses] == ["静安区"]
    assert db.get(CustomerMerge, record.id).undone_at is not None  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        merge.undo_merge(db, merge_id=record.id, viewer=SYSTEM)


def test_wecom_ids_survive_merge_and_undo(db: Session, make: Any) -> None:
    store = make.account()
    kept = make.customer(store, name="甲")
    dup = make.customer(store, name="乙")
    db.get(Customer, dup.id).wecom_external_userid = "wmEXTERNAL1"  # type: ignore[union-attr]
    db.commit()
    record = merge.merge_customers(db, target_id=kept.id, source_ids=[dup.id], choices={}, viewer=SYSTEM)
    db.commit()
    assert db.get(Customer, kept.id).wecom_external_userid == "wmEXTERNAL1"  # type: ignore[union-attr]
    merge.undo_merge(db, merge_id=record.id, viewer=SYSTEM)
    db.commit()
    db.expire_all()
    assert db.get(Customer, kept.id).wecom_external_userid is None  # type: ignore[union-attr]
    assert db.get(Customer, dup.id).wecom_external_userid == "wmEXTERNAL1"  # type: ignore[union-attr]


def test_merging_a_customer_into_itself_is_refused(db: Session, pair: Any) -> None:
    kept, *_ = pair
    with pytest.raises(Invalid):
        merge.merge_customers(db, target_id=kept.id, source_ids=[kept.id], choices={}, viewer=SYSTEM)
    with pytest.raises(Invalid):
        merge.merge_customers(db, target_id=kept.id, source_ids=[], choices={}, viewer=SYSTEM)


def test_bad_choices_are_refused(db: Session, pair: Any, make: Any) -> None:
    kept, dup, store, _ = pair
    stranger = make.customer(store)
    with pytest.raises(Invalid):
        merge.merge_customers(db, target_id=kept.id, source_ids=[dup.id], choices={"name": stranger.id},
                              viewer=SYSTEM)
    with pytest.raises(Invalid):
        merge.merge_customers(db, target_id=kept.id, source_ids=[dup.id], choices={"password": dup.id},
                              viewer=SYSTEM)


def test_operator_cannot_merge_customers_of_other_accounts(db: Session, pair: Any, make: Any) -> None:
    kept, dup, store, online = pair
    operator = make.user("operator", accounts=[store])
    with pytest.raises(NotFound):
        merge.merge_customers(db, target_id=kept.id, source_ids=[dup.id], choices={}, viewer=viewer_of(operator))
    service_user = make.user("service", accounts=[store, online])
    with pytest.raises(Forbidden):
        merge.merge_customers(db, target_id=kept.id, source_ids=[dup.id], choices={},
                              viewer=viewer_of(service_user))


def test_undo_window_is_thirty_days(db: Session, pair: Any) -> None:
    kept, dup, *_ = pair
    record = merge.merge_customers(db, target_id=kept.id, source_ids=[dup.id], choices={}, viewer=SYSTEM)
    db.commit()
    record.created_at = record.created_at - timedelta(days=31)
    db.commit()
    assert not merge.can_undo(record)
    with pytest.raises(Invalid):
        merge.undo_merge(db, merge_id=record.id, viewer=SYSTEM)


def test_duplicates_are_suggested_by_phone_wechat_id_and_name_city(db: Session, make: Any) -> None:
    a, b = make.account(), make.account()
    p1 = make.customer(a, name="张三", phones=["13600000000"])
    p2 = make.customer(b, name="张小三", phones=["136-0000-0000"])
    w1 = make.customer(a, name="甲", wechat_id="same_wx")
    w2 = make.customer(b, name="乙", wechat_id="same_wx")
    n1 = make.customer(a, name="赵六", city="苏州")
    n2 = make.customer(b, name="赵六", city="苏州")
    make.customer(b, name="赵六", city="南京")
    groups = {(g.reason, tuple(g.customer_ids)) for g in merge.suggest_duplicates(db, viewer=SYSTEM)}
    assert ("phone", (p1.id, p2.id)) in groups
    assert ("wechat_id", (w1.id, w2.id)) in groups
    assert ("name_city", (n1.id, n2.id)) in groups
    assert len(groups) == 3
    operator = make.user("operator", accounts=[a])
    assert merge.suggest_duplicates(db, viewer=viewer_of(operator)) == []
    merge.merge_customers(db, target_id=p1.id, source_ids=[p2.id], choices={}, viewer=SYSTEM)
    db.commit()
    assert "phone" not in {g.reason for g in merge.suggest_duplicates(db, viewer=SYSTEM)}


def test_merge_api_and_undo(client: TestClient, db: Session, pair: Any, admin_headers: dict[str, str]) -> None:
    kept, dup, *_ = pair
    preview = client.get(f"/api/v1/customers/merge/preview?target_id={kept.id}&source_ids={dup.id}",
                         headers=admin_headers)
    assert preview.status_code == 200
    assert {f["name"] for f in preview.json()["fields"] if f["conflict"]} >= {"name", "city"}
    self_merge = client.post("/api/v1/customers/merge", json={"target_id": kept.id, "source_ids": [kept.id]},
                             headers=admin_headers)
    assert self_merge.status_code == 422
    assert "合并" in self_merge.json()["detail"] or "itself" in self_merge.json()["detail"]
    done = client.post("/api/v1/customers/merge", json={"target_id": kept.id, "source_ids": [dup.id],
                                                         "choices": {"city": dup.id}}, headers=admin_headers)
    assert done.status_code == 201, done.text
    merge_id = done.json()["id"]
    assert client.get(f"/api/v1/customers/{dup.id}", headers=admin_headers).status_code == 404
    listed = client.get("/api/v1/customers/merges", headers=admin_headers).json()["items"]
    assert listed[0]["id"] == merge_id and listed[0]["can_undo"]
    undone = client.post(f"/api/v1/customers/merges/{merge_id}/undo", headers=admin_headers)
    assert undone.status_code == 200 and undone.json()["undone_at"]
    assert client.get(f"/api/v1/customers/{dup.id}", headers=admin_headers).status_code == 200


def test_console_merge_flow(client: TestClient, db: Session, pair: Any, admin: Any) -> None:
    kept, dup, *_ = pair
    db.get(Customer, dup.id).name = "<script>alert(1)</script>"  # type: ignore[union-attr]
    db.commit()
    console = Console(client).login(admin)
    duplicates = console.get("/customers/duplicates")
    assert duplicates.status_code == 200
    page = console.get(f"/customers/merge?ids={kept.id}&ids={dup.id}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
    assert 'name="choice_city"' in page.text
    alone = console.get(f"/customers/merge?ids={kept.id}")
    assert alone.status_code == 422
    refused = console.post("/customers/merge", {"ids": [kept.id], "target_id": kept.id})
    assert refused.status_code == 422
    response = console.post("/customers/merge", {"ids": [kept.id, dup.id], "target_id": kept.id,
                                                 "choice_city": dup.id})
    assert response.status_code == 303
    history = console.get(response.headers["location"])
    assert 'data-testid="notice"' in history.text and 'data-testid="undo-merge"' in history.text
    merge_id = db.scalar(select(CustomerMerge.id))
    undone = console.post(f"/customers/merges/{merge_id}/undo", {})
    assert undone.status_code == 303
    assert db.scalar(select(CustomerTag).where(CustomerTag.customer_id == dup.id)) is not None
