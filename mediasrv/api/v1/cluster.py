"""The cluster as the HTTP API sees it: GET /v1/cluster (admin: the nodes and their load), where a
join goes (this node, or a redirect to the room's owner), and commands run on the owner of a room.
Without `redis_url` there is no cluster: every room is served here and /v1/cluster lists this node."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from mediasrv.api import appkeys as keys
from mediasrv.api.http_common import HttpError, authenticate, json_response
from mediasrv.authz import require_admin
from mediasrv.cluster import NodeUnreachable, NoServingNode

log = logging.getLogger(__name__)


async def owner_url(request: web.Request, room: str) -> str | None:
    """None: this node serves the room (no cluster, or it owns it); else the owner's base URL.
    The first join of a room places it (see mediasrv.cluster.placement)."""
    cluster = request.app.get(keys.CLUSTER)
    if cluster is None:
        return None
    try:
        return await cluster.route(room)
    except NoServingNode:
        raise HttpError(503, "no_serving_node", "no node of the cluster takes new rooms now",
                        {"Retry-After": "2"}) from None
    except RedisError:
        log.warning("cluster: Redis unreachable while placing a room", exc_info=True)
        raise HttpError(503, "cluster_unavailable", "the cluster's shared state is unreachable",
                        {"Retry-After": "2"}) from None


async def on_owner(request: web.Request, room: str, op: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """Run control command `op` on the node that owns `room` when that is another node: its answer
    ({"status", ...}). None when the command is this node's to run (no cluster, the room is here,
    or no live node owns it). 503 if the owner cannot be reached, 504 if it does not answer in time."""
    cluster = request.app.get(keys.CLUSTER)
    if cluster is None or cluster.hosts(room) is not None:
        return None
    try:
        owner = await cluster.live_owner(room)
        if owner is None or owner.id == cluster.node_id:
            return None
        return await cluster.command(owner, op, {"room": room, **args})
    except NodeUnreachable:
        raise HttpError(503, "owner_unreachable", f"the node that hosts room {room!r} does not answer; "
                        "retry when its lease has expired", {"Retry-After": "2"}) from None
    except TimeoutError:
        raise HttpError(504, "owner_timeout", f"the node that hosts room {room!r} did not answer within "
                        f"{cluster.settings.cluster_command_timeout_s:g} s") from None
    except RedisError:
        raise HttpError(503, "cluster_unavailable", "the cluster's shared state is unreachable",
                        {"Retry-After": "2"}) from None


def answer(reply: dict[str, Any]) -> web.Response:
    """The HTTP response for an owner's answer to a command."""
    status = int(reply.get("status", 500))
    if status >= 400:
        raise HttpError(status, str(reply.get("code", "error")), str(reply.get("message", "")))
    if "body" in reply:
        return json_response(reply["body"], status=status)
    return web.Response(status=status)


async def get_cluster(request: web.Request) -> web.Response:
    require_admin(authenticate(request))
    cluster = request.app.get(keys.CLUSTER)
    if cluster is None:
        rooms = [r for r in request.app[keys.ROOMS].list() if not r.closed]
        return json_response({"enabled": False, "node": None, "nodes": [], "rooms": len(rooms)})
    try:
        nodes = await cluster.nodes()
    except RedisError:
        raise HttpError(503, "cluster_unavailable", "the cluster's shared state is unreachable") from None
    return json_response({"enabled": True, "node": cluster.node_id,
                          "nodes": [{"id": n.id, "url": n.url, "media_addresses": n.media_addresses,
                                     "state": n.state, "started_at": n.started_at,
                                     "updated_at": n.updated_at, "load": n.load} for n in nodes]})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/cluster", get_cluster, allow_head=False)
