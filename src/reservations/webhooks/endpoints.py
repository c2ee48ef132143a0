"""HTTP for webhook endpoints (admin keys only): parse, authorize, call the service, shape
the reply."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from reservations.deps import Admin, IdemKey, IfMatch, Svc, idempotency, send
from reservations.kit.openapi import problems
from reservations.webhooks import service
from reservations.webhooks.schemas import (
    AttemptPage,
    TestMessage,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookRead,
    WebhookUpdate,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _reply(endpoint: WebhookRead, status: int = 200, **headers: str) -> Response:
    return Response(
        endpoint.model_dump_json(),
        status_code=status,
        media_type="application/json",
        headers={"ETag": f'"{endpoint.version}"', **headers},
    )


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses=problems(401, 403, 409, 413, 422),
)
async def create_webhook(
    request: Request, body: WebhookCreate, caller: Admin, svc: Svc, key: IdemKey
) -> Response:
    """Register an endpoint. The answer carries the signing `secret` once; deliveries are
    signed with it (Standard Webhooks). The endpoint receives every matching event committed
    after this request."""
    idem = idempotency(request, caller, key, body.model_dump(mode="json"))
    return send(await service.create(svc, caller, body, idem))


@router.get("", response_model=WebhookPage, responses=problems(401, 403, 422))
async def list_webhooks(
    caller: Admin,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> WebhookPage:
    """The tenant's endpoints in creation order."""
    return await service.list_page(svc, caller, limit=limit, cursor=cursor)


@router.get("/{webhook_id}", response_model=WebhookRead, responses=problems(401, 403, 404, 422))
async def get_webhook(webhook_id: UUID, caller: Admin, svc: Svc) -> Response:
    """One endpoint, with whether it is enabled and, if not, why."""
    return _reply(await service.get(svc, caller, webhook_id))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookRead,
    responses=problems(401, 403, 404, 412, 413, 422),
)
async def update_webhook(
    webhook_id: UUID, body: WebhookUpdate, caller: Admin, svc: Svc, version: IfMatch
) -> Response:
    """Change `url`, `event_types`, `description`, or `enabled` (true re-enables an endpoint
    the worker disabled and retries its waiting messages at once). A new filter applies to
    events not yet queued. Send If-Match to avoid overwriting a change you have not seen."""
    return _reply(await service.update(svc, caller, webhook_id, body, version))


@router.delete("/{webhook_id}", status_code=204, responses=problems(401, 403, 404, 422))
async def delete_webhook(webhook_id: UUID, caller: Admin, svc: Svc) -> Response:
    """Delete the endpoint, its queue and its delivery log."""
    await service.delete(svc, caller, webhook_id)
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=AttemptPage,
    responses=problems(401, 403, 404, 422),
)
async def list_deliveries(
    webhook_id: UUID,
    caller: Admin,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AttemptPage:
    """The delivery log: every attempt, newest first, with the message (`webhook-id`),
    the event, the outcome, the receiver's status code, latency and error."""
    return await service.attempts(svc, caller, webhook_id, limit=limit, cursor=cursor)


@router.post(
    "/{webhook_id}/test",
    status_code=202,
    response_model=TestMessage,
    responses=problems(401, 403, 404, 409, 422),
)
async def send_test(
    request: Request, webhook_id: UUID, caller: Admin, svc: Svc, key: IdemKey
) -> Response:
    """Queue a signed `webhook.test` message to the endpoint; follow it in the log."""
    idem = idempotency(request, caller, key, None)
    return send(await service.send_test(svc, caller, webhook_id, idem))
