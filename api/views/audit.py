"""The audit log, for admins: `GET /v1/audit` with filters and paging, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session

from api.audit import MAX_PAGE, AuditPage, query_audit
from api.auth import Principal, require
from api.deps import get_session
from api.errors import ERROR_RESPONSES
from routing.models import IsoDateTime

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=ERROR_RESPONSES)


@router.get("", response_model=AuditPage)
def list_audit(
    session: Annotated[Session, Depends(get_session)],
    principal: Annotated[Principal, Depends(require())],
    who: Annotated[str | None, Query(max_length=128, description="API key name (or `cli:<user>`)")] = None,
    role: Annotated[str | None, Query(max_length=32)] = None,
    method: Annotated[str | None, Query(max_length=8, description="POST, PUT, PATCH, DELETE, JOB or CLI")] = None,
    path_prefix: Annotated[str | None, Query(max_length=512, description="the path starts with this")] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    since: Annotated[IsoDateTime | None, Query(description="at or after (ISO 8601; no zone means UTC)")] = None,
    until: Annotated[IsoDateTime | None, Query(description="before (ISO 8601; no zone means UTC)")] = None,
    object_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=20, description="`next_cursor` of the previous page")] = None,
) -> AuditPage:
    """Audited writes and refusals matching every filter given, newest first (admin only)."""
    return query_audit(session=session, who=who, role=role, method=method, path_prefix=path_prefix, status=status,
                       since=since, until=until, object_id=object_id, limit=limit, cursor=cursor)
