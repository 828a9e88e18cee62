"""GET /v1/audit: the audit log for admins, newest first, with filters and cursor paging."""

from __future__ import annotations

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import authenticate, json_response
from mediasrv.api.v1.common import query_float, query_int, query_str
from mediasrv.authz import require_admin

MAX_PAGE = 1000


async def list_audit(request: web.Request) -> web.Response:
    require_admin(authenticate(request))
    action = query_str(request, "action", max_len=128)
    room = query_str(request, "room", max_len=128)
    visit = query_str(request, "visit", max_len=128)  # one visit of a room name that later visits reuse
    limit = query_int(request, "limit", minimum=1, maximum=MAX_PAGE, default=100)
    before = query_int(request, "before_id", minimum=1, maximum=2**62)
    since = query_float(request, "since")
    assert limit is not None
    entries = await request.app[keys.AUDIT].query(
        since=since, action=action, room=room, limit=limit, before_id=before, visit=visit
    )
    next_before = entries[-1]["id"] if len(entries) == limit else None
    return json_response({"entries": entries, "next_before_id": next_before})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/audit", list_audit, allow_head=False)
