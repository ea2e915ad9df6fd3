"""The audit log in the operator's words: one registry of what every stored code means.

Why one module: an audit entry is written by a dozen domains with short codes (``enable``,
``autoreply_rule``, ``is_active``, ``operator``) and read by people. Every code a writer may
store has its label here — object kinds (with the page an entry links to), actions, the
fields of before/after snapshots and the values of enum fields — and the page, the CSV export
and the API read them through ``describe``. A code nobody labelled still shows (as the raw
code), and ``tests/test_audit_labels.py`` fails when a writer in ``src/`` stores a kind or an
action that has no label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from siyu.core.i18n import N_, _


@dataclass(frozen=True)
class Kind:
    label: str
    url: str | None = None  # "/channels/{id}": the object's page, when it has one


# object kind → label and page
KINDS: dict[str, Kind] = {
    "user": Kind(N_("User"), "/users"),
    "account": Kind(N_("Account"), "/accounts"),
    "customer": Kind(N_("Customer"), "/customers/{id}"),
    "customers": Kind(N_("Customer lists"), "/customers"),
    "customer_tags": Kind(N_("Customer tags"), "/customers/{id}"),
    "touch": Kind(N_("Touch")),
    "address": Kind(N_("Address")),
    "attachment": Kind(N_("Attachment")),
    "tag_group": Kind(N_("Tag group"), "/settings/tags"),
    "tag": Kind(N_("Tag"), "/settings/tags"),
    "custom_field": Kind(N_("Custom field"), "/settings/tags#fields"),
    "lifecycle_rules": Kind(N_("Lifecycle rules"), "/settings/tags#rules"),
    "channel": Kind(N_("Channel"), "/channels/{id}"),
    "channel_report": Kind(N_("Channel report"), "/channels"),
    "autoreply_rule": Kind(N_("Auto-reply rule"), "/autoreply/{id}"),
    "autoreply_account": Kind(N_("Account auto-replies"), "/autoreply"),
    "incident": Kind(N_("Incident"), "/autoreply/incidents/{id}"),
    "conversations": Kind(N_("Conversations"), "/inbox"),
    "chat": Kind(N_("Chat history"), "/customers/{id}"),
    "service_report": Kind(N_("Service report"), "/inbox/reports"),
    "analytics_report": Kind(N_("Analytics report"), "/analytics"),
    "goal": Kind(N_("Goal"), "/goals/{id}"),
    "dashboard_chart": Kind(N_("Dashboard chart"), "/"),
    "wecom_connection": Kind(N_("WeCom connection"), "/wecom"),
    "mp_connection": Kind(N_("Official account connection"), "/mp"),
    "audit": Kind(N_("Audit log"), "/audit"),
    "export_policy": Kind(N_("Export permissions"), "/settings/exports"),
    "order": Kind(N_("Order"), "/orders"),
    "orders": Kind(N_("Orders"), "/orders"),
    "order_source": Kind(N_("Order source"), "/orders/sources"),
    "segment": Kind(N_("Segment"), "/segments/{id}"),
    "rfm_settings": Kind(N_("RFM settings"), "/segments"),
    "pool": Kind(N_("Public pool"), "/pool"),
    "pool_settings": Kind(N_("Public pool settings"), "/pool"),
    "cadence_policy": Kind(N_("Touch cadence"), "/maintenance/policies"),
    "group_chat": Kind(N_("Customer group"), "/groups/{id}"),
    "group_template": Kind(N_("Naming template"), "/groups/templates"),
    "group_code": Kind(N_("Group code"), "/groups/codes/{id}"),
    "group_qr_image": Kind(N_("Group QR image")),
    "library_item": Kind(N_("Library item"), "/library/{id}"),
    "moment_post": Kind(N_("Moment"), "/moments/{id}"),
    "moment_column": Kind(N_("Moments column"), "/moments/new"),
    "sop": Kind(N_("Customer SOP"), "/sops/{id}"),
    "send_settings": Kind(N_("Mass-send quota"), "/sops"),
    "offline_event": Kind(N_("Offline event"), "/offline-events/{id}"),
    "offline_signup": Kind(N_("Offline event sign-up")),
    # 群规 (groups.moderation)
    "group_rule": Kind(N_("Group rule"), "/groups/rules/{id}"),
    "group_finding": Kind(N_("Group-rule finding"), "/groups/findings"),
    "group_blacklist": Kind(N_("Group blacklist"), "/groups/blacklist"),
    "group_whitelist": Kind(N_("Group-rule whitelist"), "/groups/rules#whitelist"),
    # 社群运营 (groups.onboarding, groups.posts)
    "group_welcome_template": Kind(N_("Group welcome message"), "/groups/welcome"),
    "group_invitee": Kind(N_("Group invitee")),
    "group_post_plan": Kind(N_("Group posts calendar line"), "/groups/posts"),
    # 用户转化: 群发, coupons, 老带新, 抽奖
    "campaign": Kind(N_("Mass send"), "/campaigns/{id}"),
    "coupon_batch": Kind(N_("Coupon batch"), "/coupons/{id}"),
    "referral_programme": Kind(N_("Referral programme"), "/referrals/{id}"),
    "lucky_draw": Kind(N_("Lucky draw"), "/draws/{id}"),
}

# action → verb
ACTIONS: dict[str, str] = {
    "create": N_("Created"),
    "invite": N_("Invited"),
    "finish_batch": N_("Finished an intake batch"),
    "credit": N_("Credited a referral"),
    "refuse": N_("Refused a referral"),
    "mp_qrcode": N_("Made an invite's Official Account QR code"),
    "end": N_("Ended the programme"),
    "issue": N_("Issued coupons"),
    "release": N_("Took back coupon codes never delivered"),
    "draw": N_("Ran the draw"),
    "cancel": N_("Cancelled"),
    "update": N_("Updated"),
    "delete": N_("Deleted"),
    "export": N_("Exported"),
    "import": N_("Imported"),
    "login": N_("Logged in"),
    "unlock": N_("Unlocked"),
    "logout_everywhere": N_("Logged out everywhere"),
    "alert": N_("Raised an alert"),
    "enable": N_("Switched on"),
    "disable": N_("Switched off"),
    "pause": N_("Paused"),
    "test": N_("Tested"),
    "merge": N_("Merged"),
    "unmerge": N_("Undid a merge"),
    "handover": N_("Handed over"),
    "bulk": N_("Bulk action"),
    "bulk_update": N_("Bulk change"),
    "upsert": N_("Received orders"),
    "refund": N_("Refunded"),
    "match": N_("Matched to a customer"),
    "ignore": N_("Ignored"),
    "pool_claim": N_("Claimed from the public pool"),
    "pool_return": N_("Returned to the public pool"),
    "pool_sweep": N_("Swept the public pool"),
    "churn_review": N_("Reviewed a lost friend"),
    "retire": N_("Retired"),
    "restore": N_("Restored"),
    "moment_posted": N_("Marked the moment posted"),
    "moderate": N_("Found a group-rule breach"),
    "blacklist": N_("Put on the blacklist"),
    "appeal": N_("Recorded an appeal"),
    "pardon": N_("Pardoned"),
    "feedback": N_("Reported a false positive"),
    "reorder": N_("Reordered"),
    "reset_password": N_("Reset the password"),
    "check_in": N_("Checked in"),
    "follow_up": N_("Created follow-up tasks"),
    "renew_link": N_("Made a new link"),
}

# field of a before/after snapshot → label (the words the object's own page uses)
FIELDS: dict[str, str] = {
    # people and accounts
    "username": N_("Username"), "display_name": N_("Display name"), "role": N_("Role"), "is_active": N_("Active"),
    "account_ids": N_("Accounts"), "account_id": N_("Account"), "owner_user_id": N_("Owner"),
    "owner_id": N_("Owner"), "churn_reason": N_("Reason for leaving"), "churn_note": N_("Note on leaving"),
    "returned": N_("Returned"), "owner_left": N_("Owner left"), "untouched": N_("Untouched too long"),
    "wechat_id": N_("WeChat ID"), "store": N_("Store"), "brand": N_("Brand"), "tier_served": N_("Tier served"),
    "friend_capacity": N_("Capacity"), "every_days": N_("Every N days"),
    "quiet_days": N_("Quiet days"), "conditions": N_("Condition"),
    "position": N_("Policy order"), "positioning": N_("Positioning"), "avatar_url": N_("Avatar"),
    "signature": N_("Signature"), "greeting": N_("Greeting"), "moments_cover_url": N_("Moments cover"),
    "wecom_userid": N_("WeCom ID"), "open_kfid": N_("WeCom ID"), "mp_appid": N_("WeCom ID"),
    "qr_image_url": N_("Own WeChat QR code"), "qr_expires_on": N_("QR code valid until"),
    "groups": N_("Tag groups"),
    # customers (the portrait's own labels)
    "name": N_("Name"), "remark_name": N_("Remark name"), "salutation": N_("Salutation"), "phones": N_("Phones"),
    "description": N_("Description"), "tags": N_("Tags"), "source": N_("Source"), "gender": N_("Gender"),
    "age_band": N_("Age band"), "city": N_("City"), "job": N_("Job"), "income_band": N_("Income band"),
    "family": N_("Family"), "objective_notes": N_("Objective facts"),
    "emotional_notes": N_("Emotional and sensory notes"), "custom_fields": N_("Custom field"),
    "content": N_("Content"), "amount": N_("Amount"), "recipient": N_("Recipient"), "phone": N_("Phone"),
    "region": N_("Region"), "label": N_("Label"), "field_type": N_("Type"), "choices": N_("Choices"),
    "key": N_("Key"),
    # channels
    "status": N_("Status"), "starts_on": N_("From"), "ends_on": N_("To"), "cost_model": N_("Cost model"),
    "cost_amount": N_("Cost"), "account_strategy": N_("Which account"), "tag_names": N_("Tags"),
    "incentive_kind": N_("Incentive"), "incentive_text": N_("Incentive on the poster"),
    "welcome_text": N_("Welcome message"), "fallback_text": N_("When the coupons run out"),
    # auto-replies and incidents
    "match_kind": N_("Match"), "keywords": N_("Keywords"), "pattern": N_("Pattern"), "hours": N_("Service hours"),
    "priority": N_("Priority"), "reply": N_("Reply"), "hourly_cap": N_("At most per hour"),
    "version": N_("Version"), "switched_off_for_review": N_("Switched off for review"),
    "recipients": N_("Recipients"), "title": N_("Title"), "correction": N_("Correction"),
    # exports, imports, jobs, sessions
    "rows": N_("Rows"), "format": N_("Format"), "via": N_("Via"), "filter": N_("Filter"),
    "phones_masked": N_("Phones masked"), "phones_included": N_("Phones included"), "days": N_("Days"),
    "sessions_ended": N_("Sessions ended"), "throttle_rows_removed": N_("Failed-login locks removed"),
    "changed": N_("Changed settings"), "mode": N_("Mode"), "customers": N_("Customers"), "count": N_("Count"),
    "action": N_("Action"), "file": N_("File"), "merge_id": N_("Merge"), "wecom_id": N_("WeCom ID"),
    "ok": N_("Succeeded"), "enabled": N_("Enabled"),
    # the library (话术库 / 素材库)
    "text": N_("Text"), "url": N_("Link address"), "appid": N_("Mini-program AppID"),
    "pagepath": N_("Mini-program page"),
    "welcome_script_id": N_("Welcome script"), "welcome_material_ids": N_("Welcome attachments"),
    # group rules (groups.moderation)
    "rule": N_("Rule"), "offence": N_("Offence"), "actions": N_("Actions"),
    "finding": N_("Finding"), "appeal": N_("Appeal"), "reason": N_("Reason"), "note": N_("Note"),
    "group_kind": N_("Group kind"), "params": N_("Parameters"), "ladder": N_("Actions by offence"),
    "rule_id": N_("Rule"), "findings": N_("Findings"), "messages": N_("Messages"),
    # export permissions: one field per role
    "admin": N_("role.admin"), "planner": N_("role.planner"), "operator": N_("role.operator"),
    "service": N_("role.service"),
    # 客户SOP and the send-quota ledger
    "trigger": N_("Trigger"), "steps": N_("Steps"), "exits": N_("Early exit"),
    "quota_mode": N_("Send quota rule"),
    # goals (goals.service snapshots)
    "metric": N_("Metric"), "scope": N_("Scope"), "target": N_("Target"), "start": N_("Start"),
    "deadline": N_("Deadline"), "subgoals": N_("Sub-goals"),
}
# 朋友圈 calendar (moments.service snapshots)
FIELDS |= {"module": N_("Module"), "column_id": N_("Column"), "text": N_("Text"), "images": N_("Images"),
           "tag_ids": N_("Visible to customers with these tags"), "scheduled_at": N_("Publish at")}
# a field whose label depends on the object ("kind" is a channel's type, a touch's kind …)
KIND_FIELDS: dict[str, dict[str, str]] = {
    "channel": {"kind": N_("Type")},
    "account": {"kind": N_("Type")},
    "touch": {"kind": N_("Kind")},
    "library_item": {"kind": N_("Type")},
    "sop": {"conditions": N_("Audience")},
    "group_finding": {"trigger": N_("Trigger message")},
}

# values shown in the words of the pages: "kind.field", then "field", then "*" (any field)
VALUES: dict[str, dict[str, str]] = {
    "role": {"admin": N_("role.admin"), "planner": N_("role.planner"), "operator": N_("role.operator"),
             "service": N_("role.service")},
    "via": {"console": N_("Console"), "api": N_("API")},
    "format": {"csv": "CSV", "xlsx": "XLSX"},
    "account.kind": {"wecom": N_("WeCom"), "wecom_kf": N_("WeChat customer service"),
                     "personal": N_("Personal WeChat")},
    # customers.models.TouchKind, labelled "touch.<kind>" as on the timeline
    "touch.kind": {kind: f"touch.{kind}" for kind in ("chat", "moments_like", "moments_comment", "moments_engaged",
                                                      "purchase", "offline_event", "note", "tag_change",
                                                      "field_change", "system")},
    "channel.kind": {"store_staff": N_("Store staff"), "online_ad": N_("Online ad"), "parcel_card": N_("Parcel card"),
                     "app": N_("App / mini program / channels"), "offline_event": N_("Offline event"),
                     "promoter": N_("Promoter"), "circle": N_("Circle (borrow / mix / swap / build)")},
    "status": {"active": N_("Active"), "paused": N_("Paused"), "archived": N_("Archived"), "retired": N_("Retired")},
    "library_item.kind": {"script": N_("Script"), "image": N_("Image"), "link": N_("Link"),
                          "miniprogram": N_("Mini-program card"), "file": N_("File")},
    "sop.status": {"running": N_("Running"), "paused": N_("Paused"), "stopped": N_("Stopped")},
    "quota_mode": {"month": N_("As many a month as the month has days (WeCom's default)"), "week": N_("7 a week"),
                   "day": N_("1 a day")},
    "cost_model": {"fixed": N_("Fixed budget"), "per_add": N_("Per added friend"),
                   "per_promoter_reward": N_("Promoter rewards")},
    "account_strategy": {"single": N_("One account"), "round_robin": N_("Round robin"),
                         "least_utilised": N_("Least utilised")},
    "incentive_kind": {"none": N_("None"), "coupon": N_("Coupon code"), "gift": N_("Gift"),
                       "qualification": N_("Purchase qualification"), "knowledge": N_("Knowledge pack")},
    "match_kind": {"contains": N_("Message contains a keyword"), "exact": N_("Message is exactly a keyword"),
                   "regex": N_("Regular expression"), "outside_hours": N_("Outside service hours")},
    # which connection settings were saved (never their values)
    "wecom_connection.changed": {"corp_id": N_("Corp ID"), "token": N_("Token"), "aes_key": N_("EncodingAESKey"),
                                 "secret": N_("Secret"), "kf_secret": N_("WeChat customer service Secret"),
                                 "api_base": N_("API base")},
    "mp_connection.changed": {"appid": N_("AppID"), "token": N_("Token"), "aes_key": N_("EncodingAESKey"),
                              "secret": N_("AppSecret"), "api_base": N_("API base")},
    "*": {"none": N_("May not export"), "masked": N_("Phones masked"), "full": N_("Full phones"),
          "true": N_("Yes"), "false": N_("No")},
}

# summaries that are codes themselves (channel alerts are stored as their English source)
SUMMARIES: frozenset[str] = frozenset({"coupon pool empty", "every account is at capacity",
                                       "unknown channel state", N_("all auto-replies of this account")})


def kind_label(kind: str) -> str:
    known = KINDS.get(kind)
    return _(known.label) if known else kind


def action_label(action: str) -> str:
    known = ACTIONS.get(action)
    return _(known) if known else action


def field_label(name: str, kind: str = "") -> str:
    known = KIND_FIELDS.get(kind, {}).get(name) or FIELDS.get(name)
    return _(known) if known else name


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def value_text(name: str, value: Any, kind: str = "") -> str:
    """A value as the pages show it: enum values translated, lists joined, nothing as —."""
    if _empty(value):
        return "—"
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(value, list):
        return "、".join(value_text(name, v, kind) for v in value)
    if isinstance(value, dict):
        return "；".join(f"{field_label(k, kind)}：{value_text(k, v, kind)}" for k, v in value.items() if not _empty(v))
    text = str(value)
    for labels in (VALUES.get(f"{kind}.{name}", {}), VALUES.get(name, {}), VALUES["*"]):
        if text in labels:
            return _(labels[text])
    return text


def entity_url(kind: str, entity_id: str) -> str | None:
    known = KINDS.get(kind)
    if known is None or known.url is None:
        return None
    if "{id}" in known.url:
        return known.url.format(id=entity_id) if entity_id.isdigit() else None
    return known.url


_REPORT_SUMMARY = re.compile(r"(\d+) days(?:, (csv|xlsx))?")  # a report export's summary: "30 days, csv"


def summary_text(summary: str, kind: str = "") -> str:
    """The stored summary in words: a trailing stored code (``渠道A: coupon pool empty``), a
    connection's saved settings (``corp_id, secret``) and its test (``test connection: ok``)."""
    head, sep, tail = summary.rpartition(": ")
    if tail in SUMMARIES:
        return f"{head}{sep}{_(tail)}"
    if summary in SUMMARIES:
        return _(summary)
    report = _REPORT_SUMMARY.fullmatch(summary) if kind in ("channel_report", "service_report") else None
    if report:
        days = _("Last {days} days", days=report.group(1))
        return f"{days}，{report.group(2).upper()}" if report.group(2) else days
    settings = VALUES.get(f"{kind}.changed")
    if settings and summary:
        if head == "test connection":
            return _("Connection test: {outcome}", outcome=_("Succeeded") if tail == "ok" else tail)
        keys = summary.split(", ")
        if all(key in settings for key in keys):
            return "、".join(_(settings[key]) for key in keys)
    return summary


