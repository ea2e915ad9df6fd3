"""The moderation engine: group messages in, findings out — pure, one pass, no database.

Why it is a pure function of its input: the same code runs on the chat archive every minute,
on a dry run over the last N days before a rule goes live, and in the benchmark, and each must
find exactly what the others find. The caller loads messages (``Msg``) sorted by group and time,
the groups (``GroupInfo``: kind and who is exempt) and the live rules (``RuleSpec``), and gets
``Hit`` objects back; storing them (idempotently, one per rule and trigger message) and acting on
them is ``service``'s job.

Per group the engine keeps a little state — the ads waiting for their red packet, each sender's
recent message times, the current run of stickers — and every rule costs O(1) per message
except banned words, which are one scan of the text through the auto-reply matcher's
Aho-Corasick automaton (``autoreply.matcher.Matcher``) for every banned-word rule at once.

An ad waits ``minutes`` for a red packet from the same sender of at least ``min_yuan`` to at
least ``min_people`` people (the seed's 50 yuan / 20 people / 3 minutes). It is decided when a
later message of the group is past the deadline (the archive is seq-ordered: nothing earlier can
still come) or when ``now`` is ``grace`` seconds past it; until then it is ``pending``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from siyu.autoreply.matcher import CompiledRule, Matcher, check_pattern, normalise

# The rule types (``ModerationRule.kind``).
AD = "ad"
FLOOD = "flood"
STICKERS = "stickers"
BANNED_WORDS = "banned_words"
NICKNAME = "nickname"
VOICE = "voice"
RULE_KINDS = (AD, FLOOD, STICKERS, BANNED_WORDS, NICKNAME, VOICE)

# Archive message types (会话存档 › 消息格式, W:91774) the rules read: 链接 link, 小程序 weapp, 名片 card,
# 视频号 sphfeed, 表情 emotion, 语音 voice, 红包 redpacket / 互通红包 external_redpacket.
AD_TYPES = frozenset({"link", "weapp", "card", "sphfeed"})
STICKER_TYPES = frozenset({"emotion", "sticker"})
VOICE_TYPES = frozenset({"voice"})
RED_PACKET_TYPES = frozenset({"redpacket", "external_redpacket", "red_packet"})
# A web address in a text message makes it an ad (a link typed or pasted rather than sent as a card).
URL = re.compile(r"(?:https?://|www\.)\S+|\b[a-z0-9-]+\.(?:com|cn|net|top|xyz|cc|vip)\b", re.IGNORECASE)
# Where a nickname's parts are split (名称+地区+职业): the usual joiners, full- and half-width, and spaces.
NICK_SEPARATORS = re.compile(r"[\s+＋\-－—_|｜/／、·•.。,，:：~～]+")
DEFAULT_GRACE_SECONDS = 120.0  # the archive arrives late: an ad is decided this long after its deadline


class Msg(NamedTuple):
    """One group message as the engine reads it (a tuple: 100,000 of them are made per group day). ``at`` in
    seconds (UTC epoch); ``amount`` of a red packet in fen (分) and ``people`` its number of packets;
    ``nickname`` the sender's group nickname ("" when unknown)."""

    key: str  # the platform msgid (or the import's key): what makes a finding idempotent
    group: int
    sender: str
    at: float
    type: str
    text: str = ""
    amount: int = 0
    people: int = 0
    nickname: str = ""


@dataclass(frozen=True, slots=True)
class GroupInfo:
    kind: str | None
    exempt: frozenset[str] = frozenset()  # owner, admins, whitelisted colleagues


@dataclass(frozen=True)
class RuleSpec:
    id: int
    kind: str
    group_kind: str | None  # None: every group
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hit:
    rule_id: int
    group: int
    sender: str
    trigger: str  # the key of the message that decided it (unique per rule)
    at: float
    evidence: tuple[str, ...]  # message keys, oldest first
    detail: dict[str, Any]


@dataclass
class Result:
    hits: list[Hit] = field(default_factory=list)
    pending: dict[int, float] = field(default_factory=dict)  # group → the earliest undecided ad's time
    messages: int = 0


# ---------------------------------------------------------------- nicknames


