"""Small helpers shared by the HTTP handlers: JSON errors, authentication, bounded bodies."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from mediasrv.api import appkeys as keys
from mediasrv.auth import Identity, bearer_token, verify_token
from mediasrv.errors import MediasrvError

log = logging.getLogger(__name__)
WWW_AUTHENTICATE = 'Bearer realm="mediasrv"'

# Everything the server writes as JSON goes through this: NaN/Infinity are not JSON, so a value that
# is not finite is a bug to raise on, never a body a client cannot parse.
dumps = functools.partial(json.dumps, allow_nan=False)


class NonFiniteNumber(ValueError):
    """A JSON number that does not fit a float (1e999999) or a NaN/Infinity literal."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(f"number {text[:40]} is not finite")
    return value


def _no_constant(name: str) -> float:
    raise NonFiniteNumber(f"{name} is not a JSON number")


def loads(data: str | bytes) -> Any:
    """Parse JSON from a client, refusing numbers that are not finite (ValueError/RecursionError)."""
    return json.loads(data, parse_float=_finite_float, parse_constant=_no_constant)


def json_response(data: Any, **kwargs: Any) -> web.Response:
    """`web.json_response` that can never write NaN or Infinity."""
    return web.json_response(data, dumps=dumps, **kwargs)


class HttpError(MediasrvError):
    """An error only the HTTP layer knows about (body limits, content types, headers...)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(code, message, status, headers)


class BodyTimeout(HttpError):
    """The client stopped sending its request body: 408, and the connection is closed."""

    def __init__(self, seconds: float):
        super().__init__(408, "body_timeout", f"the request body did not arrive within {seconds:g} s")


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """The one place HTTP maps errors: every MediasrvError (from a handler or the services it
    calls) becomes `{"error": {"code", "message"}}` with its status and headers."""
    try:
        return await handler(request)
    except MediasrvError as exc:
        headers = exc.headers
        if exc.status == 401:
            headers = {**headers, "WWW-Authenticate": WWW_AUTHENTICATE}
        resp = json_error(exc.status, exc.code, exc.message, headers or None)
        if isinstance(exc, BodyTimeout):
            # The rest of the body may never come: send the answer, then close the connection
            # rather than let aiohttp linger waiting for it (the buffered answer is still sent).
            resp.force_close()
            await resp.prepare(request)
            await resp.write_eof()
            request.protocol.force_close()
        return resp
    except web.HTTPRequestEntityTooLarge as exc:
        return json_error(413, "body_too_large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            code = exc.reason.lower().replace(" ", "_")
            headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
            return json_error(exc.status, code, exc.reason, headers or None)
        raise
    except ConnectionError:
        if not client_gone(request):
            log.exception("%s %s: unexpected error", request.method, route_of(request))
            return json_error(500, "internal_error", "internal server error")
        # The client went away mid-request: nobody to answer, nothing to debug. One line, and a
        # response rather than the exception, which aiohttp would log again with its traceback
        # (writing this one fails quietly on the closed connection).
        log.info("%s %s: client disconnected", request.method, route_of(request))
        resp = json_error(499, "client_disconnected", "the client closed the connection")
        resp.force_close()
        return resp
    except Exception:
        # A bug, not the client's doing: logged here once with its traceback, and answered as JSON
        # like every other error (aiohttp's own answer would be an HTML page).
        log.exception("%s %s: unexpected error", request.method, route_of(request))
        return json_error(500, "internal_error", "internal server error")


def route_of(request: web.Request) -> str:
    """The route's template (`/whip/messages/{recipient}`) for logs: a request's path can carry an
    identity or a room name, which have no place in a log."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unrouted)"


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


QUERY_TOKEN = "access_token"
_QUERY_TOKEN_OK = "_mediasrv_query_token_ok"
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[web.StreamResponse]])


def query_token_allowed(handler: Handler) -> Handler:
    """Mark a route that may take `?access_token=`: only the WebSocket upgrade, because browsers
    cannot set headers on it. Anywhere else a token in the URL would end up in access logs,
    proxies and browser history for nothing."""
    setattr(handler, _QUERY_TOKEN_OK, True)
    return handler


@web.middleware
async def query_token_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """400 token_in_query for `?access_token=` on every route not marked `query_token_allowed`."""
    match = request.match_info
    if (QUERY_TOKEN in request.query and match.http_exception is None
            and not getattr(match.handler, _QUERY_TOKEN_OK, False)):
        raise HttpError(400, "token_in_query",
                        "access tokens in the URL are accepted only for the WebSocket upgrade; "
                        "send 'Authorization: Bearer <token>' instead")
    return await handler(request)


def authenticate(request: web.Request) -> Identity:
    """Verify the bearer token of the Authorization header. What it may do is `mediasrv.authz`'s call."""
    token = bearer_token(request.headers.get("Authorization"))
    return verify_token(request.app[keys.SETTINGS].api_secret, token)


def body_read_timeout(request: web.Request) -> float:
    return float(request.app[keys.SETTINGS].body_read_timeout_s)


async def body_chunks(request: web.Request, size: int) -> AsyncIterator[bytes]:
    """The body in chunks of up to `size` bytes; BodyTimeout when the client sends nothing for
    `body_read_timeout_s` (a gap between reads, so a slow but steady upload is not cut off)."""
    seconds = body_read_timeout(request)
    while True:
        try:
            async with asyncio.timeout(seconds):
                chunk = await request.content.read(size)
        except TimeoutError:
            raise BodyTimeout(seconds) from None
        if not chunk:
            return
        yield chunk


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the body, refusing more than `limit` bytes without buffering them, and all of it
    within `body_read_timeout_s` (it is small: a slow drip of it is no better than a stall)."""
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, "body_too_large", f"request body exceeds {limit} bytes")
    seconds = body_read_timeout(request)
    data = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_chunked(65536):
                data += chunk
                if len(data) > limit:
                    raise HttpError(413, "body_too_large", f"request body exceeds {limit} bytes")
    except TimeoutError:
        raise BodyTimeout(seconds) from None
    return bytes(data)


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    ctype = request.content_type
    if ctype != "application/json":
        raise HttpError(415, "unsupported_media_type", "expected Content-Type: application/json")
    body = await read_body(request, limit)
    try:
        value = loads(body)
    except NonFiniteNumber as exc:
        raise HttpError(400, "invalid_json", f"body has a number JSON cannot carry: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. 10 000 nested arrays fit in a small body
        raise HttpError(400, "invalid_json", "body nests JSON too deeply") from None
    if not isinstance(value, dict):
        raise HttpError(400, "invalid_json", "body must be a JSON object")
    return value


def client_address(request: web.Request) -> str:
    return request.remote or ""
