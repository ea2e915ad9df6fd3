"""The simulator's chat archive: GetChatData's stand-in pages by seq with real RSA on the random key,
msgaudit_notify at most every 15 s while there are new messages, check_single_agree's limits."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from siyu.simulator.archive import CHATDATA_LIMIT, ArchiveNotifier
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.errors import ApiError
from siyu.wecom.archive import simulator_decrypt


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _corp(key: rsa.RSAPrivateKey) -> VirtualCorp:
    corp = VirtualCorp.seeded(2, corp_id="wwSIMARCHIVE0001", contacts_per_member=2, groups_per_member=1, salt=0)
    corp.archive.public_key(3, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    return corp


def test_chatdata_pages_by_seq_and_each_random_key_opens_with_the_corps_private_key(key: rsa.RSAPrivateKey) -> None:
    corp = _corp(key)
    made = corp.archive.scenario(count=30, agree_share=1.0, notify=False)
    items = corp.archive.chatdata(0, 10) + corp.archive.chatdata(10, 1000)
    assert [i["seq"] for i in items] == list(range(1, made["last_seq"] + 1))
    first = items[0]
    assert first["publickey_ver"] == 3
    random_key = key.decrypt(base64.b64decode(first["encrypt_random_key"]), padding.PKCS1v15()).decode()
    message = simulator_decrypt(random_key, first["encrypt_chat_msg"])
    assert message["msgid"] == first["msgid"] and message["action"] == "send" and "msgtime" in message
    assert corp.archive.chatdata(made["last_seq"], 100) == []
    with pytest.raises(ApiError):
        corp.archive.chatdata(0, CHATDATA_LIMIT + 1)


def test_check_single_agree_answers_each_pair_and_refuses_more_than_100(key: rsa.RSAPrivateKey) -> None:
    corp = _corp(key)
    contact = corp.state.contacts[0]
    userid = contact.follows[0].userid
    corp.archive.agree(userid, contact.external_userid)
    answer = corp.archive.api_check_single_agree({"info": [
        {"userid": userid, "exteranalopenid": contact.external_userid},
        {"userid": userid, "exteranalopenid": "wmNEVERASKED"}]})
    assert [a["agree_status"] for a in answer["agreeinfo"]] == ["Agree", "Disagree"]
    with pytest.raises(ApiError):
        corp.archive.api_check_single_agree({"info": [{"userid": "u", "exteranalopenid": "wm"}] * 101})


def test_msgaudit_notify_comes_at_most_once_per_interval_while_there_are_new_messages() -> None:
    sent: list[float] = []
    done = threading.Event()

    def send() -> Any:
        sent.append(time.monotonic())
        if len(sent) == 2:
            done.set()

    notifier = ArchiveNotifier(send, interval=0.3)
    for _ in range(50):  # a burst of new messages
        notifier.notify()
    assert len(sent) == 1  # the first at once, the rest wait for the interval
    assert done.wait(2.0)
    assert len(sent) == 2 and sent[1] - sent[0] >= 0.29
    notifier.cancel()
