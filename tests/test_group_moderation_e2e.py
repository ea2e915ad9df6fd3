"""群规 end to end through the simulator's chat archive (in-process, no doubles): a member posts an ad
without a red packet → msgaudit_notify → Siyu pulls GetChatData and stores the group message → the minutely
job finds it → the owner's removal task with the evidence → the member is blacklisted → refused at intake
and flagged to the owner of another group they join. The same archive range pulled again changes nothing."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.db import transaction
from siyu.groups import service as groups_service
from siyu.groups.models import GroupChat
from siyu.groups.moderation import jobs, service
from siyu.groups.moderation.models import BlacklistEntry, ModerationFinding
from siyu.maintenance.models import Task
from siyu.wecom import archive
from siyu.wecom.client import client_for
from tests.test_wecom_archive import Sim, keys, sim  # noqa: F401  (fixtures)

AD_RULE = {"name": "广告须发红包（50元/20人/3分钟）", "kind": "ad", "status": "live",
           "params": {"minutes": 3, "min_yuan": 50, "min_people": 20}, "ladder": [["owner_task", "blacklist"]]}


def mirror(db: Session, chat_id: str) -> GroupChat:
    group = groups_service.apply_group_chat(db, client_for(db).group_chat(chat_id))
    db.commit()
    return group


def test_an_ad_without_a_red_packet_in_the_archive_becomes_the_owners_task_and_a_blacklist_refused_elsewhere(
        client: TestClient, db: Session, sim: Sim, admin_headers: dict[str, str]) -> None:  # noqa: F811
    assert client.post("/api/v1/group-rules", json=AD_RULE, headers=admin_headers).status_code == 201
    first, second = sim.corp.state.group_chats[0], sim.corp.state.group_chats[1]
    spammer = next(m.userid for m in first.members if m.type == 2 and m.userid not in
                   {x.userid for x in second.members})
    sim.control("archive_agree", userid=first.owner, external_userid=spammer)
    group = mirror(db, first.chat_id)
    other = mirror(db, second.chat_id)
    sent_ms = int((time.time() - 600) * 1000)  # ten minutes ago: the 3-minute window has passed
    ad = sim.control("archive_group_post", chat_id=first.chat_id, sender=spammer, msgtype="link", at_ms=sent_ms,
                     body={"title": "日赚500元兼职，扫码进群", "description": "", "link_url": "https://spam.example"})
    # a red packet, but too small (30 yuan) and too late is not asked: only 30 yuan to 10 people
    sim.control("archive_group_post", chat_id=first.chat_id, sender=spammer, msgtype="redpacket",
                at_ms=sent_ms + 60_000, body={"type": 2, "wish": "大家好", "totalcnt": 10, "totalamount": 3000})
    sim.notify(client)
    assert jobs.moderate_new.call_local()["findings"] == 1

    db.expire_all()
    finding = db.scalars(select(ModerationFinding)).one()
    assert finding.group_chat_id == group.id and [e["msgid"] for e in finding.evidence] == [ad["msgid"]]
    task = db.get(Task, finding.task_id)
    assert task is not None and task.kind == "group_removal" and task.account_id == group.owner_account_id
    assert "日赚500元兼职" in task.detail
    listed = client.get(f"/api/v1/groups/{group.id}/findings", headers=admin_headers).json()["items"]
    assert [(i["evidence_message_ids"], i["actions"]) for i in listed] == [([ad["msgid"]], ["owner_task",
                                                                                           "blacklist"])]

    # the archive range pulled again (a crash, a replay): stored once, found once
    with transaction() as session:
        source = archive.configured_source(session)
    assert source is not None
    replay = archive.pull(transaction, source, from_seq=0)
    assert replay.duplicates >= 2 and replay.group == 0
    service.cursor_row(db).message_id = 0
    db.commit()
    assert jobs.moderate_new.call_local()["findings"] == 0
    db.expire_all()
    assert len(db.scalars(select(ModerationFinding)).all()) == 1

    # blacklisted: refused at every group's intake …
    assert db.scalars(select(BlacklistEntry)).one().userid == spammer
    check = client.post("/api/v1/group-blacklist/check", json={"userids": [spammer]}, headers=admin_headers)
    assert check.json() == {"refused": [spammer]}
    # … and when they join another group anyway, that group's owner is told
    time.sleep(1.1)  # WeCom's join_time is in whole seconds: after the blacklisting
    sim.control("join_group", chat_id=second.chat_id, external_userids=[spammer])
    mirror(db, second.chat_id)
    assert jobs.moderate_new.call_local()["findings"] == 1
    db.expire_all()
    flag: Any = db.scalars(select(ModerationFinding).where(ModerationFinding.rule_kind == "blacklist_join")).one()
    assert flag.group_chat_id == other.id
    flag_task = db.get(Task, flag.task_id)
    assert flag_task is not None and flag_task.kind == "group_flag" and flag_task.account_id == other.owner_account_id
