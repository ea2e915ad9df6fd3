"""Scenarios: what happens on people's phones, told to Siyu as real encrypted callbacks.

Every step changes the virtual corp *first* (so Siyu's follow-up API calls to the simulator
see the new customer, group member or tag) and then sends the callback that announces it.
The corp is either in this process (``LocalLink``) or in a simulator started elsewhere,
reached through its ``POST /_simulator/<operation>`` controls (``RemoteLink``).

Scenarios (``count`` is the number of callbacks in the main phase):

- ``friends``: customers add members through contact ways (``State`` = the channel key,
  ``WelcomeCode``), then some friendships end — mostly the customer deleting the member
  (``del_follow_user``), some the member deleting the customer (``del_external_contact``);
- ``chat``: customers open the corp's 微信客服 (``enter_session`` with the channel key as
  ``scene``; some are the corp's WeCom customers, most are new WeChat users), then write —
  text mostly, some pictures, voice, locations, links, menu answers. WeCom announces them
  with ``kf_msg_or_event`` callbacks (a token, no content) and Siyu pulls ``kf/sync_msg``;
- ``groups``: new customers, customer groups created, members joining and quitting
  (``UpdateDetail``, ``JoinScene``/``QuitScene``, ``MemChangeCnt``), a few groups dismissed;
- ``campaign``: a campaign day compressed through 微信客服 (``--channel kf``): customers enter
  sessions, then a flood of messages. Callbacks batch as the platform's do — while one is on
  its way, new messages only wait, and the next callback announces them all — and a share
  (1 % by default) is delivered again after acknowledgement, as the platform's retries do;
- ``tags``: an administrator creating, renaming and deleting corp tags.

Beside the scenarios, ``archive_chats`` plays members' own chats into the corp's chat archive
(会话存档): customers agree (a few refuse, and nothing of their chats is archived), then write
and are answered in private chats, and people talk in customer groups; the archive announces
itself with ``msgaudit_notify`` (at most every 15 s) and ``msg_audit_approved`` callbacks and
Siyu pulls (``siyu demo --simulate``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from siyu.simulator import callbacks
from siyu.simulator.callbacks import ClientFactory, Clients, Encrypter, KfNotifier, Sender, Stats, callback_url
from siyu.simulator.corp import VirtualCorp
from siyu.simulator.errors import ApiError
from siyu.simulator.mp import VirtualMp

Echo = Callable[[str], None]
DEFAULT_COUNTS = {"friends": 50, "chat": 200, "groups": 30, "campaign": 170_000, "tags": 10}
SCENARIOS = tuple(DEFAULT_COUNTS)
CHAT_LINES = ("你好，请问店里几点关门？", "新品龙井什么时候到？", "优惠券怎么用？", "可以寄到上海吗", "好的，谢谢！",
              "上次买的白茶很好喝", "周末有品鉴会吗？", "礼盒还有货吗", "[图片]", "发票怎么开？")
CAMPAIGN_LINES = ("1", "参加", "怎么领券？", "优惠券怎么用？", "活动几点开始", "我中奖了吗", "还有名额吗？",
                  "链接打不开", "已下单，订单号发你了", "能便宜点吗", "好", "收到")
# Members' own chats, as the chat archive carries them (archive_chats): their answers, and what groups say.
ARCHIVE_MEMBER_LINES = ("好的，我帮您查一下", "今天下单明天就能发货", "券已经发到您的账户了，结算时自动抵扣",
                        "周六下午两点品鉴会，给您留个位置？", "这款白茶适合冷泡，您可以试试", "收到，稍后回复您")
ARCHIVE_GROUP_LINES = ("今晚八点群里抽奖，大家准时来～", "新到的明前龙井大家尝过了吗？", "品鉴会还有名额吗？",
                       "已下单，坐等发货", "谢谢群主！", "这周的秒杀是哪款茶？", "[图片]")
ARCHIVE_PAIRS = 8  # customers whose private chats the demo's archive carries
# The paths a flood of customer messages can take: 微信客服 (kf_msg_or_event, Siyu pulls) or the 公众号 (mp: one
# push per message to /mp/callback, answered passively when a rule matches).
CHANNELS = ("kf", "mp")
# Menu answers a customer may click when Siyu sent a msgmenu ("1 查订单 2 活动规则 3 人工").
MENU_ANSWERS = (("1", "查订单"), ("2", "活动规则"), ("3", "人工"))
# How customers' kf messages are spread over the types of W:94670 (the rest are text).
OTHER_TYPES = (("image", 0.06), ("voice", 0.02), ("menu", 0.03), ("location", 0.01), ("link", 0.01),
               ("video", 0.005), ("file", 0.005), ("miniprogram", 0.005), ("business_card", 0.005))


class DriverError(Exception):
    pass


class Link(Protocol):
    def call(self, operation: str, **kwargs: Any) -> Any: ...


class LocalLink:
    """The virtual corp in this process."""

    def __init__(self, corp: VirtualCorp) -> None:
        self.corp = corp

    def call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return self.corp.operation(operation)(**kwargs)
        except ApiError as exc:
            raise DriverError(f"simulator refused {operation}: {exc.errcode} {exc.errmsg}") from exc


class RemoteLink:
    """A simulator started elsewhere (``siyu simulator serve``), changed through ``/_simulator/...``."""

    def __init__(self, base_url: str, clients: Clients) -> None:
        self.base_url = base_url.rstrip("/")
        self.clients = clients

    def call(self, operation: str, **kwargs: Any) -> Any:
        try:
            answer = self.clients.get().post(f"{self.base_url}/_simulator/{operation}", json=kwargs, timeout=30)
        except httpx.HTTPError as exc:
            raise DriverError(f"simulator at {self.base_url} unreachable: {exc}") from exc
        if answer.status_code != 200:
            raise DriverError(f"simulator refused {operation}: {answer.text[:200]}")
        return answer.json()


@dataclass
class Options:
    count: int
    rate: float = 0.0  # callbacks per second; 0 = as fast as the concurrency allows
    concurrency: int = 8
    seed: int = 1
    states: list[str] = field(default_factory=list)  # contact-way states to add through (default: the corp's)
    delete_share: float = 0.1
    duplicate_share: float = 0.01
    settle: float = 1.0  # seconds between new customers and their messages (Siyu processes adds in the background)
    progress_every: float = 2.0
    channel: str = "kf"  # chat and campaign: the path of customers' messages (see CHANNELS)


@dataclass
class Summary:
    scenario: str
    sent: int
    acknowledged: int
    retried: int
    duplicates: int
    failed: int
    seconds: float
    rate: float
    errors: dict[str, int]
    kf_messages: int = 0  # messages and events put in 客服 accounts' logs (announced by the callbacks)
    archived: int = 0  # messages put in the chat archive (announced by msgaudit_notify)

    def line(self) -> str:
        text = (f"{self.scenario}: sent {self.sent}, acknowledged {self.acknowledged}, retried {self.retried}, "
                f"duplicates {self.duplicates}, failed {self.failed} in {self.seconds:.1f} s "
                f"({self.rate:.0f} acknowledged/s)")
        if self.kf_messages:
            text += (f"; 微信客服: {self.kf_messages} messages and events waiting to be pulled "
                     f"({self.kf_messages / max(self.seconds, 1e-9):.0f}/s)")
        if self.archived:
            text += f"; 会话存档: {self.archived} messages archived for Siyu to pull"
        if self.errors:
            text += "; problems: " + ", ".join(f"{k} ×{v}" for k, v in sorted(self.errors.items()))
        return text


class Pacer:
    """Spaces callbacks ``1/rate`` seconds apart across all workers."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            self.next_at = max(self.next_at, now)
            delay = self.next_at - now
            self.next_at += self.interval
        if delay > 0:
            time.sleep(delay)


