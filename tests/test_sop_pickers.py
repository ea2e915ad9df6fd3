"""The SOP builder picks by name: the trigger's tags (by group) and channels, the tag step's tag and the
audience segment — no raw ids; the audience's JSON stays as an advanced fallback, and a saved SOP reads back
into the same pickers."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from siyu.core.viewer import SYSTEM
from siyu.segments import service as segments_service
from siyu.segments.schemas import SegmentIn, parse_tree
from siyu.sops import service
from tests.conftest import viewer_of
from tests.test_pages import Console
from tests.test_sops import crm_tag

STEPS = {"step_at_0": "day 0 09:00", "step_kind_0": "task", "step_text_0": "{称呼}您好"}


def _segment(db: Session, admin: Any, name: str = "上海客户") -> Any:
    tree = parse_tree({"kind": "and", "conditions": [{"kind": "field", "field": "city", "op": "eq",
                                                      "value": "上海"}]})
    segment = segments_service.create_segment(db, data=SegmentIn(name=name, conditions=tree),
                                              viewer=viewer_of(admin))
    db.commit()
    return segment


def _selected(text: str, name: str) -> list[str]:
    select = text.split(f'name="{name}"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="([^"]*)" selected', select)


def test_the_builder_offers_tags_by_group_channels_and_segments_by_name_not_id_fields(
        client: TestClient, db: Session, make: Any, admin: Any) -> None:
    from siyu.channels import service as channels_service

    crm_tag(db, "人群:新客")
    channels_service.save_channel(db, viewer=SYSTEM, data=channels_service.ChannelIn(
        name="门店扫码", account_ids=[make.account().id]))
    db.commit()
    _segment(db, admin)
    page = Console(client).login(admin).get("/sops")
    assert page.status_code == 200
    assert 'name="trigger_ids"' not in page.text and "标签 ID" not in page.text and "ID（逗号分隔）" not in page.text
    tags = page.text.split('data-testid="trigger-tags"', 1)[1].split("</fieldset>", 1)[0]
    assert 'data-group="人群"' in tags and ">新客</span>" in tags
    assert ">门店扫码</span>" in page.text.split('data-testid="trigger-channels"', 1)[1].split("</fieldset>", 1)[0]
    assert '<optgroup label="人群">' in page.text  # the tag step's picker
    assert ">上海客户</option>" in page.text and 'data-testid="audience-advanced"' in page.text


def test_a_sop_saved_from_the_pickers_stores_ids_and_reads_back_into_them(
        client: TestClient, db: Session, make: Any, admin: Any) -> None:
    tag, step_tag = crm_tag(db, "人群:新客"), crm_tag(db, "人群:老客")
    segment = _segment(db, admin)
    console = Console(client).login(admin)
    form = {"name": "新客培育", "trigger_kind": "tag", "trigger_tags": str(tag.id),
            "audience_segment": str(segment.id), "action": "save", **STEPS,
            "step_at_1": "day 1 09:00", "step_kind_1": "tag", "step_tag_1": str(step_tag.id)}
    assert console.post("/sops", form, csrf=False).status_code == 403 and service.list_sops(db) == []
    saved = console.post("/sops", form)
    assert saved.status_code == 303, saved.text
    db.expire_all()
    [sop] = service.list_sops(db)
    version = service.current_version(db, sop)
    assert version.trigger["tag_ids"] == [tag.id]
    assert version.conditions == segment.conditions
    assert version.steps[1]["tag_id"] == step_tag.id
    page = console.get(f"/sops/{sop.id}").text
    assert _selected(page, "audience_segment") == [str(segment.id)]
    assert f'name="trigger_tags" value="{tag.id}" checked' in page
    assert str(step_tag.id) in _selected(page, "step_tag_1")


def test_a_condition_no_segment_matches_stays_in_the_advanced_json_and_both_at_once_is_refused(
        client: TestClient, db: Session, make: Any, admin: Any) -> None:
    segment = _segment(db, admin)
    console = Console(client).login(admin)
    raw = '{"kind": "and", "conditions": [{"kind": "stage", "stages": ["user"]}]}'
    base = {"name": "老客", "trigger_kind": "stage", "trigger_stages": "user", "action": "save", **STEPS}
    both = console.post("/sops", {**base, "audience_segment": str(segment.id), "conditions": raw})
    assert both.status_code == 422 and "请选择分群或填写条件，二选一" in both.text
    saved = console.post("/sops", {**base, "conditions": raw})
    assert saved.status_code == 303, saved.text
    db.expire_all()
    [sop] = service.list_sops(db)
    page = console.get(f"/sops/{sop.id}").text
    assert _selected(page, "audience_segment") == []
    advanced = page.split('data-testid="audience-advanced"', 1)[1].split("</details>", 1)[0]
    assert '<details open data-testid="audience-advanced">' in page
    assert "&#34;stages&#34;: [&#34;user&#34;]" in advanced


def test_a_channel_trigger_is_picked_by_name(client: TestClient, db: Session, make: Any, admin: Any) -> None:
    from siyu.channels import service as channels_service

    channel = channels_service.save_channel(db, viewer=SYSTEM, data=channels_service.ChannelIn(
        name="门店扫码", account_ids=[make.account().id]))
    db.commit()
    console = Console(client).login(admin)
    saved = console.post("/sops", {"name": "扫码欢迎", "trigger_kind": "channel",
                                   "trigger_channels": str(channel.id), "action": "save", **STEPS})
    assert saved.status_code == 303, saved.text
    db.expire_all()
    [sop] = service.list_sops(db)
    assert service.current_version(db, sop).trigger["channel_ids"] == [channel.id]
