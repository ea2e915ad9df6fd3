"""The moderation engine alone (pure, no database), with the seed's group rules as fixtures: an ad needs a
50 yuan / 20 people red packet within 3 minutes, no flooding, no consecutive stickers, no voice spam, no
banned topics, nicknames 名称+地区+职业."""

from __future__ import annotations

import time

import pytest

from siyu.groups.moderation import engine
from siyu.groups.moderation.engine import GroupInfo, Msg, RuleSpec

T0 = 1_767_000_000.0
AD_RULE = RuleSpec(1, engine.AD, None, {"minutes": 3, "min_yuan": 50, "min_people": 20})
FLOOD_RULE = RuleSpec(2, engine.FLOOD, None, {"count": 5, "seconds": 30})
STICKER_RULE = RuleSpec(3, engine.STICKERS, None, {"count": 3})
WORD_RULE = RuleSpec(4, engine.BANNED_WORDS, None, {"words": ["赌博", "六合彩", "代开发票"]})
NICK_RULE = RuleSpec(5, engine.NICKNAME, None, {"parts": 3})
VOICE_RULE = RuleSpec(6, engine.VOICE, None, {"count": 3, "seconds": 60})
SEED_RULES = [AD_RULE, FLOOD_RULE, STICKER_RULE, WORD_RULE, NICK_RULE, VOICE_RULE]
GROUPS = {7: GroupInfo(kind="marketing", exempt=frozenset({"owner", "admin1", "colleague"}))}
GOOD_NICK = "王芳+杭州+会计"


def msg(n: int, at: float, *, sender: str = "wmguest", kind: str = "text", text: str = "", amount: int = 0,
        people: int = 0, nickname: str = GOOD_NICK, group: int = 7) -> Msg:
    return Msg(f"m{n}", group, sender, T0 + at, kind, text, amount, people, nickname)


def run(messages: list[Msg], rules: list[RuleSpec] = SEED_RULES, *, now: float | None = None) -> engine.Result:
    return engine.Engine(rules).run(sorted(messages, key=lambda m: (m.group, m.at)), GROUPS,
                                    now=now if now is not None else T0 + 10_000)


def ad_and_packet(after_seconds: float, *, yuan: float = 50, people: int = 20, sender: str = "wmguest"
                  ) -> list[Msg]:
    return [msg(1, 0, kind="link", text="高收益理财，点击了解"),
            msg(2, after_seconds, sender=sender, kind="redpacket", amount=int(yuan * 100), people=people),
            msg(3, 600, sender="wmother", text="谢谢红包")]


def test_a_red_packet_2_59_after_the_ad_clears_it_and_one_at_3_01_does_not() -> None:
    assert run(ad_and_packet(179)).hits == []
    late = run(ad_and_packet(181)).hits
    assert [(h.rule_id, h.trigger, h.evidence) for h in late] == [(1, "m1", ("m1",))]
    assert late[0].detail["min_yuan"] == 50 and late[0].detail["min_people"] == 20


@pytest.mark.parametrize(("yuan", "people", "sender"), [(49.99, 20, "wmguest"), (50, 19, "wmguest"),
                                                        (50, 20, "wmsomeoneelse")])
def test_a_red_packet_too_small_for_too_few_or_from_someone_else_does_not_pay_for_the_ad(
        yuan: float, people: int, sender: str) -> None:
    assert [h.trigger for h in run(ad_and_packet(60, yuan=yuan, people=people, sender=sender)).hits] == ["m1"]


@pytest.mark.parametrize("kind", ["link", "weapp", "card", "sphfeed"])
def test_links_mini_programs_cards_and_channels_posts_are_ads(kind: str) -> None:
    assert [h.rule_id for h in run([msg(1, 0, kind=kind), msg(2, 500)]).hits] == [1]


def test_a_web_address_typed_in_text_is_an_ad_and_plain_talk_is_not() -> None:
    hits = run([msg(1, 0, text="看这里 www.example.com 免费领"), msg(2, 10, sender="wmb", text="今天天气不错"),
                msg(3, 500, sender="wmc", text="好")]).hits
    assert [h.trigger for h in hits] == ["m1"]


def test_images_count_as_ads_only_when_the_rule_says_so() -> None:
    image = [msg(1, 0, kind="image"), msg(2, 500, sender="wmb")]
    assert run(image).hits == []
    with_images = RuleSpec(1, engine.AD, None, {"minutes": 3, "min_yuan": 50, "min_people": 20, "images": True})
    assert [h.trigger for h in run(image, [with_images]).hits] == ["m1"]


@pytest.mark.parametrize("sender", ["owner", "admin1", "colleague"])
def test_an_ad_by_the_owner_an_admin_or_a_whitelisted_colleague_is_no_finding(sender: str) -> None:
    assert run([msg(1, 0, sender=sender, kind="link"), msg(2, 500)]).hits == []


def test_an_ad_still_inside_its_window_is_pending_not_decided() -> None:
    messages = [msg(1, 0, kind="link")]
    waiting = run(messages, now=T0 + 170)
    assert waiting.hits == [] and waiting.pending == {7: T0}
    # past the deadline but within the archive's grace: still waiting for a late red packet
    assert run(messages, now=T0 + 181).hits == []
    assert [h.trigger for h in run(messages, now=T0 + 180 + engine.DEFAULT_GRACE_SECONDS).hits] == ["m1"]