# Emoji and pictographs (with their variation selectors, joiners, skin tones, keycaps and tags), and the
# symbol blocks nicknames decorate with: each becomes a separator.
_DECORATION = re.compile("[\U0001F000-\U0001FAFF\U000E0000-\U000E007F\u2190-\u21FF\u2300-\u23FF"
                         "\u2460-\u27BF\u2900-\u297F\u2B00-\u2BFF\u3030\u303D\u3297\u3299\uFE00-\uFE0F"
                         "\u200B-\u200F\u2060-\u206F\u20D0-\u20FF\u00A9\u00AE\u2122\u2605\u2606\u2661"
                         "\u2665\uE000-\uF8FF]")


def strip_decoration(text: str) -> str:
    """A nickname without emoji, pictographs, variation selectors and joiners; spaces kept as separators."""
    return _DECORATION.sub(" ", text)


def nickname_parts(nickname: str) -> list[str]:
    cleaned = unicodedata.normalize("NFKC", strip_decoration(nickname))
    return [p for p in NICK_SEPARATORS.split(cleaned) if p]


def nickname_ok(nickname: str, params: dict[str, Any]) -> bool:
    """Whether a group nickname has the required parts (``parts``, default 3: 名称+地区+职业) and, when the
    rule names a ``pattern`` (a regular expression checked for safety when saved), matches it."""
    parts = nickname_parts(nickname)
    if len(parts) < int(params.get("parts") or 3):
        return False
    pattern = str(params.get("pattern") or "")
    if pattern:
        return check_pattern(pattern).search("+".join(parts), timeout=0.01) is not None
    return True


# ---------------------------------------------------------------- the engine


class _GroupState:
    __slots__ = ("ads", "flood_until", "last_at", "recent", "run", "run_sender", "voice_until", "voices")

    def __init__(self) -> None:
        self.ads: deque[tuple[Msg, int]] = deque()  # (ad message, rule id) waiting for a red packet
        self.recent: dict[str, deque[Msg]] = {}  # sender → their last messages (flooding)
        self.voices: dict[str, deque[Msg]] = {}
        self.run_sender = ""
        self.run: list[Msg] = []
        self.flood_until: dict[str, float] = {}
        self.voice_until: dict[str, float] = {}
        self.last_at = 0.0


class _KindRules:
    """The rules that apply to one group kind, unpacked for the hot loop."""

    def __init__(self, rules: list[RuleSpec]) -> None:
        self.ads = [(r.id, float(r.params.get("minutes", 3)) * 60, round(float(r.params.get("min_yuan", 50))
                                                                              * 100),
                     int(r.params.get("min_people", 20)), bool(r.params.get("images", False)),
                     bool(r.params.get("urls", True))) for r in rules if r.kind == AD]
        self.floods = [(r.id, int(r.params.get("count", 10)), float(r.params.get("seconds", 60)))
                       for r in rules if r.kind == FLOOD]
        self.stickers = [(r.id, int(r.params.get("count", 3))) for r in rules if r.kind == STICKERS]
        self.voices = [(r.id, int(r.params.get("count", 3)), float(r.params.get("seconds", 300)))
                       for r in rules if r.kind == VOICE]
        self.words = [r.id for r in rules if r.kind == BANNED_WORDS]
        self.ad_words = any(r.params.get("ad_words") for r in rules if r.kind == AD)
        self.nicknames = [(r.id, r.params) for r in rules if r.kind == NICKNAME]
        self.flood_window = max((c for _i, c, _s in self.floods), default=0)
        self.voice_window = max((c for _i, c, _s in self.voices), default=0)
        self.any = bool(self.ads or self.floods or self.stickers or self.voices or self.words or self.nicknames)