class Run:
    def __init__(self, name: str, link: Link, sender: Sender, options: Options, echo: Echo) -> None:
        self.name = name
        self.link = link
        self.sender = sender
        self.options = options
        self.echo = echo
        self.rng = random.Random(options.seed)  # noqa: S311 - simulated behaviour, not secrets
        self.corp_id = sender.encrypter.corp_id
        self.pacer = Pacer(options.rate)
        self.notifier = KfNotifier(sender, lambda open_kfid: dict(link.call("kf_callback", open_kfid=open_kfid)),
                                   duplicate_share=options.duplicate_share, rng=self.rng)
        self.kf_count = 0
        self.kf_lock = threading.Lock()

    def phase(self, label: str, total: int, step: Callable[[int], str | None], *, duplicate_share: float = 0.0,
              concurrency: int | None = None) -> None:
        """``total`` steps on ``concurrency`` threads: each changes the corp and returns the callback to send."""
        if total <= 0:
            return
        indices = iter(range(total))
        lock = threading.Lock()
        done = [0]
        failures: list[BaseException] = []
        stats = self.sender.stats
        finished = threading.Event()

        def worker() -> None:
            while not failures:
                with lock:
                    index = next(indices, None)
                if index is None:
                    return
                self.pacer.wait()
                try:
                    xml = step(index)
                except BaseException as exc:  # handed to the caller's thread below
                    failures.append(exc)
                    return
                if xml is not None:
                    acknowledged = self.sender.deliver(xml)
                    if acknowledged and duplicate_share and self.rng.random() < duplicate_share:
                        self.sender.deliver(xml, duplicate=True)  # the platform's retry of a delivered event
                with lock:
                    done[0] += 1

        def progress() -> None:
            while not finished.wait(self.options.progress_every):
                self.echo(f"[{self.name}] {label}: {done[0]}/{total}, acknowledged {stats.acknowledged}, "
                          f"retried {stats.retried}, failed {stats.failed}, {stats.rate:.0f}/s")

        threads = [threading.Thread(target=worker, daemon=True)
                   for _ in range(max(1, min(concurrency or self.options.concurrency, total)))]
        reporter = threading.Thread(target=progress, daemon=True)
        reporter.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        finished.set()
        reporter.join()
        if failures:
            raise failures[0]
        self.echo(f"[{self.name}] {label}: {done[0]}/{total} done")

    # ---- building blocks shared by the scenarios ------------------------------------------------

    def entry_points(self) -> list[tuple[str, list[str]]]:
        """(state, members) pairs customers can add through: the corp's contact ways, or the given states."""
        overview = self.link.call("overview")
        members: list[str] = overview["members"]
        if not members:
            raise DriverError(f"the virtual corp {self.corp_id} has no members")
        ways = [(w["state"], [u for u in w["user"] if u in members] or members) for w in overview["contact_ways"]]
        if self.options.states:
            by_state = dict(ways)
            return [(s, by_state.get(s, members)) for s in self.options.states]
        return [w for w in ways if w[0]] or [("", members)]

    def add_customers(self, count: int, label: str = "new customers") -> list[tuple[str, str]]:
        """``count`` friend-adds through contact ways; returns (member userid, external userid) pairs."""
        entries = self.entry_points()
        added: list[tuple[str, str]] = []

        def step(_index: int) -> str:
            state, users = self.rng.choice(entries)
            userid = self.rng.choice(users)
            result = self.link.call("add_contact", userid=userid, state=state, add_way=1 if state else 0)
            added.append((userid, result["external_userid"]))
            return callbacks.contact_added(self.corp_id, userid=userid, external_userid=result["external_userid"],
                                           create_time=result["create_time"], state=state,
                                           welcome_code=result["welcome_code"])

        self.phase(label, count, step)
        return added

    def settle(self) -> None:
        if self.options.settle > 0:
            time.sleep(self.options.settle)

    # ---- 微信客服 ----------------------------------------------------------------------------------

    def kf_account(self) -> str:
        accounts = self.link.call("kf_overview")["accounts"]
        if not accounts:
            raise DriverError(f"the virtual corp {self.corp_id} has no 客服账号")
        return str(accounts[0]["open_kfid"])

    def kf_put(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """A customer's act in 微信客服, then the callback that announces it (batched: see KfNotifier)."""
        result: dict[str, Any] = self.link.call(operation, **kwargs)
        with self.kf_lock:
            self.kf_count += 1
        self.notifier.notify(result["open_kfid"])
        return result

    def kf_customers(self, count: int, *, known_share: float = 0.0) -> list[str]:
        """``count`` customers open the account's 客服 link (``scene``: a channel key); ``known_share`` of
        them are the corp's WeCom customers already. Returns their external_userids."""
        if self.options.channel not in CHANNELS:
            raise DriverError(f"unknown channel {self.options.channel!r} (choose from {', '.join(CHANNELS)})")
        open_kfid = self.kf_account()
        scenes = [state for state, _users in self.entry_points() if state] or ["campaign"]
        known = [c["external_userid"] for c in self.link.call("contacts_of", limit=1000)] if known_share else []
        self.rng.shuffle(known)
        entered: list[str] = []
        lock = threading.Lock()

        def step(_index: int) -> None:
            with lock:
                reuse = known.pop() if known and self.rng.random() < known_share else ""
                scene = self.rng.choice(scenes)
            result = self.kf_put("kf_enter_session", open_kfid=open_kfid, external_userid=reuse, scene=scene)
            with lock:
                entered.append(result["external_userid"])

        self.phase("customers enter 微信客服", count, step)
        return entered

    def kf_messages(self, customers: list[str], count: int, lines: Iterable[str]) -> None:
        choices = list(lines)
        if not customers:
            raise DriverError(f"no customers to write {count} messages")
        open_kfid = self.kf_account()

        def step(_index: int) -> None:
            external_userid = self.rng.choice(customers)
            kind, roll = "text", self.rng.random()
            for name, share in OTHER_TYPES:
                if roll < share:
                    kind = name
                    break
                roll -= share
            if kind == "menu":
                menu_id, label = self.rng.choice(MENU_ANSWERS)
                self.kf_put("kf_customer_message", open_kfid=open_kfid, external_userid=external_userid,
                            msgtype="text", content=label, menu_id=menu_id)
            elif kind == "text":
                self.kf_put("kf_customer_message", open_kfid=open_kfid, external_userid=external_userid,
                            msgtype="text", content=self.rng.choice(choices))
            else:
                self.kf_put("kf_customer_message", open_kfid=open_kfid, external_userid=external_userid,
                            msgtype=kind)

        self.phase("messages", count, step)


# ---- the scenarios ------------------------------------------------------------------------------

def friends(run: Run) -> None:
    added = run.add_customers(run.options.count, "friend adds")
    leaving = run.rng.sample(added, k=min(len(added), round(len(added) * run.options.delete_share)))

    def step(index: int) -> str:
        userid, external_userid = leaving[index]
        result = run.link.call("remove_contact", userid=userid, external_userid=external_userid)
        # Most churn is the customer deleting the member; sometimes the member removes the customer.
        change = "del_external_contact" if index % 4 == 3 else "del_follow_user"
        return callbacks.contact_changed(run.corp_id, change, userid=userid, external_userid=external_userid,
                                         create_time=result["create_time"])

    run.phase("deletions", len(leaving), step)


def chat(run: Run) -> None:
    customers = run.kf_customers(max(1, run.options.count // 10), known_share=0.3)
    run.kf_messages(customers, run.options.count, CHAT_LINES)


def campaign(run: Run) -> None:
    customers = run.kf_customers(min(max(1, run.options.count // 20), 10_000))
    run.kf_messages(customers, max(0, run.options.count - len(customers)), CAMPAIGN_LINES)


def groups(run: Run) -> None:
    customers = run.add_customers(max(10, run.options.count // 2))
    by_member: dict[str, list[str]] = {}
    for userid, external_userid in customers:
        by_member.setdefault(userid, []).append(external_userid)
    owners = sorted(by_member)
    created: list[str] = []

    def create(index: int) -> str:
        owner = owners[index % len(owners)]
        first = run.rng.sample(by_member[owner], k=min(len(by_member[owner]), 2))
        result = run.link.call("create_group", owner=owner, external_userids=first)
        created.append(result["chat_id"])
        return callbacks.chat_created(run.corp_id, chat_id=result["chat_id"], create_time=result["create_time"])

    run.phase("new groups", max(1, run.options.count // 10), create)
    everyone = [e for _u, e in customers]

    def change(_index: int) -> str | None:
        chat_id = run.rng.choice(created)
        group = next((g for g in run.link.call("groups") if g["chat_id"] == chat_id), None)
        if group is None:
            return None
        present = set(group["externals"])
        outside = [e for e in everyone if e not in present]
        if present and (not outside or run.rng.random() < 0.3):
            leaving = [run.rng.choice(sorted(present))]
            scene = run.rng.choice((0, 0, 1))  # left on their own, or removed by the owner
            result = run.link.call("quit_group", chat_id=chat_id, external_userids=leaving, scene=scene)
            joined = False
        else:
            arriving = run.rng.sample(outside, k=min(len(outside), run.rng.choice((1, 1, 2, 3))))
            scene = run.rng.choice((1, 2, 3))  # invited, invitation link, group QR code
            result = run.link.call("join_group", chat_id=chat_id, external_userids=arriving, scene=scene)
            joined = True
        if not result["members"]:
            return None
        return callbacks.chat_members_changed(
            run.corp_id, chat_id=chat_id, create_time=result["create_time"], joined=joined,
            members=result["members"], scene=scene, last_version=result["last_version"],
            member_version=result["member_version"])

    run.phase("joins and quits", run.options.count, change)
    dismissing = run.rng.sample(created, k=len(created) // 5)

    def dismiss(index: int) -> str:
        result = run.link.call("dismiss_group", chat_id=dismissing[index])
        return callbacks.chat_dismissed(run.corp_id, chat_id=dismissing[index], create_time=result["create_time"])

    run.phase("dismissals", len(dismissing), dismiss)


def tags(run: Run) -> None:
    stamp = time.strftime("%m%d%H%M%S")
    created = run.link.call("tag_admin", action="create", group_name=f"活动{stamp}",
                                  tag=[{"name": "报名"}])
    group_id = created["tag_group"]["group_id"]
    live = [t["id"] for t in created["tag_group"]["tag"]]
    run.sender.deliver(callbacks.tag_changed(run.corp_id, tag_id=group_id, tag_type="tag_group",
                                                   change="create", create_time=created["create_time"]))

    def step(index: int) -> str | None:
        action = run.rng.choice(("create", "create", "update", "delete")) if len(live) > 1 else "create"
        if action == "create":
            result = run.link.call("tag_admin", action="create", group_id=group_id,
                                         tag=[{"name": f"标签{stamp}-{index}"}])
            tag_id = result["tag_group"]["tag"][0]["id"]
            live.append(tag_id)
        elif action == "update":
            tag_id = run.rng.choice(live)
            result = run.link.call("tag_admin", action="update", id=tag_id, name=f"改名{stamp}-{index}")
        else:
            tag_id = live.pop(run.rng.randrange(len(live)))
            result = run.link.call("tag_admin", action="delete", tag_id=[tag_id])
        return callbacks.tag_changed(run.corp_id, tag_id=tag_id, tag_type="tag", change=action,
                                     create_time=result["create_time"])

    # One administrator, one change at a time: each change's callback follows the one before.
    run.phase("tag changes", max(0, run.options.count - 1), step, concurrency=1)


PLAYS: dict[str, Callable[[Run], None]] = {
    "friends": friends, "chat": chat, "groups": groups, "campaign": campaign, "tags": tags}


def run_scenario(name: str, *, target: str, encrypter: Encrypter | None, options: Options,
                 corp: VirtualCorp | None = None, simulator_url: str | None = None,
                 timeout: float = 5.0, retries: int = 3, retry_delay: float = 0.2,
                 same_envelope: bool = False, echo: Echo = print,
                 client_factory: ClientFactory | None = None, mp: VirtualMp | None = None) -> Summary:
    """Play one scenario against Siyu at ``target``; the corp is ``corp`` or the simulator at ``simulator_url``.

    ``client_factory`` makes each thread's HTTP client (tests hand in clients bound to Siyu's app).
    """
    if name not in PLAYS:
        raise DriverError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    if options.channel == "mp" and name in ("chat", "campaign"):
        return _through_mp(name, target=target, options=options, mp=mp, echo=echo, client_factory=client_factory)
    if encrypter is None:
        raise DriverError(f"{name}: WeCom callbacks need the corp id, token and EncodingAESKey")
    if (corp is None) == (simulator_url is None):
        raise DriverError(f"{name}: give either a virtual corp in this process or the simulator's URL")
    clients = Clients(client_factory or httpx.Client)
    try:
        link: Link = LocalLink(corp) if corp is not None else RemoteLink(str(simulator_url), clients)
        stats = Stats()
        sender = Sender(callback_url(target), encrypter, clients, stats, timeout=timeout, retries=retries,
                        retry_delay=retry_delay, same_envelope=same_envelope)
        run = Run(name, link, sender, options, echo)
        echo(f"[{name}] sending to {sender.url} as corp {encrypter.corp_id}")
        PLAYS[name](run)
    finally:
        clients.close()
    summary = Summary(scenario=name, sent=stats.sent, acknowledged=stats.acknowledged, retried=stats.retried,
                      duplicates=stats.duplicates, failed=stats.failed, seconds=stats.elapsed, rate=stats.rate,
                      errors=dict(stats.errors), kf_messages=run.kf_count)
    echo(summary.line())
    return summary


def _through_mp(name: str, *, target: str, options: Options, mp: VirtualMp | None, echo: Echo,
                client_factory: ClientFactory | None) -> Summary:
    """chat or campaign through the 公众号: followers' pushes to Siyu's /mp/callback (siyu.simulator.mp)."""
    from siyu.simulator import settings as simulator_settings
    from siyu.simulator.mp import run_campaign

    used = mp or simulator_settings.virtual_mp()
    lines = CAMPAIGN_LINES if name == "campaign" else CHAT_LINES
    done = run_campaign(target, used, count=options.count, lines=lines, concurrency=options.concurrency,
                        rate=options.rate, seed=options.seed, scenes=tuple(options.states),
                        client_factory=client_factory, echo=echo)
    stats = done.stats
    return Summary(scenario=name, sent=stats.sent, acknowledged=stats.acknowledged, retried=stats.retried,
                   duplicates=0, failed=stats.failed, seconds=done.seconds, rate=done.rate,
                   errors=dict(stats.errors))


def announce_kf(corp: VirtualCorp, target: str, encrypter: Encrypter, *,
                client_factory: ClientFactory | None = None, timeout: float = 5.0, retries: int = 3,
                retry_delay: float = 0.2) -> KfNotifier:
    """From now on, whatever a customer, servicer or event adds to ``corp``'s 客服 logs is announced to
    Siyu at ``target`` with ``kf_msg_or_event`` callbacks, batched like the platform's (tests hand in
    ``client_factory=lambda: TestClient(app)``). Remove it with ``corp.kf.listeners.remove(n.notify)``."""
    clients = Clients(client_factory or httpx.Client)
    sender = Sender(callback_url(target), encrypter, clients, Stats(), timeout=timeout, retries=retries,
                    retry_delay=retry_delay)
    notifier = KfNotifier(sender, corp.kf.callback)
    corp.kf.listeners.append(notifier.notify)
    return notifier


def archive_chats(corp: VirtualCorp, sender: Sender, *, count: int, rate: float = 0.0, seed: int = 1,
                  groups: Iterable[str] = (), customers: Iterable[str] = (), refuse: int = 1,
                  notify_interval: float | None = None, echo: Echo = print) -> Summary:
    """Members' own chats into ``corp``'s chat archive, announced to Siyu through ``sender``.

    First the chosen customers (``customers`` — external_userids Siyu knows — before the corp's
    others) answer the archive's consent question: ``refuse`` of them refuse, and the platform
    archives nothing of their chats (the simulator's archive refuses them too); the others agree
    (an ``agree`` item in the archive and a msg_audit_approved callback). Then ``count`` messages,
    ``rate`` per second: customers write and their members answer in private chats, and about a
    third are messages in ``groups`` (chat ids; the members and customers in them talk). The
    archive's ``msgaudit_notify`` callbacks follow at most every ``notify_interval`` seconds.
    """
    from siyu.simulator.archive import NOTIFY_INTERVAL_SECONDS, announce

    rng = random.Random(seed)  # noqa: S311 - simulated behaviour, not secrets
    consent_listeners = list(corp.archive.consent_listeners)
    notifier = announce(corp, sender, interval=NOTIFY_INTERVAL_SECONDS if notify_interval is None else notify_interval)
    wanted = set(customers)
    pairs = [(f.userid, c.external_userid) for c in corp.state.contacts for f in c.follows if f.deleted_at is None]
    pairs.sort(key=lambda pair: (pair[1] not in wanted, pair[1]))
    chosen = pairs[:ARCHIVE_PAIRS]
    if not chosen:
        raise DriverError(f"the virtual corp {corp.state.corp_id} has no member with a customer")
    by_id = {g.chat_id: g for g in corp.state.group_chats}
    rooms = [by_id[chat_id] for chat_id in groups if chat_id in by_id and not by_id[chat_id].dismissed
             and by_id[chat_id].members]
    archived = 0
    refusing = set(chosen[-refuse:]) if 0 < refuse < len(chosen) else set()
    echo(f"[archive] members' own chats into the chat archive (会话存档): {len(chosen)} customers asked to agree "
         f"({len(refusing)} refusing), then {count} messages in private chats and {len(rooms)} groups; "
         f"msgaudit_notify at most every {notifier.interval:g} s")
    try:
        for userid, external in chosen:
            corp.archive.agree(userid, external, agree=(userid, external) not in refusing)
            archived += 1
        for room in rooms:  # the customers in the groups agree with the group's owner
            for member in room.members:
                if member.type == 2 and not corp.archive.agreed(room.owner, member.userid):
                    corp.archive.agree(room.owner, member.userid)
                    archived += 1
        interval = 1.0 / rate if rate > 0 else 0.0
        waiting: set[tuple[str, str]] = set()  # pairs whose customer wrote last
        for _n in range(count):
            if interval:
                time.sleep(interval)
            if rooms and rng.random() < 0.3:
                room = rng.choice(rooms)
                speaker = rng.choice(room.members).userid
                corp.archive.group_message(room.chat_id, speaker, rng.choice(ARCHIVE_GROUP_LINES))
                archived += 1
                continue
            userid, external = rng.choice(chosen)
            answer = (userid, external) in waiting and rng.random() < 0.6
            done = corp.archive.chat(userid, external, rng.choice(ARCHIVE_MEMBER_LINES if answer else CHAT_LINES),
                                     from_member=answer)
            if done["archived"]:
                archived += 1
                (waiting.discard if answer else waiting.add)((userid, external))
        notifier.wait(timeout=notifier.interval + 5)  # the last msgaudit_notify has gone out
    finally:
        corp.archive.listeners.remove(notifier.notify)
        corp.archive.consent_listeners[:] = consent_listeners  # the sender's clients close after the play
        notifier.cancel()
    stats = sender.stats
    summary = Summary(scenario="archive", sent=stats.sent, acknowledged=stats.acknowledged, retried=stats.retried,
                      duplicates=stats.duplicates, failed=stats.failed, seconds=stats.elapsed, rate=stats.rate,
                      errors=dict(stats.errors), archived=archived)
    echo(summary.line())
    return summary


def wait_for(url: str, *, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return False


def run_simulated_traffic(target_url: str, *, corp_id: str | None = None, token: str | None = None,
                          aes_key: str | None = None, secret: str | None = None,
                          scenarios: Iterable[str] = ("friends", "chat", "groups"), count: int = 20,
                          rate: float = 5.0, seed: int = 1, members: Iterable[tuple[str, str]] | None = None,
                          states: Iterable[str] = (), serve_port: int | None = 8900, serve_host: str = "127.0.0.1",
                          keep_serving: bool = True, wait_seconds: float = 60.0, echo: Echo = print,
                          known_contacts: Iterable[dict[str, Any]] = (), mp_messages: int = 0,
                          kf_account: tuple[str, str] | None = None, archive_messages: int = 0,
                          archive_public_key: tuple[int, str] | None = None,
                          archive_notify_interval: float | None = None,
                          before_traffic: Callable[[], Iterable[str]] | None = None) -> list[Summary]:
    """Live WeCom traffic for a running Siyu (``siyu demo --simulate``): blocking; call it from a thread.

    Starts the simulator's API on ``serve_port`` (point ``SIYU_WECOM_API_BASE`` at
    ``http://127.0.0.1:<port>/cgi-bin/``; it keeps serving after the traffic ends), waits for
    ``target_url``'s ``/healthz``, then plays ``scenarios`` with ``count`` callbacks each at
    ``rate`` per second. Corp id, token, EncodingAESKey and secret default to the
    ``SIYU_WECOM_*`` settings Siyu itself reads, so both sides agree. ``known_contacts`` are
    customers Siyu already has (see ``VirtualCorp.adopt_contacts``): replies to them are delivered.
    ``kf_account`` (open_kfid, name) is a 客服账号 Siyu already has: the corp's 微信客服 takes it over.
    The simulator also serves a 公众号 (``SIYU_MP_*``, API under ``/mp/cgi-bin/``); with ``mp_messages``
    its followers then follow (through the channels' QR scenes) and write that many messages.
    ``before_traffic`` runs once the simulator serves and Siyu answers: Siyu's own setup against the
    simulator (the demo makes its 公众号 parametric QR codes there); the QR scenes it returns are the
    ones followers scan. With ``archive_public_key`` (publickey_ver, PEM: the corp's key Siyu holds the
    private half of) and ``archive_messages``, members' own chats then go into the chat archive
    (``archive_chats``, in the groups the scenarios made) and Siyu is told to pull them.
    """
    from siyu.simulator import settings as simulator_settings
    from siyu.simulator.corp import DEFAULT_MEMBERS
    from siyu.simulator.server import RunningServer, ServerOptions, create_app

    configured = simulator_settings.load()
    corp_id = corp_id or configured.corp_id or simulator_settings.DEFAULT_CORP_ID
    encrypter = Encrypter(corp_id=corp_id, token=token or configured.token, aes_key=aes_key or configured.aes_key)
    corp = VirtualCorp.seeded(seed, corp_id=corp_id, members=list(members or DEFAULT_MEMBERS))
    known = list(known_contacts)
    corp.adopt_contacts(known)
    seeded_groups = {g.chat_id for g in corp.state.group_chats}  # Siyu knows only the groups made from now on
    if kf_account is not None:
        corp.kf.adopt_account(open_kfid=kf_account[0], name=kf_account[1])
    mp = simulator_settings.virtual_mp()
    server = None
    if serve_port is not None:
        app = create_app(corp, ServerOptions(secret=secret or configured.secret or simulator_settings.DEFAULT_SECRET,
                                             mp=mp))
        server = RunningServer(app, host=serve_host, port=serve_port).start()
        echo(f"WeCom simulator API at {server.url}/cgi-bin/ (corp {corp_id})")
    for account in corp.kf.overview()["accounts"]:
        echo(f"微信客服 {account['name']}: open_kfid {account['open_kfid']} (customers write here; Siyu pulls "
             "kf/sync_msg)")
    try:
        if not wait_for(target_url.rstrip("/") + "/healthz", seconds=wait_seconds):
            raise DriverError(f"Siyu did not answer at {target_url} within {wait_seconds:g} s")
        scenes = list(before_traffic() if before_traffic is not None else ())
        if archive_public_key is not None:
            corp.archive.public_key(*archive_public_key)
        summaries = []
        for name in scenarios:
            options = Options(count=count, rate=rate, seed=seed, states=list(states), progress_every=10.0)
            summaries.append(run_scenario(name, target=target_url, encrypter=encrypter, options=options,
                                          corp=corp, echo=echo))
        if archive_messages and archive_public_key is not None:
            clients = Clients(httpx.Client)
            try:
                sender = Sender(callback_url(target_url), encrypter, clients, Stats())
                made = [g.chat_id for g in corp.state.group_chats if g.chat_id not in seeded_groups]
                summaries.append(archive_chats(corp, sender, count=archive_messages, rate=rate, seed=seed,
                                               groups=made, customers=[c["external_userid"] for c in known],
                                               notify_interval=archive_notify_interval, echo=echo))
            finally:
                clients.close()
        if mp_messages:
            options = Options(count=mp_messages, rate=rate, seed=seed, states=scenes or list(states),
                              progress_every=10.0, channel="mp", concurrency=2)
            summaries.append(run_scenario("chat", target=target_url, encrypter=encrypter, options=options,
                                          corp=corp, echo=echo, mp=mp))
        return summaries
    finally:
        if server is not None and not keep_serving:
            server.stop()


def start_simulated_traffic(target_url: str, **kwargs: Any) -> threading.Thread:
    """``run_simulated_traffic`` in a daemon thread, for a command that then blocks serving Siyu."""
    echo: Echo = kwargs.pop("echo", print)

    def play() -> None:
        try:
            run_simulated_traffic(target_url, echo=echo, **kwargs)
        except (DriverError, ValueError) as exc:
            echo(f"simulated traffic stopped: {exc}")

    thread = threading.Thread(target=play, name="siyu-simulated-traffic", daemon=True)
    thread.start()
    return thread
