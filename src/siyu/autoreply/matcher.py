"""Matching messages against thousands of auto-reply rules in one pass.

Keyword rules go into one Aho-Corasick automaton (pyahocorasick), so a message costs one
scan of its text however many rules there are; exact rules are a dictionary lookup;
regular expressions run through the ``regex`` module with a per-message time limit, and
patterns that can backtrack catastrophically are refused when saved. The highest priority
rule that matches wins — one message, at most one automatic reply.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any

import ahocorasick
import regex

REGEX_TIMEOUT_SECONDS = 0.01
MAX_PATTERN_LENGTH = 500
# Adversarial inputs a saved pattern must survive quickly (classic backtracking triggers).
_PROBES = ("a" * 40 + "!", "1" * 40 + "x", " " * 40 + "x", "ab" * 30 + "c", "啊" * 40 + "!")
# A quantified group that itself contains a quantifier or an alternation — (a+)+, (\d*)*,
# (a|aa)+ — is how catastrophic backtracking is written; refused outright, whatever the engine.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*(?:[+*]|\{\d|\|)(?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,)")


class UnsafePattern(ValueError):
    pass


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


@dataclass(frozen=True)
class CompiledRule:
    """What the matcher needs of one rule version."""

    version_id: int
    rule_id: int
    account_id: int | None
    kind: str
    priority: int
    keywords: tuple[str, ...] = ()
    pattern: str = ""
    hours: dict[str, Any] | None = None

    @property
    def rank(self) -> tuple[int, int]:
        # Higher priority first; the older rule wins a tie, so adding a rule never steals silently.
        return (-self.priority, self.rule_id)


def check_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile a user's regular expression, refusing ones that are slow on hostile input."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafePattern("pattern too long")
    if _NESTED_QUANTIFIER.search(pattern):
        raise UnsafePattern("nested quantifier")
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        raise UnsafePattern(str(exc)) from exc
    for probe in _PROBES:
        try:
            compiled.search(probe, timeout=0.05)
        except TimeoutError as exc:
            raise UnsafePattern("catastrophic backtracking") from exc
    return compiled


def in_hours(hours: dict[str, Any], at: datetime) -> bool:
    """Whether ``at`` (local time) is inside service hours {"start", "end", "days"}."""
    days = hours.get("days") or list(range(7))
    start = time.fromisoformat(str(hours.get("start", "00:00")))
    end = time.fromisoformat(str(hours.get("end", "23:59")))
    if at.weekday() not in days:
        return False
    now = at.time()
    return start <= now <= end if start <= end else (now >= start or now <= end)


@dataclass
class Matcher:
    """Built once from the enabled rules; ``match`` is then a single pass per message."""

    rules: list[CompiledRule]
    _automaton: Any = field(init=False, repr=False)
    _exact: dict[str, list[CompiledRule]] = field(init=False, repr=False)
    _regexes: list[tuple[CompiledRule, regex.Pattern[str]]] = field(init=False, repr=False)
    _hours: list[CompiledRule] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._automaton = ahocorasick.Automaton()
        self._exact = {}
        self._regexes = []
        self._hours = []
        by_keyword: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            if rule.kind == "contains":
                for keyword in rule.keywords:
                    key = normalise(keyword)
                    if key:
                        by_keyword.setdefault(key, []).append(rule)
            elif rule.kind == "exact":
                for keyword in rule.keywords:
                    self._exact.setdefault(normalise(keyword), []).append(rule)
            elif rule.kind == "regex":
                try:
                    self._regexes.append((rule, check_pattern(rule.pattern)))
                except UnsafePattern:
                    continue  # refused when saved; never run one that slipped through
            elif rule.kind == "outside_hours" and rule.hours:
                self._hours.append(rule)
        for key, rules in by_keyword.items():
            self._automaton.add_word(key, tuple(rules))
        if by_keyword:
            self._automaton.make_automaton()
        self._has_keywords = bool(by_keyword)

    def candidates(self, text: str, *, account_id: int, at: datetime | None = None) -> list[CompiledRule]:
        """Every rule that matches, best first (the caller sends at most the first)."""
        found: dict[int, CompiledRule] = {}
        key = normalise(text)
        if self._has_keywords and key:
            for _end, rules in self._automaton.iter(key):
                for rule in rules:
                    found[rule.version_id] = rule
        for rule in self._exact.get(key, ()):
            found[rule.version_id] = rule
        for rule, compiled in self._regexes:
            try:
                if compiled.search(text, timeout=REGEX_TIMEOUT_SECONDS):
                    found[rule.version_id] = rule
            except TimeoutError:
                continue  # too slow on this message: no reply rather than a stuck worker
        if at is not None:
            for rule in self._hours:
                if rule.hours is not None and not in_hours(rule.hours, at):
                    found[rule.version_id] = rule
        mine = [r for r in found.values() if r.account_id is None or r.account_id == account_id]
        return sorted(mine, key=lambda r: r.rank)

    def match_exact(self, key: str, *, account_id: int) -> CompiledRule | None:
        """The best exact rule for this key alone (a tapped menu item's id)."""
        rules = [r for r in self._exact.get(normalise(key), ()) if r.account_id is None or r.account_id == account_id]
        return min(rules, key=lambda r: r.rank) if rules else None

    def match(self, text: str, *, account_id: int, at: datetime | None = None) -> CompiledRule | None:
        best = self.candidates(text, account_id=account_id, at=at)
        return best[0] if best else None
