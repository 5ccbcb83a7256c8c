"""Outbound webhooks, for admins: subscriptions, the delivery log, redelivery (api.webhooks; docs/WEBHOOKS.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlmodel import Session

from api import webhooks
from api.audit import set_audit_object
from api.auth import Principal, require
from api.deps import RowId, RowIdQuery, get_session
from api.errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)
SessionDep = Annotated[Session, Depends(get_session)]
Admin = Annotated[Principal, Depends(require())]
Id = RowId


def _wake(request: Request) -> None:
    worker = getattr(request.app.state, "webhooks", None)
    if worker is not None:
        worker.wake()


@router.post("", response_model=webhooks.SubscriptionCreated, status_code=201)
def create_subscription(body: webhooks.SubscriptionIn, request: Request, session: SessionDep,
                        principal: Admin) -> webhooks.SubscriptionCreated:
    """Subscribe a URL to event kinds; the answer holds the signing secret, shown only this once."""
    out = webhooks.create_subscription(session=session, sub_in=body, by=principal.name,
                                       allow_private=request.app.state.settings.webhook_allow_private)
    set_audit_object(request, out.id)
    return out


@router.get("", response_model=list[webhooks.SubscriptionPublic])
def list_subscriptions(session: SessionDep, principal: Admin) -> list[webhooks.SubscriptionPublic]:
    """Every subscription (never the secrets)."""
    return webhooks.list_subscriptions(session=session)


@router.delete("/{subscription_id}", status_code=204)
def delete_subscription(subscription_id: Id, request: Request, session: SessionDep, principal: Admin) -> Response:
    """Stop a subscription; its pending deliveries are given up, the delivery log stays."""
    set_audit_object(request, subscription_id)
    webhooks.delete_subscription(session=session, subscription_id=subscription_id)
    return Response(status_code=204)


@router.get("/deliveries", response_model=list[webhooks.DeliveryPublic])
def list_deliveries(
    session: SessionDep,
    principal: Admin,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    subscription_id: RowIdQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[webhooks.DeliveryPublic]:
    """The delivery log, newest first, each delivery with its attempts."""
    return webhooks.list_deliveries(session=session, status=status, kind=kind, subscription_id=subscription_id,
                                    limit=limit)


@router.post("/deliveries/{delivery_id}/redeliver", status_code=202)
def redeliver(delivery_id: Id, request: Request, session: SessionDep, principal: Admin) -> Response:
    """Send a delivery again with the same idempotency key."""
    set_audit_object(request, delivery_id)
    webhooks.redeliver(session=session, delivery_id=delivery_id)
    _wake(request)
    return Response(status_code=202)
