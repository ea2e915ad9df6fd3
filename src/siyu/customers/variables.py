"""Variables in text that leaves Siyu (quick replies, auto-replies, bulk replies, corrections, welcomes).

Why it is shaped this way: a quick reply ``{备注名}您好`` once sent "刘悦欣-红茶党-杭州自由职业您好"
to a customer — the remark name is the team's private note, not a way to address anyone. So
this is the one place that says which variables may reach a customer and fills them:
``{称呼}`` (the friendship's salutation, or the customer's nickname when none is set; empty for a
customer the platform gave no name, so "{称呼}您好" reads "您好", never an id),
``{账号}`` (the account's name) and ``{券码}`` (a coupon code). A text that names an internal
field (备注名, 描述, 电话 …) or an unknown variable is refused when it is saved, with the
reason. Texts saved before this rule existed may still hold ``{备注名}`` or ``{昵称}``: they are
filled with the salutation too, never with the remark.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.accounts.models import Account
from siyu.core.db import among
from siyu.core.errors import Invalid
from siyu.core.i18n import N_
from siyu.customers.models import Customer, Friendship

SALUTATION = "称呼"
ACCOUNT = "账号"
COUPON = "券码"
# What may reach a customer, and what each means (shown next to every editor of such texts).
SAFE_VARIABLES = {
    SALUTATION: N_("the salutation set on the customer page (their nickname when empty)"),
    ACCOUNT: N_("the account's name"),
    COUPON: N_("the coupon code (welcome messages of a channel with coupons)"),
}
# Fields of the portrait that stay inside the team: naming them in an outgoing text is refused.
INTERNAL_VARIABLES = ("备注名", "昵称", "描述", "电话", "手机号", "标签", "微信号", "企业微信ID", "地区", "城市",
                      "职业", "收入", "家庭", "客观信息", "感性信息", "备注", "等级", "阶段", "地址", "生日", "年龄")
# Saved before salutations existed: filled with the salutation, never with the field itself.
LEGACY_NAME_VARIABLES = ("备注名", "昵称")
SALUTATION_MAX = 64
# A customer the platform gave no name (WeChat returns no nicknames to a 公众号 since 2021; a kf or
# WeCom profile may be empty) is listed as 未命名·<id tail>: a label for the team, never a salutation.
UNNAMED_PREFIX = "未命名·"
_VARIABLE = re.compile(r"\{([^{}\s]{1,16})\}")


def unnamed(external_id: str) -> str:
    """The name shown for a customer known only by a platform id."""
    return f"{UNNAMED_PREFIX}{external_id[-6:]}"


def is_unnamed(name: str) -> bool:
    return name.startswith(UNNAMED_PREFIX)


def variables_in(text: str) -> list[str]:
    return _VARIABLE.findall(text)


def check_outgoing(text: str, *, field: str, allowed: Iterable[str] = SAFE_VARIABLES) -> None:
    """Refuse a text for customers that names an internal field or an unknown variable."""
    allowed = tuple(allowed)
    listed = " ".join("{" + name + "}" for name in allowed)
    for name in variables_in(text):
        if name in allowed:
            continue
        if name in INTERNAL_VARIABLES:
            raise Invalid("{variable} is an internal field, never sent to customers; messages may use {allowed}.",
                          field=field, variable="{" + name + "}", allowed=listed)
        raise Invalid("{variable} is not a variable Siyu knows. Messages may use {allowed}.", field=field,
                      variable="{" + name + "}", allowed=listed)


@dataclass(frozen=True)
class Values:
    """What the safe variables stand for, for one customer on one account."""

    salutation: str = ""
    account: str = ""
    coupon: str = ""


def values_for(session: Session, pairs: Iterable[tuple[int | None, int]]) -> dict[tuple[int | None, int], Values]:
    """The values of many (customer, account) pairs with three queries (a customer None: a group chat)."""
    wanted = sorted(set(pairs), key=lambda p: (p[0] or 0, p[1]))
    if not wanted:
        return {}
    accounts = {a: name for a, name in session.execute(select(Account.id, Account.display_name).where(
        Account.id.in_(sorted({a for _c, a in wanted}))))}
    people = sorted({c for c, _a in wanted if c is not None})
    names = {c: ("" if is_unnamed(name) else name) for c, name in session.execute(
        select(Customer.id, Customer.name).where(Customer.id.in_(people)))} if people else {}
    # Read by customer id (the friendship's index) and matched to the pairs here: a row-value IN over
    # (customer, account) is a full scan of friendship on SQLite — a second per call at 1,000,000 friends.
    pairs_wanted = {p for p in wanted if p[0] is not None}
    chosen = {(c, a): s for c, a, s in session.execute(
        select(Friendship.customer_id, Friendship.account_id, Friendship.salutation).where(
            among(session, Friendship.customer_id, people), Friendship.salutation != ""))
        if (c, a) in pairs_wanted} if people else {}
    return {(c, a): Values(salutation=(chosen.get((c, a)) or names.get(c, "")) if c is not None else "",
                           account=accounts.get(a, "")) for c, a in wanted}


def salutation(session: Session, *, customer_id: int, account_id: int) -> str:
    return values_for(session, [(customer_id, account_id)])[(customer_id, account_id)].salutation


def render(text: str, values: Values) -> str:
    """Fill the safe variables (and the legacy name variables, with the salutation); nothing else."""
    filled = {SALUTATION: values.salutation, ACCOUNT: values.account, COUPON: values.coupon}
    filled.update({name: values.salutation for name in LEGACY_NAME_VARIABLES})
    return _VARIABLE.sub(lambda m: filled.get(m.group(1), m.group(0)), text)


def fill(session: Session, text: str, *, customer_id: int | None, account_id: int, coupon: str = "") -> str:
    values = values_for(session, [(customer_id, account_id)])[(customer_id, account_id)]
    return render(text, Values(salutation=values.salutation, account=values.account, coupon=coupon))