@dataclass(frozen=True)
class Change:
    label: str
    before: str
    after: str


@dataclass(frozen=True)
class Described:
    """One audit entry as people read it."""

    actor: str
    action: str
    kind: str
    name: str
    url: str | None
    summary: str
    changes: list[Change] = field(default_factory=list)


def changes(before: dict[str, Any] | None, after: dict[str, Any] | None, kind: str = "") -> list[Change]:
    """Field by field, labelled; an update shows only the fields that changed, a creation only
    the fields that were set."""
    before, after = before or {}, after or {}
    out: list[Change] = []
    for key in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(key), after.get(key)
        if (key in before and key in after and old == new) or (_empty(old) and _empty(new)):
            continue
        out.append(Change(field_label(key, kind), value_text(key, old, kind) if key in before else "",
                          value_text(key, new, kind) if key in after else ""))
    return out


def describe(entry: Any, *, actor_names: dict[int, str] | None = None) -> Described:
    """An ``AuditEntry`` in words: the actor by display name, the object by its stored name."""
    actor = (actor_names or {}).get(entry.user_id or 0) or entry.actor_name or entry.actor
    if entry.actor == "system" and entry.user_id is None:
        actor = _("System")
    name = entry.entity_name or (f"#{entry.entity_id}" if entry.entity_id else "")
    return Described(actor=actor, action=action_label(entry.action), kind=kind_label(entry.entity_type),
                     name=name, url=entity_url(entry.entity_type, entry.entity_id),
                     summary=summary_text(entry.summary, entry.entity_type),
                     changes=changes(entry.before, entry.after, entry.entity_type))
