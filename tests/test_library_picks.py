"""SOP steps, the 朋友圈 calendar and channel welcomes pick from the one library (话术库 / 素材库): a step
names a script and materials, a WeCom message step sends images as media_ids WeCom issued, a moment
takes a script and up to 9 library images; every form offers the same picker; uses are counted."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.db import utcnow
from siyu.core.errors import Invalid
from siyu.library import service as library_service
from siyu.library.schemas import MaterialIn, ScriptIn
from siyu.maintenance.models import Task
from siyu.moments import service as moments_service
from siyu.moments.models import MomentPost
from siyu.moments.schemas import PostIn
from siyu.sops import service as sops
from tests.conftest import viewer_of
from tests.test_library import png
from tests.test_pages import Console
from tests.test_sops import RecordingApi, crm_tag, enrolment_of, new_sop, runs_of, sop_data, tag_customer
from tests.test_wecom_connector import MEMBER, Simulator, sim, wecom_customer

__all__ = ["sim"]


def _script(db: Session, admin: Any, text: str, title: str = "回访") -> Any:
    item = library_service.save_script(db, data=ScriptIn(title=title, text=text), viewer=viewer_of(admin))
    db.commit()
    return item


def _image(db: Session, admin: Any, title: str = "新茶海报") -> Any:
    item = library_service.save_material(db, data=MaterialIn(kind="image", title=title), viewer=viewer_of(admin),
                                         file=library_service.Upload(io.BytesIO(png()), f"{title}.png"))
    db.commit()
    return item


def _file(db: Session, admin: Any) -> Any:
    item = library_service.save_material(db, data=MaterialIn(kind="file", title="价目表"), viewer=viewer_of(admin),
                                         file=library_service.Upload(io.BytesIO(b"%PDF-1.4 price"), "p.pdf"))
    db.commit()
    return item


# ---------------------------------------------------------------- SOP steps


def test_a_task_step_uses_a_library_script_and_lists_its_materials(db: Session, make: Any, admin: Any) -> None:
    account = make.account(kind="personal", wecom_userid=None, display_name="茶小满")
    customer = make.customer(account, salutation="王姐", remark_name="王芳-难缠-不要推")
    script = _script(db, admin, "{称呼}好，我是{账号}，新茶到了想请您试试")
    image = _image(db, admin)
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 0 09:00", "kind": "task", "script_id": script.id,
                                       "material_ids": [image.id]}]))
    tag_customer(db, customer, tag)

    sops.run_all(db, now=utcnow() + timedelta(days=1), api=RecordingApi())

    run = runs_of(db, enrolment_of(db, customer))[0]
    task = db.get(Task, run.task_id)
    assert task is not None and task.detail == "王姐好，我是茶小满，新茶到了想请您试试（素材：新茶海报）"
    assert "难缠" not in task.detail  # the remark name never reaches the text
    db.refresh(script)
    db.refresh(image)
    assert (script.use_count, image.use_count) == (1, 1)
    assert library_service.uses_by_place(db, item_id=script.id) == {"sop": 1}


def test_a_step_naming_a_missing_script_or_a_file_to_send_is_refused(db: Session, admin: Any) -> None:
    tag = crm_tag(db)
    doc = _file(db, admin)
    with pytest.raises(Invalid) as missing:
        sops.create_sop(db, data=sop_data(tag, [{"at": "day 0", "kind": "task", "script_id": 999}]),
                        viewer=viewer_of(admin))
    assert missing.value.field == "steps.0.script_id"
    with pytest.raises(Invalid) as a_file:
        sops.create_sop(db, data=sop_data(tag, [{"at": "day 0", "kind": "send", "text": "您好",
                                                 "material_ids": [doc.id]}]), viewer=viewer_of(admin))
    assert a_file.value.field == "steps.0.material_ids" and "价目表" in a_file.value.message
    # A task may list a file: the operator sends it by hand.
    sops.create_sop(db, data=sop_data(tag, [{"at": "day 0", "kind": "task", "text": "发价目表",
                                             "material_ids": [doc.id]}]), viewer=viewer_of(admin))


def test_a_wecom_message_step_sends_a_library_image_as_the_media_id_wecom_issued(
        db: Session, make: Any, admin: Any, sim: Simulator) -> None:
    account = make.account(wecom_userid=MEMBER)
    external = sim.new_contact()
    customer = wecom_customer(make, db, account, external, salutation="李先生")
    image = _image(db, admin)
    tag = crm_tag(db)
    new_sop(db, admin, sop_data(tag, [{"at": "day 1 10:00", "kind": "send", "text": "{称呼}，本周新茶",
                                       "material_ids": [image.id]}]))
    tag_customer(db, customer, tag)

    sops.run_all(db, now=utcnow() + timedelta(days=3))

    assert runs_of(db, enrolment_of(db, customer))[0].outcome == "sent"
    sent = sim.corp.state.mass_sends[-1]
    assert sent.text == "李先生，本周新茶" and sent.attachments[0]["msgtype"] == "image"
    assert sim.corp.upload(sent.attachments[0]["image"]["media_id"]) is not None


# ---------------------------------------------------------------- moments


def test_a_moment_takes_a_library_script_and_images(db: Session, make: Any, admin: Any) -> None:
    account = make.account(display_name="茶小满")
    script = _script(db, admin, "{账号}今日上新：明前龙井", title="上新")
    images = [_image(db, admin, f"图{n}") for n in range(2)]
    post = moments_service.create_post(db, data=PostIn(account_id=account.id, script_id=script.id,
                                                       material_ids=[i.id for i in images]), viewer=viewer_of(admin))
    db.commit()
    assert post.text == "茶小满今日上新：明前龙井" and [i["name"] for i in post.images] == ["图0.png", "图1.png"]
    assert not any(i["key"].startswith("library/") for i in post.images)  # copied: deleting the post keeps the library
    db.refresh(script)
    assert script.use_count == 1 and library_service.uses_by_place(db, item_id=images[0].id) == {"moments": 1}


def test_a_moment_with_ten_images_or_a_per_customer_script_is_refused(db: Session, make: Any, admin: Any) -> None:
    account = make.account()
    nine = [_image(db, admin, f"图{n}") for n in range(9)]
    extra = moments_service.Upload(name="x.png", content_type="image/png", data=png())
    with pytest.raises(Invalid) as ten:
        moments_service.create_post(db, data=PostIn(account_id=account.id, text="上新",
                                                    material_ids=[i.id for i in nine]),
                                    viewer=viewer_of(admin), uploads=[extra])
    assert "9" in ten.value.message
    personal = _script(db, admin, "{称呼}您好", title="问候")
    with pytest.raises(Invalid) as per_customer:
        moments_service.create_post(db, data=PostIn(account_id=account.id, script_id=personal.id),
                                    viewer=viewer_of(admin))
    assert per_customer.value.field == "script_id" and "{称呼}" in per_customer.value.message
    doc = _file(db, admin)
    with pytest.raises(Invalid) as not_image:
        moments_service.create_post(db, data=PostIn(account_id=account.id, text="价目", material_ids=[doc.id]),
                                    viewer=viewer_of(admin))
    assert not_image.value.field == "material_ids"


# ---------------------------------------------------------------- the console forms share one picker


def test_every_form_offers_the_library_picker_and_the_moment_form_saves_a_pick(
        client: TestClient, db: Session, make: Any, admin: Any) -> None:
    account = make.account(display_name="茶小满")
    script = _script(db, admin, "{账号}本周茶会", title="茶会")
    image = _image(db, admin)
    console = Console(client).login(admin)
    for url, testid in (("/sops", "step-library-0"), ("/moments/new", "moment-library"),
                        ("/channels/new", "welcome-library")):
        page = console.get(url)
        assert page.status_code == 200 and f'data-testid="{testid}"' in page.text, url
        assert "新茶海报" in page.text and "茶会" in page.text, url
    saved = console.post("/moments/new", {"account_id": str(account.id), "module": "product",
                                          "script_id": str(script.id), "material_ids": str(image.id)})
    assert saved.status_code == 303, saved.text
    post = db.scalars(select(MomentPost).order_by(MomentPost.id.desc())).first()
    assert post is not None and post.text == "茶小满本周茶会" and len(post.images) == 1
    sop_form = {"name": "回访", "trigger_kind": "stage", "trigger_stages": "user", "step_at_0": "day 0 09:00",
                "step_kind_0": "task", "step_script_0": str(script.id), "step_materials_0": str(image.id),
                "action": "save"}
    assert console.post("/sops", sop_form).status_code == 303
    db.expire_all()
    [sop] = sops.list_sops(db)
    step = sops.current_version(db, sop).steps[0]
    assert (step["script_id"], step["material_ids"]) == (script.id, [image.id])
    edit = console.get(f"/sops/{sop.id}")
    assert f'value="{image.id}" checked' in edit.text
