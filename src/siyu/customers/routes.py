from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from siyu.core.deps import AdminApiViewer, ApiViewer, SessionDep
from siyu.core.ids import Id
from siyu.core.viewer import Viewer
from siyu.customers import jobs as customers_jobs
from siyu.customers import service
from siyu.customers.filters import FilterDep
from siyu.customers.lifecycle import LifecycleRules
from siyu.customers.schemas import (
    AddressIn,
    AddressOut,
    AttachmentIn,
    AttachmentOut,
    CustomerIn,
    CustomerOut,
    CustomerPage,
    CustomerUpdate,
    CustomFieldIn,
    CustomFieldOut,
    TagGroupIn,
    TagGroupOut,
    TagIn,
    TagName,
    TagOut,
    TouchIn,
    TouchOut,
    TouchPage,
)

api = APIRouter(tags=["customers"])


@api.get("/customers", response_model=CustomerPage,
         responses={404: {"description": "The saved segment named by `segment` does not exist."}})
def list_customers(
    session: SessionDep,
    viewer: ApiViewer,
    flt: FilterDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> CustomerPage:
    service.check_search_rate(viewer, flt.q)
    page = service.list_customers(session, flt=flt, viewer=viewer, limit=limit, cursor=cursor)
    return CustomerPage(items=service.to_summaries(session, customers=page.items, viewer=viewer),
                        next_cursor=page.next_cursor)


@api.post("/customers", response_model=CustomerOut, status_code=201)
def create_customer(session: SessionDep, viewer: ApiViewer, data: CustomerIn) -> CustomerOut:
    customer = service.create_customer(session, data=data, viewer=viewer)
    session.commit()
    return service.to_detail(session, customer=customer, viewer=viewer)


@api.get("/customers/{customer_id}", response_model=CustomerOut)
def get_customer(session: SessionDep, viewer: ApiViewer, customer_id: Id) -> CustomerOut:
    customer = service.get_customer(session, customer_id=customer_id, viewer=viewer)
    return service.to_detail(session, customer=customer, viewer=viewer)


@api.patch("/customers/{customer_id}", response_model=CustomerOut)
def update_customer(session: SessionDep, viewer: ApiViewer, customer_id: Id, data: CustomerUpdate) -> CustomerOut:
    customer = service.update_customer(session, customer_id=customer_id, data=data, viewer=viewer)
    session.commit()
    return service.to_detail(session, customer=customer, viewer=viewer)


class TagChange(BaseModel):
    add: list[TagName] = Field(default_factory=list, max_length=100)
    remove: list[TagName] = Field(default_factory=list, max_length=100)


@api.post("/customers/{customer_id}/tags", response_model=CustomerOut)
def change_tags(session: SessionDep, viewer: ApiViewer, customer_id: Id, data: TagChange) -> CustomerOut:
    service.set_customer_tags(
        session, customer_id=customer_id, viewer=viewer,
        add=service.resolve_tags(session, names=data.add),
        remove=service.resolve_tags(session, names=data.remove, create_missing=False))
    session.commit()
    customer = service.get_customer(session, customer_id=customer_id, viewer=viewer)
    return service.to_detail(session, customer=customer, viewer=viewer)


@api.get("/customers/{customer_id}/touches", response_model=TouchPage)
def list_touches(session: SessionDep, viewer: ApiViewer, customer_id: Id,
                 limit: Annotated[int, Query(ge=1, le=200)] = 50, cursor: str | None = None) -> TouchPage:
    page = service.list_touches(session, customer_id=customer_id, viewer=viewer, limit=limit, cursor=cursor)
    return TouchPage(items=[_touch_out(t, viewer) for t in page.items], next_cursor=page.next_cursor)


def _touch_out(touch: Any, viewer: Viewer) -> TouchOut:
    out = TouchOut.model_validate(touch)
    return out.model_copy(update={"content": service.touch_content(touch, viewer),
                                  "details": service.touch_details(touch, viewer)})


@api.post("/customers/{customer_id}/touches", response_model=TouchOut, status_code=201)
def add_touch(session: SessionDep, viewer: ApiViewer, customer_id: Id, data: TouchIn) -> TouchOut:
    touch = service.add_touch(session, customer_id=customer_id, data=data, viewer=viewer)
    session.commit()
    return _touch_out(touch, viewer)


@api.post("/customers/{customer_id}/addresses", response_model=AddressOut, status_code=201)
def add_address(session: SessionDep, viewer: ApiViewer, customer_id: Id, data: AddressIn) -> AddressOut:
    address = service.add_address(session, customer_id=customer_id, data=data, viewer=viewer)
    session.commit()
    return AddressOut.model_validate(address)


@api.delete("/customers/{customer_id}/addresses/{address_id}", status_code=204)
def delete_address(session: SessionDep, viewer: ApiViewer, customer_id: Id, address_id: Id) -> None:
    service.delete_address(session, customer_id=customer_id, address_id=address_id, viewer=viewer)
    session.commit()


@api.post("/customers/{customer_id}/attachments", response_model=AttachmentOut, status_code=201)
def add_attachment(session: SessionDep, viewer: ApiViewer, customer_id: Id, data: AttachmentIn) -> AttachmentOut:
    attachment = service.add_attachment(session, customer_id=customer_id, data=data, viewer=viewer)
    session.commit()
    return AttachmentOut.model_validate(attachment)


class FriendshipIn(BaseModel):
    account_id: Id
    remark_name: str = Field("", max_length=128)


@api.post("/customers/{customer_id}/friendships", response_model=CustomerOut, status_code=201)
def add_friendship(session: SessionDep, viewer: ApiViewer, customer_id: Id, data: FriendshipIn) -> CustomerOut:
    service.add_friendship(session, customer_id=customer_id, account_id=data.account_id,
                           remark_name=data.remark_name, viewer=viewer)
    session.commit()
    customer = service.get_customer(session, customer_id=customer_id, viewer=viewer)
    return service.to_detail(session, customer=customer, viewer=viewer)


@api.get("/tag-groups")
def list_tag_groups(session: SessionDep, viewer: ApiViewer) -> dict[str, list[TagGroupOut]]:
    return {"items": service.to_tag_groups(service.list_tag_groups(session))}


@api.post("/tag-groups", response_model=TagGroupOut, status_code=201)
def create_tag_group(session: SessionDep, viewer: AdminApiViewer, data: TagGroupIn) -> TagGroupOut:
    group = service.create_tag_group(session, name=data.name, multi_select=data.multi_select, actor=viewer)
    session.commit()
    return service.to_tag_groups([group])[0]


@api.post("/tag-groups/{group_id}/tags", response_model=TagOut, status_code=201)
def create_tag(session: SessionDep, viewer: ApiViewer, group_id: Id, data: TagIn) -> TagOut:
    tag = service.create_tag(session, group_id=group_id, name=data.name, actor=viewer)
    session.commit()
    return TagOut(id=tag.id, name=tag.name, group_id=tag.group_id, group=tag.group.name)


@api.get("/custom-fields")
def list_custom_fields(session: SessionDep, viewer: ApiViewer) -> dict[str, list[CustomFieldOut]]:
    return {"items": [CustomFieldOut.model_validate(f) for f in service.list_custom_fields(session)]}


@api.post("/custom-fields", response_model=CustomFieldOut, status_code=201)
def create_custom_field(session: SessionDep, viewer: AdminApiViewer, data: CustomFieldIn) -> CustomFieldOut:
    item = service.create_custom_field(session, data=data, actor=viewer)
    session.commit()
    return CustomFieldOut.model_validate(item)


@api.get("/lifecycle-rules", response_model=LifecycleRules)
def get_rules(session: SessionDep, viewer: ApiViewer) -> LifecycleRules:
    return service.get_rules(session)


@api.put("/lifecycle-rules")
def put_rules(session: SessionDep, viewer: AdminApiViewer, rules: LifecycleRules) -> dict[str, Any]:
    service.save_rules(session, rules=rules, actor=viewer)
    job_id = customers_jobs.submit_recompute(session, actor=viewer)
    session.commit()
    # Customers are recomputed by a background job; follow it at /api/v1/jobs/{job_id}.
    return {"rules": rules.model_dump(mode="json"), "job_id": job_id, "job_url": f"/api/v1/jobs/{job_id}"}
