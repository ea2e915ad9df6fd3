"""话术库 and 素材库: scripts with customer-safe variables, materials checked by type and size, tags,
search, paging, usage counts, the API and the console."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from siyu.core import storage
from siyu.core.errors import Forbidden, Invalid, NotFound
from siyu.core.models import StoredFile
from siyu.customers.models import Friendship
from siyu.library import service
from siyu.library.models import ItemStatus, LibraryItem, LibraryUse
from siyu.library.schemas import MaterialIn, ScriptIn
from siyu.team.models import AuditEntry
from tests.conftest import viewer_of
from tests.test_pages import Console


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def shop(make: Any, admin: Any) -> dict[str, Any]:
    account = make.account(display_name="茶小满")
    other = make.account(display_name="茶大满")
    return {"account": account, "other": other, "admin": admin,
            "operator": make.user("operator", accounts=[account]),
            "outsider": make.user("operator", accounts=[other])}


def _script(db: Session, admin: Any, title: str = "问候", text: str = "{称呼}您好，我是{账号}",
            tags: list[str] | None = None) -> LibraryItem:
    item = service.save_script(db, data=ScriptIn(title=title, text=text, tags=tags or []), viewer=viewer_of(admin))
    db.commit()
    return item


# ---------------------------------------------------------------- service


def test_a_script_renders_with_the_customers_salutation_and_the_account_name(
        make: Any, db: Session, shop: dict[str, Any]) -> None:
    customer = make.customer(shop["account"], name="刘悦欣", remark_name="刘悦欣-红茶党-杭州自由职业")
    script = _script(db, shop["admin"], text="{称呼}您好，我是{账号}的小满")
    assert service.render_script(db, script.id, customer) == "刘悦欣您好，我是茶小满的小满"
    friendship = db.scalar(select(Friendship).where(Friendship.customer_id == customer.id))
    assert friendship is not None
    friendship.salutation = "刘姐"
    db.commit()
    rendered = service.render_script(db, script.id, customer.id, account_id=shop["account"].id)
    assert rendered == "刘姐您好，我是茶小满的小满" and "红茶党" not in rendered


def test_a_script_naming_the_remark_name_is_refused_naming_the_variable(db: Session, shop: dict[str, Any]) -> None:
    with pytest.raises(Invalid) as refused:
        _script(db, shop["admin"], text="{备注名}您好")
    assert "{备注名}" in refused.value.message and "内部" in refused.value.message
    with pytest.raises(Invalid) as unknown:
        _script(db, shop["admin"], text="{会员号}您好")
    assert "{会员号}" in unknown.value.message
    db.rollback()
    assert db.scalar(select(func.count()).select_from(LibraryItem)) == 0


def test_an_operator_may_use_the_library_but_not_change_it(db: Session, shop: dict[str, Any]) -> None:
    with pytest.raises(Forbidden):
        service.save_script(db, data=ScriptIn(title="问候", text="您好"), viewer=viewer_of(shop["operator"]))
    script = _script(db, shop["admin"])
    with pytest.raises(Forbidden):
        service.set_status(db, item_id=script.id, status="retired", viewer=viewer_of(shop["operator"]))
    used = service.record_use(db, script.id, "inbox", viewer=viewer_of(shop["operator"]))
    assert used.use_count == 1


def test_search_tag_and_kind_filters_and_paging(db: Session, shop: dict[str, Any]) -> None:
    admin = viewer_of(shop["admin"])
    for n in range(5):
        _script(db, shop["admin"], title=f"售后回访{n}", text="请问茶喝得还习惯吗？", tags=["售后"])
    _script(db, shop["admin"], title="生日祝福", text="{称呼}生日快乐！", tags=["生日"])
    service.save_material(db, data=MaterialIn(kind="link", title="新品上市", url="https://example.com/new",
                                              tags=["售后"]), viewer=admin)
    db.commit()
    first = service.list_items(db, flt=service.LibraryFilter(q="回访"), limit=3)
    assert len(first.items) == 3 and first.next_cursor
    second = service.list_items(db, flt=service.LibraryFilter(q="回访"), limit=3, cursor=first.next_cursor)
    assert len(second.items) == 2 and second.next_cursor is None
    assert {i.id for i in first.items}.isdisjoint({i.id for i in second.items})
    assert [i.title for i in service.list_items(db, flt=service.LibraryFilter(q="生日快乐")).items] == ["生日祝福"]
    tagged = service.list_items(db, flt=service.LibraryFilter(tag="售后")).items
    assert len(tagged) == 6
    links = service.list_items(db, flt=service.LibraryFilter(tag="售后", kinds=("link",))).items
    assert [i.title for i in links] == ["新品上市"]
    # A LIKE wildcard in the search is a character, not a pattern.
    assert service.list_items(db, flt=service.LibraryFilter(q="%")).items == []
    assert service.all_tags(db) == ["售后", "生日"]


def test_a_retired_script_leaves_the_picker_and_refuses_to_render(make: Any, db: Session,
                                                                  shop: dict[str, Any]) -> None:
    customer = make.customer(shop["account"])
    script = _script(db, shop["admin"])
    service.set_status(db, item_id=script.id, status="retired", viewer=viewer_of(shop["admin"]))
    db.commit()
    assert service.scripts_for(db, customer_id=customer.id, account_id=shop["account"].id) == []
    with pytest.raises(Invalid):
        service.render_script(db, script.id, customer)
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.entity_type == "library_item", AuditEntry.action == "retire")) == 1


def test_record_use_counts_on_the_item_and_in_the_log(db: Session, shop: dict[str, Any]) -> None:
    script = _script(db, shop["admin"])
    service.record_use(db, script.id, "inbox")
    service.record_uses(db, {script.id: 3}, "welcome")
    db.commit()
    db.refresh(script)
    assert script.use_count == 4 and script.last_used_at is not None
    assert service.uses_by_place(db, item_id=script.id) == {"inbox": 1, "welcome": 3}
    with pytest.raises(Invalid):
        service.record_use(db, script.id, "nowhere")
    with pytest.raises(NotFound):
        service.record_use(db, 999999, "inbox")


def test_an_image_is_checked_by_its_first_bytes_and_kept_in_the_shared_storage(
        db: Session, shop: dict[str, Any]) -> None:
    admin = viewer_of(shop["admin"])
    image = service.save_material(db, data=MaterialIn(kind="image", title="门店"), viewer=admin,
                                  file=service.Upload(io.BytesIO(png()), "shop.png", "image/png"))
    db.commit()
    assert image.content_type == "image/png" and image.file_key.startswith("library/")
    assert storage.get(image.file_key) == png()
    with pytest.raises(ValueError):
        storage.sweep("library", older_than=image.created_at)  # kept files are never swept
    with pytest.raises(Invalid) as wrong:
        service.save_material(db, data=MaterialIn(kind="image", title="假图"), viewer=admin,
                              file=service.Upload(io.BytesIO(b"<svg onload=alert(1)>"), "x.png", "image/png"))
    assert "JPG" in wrong.value.message and "PNG" in wrong.value.message
    db.rollback()
    assert db.scalar(select(func.count()).select_from(StoredFile)) == 1  # nothing left behind


def test_a_kept_file_is_saved_or_refused_with_its_row(db: Session) -> None:
    stored = storage.put_kept("library", io.BytesIO(b"abc"), session=db)
    db.rollback()
    assert not storage.exists(stored.key)
    stored = storage.put_kept("library", io.BytesIO(b"abc"), session=db)
    db.commit()
    assert storage.get(stored.key) == b"abc"
    storage.delete_file(stored.key, session=db)
    db.commit()
    assert not storage.exists(stored.key)
    with pytest.raises(ValueError):
        storage.put_kept("uploads", io.BytesIO(b"abc"))  # short-lived areas are swept, not kept
    with pytest.raises(storage.FileTooLarge):
        # a larger max_bytes does not lift the kept-file limit
        storage.put_kept("library", io.BytesIO(b"\0" * (storage.KEPT_MAX_BYTES + 1)),
                         max_bytes=10 * storage.KEPT_MAX_BYTES)


def test_an_oversize_image_is_refused_with_the_limit_named(db: Session, shop: dict[str, Any]) -> None:
    big = png() + b"\0" * service.IMAGE_MAX_BYTES
    with pytest.raises(storage.FileTooLarge) as refused:
        service.save_material(db, data=MaterialIn(kind="image", title="大图"), viewer=viewer_of(shop["admin"]),
                              file=service.Upload(io.BytesIO(big), "big.png", "image/png"))
    assert f"{service.IMAGE_MAX_BYTES // service.MiB} MB" in refused.value.message
    db.rollback()
    assert db.scalar(select(func.count()).select_from(StoredFile)) == 0


def test_link_and_mini_program_fields_follow_the_platforms_rules(db: Session, shop: dict[str, Any]) -> None:
    admin = viewer_of(shop["admin"])
    with pytest.raises(Invalid) as scheme:
        service.save_material(db, data=MaterialIn(kind="link", title="活动", url="javascript:alert(1)"), viewer=admin)
    assert "https://" in scheme.value.message
    with pytest.raises(Invalid) as title:
        service.save_material(db, data=MaterialIn(kind="link", title="长" * 50, url="https://a.cn"), viewer=admin)
    assert str(service.LINK_TITLE_MAX_BYTES) in title.value.message
    cover = service.Upload(io.BytesIO(png()), "cover.png")
    with pytest.raises(Invalid) as page:
        service.save_material(db, data=MaterialIn(kind="miniprogram", title="商城", appid="wx0123456789abcdef",
                                                  pagepath="pages/index"), viewer=admin, cover=cover)
    assert ".html" in page.value.message
    with pytest.raises(Invalid) as no_cover:
        service.save_material(db, data=MaterialIn(kind="miniprogram", title="商城", appid="wx0123456789abcdef",
                                                  pagepath="pages/index.html"), viewer=admin)
    assert no_cover.value.field == "cover"
    card = service.save_material(db, data=MaterialIn(kind="miniprogram", title="商城", appid="wx0123456789abcdef",
                                                     pagepath="pages/index.html"), viewer=admin, cover=cover)
    db.commit()
    assert card.cover_type == "image/png" and service.get_materials(db, [card.id, 424242]) == [card]


def test_welcome_materials_are_links_images_or_cards_and_at_most_nine(db: Session, shop: dict[str, Any]) -> None:
    admin = viewer_of(shop["admin"])
    links = [service.save_material(db, data=MaterialIn(kind="link", title=f"链接{n}", url=f"https://a.cn/{n}"),
                                   viewer=admin) for n in range(10)]
    db.commit()
    image = service.save_material(db, data=MaterialIn(kind="image", title="图"), viewer=admin,
                                  file=service.Upload(io.BytesIO(png()), "a.png"))
    doc = service.save_material(db, data=MaterialIn(kind="file", title="价目表"), viewer=admin,
                                file=service.Upload(io.BytesIO(b"%PDF-1.4 price list"), "p.pdf"))
    db.commit()
    with pytest.raises(Invalid) as many:
        service.check_welcome_materials(db, [link.id for link in links], field_name="welcome_material_ids")
    assert "9" in many.value.message
    assert service.check_welcome_materials(db, [image.id], field_name="welcome_material_ids") == [image.id]
    with pytest.raises(Invalid) as not_attachable:
        service.check_welcome_materials(db, [doc.id], field_name="welcome_material_ids")
    assert "价目表" in not_attachable.value.message
    assert service.welcome_attachments(db, [links[0].id]) == [
        {"msgtype": "link", "link": {"title": "链接0", "desc": "", "url": "https://a.cn/0"}}]


# ---------------------------------------------------------------- API


def test_api_creates_lists_and_renders_scripts(client: TestClient, make: Any, db: Session, shop: dict[str, Any],
                                               token_for: Any) -> None:
    admin, operator = token_for(shop["admin"]), token_for(shop["operator"])
    created = client.post("/api/v1/library/scripts", json={"title": "复购提醒", "text": "{称呼}，您的茶快喝完了吧？",
                                                           "tags": ["复购"]}, headers=admin)
    assert created.status_code == 201, created.text
    script_id = created.json()["id"]
    refused = client.post("/api/v1/library/scripts", json={"title": "x", "text": "{备注名}您好"}, headers=admin)
    assert refused.status_code == 422 and "{备注名}" in refused.json()["detail"]
    forbidden = client.post("/api/v1/library/scripts", json={"title": "x", "text": "您好"}, headers=operator)
    assert forbidden.status_code == 403
    listed = client.get("/api/v1/library/scripts", params={"tag": "复购"}, headers=operator).json()
    assert [i["title"] for i in listed["items"]] == ["复购提醒"] and listed["items"][0]["tags"] == ["复购"]
    mine = make.customer(shop["account"], name="王芳")
    rendered = client.get(f"/api/v1/library/scripts/{script_id}/render", params={"customer_id": mine.id},
                          headers=operator)
    assert rendered.json()["text"] == "王芳，您的茶快喝完了吧？"
    theirs = make.customer(shop["other"])
    assert client.get(f"/api/v1/library/scripts/{script_id}/render", params={"customer_id": theirs.id},
                      headers=operator).status_code == 404
    used = client.post(f"/api/v1/library/items/{script_id}/use", json={"place": "api", "customer_id": mine.id},
                       headers=operator)
    assert used.json() == {"id": script_id, "use_count": 1}
    assert client.post(f"/api/v1/library/items/{script_id}/use", json={"place": "api", "customer_id": theirs.id},
                       headers=operator).status_code == 404


def test_api_uploads_materials_and_serves_them_with_their_type(client: TestClient, shop: dict[str, Any],
                                                               token_for: Any) -> None:
    admin, operator = token_for(shop["admin"]), token_for(shop["operator"])
    uploaded = client.post("/api/v1/library/materials", data={"kind": "image", "title": "门店照", "tags": "门店,新品"},
                           files={"file": ("shop.png", png(), "image/png")}, headers=admin)
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert body["tags"] == ["新品", "门店"] and body["content_type"] == "image/png"
    served = client.get(body["file_url"], headers=operator)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png" and served.content == png()
    assert served.headers["x-content-type-options"] == "nosniff"
    assert client.get(body["file_url"]).status_code == 401  # signed-in people only
    document = client.post("/api/v1/library/materials", data={"kind": "file", "title": "价目表"},
                           files={"file": ("价目表.html", b"<script>alert(1)</script>", "text/html")}, headers=admin)
    served = client.get(document.json()["file_url"], headers=operator)
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"].startswith("attachment")
    wrong = client.post("/api/v1/library/materials", data={"kind": "image", "title": "假图"},
                        files={"file": ("a.png", b"GIF89a....", "image/png")}, headers=admin)
    assert wrong.status_code == 422 and "JPG" in wrong.json()["detail"]
    big = client.post("/api/v1/library/materials", data={"kind": "image", "title": "大图"},
                      files={"file": ("big.png", png() + b"\0" * service.IMAGE_MAX_BYTES, "image/png")},
                      headers=admin)
    assert big.status_code == 413 and "10 MB" in big.json()["detail"]
    listed = client.get("/api/v1/library/materials", params={"kind": "file"}, headers=operator).json()
    assert [i["title"] for i in listed["items"]] == ["价目表"]
    assert client.get("/api/v1/library/materials", params={"kind": "script"},
                      headers=operator).status_code == 422
    assert client.post("/api/v1/library/materials", data={"kind": "image", "title": "x"},
                       files={"file": ("a.png", png(), "image/png")}, headers=operator).status_code == 403


# ---------------------------------------------------------------- console


def test_admin_creates_edits_and_retires_a_script_in_the_console(client: TestClient, db: Session,
                                                                 shop: dict[str, Any]) -> None:
    console = Console(client).login(shop["admin"])
    assert 'data-testid="library-new"' in console.get("/library").text
    bad = console.post("/library/new", {"kind": "script", "title": "问候", "text": "{备注名}您好"})
    assert bad.status_code == 422 and "{备注名}" in bad.text and 'data-testid="library-error"' in bad.text
    unknown = console.post("/library/new", {"kind": "script", "title": "问候", "text": "{会员等级}您好"})
    assert unknown.status_code == 422 and "{会员等级}" in unknown.text
    saved = console.post("/library/new", {"kind": "script", "title": "<b>问候</b>", "text": "{称呼}您好",
                                          "tags": "问候，新客"})
    assert saved.status_code == 303, saved.text
    item = db.scalar(select(LibraryItem))
    assert item is not None
    page = console.get("/library").text
    assert "&lt;b&gt;问候&lt;/b&gt;" in page and "<b>问候</b>" not in page
    edited = console.post(f"/library/{item.id}", {"title": "问候", "text": "{称呼}下午好", "tags": "问候"})
    assert edited.status_code == 303
    db.expire_all()
    assert item.text == "{称呼}下午好"
    assert console.post(f"/library/{item.id}/status", {"status": "retired"}).status_code == 303
    db.expire_all()
    assert item.status == ItemStatus.retired.value
    assert "问候" not in console.get("/library").text.split('data-testid="library-filters"')[1].split("</form>")[1]
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.entity_type == "library_item")) == 3


def test_console_upload_refuses_wrong_type_and_oversize_with_the_limit_named(client: TestClient, db: Session,
                                                                            shop: dict[str, Any]) -> None:
    console = Console(client).login(shop["admin"])
    token = console.token()
    wrong = client.post("/library/new", data={"kind": "image", "title": "图", "csrf_token": token},
                        files={"file": ("a.png", b"not an image", "image/png")}, follow_redirects=False)
    assert wrong.status_code == 422 and "JPG" in wrong.text
    big = client.post("/library/new", data={"kind": "image", "title": "图", "csrf_token": token},
                      files={"file": ("a.png", png() + b"\0" * service.IMAGE_MAX_BYTES, "image/png")},
                      follow_redirects=False)
    assert big.status_code == 413 and "10 MB" in big.text
    good = client.post("/library/new", data={"kind": "image", "title": "图", "csrf_token": token},
                       files={"file": ("a.png", png(), "image/png")}, follow_redirects=False)
    assert good.status_code == 303
    assert db.scalar(select(func.count()).select_from(StoredFile)) == 1


def test_operator_sees_the_library_but_cannot_edit_it(client: TestClient, db: Session, shop: dict[str, Any]) -> None:
    script = _script(db, shop["admin"])
    console = Console(client).login(shop["operator"])
    page = console.get("/library").text
    assert "问候" in page and 'data-testid="library-new"' not in page
    view = console.get(f"/library/{script.id}").text
    assert 'data-testid="library-view"' in view and 'data-testid="library-form"' not in view
    assert console.post(f"/library/{script.id}", {"title": "改", "text": "您好"}).status_code == 403
    assert console.post("/library/new", {"kind": "script", "title": "新", "text": "您好"}).status_code == 403
    assert console.post(f"/library/{script.id}/status", {"status": "retired"}).status_code == 403
    assert console.get("/library/new").status_code == 403
    db.expire_all()
    assert script.title == "问候" and script.status == "active"
    assert db.scalar(select(func.count()).select_from(LibraryUse)) == 0


# ---------------------------------------------------------------- used from the inbox and the sidebar


def test_a_script_picked_in_the_inbox_is_rendered_for_the_customer_and_counted_when_sent(
        client: TestClient, db: Session, make: Any, shop: dict[str, Any]) -> None:
    from tests.test_inbox_pages import incoming

    account = make.account(display_name="茶小满", kind="personal")
    agent = make.user("service", accounts=[account])
    customer = make.customer(account, name="王芳", remark_name="王芳-红茶党-西湖自由职业", salutation="王姐")
    conversation = incoming(db, account, customer, "优惠券用不了")
    script = _script(db, shop["admin"], title="售后致歉", text="{称呼}您好，{账号}马上为您处理")
    console = Console(client).login(agent)
    page = console.get(f"/inbox/{conversation.id}").text
    assert f'data-canned="王姐您好，茶小满马上为您处理" data-script-id="{script.id}"' in page
    assert "红茶党" not in page.split('data-testid="library-scripts"')[1].split("</details>")[0]
    note = console.post(f"/inbox/{conversation.id}/reply", {"text": "内部备注", "internal": "1",
                                                            "library_script_ids": str(script.id)})
    assert note.status_code == 303
    db.refresh(script)
    assert script.use_count == 0  # an internal note is not a use
    sent = console.post(f"/inbox/{conversation.id}/reply", {"text": "王姐您好，茶小满马上为您处理",
                                                            "library_script_ids": f"{script.id},x,{script.id},99999"})
    assert sent.status_code == 303
    db.refresh(script)
    assert script.use_count == 1
    use = db.scalar(select(LibraryUse))
    assert use is not None and (use.place, use.user_id, use.customer_id) == ("inbox", agent.id, customer.id)


def test_the_sidebar_picker_renders_scripts_for_the_customer_and_counts_each_use(
        client: TestClient, db: Session, make: Any, shop: dict[str, Any]) -> None:
    customer = make.customer(shop["account"], name="李雷", remark_name="李雷-爱砍价")
    script = _script(db, shop["admin"], title="生日祝福", text="{称呼}生日快乐！{账号}送您一份小礼物")
    _script(db, shop["admin"], title="复购提醒", text="{称呼}，上次的龙井喝完了吗？")
    console = Console(client).login(shop["operator"])
    panel = console.get(f"/sidebar/reply?customer_id={customer.id}").text
    assert 'data-testid="sidebar-scripts"' in panel
    assert f'data-send-chat="李雷生日快乐！茶小满送您一份小礼物" data-library-use="{script.id}"' in panel
    assert "爱砍价" not in panel
    found = console.get(f"/sidebar/reply?customer_id={customer.id}&script_q=生日").text
    assert "生日祝福" in found and "复购提醒" not in found
    token = console.token()
    for _n in range(2):
        used = client.post(f"/library/{script.id}/use", json={"place": "sidebar", "customer_id": customer.id},
                           headers={"x-csrf-token": token})
        assert used.status_code == 200, used.text
    assert used.json()["use_count"] == 2
    assert client.post(f"/library/{script.id}/use", json={"place": "sidebar"}).status_code == 403  # no CSRF token
    theirs = make.customer(shop["other"])
    assert client.post(f"/library/{script.id}/use", json={"place": "sidebar", "customer_id": theirs.id},
                       headers={"x-csrf-token": token}).status_code == 404
    db.refresh(script)
    assert script.use_count == 2
    assert "已使用 2 次" in console.get(f"/library/{script.id}").text


# ---------------------------------------------------------------- welcome messages


def test_a_channel_welcomes_with_a_library_script_and_links_and_counts_them(
        db: Session, make: Any, shop: dict[str, Any]) -> None:
    from siyu.channels import service as channels_service
    from siyu.core.viewer import SYSTEM

    admin = viewer_of(shop["admin"])
    script = _script(db, shop["admin"], title="新客欢迎", text="{称呼}您好！我是{账号}，有茶的问题随时找我")
    link = service.save_material(db, data=MaterialIn(kind="link", title="新客指南", description="三分钟了解我们",
                                                     url="https://example.com/guide"), viewer=admin)
    db.commit()
    doc = service.save_material(db, data=MaterialIn(kind="file", title="价目表"), viewer=admin,
                                file=service.Upload(io.BytesIO(b"%PDF-1.4 price list"), "p.pdf"))
    db.commit()
    with pytest.raises(Invalid) as not_attachable:  # a file is no welcome attachment (images and cards are)
        channels_service.save_channel(db, viewer=SYSTEM, data=channels_service.ChannelIn(
            name="门店", account_ids=[shop["account"].id], welcome_material_ids=[doc.id]))
    assert not_attachable.value.field == "welcome_material_ids"
    db.rollback()
    channel = channels_service.save_channel(db, viewer=SYSTEM, data=channels_service.ChannelIn(
        name="门店", account_ids=[shop["account"].id], welcome_script_id=script.id, welcome_material_ids=[link.id]))
    db.commit()
    customer = make.customer(shop["account"], name="韩梅梅", remark_name="韩梅梅-VIP-难缠")
    outcome = channels_service.on_friend_added(db, customer_id=customer.id, account_id=shop["account"].id,
                                               state=channel.key)
    db.commit()
    assert outcome.welcome == "韩梅梅您好！我是茶小满，有茶的问题随时找我"
    assert outcome.attachments == [{"msgtype": "link", "link": {"title": "新客指南", "desc": "三分钟了解我们",
                                                                "url": "https://example.com/guide"}}]
    db.refresh(script)
    db.refresh(link)
    assert (script.use_count, link.use_count) == (1, 1)
    assert service.uses_by_place(db, item_id=script.id) == {"welcome": 1}
    # The channel's own text wins over the script (and the script is then not counted).
    channel.welcome_text = "{称呼}欢迎光临"
    db.commit()
    other = make.customer(shop["account"], name="李华")
    again = channels_service.on_friend_added(db, customer_id=other.id, account_id=shop["account"].id,
                                             state=channel.key)
    db.commit()
    db.refresh(script)
    assert again.welcome == "李华欢迎光临" and script.use_count == 1


def test_the_welcome_goes_to_wecom_with_the_link_attachments() -> None:
    from siyu.wecom import events

    class Api:
        def __init__(self) -> None:
            self.sent: list[tuple[str, str, Any]] = []

        def send_welcome_message(self, code: str, text: str = "", attachments: Any = None) -> None:
            self.sent.append((code, text, attachments))

    api = Api()
    link = {"msgtype": "link", "link": {"title": "新客指南", "desc": "", "url": "https://example.com/guide"}}
    assert events._send_welcome(api, "code1", "您好", [link]) is True
    assert api.sent == [("code1", "您好", [link])]


def test_the_channel_editor_offers_library_scripts_and_links(client: TestClient, db: Session,
                                                             shop: dict[str, Any]) -> None:
    from siyu.channels.models import Channel

    script = _script(db, shop["admin"], title="新客欢迎", text="{称呼}您好")
    link = service.save_material(db, data=MaterialIn(kind="link", title="新客指南", url="https://example.com/g"),
                                 viewer=viewer_of(shop["admin"]))
    db.commit()
    console = Console(client).login(shop["admin"])
    page = console.get("/channels/new").text
    assert 'data-testid="welcome-library"' in page and "新客欢迎" in page and "新客指南" in page
    saved = console.post("/channels/save", {"name": "门店", "kind": "store_staff", "status": "active",
                                            "cost_model": "per_add", "cost_amount": "0",
                                            "account_ids": [shop["account"].id], "account_strategy": "single",
                                            "incentive_kind": "none", "welcome_script_id": str(script.id),
                                            "welcome_material_ids": [str(link.id)]})
    assert saved.status_code == 303, saved.text
    channel = db.scalar(select(Channel))
    assert channel is not None and channel.welcome_script_id == script.id and channel.welcome_material_ids == [link.id]
    edit = console.get(f"/channels/{channel.id}").text
    assert f'<option value="{script.id}" selected>' in edit


def test_odd_search_input_is_answered_not_crashed(client: TestClient, shop: dict[str, Any], token_for: Any) -> None:
    operator = token_for(shop["operator"])
    for params in ({"q": "\x00茶"}, {"tag": "\x00"}, {"cursor": "garbage"}, {"cursor": "WzEsMl0"},
                   {"status": "deleted"}, {"q": "%_\\"}):
        answer = client.get("/api/v1/library/scripts", params=params, headers=operator)
        assert answer.status_code in (200, 422), (params, answer.text)
    console = Console(client).login(shop["operator"])
    page = console.get("/library", params={"kind": "video"})
    assert page.status_code == 422 and "video" in page.text


def test_replacing_a_materials_image_forgets_the_old_file(client: TestClient, db: Session,
                                                          shop: dict[str, Any]) -> None:
    console = Console(client).login(shop["admin"])
    token = console.token()
    created = client.post("/library/new", data={"kind": "image", "title": "门店", "csrf_token": token},
                          files={"file": ("a.png", png((8, 8)), "image/png")}, follow_redirects=False)
    assert created.status_code == 303
    item = db.scalar(select(LibraryItem))
    assert item is not None
    old_key = item.file_key
    kept = client.post(f"/library/{item.id}", data={"title": "门店（新）", "csrf_token": token},
                       follow_redirects=False)
    assert kept.status_code == 303  # no new file: the old one stays
    db.expire_all()
    assert item.file_key == old_key and item.title == "门店（新）"
    replaced = client.post(f"/library/{item.id}", data={"title": "门店", "csrf_token": token},
                           files={"file": ("b.png", png((16, 16)), "image/png")}, follow_redirects=False)
    assert replaced.status_code == 303
    db.expire_all()
    assert item.file_key != old_key and not storage.exists(old_key)
    assert console.get(f"/library/{item.id}/file/file").content == png((16, 16))
    assert db.scalar(select(func.count()).select_from(StoredFile)) == 1
