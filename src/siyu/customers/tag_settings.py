"""An admin's edits to tags, tag groups and custom fields: rename, merge, delete, reorder, retire.

Every change is one transaction and one audit entry. A merge moves every customer of one tag to
the other in two set-based statements (whatever the number of customers), and the places that
name tags follow: channels (which tag their new friends by name) and segments (by id). Tags that
Siyu computes from the lifecycle rules, and tags mirrored from WeCom's corp tags (edited in WeCom,
which pushes the change back), are not edited here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, func, insert, literal, select, update
from sqlalchemy.orm import Session, aliased

from siyu.channels.models import Channel
from siyu.core.db import utcnow
from siyu.core.errors import Conflict, Invalid, NotFound
from siyu.core.viewer import Viewer
from siyu.customers.models import CustomerTag, CustomField, FieldType, Tag, TagGroup
from siyu.customers.schemas import CustomFieldUpdate
from siyu.segments.models import Segment
from siyu.team import service as team_service


def get_tag(session: Session, *, tag_id: int) -> Tag:
    tag = session.get(Tag, tag_id)
    if tag is None:
        raise NotFound("Tag not found")
    return tag


def _editable(tag: Tag) -> None:
    if tag.group.is_computed:
        raise Invalid("Tags of group {group} are computed and cannot be edited", field="group", group=tag.group.name)
    if tag.wecom_id:
        raise Invalid("Tag {name} is a WeCom corp tag: change it in WeCom, which sends the change here",
                      field="tag", name=tag.name)


def _name(text: str) -> str:
    name = " ".join(text.split())
    if not name:
        raise Invalid("Required", field="name")
    if len(name) > 64:
        raise Invalid("At most {max} characters", field="name", max=64)
    if ":" in name or "：" in name:
        raise Invalid("A tag's name cannot contain a colon (it separates group and tag)", field="name")
    return name


def tag_customer_count(session: Session, *, tag_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(CustomerTag).where(CustomerTag.tag_id == tag_id)) or 0)


def group_customer_count(session: Session, *, group_id: int) -> int:
    """Customers holding any tag of the group (each counted once)."""
    return int(session.scalar(select(func.count(func.distinct(CustomerTag.customer_id))).join(
        Tag, Tag.id == CustomerTag.tag_id).where(Tag.group_id == group_id)) or 0)


def _rename_in_channels(session: Session, *, old: list[str], new: str | None) -> None:
    """Channels tag new friends by name: a renamed tag keeps them tagging, a deleted one drops out."""
    for channel in session.scalars(select(Channel)):
        names = list(channel.tag_names or [])
        if not any(n in old for n in names):
            continue
        replaced = [new if n in old else n for n in names]
        channel.tag_names = [n for i, n in enumerate(replaced) if n is not None and n not in replaced[:i]]


def _tag_names(group: TagGroup, name: str) -> list[str]:
    """How a tag may be written where tags are named: ``组:标签`` or ``组：标签``."""
    return [f"{group.name}:{name}", f"{group.name}：{name}"]


def rename_tag(session: Session, *, tag_id: int, name: str, actor: Viewer) -> Tag:
    tag = get_tag(session, tag_id=tag_id)
    _editable(tag)
    name = _name(name)
    if name == tag.name:
        return tag
    if session.scalar(select(Tag.id).where(Tag.group_id == tag.group_id, Tag.name == name, Tag.id != tag.id)):
        raise Conflict("Tag {name} already exists in {group}; merge the two tags instead", field="name", name=name,
                       group=tag.group.name)
    old = tag.name
    _rename_in_channels(session, old=_tag_names(tag.group, old), new=f"{tag.group.name}:{name}")
    tag.name = name
    session.flush()
    team_service.record_audit(session, actor=actor, action="update", entity_type="tag", entity_id=tag.id,
                              summary=f"{tag.group.name}:{name}", before={"name": old}, after={"name": name})
    return tag


def _swap_tag_in_conditions(node: Any, old: int, new: int | None) -> Any:
    if isinstance(node, dict):
        out = {k: _swap_tag_in_conditions(v, old, new) for k, v in node.items()}
        if isinstance(out.get("tag_ids"), list) and old in out["tag_ids"]:
            ids = [new if i == old else i for i in out["tag_ids"]]
            out["tag_ids"] = [i for n, i in enumerate(ids) if i not in ids[:n]]
        return out
    if isinstance(node, list):
        return [_swap_tag_in_conditions(v, old, new) for v in node]
    return node


def merge_tags(session: Session, *, source_id: int, target_id: int, actor: Viewer) -> int:
    """Every customer of ``source`` gets ``target`` (set-based), then ``source`` is deleted; channels and
    segments that named ``source`` name ``target``. Returns how many customers the source had."""
    if source_id == target_id:
        raise Invalid("A tag cannot be merged into itself", field="target_id")
    source = get_tag(session, tag_id=source_id)
    target = get_tag(session, tag_id=target_id)
    _editable(source)
    _editable(target)
    if source.group_id != target.group_id:
        raise Invalid("Only tags of the same group can be merged", field="target_id")
    count = tag_customer_count(session, tag_id=source.id)
    held = aliased(CustomerTag)
    session.execute(insert(CustomerTag).from_select(
        ["customer_id", "tag_id", "created_at"],
        select(CustomerTag.customer_id, literal(target.id), CustomerTag.created_at).where(
            CustomerTag.tag_id == source.id,
            ~exists().where(held.customer_id == CustomerTag.customer_id, held.tag_id == target.id))))
    session.execute(delete(CustomerTag).where(CustomerTag.tag_id == source.id))
    _rename_in_channels(session, old=_tag_names(source.group, source.name), new=f"{target.group.name}:{target.name}")
    for segment in session.scalars(select(Segment)):
        swapped = _swap_tag_in_conditions(segment.conditions, source.id, target.id)
        if swapped != segment.conditions:
            segment.conditions = swapped
    source_name = f"{source.group.name}:{source.name}"
    session.delete(source)
    session.flush()
    team_service.record_audit(session, actor=actor, action="merge", entity_type="tag", entity_id=target.id,
                              summary=f"{target.group.name}:{target.name}",
                              before={"name": source_name}, after={"name": target.name, "customers": count})
    return count


def delete_tag(session: Session, *, tag_id: int, expected_count: int, actor: Viewer) -> int:
    """Delete a tag, removing it from its customers. ``expected_count`` is the number the admin confirmed:
    when more customers got the tag meanwhile, nothing is deleted and the new number is asked for again."""
    tag = get_tag(session, tag_id=tag_id)
    _editable(tag)
    count = tag_customer_count(session, tag_id=tag.id)
    if count != expected_count:
        raise Conflict("{n} customers have this tag now; confirm again", field="confirm", n=count)
    name = f"{tag.group.name}:{tag.name}"
    _rename_in_channels(session, old=_tag_names(tag.group, tag.name), new=None)
    session.execute(delete(CustomerTag).where(CustomerTag.tag_id == tag.id))
    session.delete(tag)
    session.flush()
    team_service.record_audit(session, actor=actor, action="delete", entity_type="tag", entity_id=tag_id,
                              summary=name, before={"name": name, "customers": count})
    return count


def _move(rows: list[Any], item: Any, direction: str) -> list[Any]:
    index = rows.index(item)
    other = index - 1 if direction == "up" else index + 1
    if direction not in ("up", "down"):
        raise Invalid("Unknown direction", field="direction")
    if 0 <= other < len(rows):
        rows[index], rows[other] = rows[other], rows[index]
    return rows


def move_tag(session: Session, *, tag_id: int, direction: str, actor: Viewer) -> None:
    """Move a tag one place up or down in its group (the order pickers and pages show)."""
    tag = get_tag(session, tag_id=tag_id)
    _editable(tag)
    rows = _move(sorted(tag.group.tags, key=lambda t: (t.sort_order, t.id)), tag, direction)
    for position, row in enumerate(rows):
        row.sort_order = position
    session.flush()
    team_service.record_audit(session, actor=actor, action="reorder", entity_type="tag_group",
                              entity_id=tag.group_id, summary=tag.group.name,
                              after={"tags": [t.name for t in rows]})


def move_group(session: Session, *, group_id: int, direction: str, actor: Viewer) -> None:
    group = _group(session, group_id)
    rows = _move(list(session.scalars(select(TagGroup).order_by(TagGroup.sort_order, TagGroup.id))), group, direction)
    for position, row in enumerate(rows):
        row.sort_order = position * 10
    session.flush()
    team_service.record_audit(session, actor=actor, action="reorder", entity_type="tag_group", entity_id=group.id,
                              summary=group.name, after={"groups": [g.name for g in rows]})


def _group(session: Session, group_id: int) -> TagGroup:
    group = session.get(TagGroup, group_id)
    if group is None:
        raise NotFound("Tag group not found")
    return group


def rename_group(session: Session, *, group_id: int, name: str, actor: Viewer) -> TagGroup:
    group = _group(session, group_id)
    if group.wecom_id:
        raise Invalid("Group {name} mirrors WeCom's corp tags: rename it in WeCom", field="name", name=group.name)
    name = _name(name)
    if name == group.name:
        return group
    if session.scalar(select(TagGroup.id).where(TagGroup.name == name, TagGroup.id != group.id)):
        raise Conflict("Tag group {name} already exists", field="name", name=name)
    old = group.name
    for tag in group.tags:
        _rename_in_channels(session, old=_tag_names(group, tag.name), new=f"{name}:{tag.name}")
    group.name = name
    session.flush()
    team_service.record_audit(session, actor=actor, action="update", entity_type="tag_group", entity_id=group.id,
                              summary=name, before={"name": old}, after={"name": name})
    return group


def delete_group(session: Session, *, group_id: int, expected_count: int, actor: Viewer) -> int:
    """Delete a team-made group with its tags; like a tag, only with the customer count confirmed."""
    group = _group(session, group_id)
    if group.is_computed or group.wecom_id:
        raise Invalid("Group {name} is kept by Siyu or WeCom and cannot be deleted", field="group", name=group.name)
    count = group_customer_count(session, group_id=group.id)
    if count != expected_count:
        raise Conflict("{n} customers have this tag now; confirm again", field="confirm", n=count)
    for tag in group.tags:
        _rename_in_channels(session, old=_tag_names(group, tag.name), new=None)
    name = group.name
    session.execute(delete(CustomerTag).where(CustomerTag.tag_id.in_(select(Tag.id).where(Tag.group_id == group.id))))
    session.delete(group)
    session.flush()
    team_service.record_audit(session, actor=actor, action="delete", entity_type="tag_group", entity_id=group_id,
                              summary=name, before={"name": name, "customers": count})
    return count


# ---------------------------------------------------------------- custom fields


def get_field(session: Session, *, field_id: int) -> CustomField:
    item = session.get(CustomField, field_id)
    if item is None:
        raise NotFound("Custom field not found")
    return item


def update_field(session: Session, *, field_id: int, data: CustomFieldUpdate, actor: Viewer) -> CustomField:
    """Change a field's label or choices (its key and type stay: imports, the API and stored values use them).
    A choice still held by customers cannot be removed."""
    from siyu.customers.models import CustomFieldValue

    item = get_field(session, field_id=field_id)
    before = {"label": item.label, "choices": list(item.choices or [])}
    if data.label is not None:
        item.label = data.label
    if data.choices is not None:
        if item.field_type != FieldType.choice.value:
            raise Invalid("Only a choice field has choices", field="choices")
        if not data.choices:
            raise Invalid("A choice field needs at least one choice", field="choices")
        dropped = [c for c in before["choices"] if c not in data.choices]
        if dropped:
            held = session.scalar(select(func.count()).select_from(CustomFieldValue).where(
                CustomFieldValue.field_id == item.id, CustomFieldValue.value.in_(dropped)))
            if held:
                raise Conflict("{n} customers still have a choice you removed; change theirs first", field="choices",
                               n=held)
        item.choices = list(data.choices)
    session.flush()
    team_service.record_audit(session, actor=actor, action="update", entity_type="custom_field", entity_id=item.id,
                              summary=item.label, before=before,
                              after={"label": item.label, "choices": list(item.choices or [])})
    return item


def retire_field(session: Session, *, field_id: int, retired: bool, actor: Viewer) -> CustomField:
    """A retired field leaves forms, imports and filters; its values stay (and come back with it)."""
    item = get_field(session, field_id=field_id)
    if retired == (item.retired_at is not None):
        return item
    session.execute(update(CustomField).where(CustomField.id == item.id).values(
        retired_at=utcnow() if retired else None))
    session.refresh(item)
    team_service.record_audit(session, actor=actor, action="retire" if retired else "restore",
                              entity_type="custom_field", entity_id=item.id, summary=item.label)
    return item