class Engine:
    def __init__(self, rules: list[RuleSpec], *, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        self.rules = {r.id: r for r in rules}
        self.grace = grace
        # One matcher entry per word (the auto-reply matcher's automaton, one scan per message for every list):
        # a hit names its rule and its word. Ad words are entries too, told apart by ``_ad_entries``.
        entries: list[CompiledRule] = []
        self._word_of: dict[int, tuple[int, str]] = {}  # entry id → (rule id, word)
        self._ad_entries: set[int] = set()
        for r in rules:
            if r.kind not in (BANNED_WORDS, AD):
                continue
            for word in r.params.get("words" if r.kind == BANNED_WORDS else "ad_words") or ():
                entry = len(self._word_of) + 1
                self._word_of[entry] = (r.id, normalise(str(word)))
                if r.kind == AD:
                    self._ad_entries.add(entry)
                entries.append(CompiledRule(version_id=entry, rule_id=r.id, account_id=None, kind="contains",
                                            priority=0, keywords=(str(word),)))
        self.matcher = Matcher(entries) if entries else None
        self._by_kind: dict[str | None, _KindRules] = {}
        self._checked_nicks: set[tuple[int, int, str, str]] = set()

    def rules_for(self, kind: str | None) -> _KindRules:
        found = self._by_kind.get(kind)
        if found is None:
            found = _KindRules([r for r in self.rules.values() if r.group_kind is None or r.group_kind == kind])
            self._by_kind[kind] = found
        return found

    def run(self, messages: list[Msg], groups: dict[int, GroupInfo], *, now: float) -> Result:
        """Every finding in ``messages`` (sorted by group, then time); ads still inside their window at
        ``now`` (+ grace) are reported in ``pending`` instead."""
        result = Result(messages=len(messages))
        hits = result.hits
        state: _GroupState | None = None
        group = -1
        rules: _KindRules | None = None
        info = GroupInfo(kind=None)
        matcher = self.matcher
        for m in messages:
            if m.group != group:
                if state is not None and rules is not None:
                    self._close_ads(state, group, hits, result, now)
                group = m.group
                info = groups.get(group) or GroupInfo(kind=None)
                rules = self.rules_for(info.kind)
                state = _GroupState()
            assert state is not None and rules is not None
            if not rules.any:
                continue
            at = m.at
            if state.ads:
                self._settle_ads(state, m, hits)
            if m.sender in info.exempt:
                continue
            kind = m.type
            words: dict[int, list[str]] = {}  # rule id → the words of its list found in the text
            if matcher is not None and m.text and (rules.words or rules.ad_words):
                for found in matcher.candidates(m.text, account_id=0):
                    rule_id, word = self._word_of[found.version_id]
                    words.setdefault(rule_id, []).append(word)
            # ---- ads waiting for a red packet
            if rules.ads:
                is_ad_type = kind in AD_TYPES
                for rule_id, _wait, _yuan, _people, images, urls in rules.ads:
                    if is_ad_type or (images and kind == "image") or (
                            kind == "text" and (rule_id in words or (urls and URL.search(m.text) is not None))):
                        state.ads.append((m, rule_id))
            # ---- flooding: K messages of one sender within M seconds
            if rules.floods:
                recent = state.recent.get(m.sender)
                if recent is None:
                    recent = state.recent[m.sender] = deque(maxlen=rules.flood_window)
                recent.append(m)
                if at >= state.flood_until.get(m.sender, -1.0):
                    for rule_id, count, seconds in rules.floods:
                        if len(recent) >= count and at - recent[-count].at <= seconds:
                            window = list(recent)[-count:]
                            hits.append(Hit(rule_id, group, m.sender, m.key, at, tuple(w.key for w in window),
                                            {"count": count, "seconds": seconds}))
                            state.flood_until[m.sender] = at + seconds  # one finding per burst
                            break
            # ---- consecutive stickers
            if rules.stickers:
                if kind in STICKER_TYPES:
                    if state.run_sender == m.sender:
                        state.run.append(m)
                    else:
                        state.run_sender, state.run = m.sender, [m]
                    for rule_id, count in rules.stickers:
                        if len(state.run) == count:
                            hits.append(Hit(rule_id, group, m.sender, m.key, at, tuple(r.key for r in state.run),
                                            {"count": count}))
                else:
                    state.run_sender, state.run = "", []
            # ---- voice spam
            if rules.voices and kind in VOICE_TYPES:
                voices = state.voices.get(m.sender)
                if voices is None:
                    voices = state.voices[m.sender] = deque(maxlen=rules.voice_window)
                voices.append(m)
                if at >= state.voice_until.get(m.sender, -1.0):
                    for rule_id, count, seconds in rules.voices:
                        if len(voices) >= count and at - voices[-count].at <= seconds:
                            hits.append(Hit(rule_id, group, m.sender, m.key, at,
                                            tuple(v.key for v in list(voices)[-count:]),
                                            {"count": count, "seconds": seconds}))
                            state.voice_until[m.sender] = at + seconds
                            break
            # ---- banned words
            if words:
                for rule_id in rules.words:
                    if rule_id in words:
                        hits.append(Hit(rule_id, group, m.sender, m.key, at, (m.key,),
                                        {"words": sorted(words[rule_id])[:5]}))
            # ---- nickname format (once per member and nickname)
            if rules.nicknames and m.nickname:  # an unknown nickname (group not synced yet) is not judged
                for rule_id, params in rules.nicknames:
                    seen = (rule_id, group, m.sender, m.nickname)
                    if seen in self._checked_nicks:
                        continue
                    self._checked_nicks.add(seen)
                    if not nickname_ok(m.nickname, params):
                        hits.append(Hit(rule_id, group, m.sender, nickname_key(group, m.sender, m.nickname), at,
                                        (m.key,), {"nickname": m.nickname}))
            state.last_at = at
        if state is not None and rules is not None:
            self._close_ads(state, group, hits, result, now)
        return result

    def _settle_ads(self, state: _GroupState, m: Msg, hits: list[Hit]) -> None:
        """A red packet clears the sender's waiting ads it is big enough for; a message past an ad's deadline
        decides it (nothing earlier can still arrive)."""
        keep: deque[tuple[Msg, int]] = deque()
        for ad, rule_id in state.ads:
            _r, wait, yuan, people, _i, _u = self._ad_params(rule_id)
            if m.at > ad.at + wait:
                hits.append(self._ad_hit(ad, rule_id, wait, yuan, people))
                continue
            if m.type in RED_PACKET_TYPES and m.sender == ad.sender and m.amount >= yuan and m.people >= people:
                continue  # paid for: no finding
            keep.append((ad, rule_id))
        state.ads = keep

    def _close_ads(self, state: _GroupState, group: int, hits: list[Hit], result: Result, now: float) -> None:
        for ad, rule_id in state.ads:
            _r, wait, yuan, people, _i, _u = self._ad_params(rule_id)
            if now >= ad.at + wait + self.grace:
                hits.append(self._ad_hit(ad, rule_id, wait, yuan, people))
            else:
                result.pending[group] = min(result.pending.get(group, ad.at), ad.at)
        state.ads = deque()

    def _ad_params(self, rule_id: int) -> tuple[int, float, int, int, bool, bool]:
        r = self.rules[rule_id].params
        return (rule_id, float(r.get("minutes", 3)) * 60, round(float(r.get("min_yuan", 50)) * 100),
                int(r.get("min_people", 20)), bool(r.get("images", False)), bool(r.get("urls", True)))

    def _ad_hit(self, ad: Msg, rule_id: int, wait: float, yuan: int, people: int) -> Hit:
        return Hit(rule_id, ad.group, ad.sender, ad.key, ad.at, (ad.key,),
                   {"type": ad.type, "minutes": wait / 60, "min_yuan": yuan / 100, "min_people": people})


def nickname_key(group: int, sender: str, nickname: str) -> str:
    """The trigger of a nickname finding: one per member, group and nickname (a new nickname is checked again)."""
    import hashlib

    digest = hashlib.sha1(nickname.encode(), usedforsecurity=False).hexdigest()[:12]
    return f"nick:{group}:{sender[:64]}:{digest}"


def max_window_seconds(rules: list[RuleSpec]) -> float:
    """How far back a re-run must look so that every rule sees the whole window of a new message."""
    spans = [0.0]
    for r in rules:
        if r.kind == AD:
            spans.append(float(r.params.get("minutes", 3)) * 60)
        elif r.kind in (FLOOD, VOICE):
            spans.append(float(r.params.get("seconds", 60)))
    return max(spans)
