"""Benchmark: matching messages against 5,000 keyword auto-reply rules on one core.

Target: ≥50,000 messages per second through ``autoreply.matcher.Matcher`` (one
Aho-Corasick pass per message), printed beside the baseline a careful engineer would write
without the automaton — one tight loop over every (keyword, rule) pair testing
``keyword in text`` — on the same messages; both must pick the same rule. The two take
turns over several rounds (the machine is shared) and the medians are reported; the
script exits non-zero when the target is missed.

Usage:  .venv/bin/python benchmarks/rules.py [--rules 5000] [--messages 100000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from machine import interleaved, medians, print_header

from siyu.autoreply.matcher import CompiledRule, Matcher, normalise

TARGET_PER_SECOND = 50_000
SEED = 8
WORDS = ("优惠券", "发货", "退款", "会员", "积分", "礼盒", "龙井", "白茶", "普洱", "门店", "营业", "发票", "地址",
         "快递", "活动", "抽奖", "直播", "新品", "试饮", "茶具", "团购", "生日", "周年", "红包", "满减")
FILLER = "你好请问一下我想了解这个怎么弄呢谢谢在吗哈哈嗯好的没问题麻烦了"


def build_rules(count: int, rng: random.Random) -> list[CompiledRule]:
    rules = []
    for i in range(count):
        # Keywords like "龙井17号", "发货查询42": realistic lengths, a few shared stems.
        keyword = f"{rng.choice(WORDS)}{rng.choice(('', '查询', '问题', '活动', '规则'))}{i}"
        rules.append(CompiledRule(version_id=i + 1, rule_id=i + 1, account_id=None, kind="contains",
                                  priority=rng.randint(0, 100), keywords=(keyword,)))
    return rules


def build_messages(count: int, rules: list[CompiledRule], rng: random.Random) -> list[str]:
    messages = []
    for _ in range(count):
        text = "".join(rng.choice(FILLER) for _ in range(rng.randint(4, 30)))
        if rng.random() < 0.3:  # three in ten mention a rule's keyword somewhere
            keyword = rng.choice(rules).keywords[0]
            at = rng.randint(0, len(text))
            text = text[:at] + keyword + text[at:]
        messages.append(text)
    return messages


def naive(pairs: list[tuple[str, CompiledRule]], text: str) -> CompiledRule | None:
    """Every (already normalised) keyword tested against the message in one flat loop, best rule kept."""
    key = normalise(text)
    best: CompiledRule | None = None
    for keyword, rule in pairs:
        if keyword in key and (best is None or rule.rank < best.rank):
            best = rule
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rules", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=2000, help="messages timed with the naive loop")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of matcher and baseline")
    args = parser.parse_args(argv)
    print_header("rules: keyword auto-reply matching")
    rng = random.Random(SEED)
    rules = build_rules(args.rules, rng)
    messages = build_messages(args.messages, rules, rng)
    started = time.perf_counter()
    matcher = Matcher(rules)
    built = time.perf_counter() - started

    sample = messages[:args.naive_sample]
    pairs = [(normalise(k), rule) for rule in rules for k in rule.keywords]
    found: dict[str, list[CompiledRule | None]] = {}

    def automaton() -> None:
        found["matcher"] = [matcher.match(text, account_id=1) for text in messages]

    def baseline() -> None:
        found["naive"] = [naive(pairs, text) for text in sample]

    times = medians(interleaved(args.rounds, {"matcher": automaton, "naive": baseline}))
    picked, naive_picked = found["matcher"], found["naive"]
    rate = len(messages) / times["matcher"]
    naive_rate = len(sample) / times["naive"]
    same = [p.version_id if p else None for p in picked[:len(sample)]] == [
        p.version_id if p else None for p in naive_picked]
    hits = sum(1 for p in picked if p is not None)

    print(f"{args.rules:,} keyword rules, {len(messages):,} messages ({hits:,} match a rule); automaton built in "
          f"{built * 1000:.0f} ms")
    print(f"  Aho-Corasick matcher   {rate:12,.0f} messages/s   (median of {args.rounds} rounds)")
    print(f"  tight loop over rules  {naive_rate:12,.0f} messages/s   (on the first {len(sample):,}, same rounds)")
    print(f"  ratio                  {rate / naive_rate:12,.1f}x")
    print(f"  same rule chosen as the naive loop: {'yes' if same else 'NO'}")
    ok = same and rate >= TARGET_PER_SECOND
    print(f"  target ≥{TARGET_PER_SECOND:,}/s: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