def test_flooding_is_one_finding_per_burst_with_the_burst_as_evidence() -> None:
    burst = [msg(n, n * 2, text=f"第{n}条") for n in range(1, 9)]  # 8 messages in 16 s
    hits = run(burst).hits
    assert [(h.rule_id, h.trigger, h.evidence) for h in hits] == [(2, "m5", ("m1", "m2", "m3", "m4", "m5"))]
    slow = [msg(n, n * 10, text=f"第{n}条") for n in range(1, 9)]  # 5 messages span 40 s
    assert run(slow).hits == []


def test_three_stickers_in_a_row_are_a_finding_and_an_interrupted_run_is_not() -> None:
    in_a_row = [msg(n, n * 20, kind="emotion") for n in range(1, 4)]
    assert [(h.rule_id, h.evidence) for h in run(in_a_row).hits] == [(3, ("m1", "m2", "m3"))]
    broken = [msg(1, 0, kind="emotion"), msg(2, 20, kind="emotion"), msg(3, 40, sender="wmb", text="哈哈"),
              msg(4, 60, kind="emotion")]
    assert run(broken).hits == []


def test_voice_spam_is_three_voices_within_a_minute() -> None:
    assert [h.rule_id for h in run([msg(n, n * 15, kind="voice") for n in range(1, 4)]).hits] == [6]
    assert run([msg(n, n * 40, kind="voice") for n in range(1, 4)]).hits == []


def test_banned_words_are_found_whatever_their_width_or_case_and_named_in_the_finding() -> None:
    hits = run([msg(1, 0, text="有人玩六合彩吗"), msg(2, 30, sender="wmb", text="正规发票")]).hits
    assert [(h.rule_id, h.trigger, h.detail["words"]) for h in hits] == [(4, "m1", ["六合彩"])]


def test_a_list_of_5000_banned_words_matches_in_one_pass() -> None:
    words = [f"违禁词{n:04d}" for n in range(5000)]
    rule = RuleSpec(4, engine.BANNED_WORDS, None, {"words": words})
    messages = [msg(n, n, sender=f"wm{n}", text=f"普通聊天内容第{n}条，没有问题") for n in range(2000)]
    messages.append(msg(9999, 3000, sender="wmbad", text="这里有违禁词4999出现"))
    started = time.perf_counter()
    hits = engine.Engine([rule]).run(messages, GROUPS, now=T0 + 10_000).hits
    assert time.perf_counter() - started < 2.0
    assert [(h.trigger, h.detail["words"]) for h in hits] == [("m9999", ["违禁词4999"])]


@pytest.mark.parametrize("nickname", ["王芳+杭州+会计", "🌸王芳 杭州 会计🌸", "Amy💕 · 上海 · 设计师",
                                      "王芳 ＋ 杭州 ＋ 会计",
                                      "王芳-杭州-会计👩‍💼", "  王芳  杭州  会计  "])
def test_nicknames_in_the_name_region_job_format_pass_with_emoji_and_spaces(nickname: str) -> None:
    assert engine.nickname_ok(nickname, {"parts": 3})
    assert run([msg(1, 0, text="大家好", nickname=nickname)], [NICK_RULE]).hits == []


@pytest.mark.parametrize("nickname", ["🌸🌸🌸", "王芳", "王芳🌸杭州", "   "])
def test_nicknames_without_three_parts_are_a_finding_once_per_member_and_nickname(nickname: str) -> None:
    messages = [msg(1, 0, text="大家好", nickname=nickname), msg(2, 100, text="在吗", nickname=nickname)]
    hits = run(messages, [NICK_RULE]).hits
    assert len(hits) == 1 and hits[0].trigger == engine.nickname_key(7, "wmguest", nickname)


def test_a_nickname_pattern_narrows_the_format() -> None:
    rule = {"parts": 3, "pattern": r"^\S+\+(北京|上海|杭州)\+\S+$"}
    assert engine.nickname_ok("王芳 杭州 会计", rule) and not engine.nickname_ok("王芳 火星 会计", rule)


def test_a_rule_for_one_group_kind_leaves_other_kinds_alone_and_a_rule_without_kind_applies_everywhere() -> None:
    groups = {1: GroupInfo(kind="marketing"), 2: GroupInfo(kind="knowledge"), 3: GroupInfo(kind=None)}
    marketing_only = RuleSpec(1, engine.AD, "marketing", {"minutes": 3, "min_yuan": 50, "min_people": 20})
    everywhere = RuleSpec(3, engine.STICKERS, None, {"count": 2})
    messages = []
    for g in (1, 2, 3):
        messages += [Msg(f"a{g}", g, "wmx", T0, "link"), Msg(f"s{g}a", g, "wmx", T0 + 1, "emotion"),
                     Msg(f"s{g}b", g, "wmx", T0 + 2, "emotion"), Msg(f"z{g}", g, "wmy", T0 + 600, "text")]
    hits = engine.Engine([marketing_only, everywhere]).run(messages, groups, now=T0 + 10_000).hits
    assert sorted((h.group, h.rule_id) for h in hits) == [(1, 1), (1, 3), (2, 3), (3, 3)]


def test_the_same_messages_twice_give_the_same_findings() -> None:
    messages = ad_and_packet(181) + [msg(10 + n, 700 + n, kind="emotion") for n in range(3)]
    first, second = run(messages).hits, run(messages).hits
    assert [(h.rule_id, h.trigger) for h in first] == [(h.rule_id, h.trigger) for h in second] != []


def test_a_sender_whose_nickname_is_unknown_is_not_judged_on_it() -> None:
    assert run([msg(1, 0, text="大家好", nickname="")], [NICK_RULE]).hits == []
