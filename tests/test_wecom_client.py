"""The WeCom API client against the running simulator (never mocks): tokens shared by workers
and fetched again once when the platform refuses them, a busy or failing platform waited out
with growing delays, errors raised with the platform's own errcode and errmsg, every call
family Siyu makes, and the console's "test connection" button."""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.core.models import AppSetting
from siyu.core.settings import get_settings
from siyu.simulator.corp import DEFAULT_MEMBERS, VirtualCorp
from siyu.simulator.server import RunningServer, ServerOptions, create_app
from siyu.wecom import client as wecom_client
from siyu.wecom.client import DatabaseStorage, RetryPolicy, TokenStorage, WecomApi, WecomApiError, client_for
from siyu.wecom.config import WecomConfig

CORP_ID = "wwSIYUCLIENT0001"
SECRET = "client-test-secret-0123456789"


class Simulator:
    def __init__(self, server: RunningServer, corp: VirtualCorp) -> None:
        self.server = server
        self.corp = corp
        self.base = server.url + "/cgi-bin/"

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = httpx.request(method, f"{self.server.url}/_simulator/{path}", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def fault(self, **fault: Any) -> None:
        self.control("POST", "faults", fault)

    def calls(self, path: str) -> int:
        return int(self.control("GET", "faults")["calls"].get(path, 0))

    def config(self, secret: str = SECRET) -> WecomConfig:
        return WecomConfig(corp_id=CORP_ID, secret=secret, api_base=self.base)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    corp = VirtualCorp.seeded(3, corp_id=CORP_ID, salt=0)  # the real clock: tokens expire in real time
    server = RunningServer(create_app(corp, ServerOptions(secret=SECRET))).start()
    try:
        yield Simulator(server, corp)
    finally:
        server.stop()


@pytest.fixture
def wecom_settings(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulator]:
    """Siyu's settings pointed at the simulator, the way an administrator configures a corp."""
    monkeypatch.setenv("SIYU_WECOM_CORP_ID", CORP_ID)
    monkeypatch.setenv("SIYU_WECOM_SECRET", SECRET)
    monkeypatch.setenv("SIYU_WECOM_API_BASE", sim.base)
    get_settings.cache_clear()
    yield sim
    get_settings.cache_clear()


class Sleeps(list[float]):
    """The waits the client asked for, instead of waiting them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def worker(sim: Simulator, sleeps: Sleeps, *, secret: str = SECRET, attempts: int = 6) -> WecomApi:
    """What one worker process builds: its own storage object over the shared database."""
    return client_for(sim.config(secret), storage=TokenStorage(DatabaseStorage()),
                      policy=RetryPolicy(attempts=attempts, sleep=sleeps))


@pytest.fixture
def api(db: Session, sim: Simulator, sleeps: Sleeps) -> WecomApi:
    return worker(sim, sleeps)


def growing(delays: list[float]) -> bool:
    return all(a < b for a, b in itertools.pairwise(delays))


# ---------------------------------------------------------------- tokens


def test_one_token_is_fetched_and_shared_by_every_worker(db: Session, sim: Simulator, sleeps: Sleeps) -> None:
    first, second = worker(sim, sleeps), worker(sim, sleeps)
    assert "shanye.vip" in first.follow_users()
    assert "shanye.vip" in second.follow_users()
    assert sim.calls("gettoken") == 1
    rows = list(db.scalars(select(AppSetting).where(AppSetting.key.startswith("wecom_token:"))))
    assert len(rows) == 1 and rows[0].value["value"] == first.client.access_token
    assert SECRET[:10] not in rows[0].key and SECRET not in str(rows[0].value)  # wechatpy's key holds it

    # Threads of one worker starting together still fetch one token between them.
    sim.control("POST", "tokens/expire")
    db.query(AppSetting).filter(AppSetting.key.startswith("wecom_token:")).delete()
    db.commit()
    workers = [worker(sim, sleeps) for _ in range(8)]
    errors: list[BaseException] = []

    def call(api: WecomApi) -> None:
        try:
            api.follow_users()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and sim.calls("gettoken") == 2


def test_a_token_the_platform_expired_is_fetched_again_once(db: Session, sim: Simulator, sleeps: Sleeps) -> None:
    first, second = worker(sim, sleeps), worker(sim, sleeps)
    userid = "shanye.xiaoye01"
    before = first.external_contacts(userid)
    second.follow_users()
    old_token = first.client.access_token
    assert sim.control("POST", "tokens/expire")["expired"] >= 1  # expired on WeCom's side, mid-work
    assert first.external_contacts(userid) == before  # 42001 → one new token → the call repeated
    assert sim.calls("gettoken") == 2 and first.client.access_token != old_token
    # The other worker still holds the old token in memory: refused, it takes the one now shared.
    assert second.follow_users()
    assert sim.calls("gettoken") == 2
    assert sleeps == []


def test_the_token_is_fetched_again_only_once_per_call(db: Session, sim: Simulator, sleeps: Sleeps) -> None:
    api = worker(sim, sleeps)
    api.follow_users()
    sim.fault(path="externalcontact/get_follow_user_list", errcode=42001, times=5)
    with pytest.raises(WecomApiError) as refused:
        api.follow_users()
    assert refused.value.errcode == 42001 and not refused.value.retryable
    assert sim.calls("gettoken") == 2 and sim.calls("externalcontact/get_follow_user_list") == 3


def test_wechatpy_on_its_own_refetches_without_a_bound(sim: Simulator) -> None:
    """Why the client replaces wechatpy's retry: 1.8.18 refetches the token for every 42001 it
    meets (it recurses), so a platform that kept answering 42001 would never let it stop."""
    from wechatpy.enterprise import WeChatClient

    class Plain(WeChatClient):  # type: ignore[misc]
        API_BASE_URL = sim.base

        def fetch_access_token(self) -> Any:
            return self._fetch_access_token(url=sim.base + "gettoken",
                                            params={"corpid": self.corp_id, "corpsecret": self.secret})

    plain = Plain(CORP_ID, SECRET)
    plain.external_contact.get_follow_user_list()
    sim.fault(path="externalcontact/get_follow_user_list", errcode=42001, times=4)
    plain.external_contact.get_follow_user_list()
    assert sim.calls("gettoken") == 5  # one token, then four more for four refusals in one call


def test_a_wrong_secret_is_the_platforms_40001_at_once(db: Session, sim: Simulator, sleeps: Sleeps) -> None:
    api = worker(sim, sleeps, secret="not-the-secret")
    with pytest.raises(WecomApiError) as denied:
        api.follow_users()
    error = denied.value
    assert (error.errcode, error.api, error.retryable) == (40001, "gettoken", False)
    assert error.errmsg.startswith("invalid credential")
    assert sleeps == [] and sim.calls("gettoken") == 1
    assert "not-the-secret" not in str(error)
    with pytest.raises(WecomApiError) as wrong_corp:
        client_for(WecomConfig(corp_id="wwNOTOURS", secret=SECRET, api_base=sim.base),
                   storage=TokenStorage(DatabaseStorage())).follow_users()
    assert wrong_corp.value.errcode == 40013


def test_tokens_are_shared_through_redis_when_it_is_configured(db: Session, sim: Simulator, sleeps: Sleeps,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        pytest.skip("no Redis on 127.0.0.1:6379 (CI starts one)")
    from wechatpy.session.redisstorage import RedisStorage

    monkeypatch.setenv("SIYU_REDIS_URL", "redis://127.0.0.1:6379/14")
    get_settings.cache_clear()
    storage = wecom_client.shared_storage()
    assert isinstance(storage.shared, RedisStorage)
    api = client_for(sim.config(), policy=RetryPolicy(sleep=sleeps))
    try:
        api.follow_users()
        other = TokenStorage(RedisStorage(storage.shared.redis, prefix="siyu"))  # another host's worker
        client_for(sim.config(), storage=other).follow_users()
        assert sim.calls("gettoken") == 1
        assert 0 < storage.shared.redis.ttl(f"siyu:{api.client.access_token_key}") <= 7200 - 300
        assert db.scalar(select(AppSetting).where(AppSetting.key.startswith("wecom_token:"))) is None
    finally:
        storage.shared.delete(api.client.access_token_key)
        get_settings.cache_clear()


# ---------------------------------------------------------------- a busy or failing platform


def test_rate_limits_are_waited_out_with_growing_delays(api: WecomApi, sim: Simulator, sleeps: Sleeps) -> None:
    expected = api.external_contacts("shanye.ahe01")
    sim.fault(path="externalcontact/list", errcode=45009, times=4)
    assert api.external_contacts("shanye.ahe01") == expected  # the work is done, not dropped
    assert len(sleeps) == 4 and growing(sleeps) and sleeps[0] >= 1.0
    assert sim.calls("externalcontact/list") == 6
    sleeps.clear()
    sim.fault(path="externalcontact/get", errcode=-1, times=1)  # system busy
    sim.fault(path="externalcontact/get", errcode=45033, times=1)  # concurrency limit
    assert api.external_contact(expected[0])["external_contact"]["external_userid"] == expected[0]
    assert len(sleeps) == 2 and growing(sleeps)


def test_platform_5xx_and_lost_connections_are_retried(db: Session, api: WecomApi, sim: Simulator,
                                                       sleeps: Sleeps) -> None:
    sim.fault(path="gettoken", status=503, times=2)  # even the token
    sim.fault(path="*", status=502, times=2)
    assert len(api.group_chats()) == len(sim.corp.state.group_chats)
    assert len(sleeps) == 4 and growing(sleeps[:2]) and growing(sleeps[2:])
    # Nobody listening at all: waited out too, then an error that says so (and keeps the secret out).
    sleeps.clear()
    dead = client_for(WecomConfig(corp_id=CORP_ID, secret=SECRET, api_base="http://127.0.0.1:9/cgi-bin/"),
                      storage=TokenStorage(DatabaseStorage()), policy=RetryPolicy(attempts=3, sleep=sleeps))
    with pytest.raises(WecomApiError) as unreachable:
        dead.follow_users()
    assert unreachable.value.errcode is None and unreachable.value.retryable and len(sleeps) == 2
    assert SECRET not in str(unreachable.value) and "corpsecret=***" in str(unreachable.value)


def test_when_retries_run_out_the_error_asks_for_a_later_retry(db: Session, sim: Simulator,
                                                               sleeps: Sleeps) -> None:
    api = worker(sim, sleeps, attempts=3)
    sim.fault(path="externalcontact/get_follow_user_list", errcode=45009, times=10)
    with pytest.raises(WecomApiError) as limited:
        api.follow_users()
    assert (limited.value.errcode, limited.value.retryable) == (45009, True)
    assert limited.value.errmsg.startswith("api freq out of limit") and len(sleeps) == 2
    assert sim.calls("externalcontact/get_follow_user_list") == 3
    sim.control("DELETE", "faults")
    assert api.follow_users()  # the job's later retry finds the platform willing again


def test_other_errcodes_raise_at_once(api: WecomApi, sim: Simulator, sleeps: Sleeps) -> None:
    with pytest.raises(WecomApiError) as refused:
        api.external_contact("wmNOBODY")
    error = refused.value
    assert (error.errcode, error.api, error.retryable) == (40096, "externalcontact/get", False)
    assert "invalid external userid" in error.errmsg and "more info at" in error.errmsg  # the platform's text
    assert sleeps == [] and sim.calls("externalcontact/get") == 1


def test_a_create_is_not_repeated_when_the_platform_may_have_acted(api: WecomApi, sim: Simulator,
                                                                   sleeps: Sleeps) -> None:
    customer = sim.corp.add_contact("shanye.vip")["external_userid"]
    sim.fault(path="externalcontact/add_msg_template", status=502, times=1)
    with pytest.raises(WecomApiError) as lost:
        api.create_mass_send(sender="shanye.vip", text="新品", external_userids=[customer])
    assert lost.value.http_status == 502 and not lost.value.retryable and sleeps == []
    sim.fault(path="externalcontact/add_msg_template", status=503, times=1)  # 503: not carried out
    sim.fault(path="externalcontact/add_msg_template", errcode=45009, times=1)  # refused: not carried out
    assert api.create_mass_send(sender="shanye.vip", text="新品", external_userids=[customer])["msgid"]
    assert len(sleeps) == 2 and sim.calls("externalcontact/add_msg_template") == 4


# ---------------------------------------------------------------- every call family


def test_members_and_follow_users(api: WecomApi) -> None:
    assert [m["userid"] for m in api.members()] == [userid for userid, _name in DEFAULT_MEMBERS]
    assert api.member("shanye.vip")["name"] == "VIP茶管家"
    assert set(api.follow_users()) == {userid for userid, _name in DEFAULT_MEMBERS}


def test_external_contacts_list_get_and_batch(api: WecomApi, sim: Simulator) -> None:
    members = ["shanye.xiaoye01", "shanye.xiaoye02"]
    expected = {(userid, e) for userid in members for e in api.external_contacts(userid)}
    seen = [(item["follow_info"]["userid"], item["external_contact"]["external_userid"])
            for item in api.iter_external_contacts(members, limit=7)]
    assert len(seen) == len(set(seen)) and set(seen) == expected and len(seen) > 7
    userid, external_userid = seen[0]
    detail = api.external_contact(external_userid)
    assert detail["external_contact"]["external_userid"] == external_userid
    assert [f["userid"] for f in detail["follow_user"]] == [userid]
    for gone in api.external_contacts("shanye.vip"):
        sim.corp.remove_contact("shanye.vip", gone)
    assert api.external_contacts("shanye.vip") == []  # WeCom's 84061 for a member without customers


def test_remark_description_and_phones_are_written_back(api: WecomApi) -> None:
    external_userid = api.external_contacts("shanye.ahe01")[0]
    api.write_remark("shanye.ahe01", external_userid, remark="陈女士-龙井", description="周末到店",
                     remark_mobiles=["13800000000", "13900000000"])
    follow = api.external_contact(external_userid)["follow_user"][0]
    assert (follow["remark"], follow["description"]) == ("陈女士-龙井", "周末到店")
    assert follow["remark_mobiles"] == ["13800000000", "13900000000"]
    api.write_remark("shanye.ahe01", external_userid, description="只改描述")
    follow = api.external_contact(external_userid)["follow_user"][0]
    assert (follow["remark"], follow["description"]) == ("陈女士-龙井", "只改描述")
    with pytest.raises(WecomApiError) as too_long:
        api.write_remark("shanye.ahe01", external_userid, remark="长" * 21)
    assert too_long.value.errcode == 40058


def test_corp_tags_created_renamed_marked_unmarked_and_deleted(api: WecomApi) -> None:
    group = api.add_corp_tags(["报名", "到场"], group_name="活动")
    signed_up, came = (t["id"] for t in group["tag"])
    api.edit_corp_tag(signed_up, name="已报名")
    assert [t["name"] for t in api.corp_tags(tag_ids=[signed_up])[0]["tag"]] == ["已报名"]
    assert [g["group_name"] for g in api.corp_tags(group_ids=[group["group_id"]])] == ["活动"]
    external_userid = api.external_contacts("shanye.ahe02")[0]
    api.mark_tags("shanye.ahe02", external_userid, add=[signed_up, came])

    def tags() -> set[str]:
        return {t["tag_id"] for t in api.external_contact(external_userid)["follow_user"][0]["tags"]}

    assert {signed_up, came} <= tags()
    api.mark_tags("shanye.ahe02", external_userid, remove=[came])
    assert signed_up in tags() and came not in tags()
    api.delete_corp_tags(tag_ids=[signed_up, came])
    assert group["group_id"] not in {g["group_id"] for g in api.corp_tags()}
    with pytest.raises(WecomApiError) as duplicate:
        api.add_corp_tags(["普通"], group_name="客户等级")
    assert duplicate.value.errcode == 40071


def test_contact_ways_keep_their_state(api: WecomApi) -> None:
    made = api.add_contact_way(users=["shanye.vip"], state="ch-42", remark="门店收银台", skip_verify=False)
    assert made["qr_code"].startswith(("https://", "http://")) and "/wwpic/" in made["qr_code"] and made["config_id"]
    way = api.contact_way(made["config_id"])
    assert (way["state"], way["user"], way["type"], way["skip_verify"]) == ("ch-42", ["shanye.vip"], 1, False)
    api.update_contact_way(made["config_id"], state="ch-43")
    way = api.contact_way(made["config_id"])
    assert (way["state"], way["remark"], way["skip_verify"]) == ("ch-43", "门店收银台", False)  # the rest kept
    team = api.add_contact_way(users=["shanye.ahe01", "shanye.ahe02"], state="ch-team")
    assert api.contact_way(team["config_id"])["type"] == 2
    api.delete_contact_way(made["config_id"])
    with pytest.raises(WecomApiError) as gone:
        api.contact_way(made["config_id"])
    assert gone.value.errcode == 41044


def test_welcome_message_with_the_add_events_code(api: WecomApi, sim: Simulator, sleeps: Sleeps) -> None:
    added = sim.corp.add_contact("shanye.xiaoye01", state="ch-42")
    api.send_welcome_message(added["welcome_code"], "欢迎来到山野茶舍！",
                             attachments=[{"msgtype": "link", "link": {"title": "新客礼", "url": "https://x.cn"}}])
    sent = sim.corp.state.welcome_messages[-1]
    assert (sent.external_userid, sent.text, len(sent.attachments)) == (added["external_userid"],
                                                                         "欢迎来到山野茶舍！", 1)
    with pytest.raises(WecomApiError) as used:
        api.send_welcome_message(added["welcome_code"], "再来一次")
    assert used.value.errcode == 41050 and sleeps == []


def test_group_chats_listed_and_read(api: WecomApi, sim: Simulator) -> None:
    chats = api.group_chats(limit=1)  # one per page: the cursor is followed
    assert sorted(c["chat_id"] for c in chats) == sorted(c.chat_id for c in sim.corp.state.group_chats)
    owner = sim.corp.state.group_chats[0].owner
    assert {c["chat_id"] for c in api.group_chats(owners=[owner])} == {
        c.chat_id for c in sim.corp.state.group_chats if c.owner == owner}
    detail = api.group_chat(chats[0]["chat_id"])
    assert detail["chat_id"] == chats[0]["chat_id"] and detail["owner"]
    assert all(m.get("name") for m in detail["member_list"])


def test_mass_send_created_and_its_results_read(api: WecomApi, sim: Simulator) -> None:
    one, two = (sim.corp.add_contact("shanye.vip")["external_userid"] for _ in range(2))
    sent = api.create_mass_send(sender="shanye.vip", text="新品上市", external_userids=[one, two, "wmSTRANGER"])
    assert sent["msgid"] and sent["fail_list"] == ["wmSTRANGER"]
    tasks = api.mass_send_tasks(sent["msgid"])
    assert [(t["userid"], t["status"]) for t in tasks] == [("shanye.vip", 2)]
    results = api.mass_send_results(sent["msgid"], "shanye.vip")
    assert sorted((r["external_userid"], r["status"]) for r in results) == sorted([(one, 1), (two, 1)])


def test_customers_transferred_between_members_in_service_and_after_leaving(api: WecomApi,
                                                                            sim: Simulator) -> None:
    moving = api.external_contacts("shanye.xiaoye01")[:2]
    api.write_remark("shanye.xiaoye01", moving[0], remark="王先生-送礼")
    answers = api.transfer_customers("shanye.xiaoye01", "shanye.ahe01", [*moving, "wmNOBODY"],
                                     message="您好，之后由阿禾为您服务")
    assert [(a["external_userid"], a["errcode"]) for a in answers] == [(moving[0], 0), (moving[1], 0),
                                                                         ("wmNOBODY", 40096)]
    results = api.transfer_results("shanye.xiaoye01", "shanye.ahe01")
    assert sorted((r["external_userid"], r["status"]) for r in results) == sorted((e, 1) for e in moving)
    assert set(moving) <= set(api.external_contacts("shanye.ahe01"))
    assert not set(moving) & set(api.external_contacts("shanye.xiaoye01"))
    taken = api.external_contact(moving[0])["follow_user"]
    assert [(f["userid"], f["remark"]) for f in taken] == [("shanye.ahe01", "王先生-送礼")]

    leaving = api.external_contacts("shanye.xiaoye02")
    with pytest.raises(WecomApiError) as still_here:
        api.transfer_customers("shanye.xiaoye02", "shanye.ahe02", leaving, resigned=True)
    assert still_here.value.errcode == 40097
    sim.control("POST", "resign_member", {"userid": "shanye.xiaoye02"})
    waiting = api.unassigned_customers()
    assert {(w["handover_userid"], w["external_userid"]) for w in waiting} == {
        ("shanye.xiaoye02", e) for e in leaving}
    answers = api.transfer_customers("shanye.xiaoye02", "shanye.ahe02", leaving, resigned=True)
    assert {a["errcode"] for a in answers} == {0}
    results = api.transfer_results("shanye.xiaoye02", "shanye.ahe02", resigned=True)
    assert {r["external_userid"] for r in results if r["status"] == 1} == set(leaving)
    assert api.unassigned_customers() == []
    assert set(leaving) <= set(api.external_contacts("shanye.ahe02"))


# ---------------------------------------------------------------- the console


@pytest.fixture
def wecom_env(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    monkeypatch.setenv("SIYU_WECOM_CORP_ID", CORP_ID)
    monkeypatch.setenv("SIYU_WECOM_SECRET", SECRET)
    monkeypatch.setenv("SIYU_WECOM_API_BASE", sim.base)
    get_settings.cache_clear()
    return sim


def test_console_test_connection_shows_success_or_the_platforms_exact_error(
        client: TestClient, db: Session, make: Any, wecom_env: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from siyu.team.models import AuditEntry
    from tests.test_pages import Console

    console = Console(client).login(make.user("admin"))
    page = console.get("/wecom").text
    assert 'data-testid="wecom-test"' in page and "测试连接" in page
    ok = console.post("/wecom/test", {})
    assert ok.status_code == 200 and 'data-testid="wecom-test-result"' in ok.text
    assert f"配置了客户联系的成员有 {len(DEFAULT_MEMBERS)} 位" in ok.text

    monkeypatch.setenv("SIYU_WECOM_SECRET", "a-wrong-secret-value")
    get_settings.cache_clear()
    denied = console.post("/wecom/test", {})
    assert denied.status_code == 200
    assert "企业微信返回 40001：invalid credential" in denied.text and "接口：gettoken" in denied.text
    assert "Secret 不正确" in denied.text
    assert "a-wrong-secret-value" not in denied.text and SECRET not in denied.text

    entries = list(db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "wecom_connection",
                                                      AuditEntry.action == "test").order_by(AuditEntry.id)))
    assert [e.after["errcode"] for e in entries if e.after] == [None, 40001]
    assert all("secret-value" not in f"{e.summary}{e.after}" for e in entries)

    operator = Console(TestClient(client.app)).login(make.user("operator"))
    assert operator.post("/wecom/test", {}).status_code == 403
    assert console.post("/wecom/test", {}, csrf=False).status_code == 403


def test_console_test_connection_when_wecom_cannot_be_reached_or_nothing_is_set(
        client: TestClient, db: Session, make: Any, wecom_env: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_pages import Console

    monkeypatch.setattr(wecom_client, "CONSOLE_POLICY", RetryPolicy(attempts=2, sleep=lambda _s: None))
    monkeypatch.setenv("SIYU_WECOM_API_BASE", "http://127.0.0.1:9/cgi-bin/")
    get_settings.cache_clear()
    console = Console(client).login(make.user("admin"))
    down = console.post("/wecom/test", {})
    assert "无法连接企业微信" in down.text and SECRET not in down.text

    for name in ("SIYU_WECOM_CORP_ID", "SIYU_WECOM_SECRET"):
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    assert "请先填写企业 ID 和 Secret" in console.post("/wecom/test", {}).text


class _Answers(requests.adapters.BaseAdapter):
    """A transport answering every request with these bytes (what a real WeCom answer may hold)."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def send(self, request: Any, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response._content, response.url = 200, self.body, str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.mark.parametrize("body", [b'{"errcode": 0, "msg_list": [{"text": {"content": "line\tone\x01"}}]}',
                                  b'{"errcode": 0, "msg_list": [{"text": {"content": "broken \xff utf-8"}}]}'])
def test_answers_strict_json_refuses_are_still_read(db: Session, body: bytes) -> None:
    # Raw control characters or broken UTF-8 in a chat text: the fast strict parser refuses, the lenient one reads.
    client = wecom_client.WecomClient("wwTEST", "secret", api_base="http://wecom.test/cgi-bin/",
                                      storage=TokenStorage(DatabaseStorage()))
    client._http.mount("http://wecom.test/", _Answers(body))
    outcome = client._attempt("POST", "http://wecom.test/cgi-bin/kf/sync_msg", api="kf/sync_msg", query={},
                              data=b"{}", creates=False)
    assert isinstance(outcome, dict)
    assert outcome["msg_list"][0]["text"]["content"].startswith(("line\tone", "broken"))
