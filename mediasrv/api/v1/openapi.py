"""The OpenAPI 3.1 document of the control API, served at GET /v1/openapi.json.

Written by hand next to the handlers; tests/control/test_openapi.py fails when a /v1 route is missing
here or a documented operation has no route.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mediasrv import __version__
from mediasrv.api.http_common import json_response
from mediasrv.authz import ROLES

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Invalid request", 401: "Missing, expired or invalid token", 403: "Not allowed",
            404: "Not found", 409: "Conflict with the current state", 410: "Upload expired",
            412: "Tus-Resumable missing or unsupported", 413: "Too large",
            415: "Wrong Content-Type", 416: "Range not satisfiable", 423: "Upload busy",
            429: "too_many_connections: the client's address holds max_connections_per_address "
                 "connections and sessions already (this connection is closed)",
            460: "Checksum mismatch (the chunk was discarded)", 500: "Server error",
            503: "Not configured on this server"}
    return {str(s): {"description": text[s], "content": {JSON: {"schema": _ref("Error")}}}
            for s in statuses}


def _path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string", "minLength": 1, "maxLength": 128}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _header(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "schema": schema, "description": description}


NO_CONTENT = {"204": {"description": "Done"}}
ROOM = _path_param("room", "Room name")
IDENTITY = _path_param("identity", "Participant identity")
MESSAGE_ID = _path_param("message_id", "Message id")
ATTACHMENT_ID = _path_param("attachment_id", "Attachment id")
UPLOAD_ID = _path_param("upload_id", "Upload id (from the Location of the creation response)")
TUS_RESUMABLE = _header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]},
                        "tus protocol version", required=True)
ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "TokenRequest": {
        "type": "object", "additionalProperties": False, "required": ["identity", "role"],
        "properties": {
            "identity": {"type": "string", "minLength": 1, "maxLength": 128},
            "role": {"type": "string", "enum": sorted(ROLES)},
            "room": {"type": "string", "minLength": 1, "maxLength": 128,
                     "description": "Omit for admin and messaging tokens"},
            "name": {"type": "string", "maxLength": 128},
            "ttl_s": {"type": "integer", "minimum": 1},
        },
    },
    "Token": {
        "type": "object", "required": ["token", "identity", "role", "expires_at"],
        "properties": {"token": {"type": "string"}, "identity": {"type": "string"},
                       "role": {"type": "string"}, "room": {"type": ["string", "null"]},
                       "visit": {"type": ["string", "null"], "description":
                                 "The configured room's visit id the token is bound to (null if none)"},
                       "expires_at": {"type": "integer"}},
    },
    "RoomRequest": {
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 128},
            "waiting_room": {"type": "boolean", "default": False},
            "max_participants": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
            "max_duration_s": {"type": ["integer", "null"], "minimum": 1, "maximum": 604800},
            "recording_allowed": {"type": "boolean", "default": False},
        },
    },
    "Track": {"type": "object", "properties": {
        "id": {"type": "integer"}, "participant": {"type": "string"}, "kind": {"type": "string"},
        "source": {"type": "string"}, "muted": {"type": "boolean"}}},
    "Participant": {"type": "object", "properties": {
        "identity": {"type": "string"}, "role": {"type": "string"},
        "name": {"type": ["string", "null"]}, "admitted": {"type": "boolean"},
        "tracks": {"type": "array", "items": _ref("Track")}}},
    "Room": {"type": "object", "required": ["name", "options", "participants"], "properties": {
        "name": {"type": "string"}, "created_at": {"type": "number"},
        "visit_id": {"type": "string", "description": "Random id of this visit (tokens may be bound to it)"},
        "configured": {"type": "boolean", "description": "Created through the control API (kept across restarts)"},
        "options": {"type": "object", "properties": {
            "waiting_room": {"type": "boolean"}, "max_participants": {"type": ["integer", "null"]},
            "max_duration_s": {"type": ["integer", "null"]}, "recording_allowed": {"type": "boolean"}}},
        "participants": {"type": "array", "items": _ref("Participant")}}},
    "MessageRequest": {
        "type": "object", "additionalProperties": False, "required": ["recipient", "subject", "body"],
        "properties": {
            "recipient": {"type": "string", "minLength": 1, "maxLength": 128},
            "subject": {"type": "string", "maxLength": 200},
            "body": {"type": "string", "maxLength": 20000},
        },
    },
    "Attachment": {"type": "object", "required": ["id", "state", "content_type", "size"], "properties": {
        "id": {"type": "string"},
        "state": {"type": "string", "enum": ["uploading", "processing", "ready", "rejected"]},
        "reason": {"type": ["string", "null"], "description": "Why a file was rejected"},
        "content_type": {"type": "string"}, "size": {"type": "integer"},
        "filename": {"type": ["string", "null"]}, "sha256": {"type": ["string", "null"]},
        "media": {"type": ["object", "null"], "description": "Probe result for audio/video",
                  "properties": {"container": {"type": "string"}, "duration_s": {"type": "number"},
                                 "size_bytes": {"type": "integer"},
                                 "codecs": {"type": "array", "items": {"type": "string"}},
                                 "streams": {"type": "array", "items": {"type": "object"}}}},
        "created_at": {"type": "number"}, "completed_at": {"type": ["number", "null"]},
        "download_url": {"type": ["string", "null"]}, "thumbnail_url": {"type": ["string", "null"]},
        "upload_url": {"type": "string", "description": "Sender only, while uploading"},
        "upload_expires_at": {"type": "number"}}},
    "Message": {"type": "object", "required": ["id", "sender", "recipient", "subject", "attachments"],
                "properties": {
                    "id": {"type": "string"}, "sender": {"type": "string"},
                    "sender_role": {"type": "string"}, "recipient": {"type": "string"},
                    "subject": {"type": "string"}, "body": {"type": "string"},
                    "created_at": {"type": "number"}, "read_at": {"type": ["number", "null"]},
                    "attachments": {"type": "array", "items": _ref("Attachment")}}},
    "AuditEntry": {"type": "object", "properties": {
        "id": {"type": "integer"}, "ts": {"type": "number"}, "actor": {"type": "string"},
        "role": {"type": "string"}, "action": {"type": "string"}, "room": {"type": ["string", "null"]},
        "visit": {"type": ["string", "null"], "description": "the visit id, for entries about a visit"},
        "target": {"type": ["string", "null"]}, "address": {"type": ["string", "null"]},
        "detail": {"type": ["object", "null"]}}},
    "RecordingStatus": {"type": "object", "properties": {
        "recording": {"type": "boolean"}, "recording_id": {"type": ["string", "null"]},
        "waiting_for": {"type": "array", "items": {"type": "string"}},
        "refused": {"type": "array", "items": {"type": "string"}}}},
}


def _op(summary: str, responses: dict[str, Any], *, tag: str, parameters: list[Any] | None = None,
        body: str | None = None, public: bool = False) -> dict[str, Any]:
    # Any request may find its address at max_connections_per_address (docs/signaling.md).
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {**responses, **{
        k: v for k, v in _errors(429).items() if k not in responses}}}
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    if public:
        op["security"] = []
    return op


def _tus_upload_body() -> dict[str, Any]:
    return {"required": False, "content": {"application/offset+octet-stream": {
        "schema": {"type": "string", "format": "binary"}}}}


PATHS: dict[str, dict[str, Any]] = {
    "/v1/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI 3.1 document"}},
                                    tag="meta", public=True)},
    "/v1/tokens": {"post": _op("Mint an access token (admin)", {
        "201": _json(_ref("Token"), "The token"), **_errors(400, 401, 403, 415)},
        tag="tokens", body="TokenRequest")},
    "/v1/rooms": {
        "post": _op("Create a room (admin); a room a join created is configured with these options "
                    "(participants already in stay as they are), a configured one is 409", {"201": _json(_ref("Room"), "The room"),
                                              **_errors(400, 401, 403, 409, 415)},
                    tag="rooms", body="RoomRequest"),
        "get": _op("List rooms (admin)", {"200": _json({"type": "object", "properties": {
            "rooms": {"type": "array", "items": _ref("Room")}}}, "Rooms"), **_errors(401, 403)}, tag="rooms"),
    },
    "/v1/rooms/{room}": {
        "get": _op("Describe a room: participants, admission, tracks (clinician of the room or admin)",
                   {"200": _json(_ref("Room"), "The room"), **_errors(400, 401, 403, 404)},
                   tag="rooms", parameters=[ROOM]),
        "delete": _op("Close a room, disconnecting everyone (admin); it is forgotten, and tokens "
                      "issued before the close can no longer open or join it (410 room_closed)",
                      {**NO_CONTENT, **_errors(400, 401, 403, 404)}, tag="rooms", parameters=[ROOM]),
    },
    "/v1/rooms/{room}/participants/{identity}": {
        "delete": _op("Remove a participant (clinician of the room or admin)",
                      {**NO_CONTENT, **_errors(400, 401, 403, 404)}, tag="rooms", parameters=[ROOM, IDENTITY]),
    },
    "/v1/rooms/{room}/participants/{identity}/admit": {
        "post": _op("Admit a participant from the waiting room (clinician of the room or admin)",
                    {**NO_CONTENT, **_errors(400, 401, 403, 404)}, tag="rooms", parameters=[ROOM, IDENTITY]),
    },
    "/v1/rooms/{room}/participants/{identity}/tracks/{track_id}/mute": {
        "post": _op("Mute a participant's track (clinician of the room or admin)",
                    {**NO_CONTENT, **_errors(400, 401, 403, 404)}, tag="rooms",
                    parameters=[ROOM, IDENTITY, _path_param("track_id", "Track id",
                                                            {"type": "integer", "minimum": 1})]),
    },
    "/v1/messages": {
        "post": _op("Send a message (patient or clinician, messaging token)",
                    {"201": _json(_ref("Message"), "The message"), **_errors(400, 401, 403, 415)},
                    tag="messages", body="MessageRequest"),
        "get": _op("List the caller's inbox or sent messages (without bodies)", {
            "200": _json({"type": "object", "properties": {
                "messages": {"type": "array", "items": _ref("Message")},
                "next_before": {"type": ["number", "null"]}}}, "Messages, newest first"),
            **_errors(400, 401, 403)}, tag="messages", parameters=[
                _query("box", {"type": "string", "enum": ["inbox", "sent"], "default": "inbox"}, "Which box"),
                _query("unread", {"type": "string", "enum": ["true", "false"]}, "Only unread messages"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "Page size"),
                _query("before", {"type": "number"}, "Cursor: next_before of the previous page")]),
    },
    "/v1/messages/{message_id}": {
        "get": _op("Read a message (sender, recipient or admin)",
                   {"200": _json(_ref("Message"), "The message"), **_errors(401, 403, 404)},
                   tag="messages", parameters=[MESSAGE_ID]),
        "delete": _op("Delete a message and its attachments (sender or recipient)",
                      {**NO_CONTENT, **_errors(401, 403, 404)}, tag="messages", parameters=[MESSAGE_ID]),
    },
    "/v1/messages/{message_id}/read": {
        "post": _op("Mark a message read (recipient)", {"200": _json({"type": "object", "properties": {
            "id": {"type": "string"}, "read_at": {"type": "number"}}}, "Read time"),
            **_errors(401, 403, 404)}, tag="messages", parameters=[MESSAGE_ID]),
    },
    "/v1/messages/{message_id}/attachments/{attachment_id}": {
        "get": _op("Download an attachment, with HTTP Range support", {
            "200": {"description": "The whole file",
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "206": {"description": "The requested byte range"},
            **_errors(401, 403, 404, 409, 416)}, tag="messages",
            parameters=[MESSAGE_ID, ATTACHMENT_ID,
                        _header("Range", {"type": "string"}, "bytes=start-end, bytes=start- or bytes=-suffix")]),
    },
    "/v1/messages/{message_id}/attachments/{attachment_id}/thumbnail": {
        "get": _op("JPEG thumbnail of a video attachment", {
            "200": {"description": "JPEG image", "content": {"image/jpeg": {"schema": {
                "type": "string", "format": "binary"}}}},
            **_errors(401, 403, 404, 409)}, tag="messages", parameters=[MESSAGE_ID, ATTACHMENT_ID]),
    },
    "/v1/uploads/": {
        "options": _op("tus discovery: version, extensions, Tus-Max-Size, checksum algorithms",
                       {"204": {"description": "tus capabilities in headers"}}, tag="uploads", public=True),
        "post": {**_op("tus creation (and creation-with-upload) of an attachment upload; 413 upload_too_large "
                       "above Tus-Max-Size, 413 quota_exceeded over the sender's upload quota", {
            "201": {"description": "Created; Location is the upload URL"},
            **_errors(400, 401, 403, 404, 409, 412, 413, 415)}, tag="uploads", parameters=[
                TUS_RESUMABLE,
                _header("Upload-Length", {"type": "integer", "minimum": 0}, "Total size in bytes", True),
                _header("Upload-Metadata", {"type": "string"},
                        "base64 values of message (required), filename, content_type"),
                _header("Upload-Checksum", {"type": "string"}, "sha1|sha256 <base64 digest> of the body")]),
            "requestBody": _tus_upload_body()},
    },
    "/v1/uploads/{upload_id}": {
        "head": _op("tus: current offset of an upload", {
            "200": {"description": "Upload-Offset and Upload-Length in headers"},
            **_errors(401, 403, 404, 410, 412)}, tag="uploads", parameters=[UPLOAD_ID, TUS_RESUMABLE]),
        "patch": {**_op("tus: append bytes at Upload-Offset", {
            "204": {"description": "Stored; the new Upload-Offset is in the headers"},
            **_errors(400, 401, 403, 404, 409, 410, 412, 413, 415, 423, 460)}, tag="uploads", parameters=[
                UPLOAD_ID, TUS_RESUMABLE,
                _header("Upload-Offset", {"type": "integer", "minimum": 0}, "Offset of this body", True),
                _header("Upload-Checksum", {"type": "string"}, "sha1|sha256 <base64 digest> of the body")]),
            "requestBody": {**_tus_upload_body(), "required": True}},
        "delete": _op("tus termination: discard the upload", {
            **NO_CONTENT, **_errors(401, 403, 404, 412)}, tag="uploads", parameters=[UPLOAD_ID, TUS_RESUMABLE]),
    },
    # Vitals routes belong to mediasrv.api.v1.vitals; documented here so there is one document.
    "/v1/rooms/{room}/vitals": {
        "get": _op("A visit's vitals readings as JSON or a FHIR R4 searchset Bundle (clinician of the room or "
                   "admin), oldest first, in pages: follow `next` (JSON), the Bundle's `next` link, or the "
                   "Link header until there is none. Readings are kept per visit: a clinician reads only the "
                   "visit of their token (the one it is bound to, else the room's visits open while it was "
                   "valid; never one that ended before it was issued); admins read every visit of the room "
                   "name, or one with visit=",
                   {"200": {"description": "One page of readings; Link: <next page>; rel=\"next\" when more follow",
                            "headers": {"Link": {"schema": {"type": "string"},
                                                 "description": "<url>; rel=\"next\" (absent on the last page)"}},
                            "content": {
                                JSON: {"schema": {"type": "object", "required": ["room", "readings", "next"],
                                                  "properties": {
                                    "room": {"type": "string"},
                                    "readings": {"type": "array", "items": {"type": "object", "properties": {
                                        "id": {"type": "integer", "description": "cursor for after="},
                                        "visit": {"type": ["string", "null"], "description":
                                                  "visit id (null: stored outside any visit, or before "
                                                  "readings kept their visit)"},
                                        "patient": {"type": "string"}, "kind": {"type": "string"},
                                        "received_at": {"type": "string", "format": "date-time"},
                                        "device_time_ms": {"type": ["integer", "null"]},
                                        "reading": {"type": "object"}}}},
                                    "next": {"type": ["string", "null"],
                                             "description": "relative URL of the next page; null on the last"}}}},
                                "application/fhir+json": {"schema": {"type": "object"}}}},
                    **_errors(400, 401, 403)}, tag="vitals", parameters=[
                       ROOM, _query("format", {"type": "string", "enum": ["json", "fhir"]}, "Output format"),
                       _query("visit", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                              "Only this visit's readings (admins: any visit of the room; clinicians: their "
                              "token's visit, else 403 wrong_visit)"),
                       _query("patient", {"type": "string"}, "Only this patient's readings"),
                       _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000},
                              "Page size (readings)"),
                       _query("after", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                              "Cursor: the id of the last reading already read (from `next`)")]),
    },
    "/v1/ice-servers": {
        "get": _op("ICE servers for a WebRTC client (any valid token): TURN URLs with a credential tied to the "
                   "token's identity that expires after turn_ttl_s and never after the token; an empty list "
                   "when the server has no TURN configured", {
                       "200": _json({"type": "object", "required": ["iceServers", "expires"], "properties": {
                           "iceServers": {"type": "array", "items": {
                               "type": "object", "required": ["urls", "username", "credential"], "properties": {
                                   "urls": {"type": "array", "items": {"type": "string"}},
                                   "username": {"type": "string", "description": "<expiry unix s>:<pseudonym>"},
                                   "credential": {"type": "string",
                                                  "description": "base64 HMAC-SHA1 of username (TURN REST)"}}}},
                           "expires": {"type": ["integer", "null"],
                                       "description": "Unix seconds the credential stops working; null without "
                                                      "TURN"}}}, "RTCIceServer list (pass as iceServers)"),
                       **_errors(401)}, tag="media"),
    },
    "/v1/cluster": {
        "get": _op("The cluster's nodes (admin): each node's id, URL, media addresses, state (serving or "
                   "draining) and load, from the registry in Redis; `enabled: false` and no nodes without "
                   "redis_url. Control calls about a room work on any node: they are run on the room's owner "
                   "(503 owner_unreachable or 504 owner_timeout when it cannot answer)", {
                       "200": _json({"type": "object", "required": ["enabled", "node", "nodes"], "properties": {
                           "enabled": {"type": "boolean"},
                           "node": {"type": ["string", "null"], "description": "the id of the node answering"},
                           "rooms": {"type": "integer"},
                           "nodes": {"type": "array", "items": {"type": "object", "properties": {
                               "id": {"type": "string"}, "url": {"type": "string"},
                               "media_addresses": {"type": "array", "items": {"type": "string"}},
                               "state": {"type": "string", "enum": ["serving", "draining"]},
                               "started_at": {"type": "number"}, "updated_at": {"type": "number"},
                               "load": {"type": "object", "properties": {
                                   "cpu": {"type": "number", "description": "percent of one core"},
                                   "rooms": {"type": "number"}, "participants": {"type": "number"},
                                   "forwarded_packets": {"type": "number"}}}}}}}}, "Nodes"),
                       **_errors(401, 403, 503)}, tag="rooms"),
    },
    "/v1/vitals": {
        "post": {**_op("Upload device readings recorded offline (batches of base64 envelopes); readings for "
                       "a room are stored with the visit of the uploader's token (the live one, the one it is "
                       "bound to, or the latest open while it was valid); 409 no_visit when the room had none",
                       {"201": _json({"type": "object", "properties": {"stored": {"type": "integer"}}}, "Stored"),
                        **_errors(400, 401, 403, 409, 413, 415)}, tag="vitals"),
            "requestBody": {"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["envelopes"], "properties": {
                    "patient": {"type": "string"}, "room": {"type": ["string", "null"]},
                    "envelopes": {"type": "array", "items": {"type": "string", "contentEncoding": "base64"}}}}}}}},
    },
    # Recording routes belong to mediasrv.api.v1.recordings.
    "/v1/rooms/{room}/recording": {
        "post": _op("Start recording the visit (clinician of the room or admin): asks every participant for "
                    "consent if nobody was asked yet; 409 consent_missing (naming who refused or has not "
                    "answered) until all consented, 409 recording_busy while one runs; 500 recording_failed "
                    "when the start fails partway (the recording is marked failed, the request ended: ask again)",
                    {"201": _json(_ref("RecordingStatus"), "Recording"),
                     **_errors(401, 403, 404, 409, 500, 503)},
                    tag="recordings", parameters=[ROOM]),
        "delete": _op("Stop the recording; its files are sealed", {
            "200": _json({"type": "object"}, "Stopped, with the files"), **_errors(401, 403, 404)},
            tag="recordings", parameters=[ROOM]),
    },
    "/v1/recordings": {
        "get": _op("Recordings (admin: all; clinician: only recordings of the token's room that they started, "
                   "consented to or have a file in — a room name reused for a later visit does not show "
                   "earlier visits' recordings, and a token bound to a visit sees that visit's only; room= "
                   "another room: 403 wrong_room; visit= another visit than the token's: 403 wrong_visit)", {
            "200": _json({"type": "object", "properties": {"recordings": {"type": "array", "items": {"type": "object"}}}},
                         "Recordings"), **_errors(401, 403, 503)}, tag="recordings",
            parameters=[_query("room", {"type": "string", "minLength": 1, "maxLength": 128}, "Room name"),
                        _query("visit", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                               "Only recordings of this visit")]),
    },
    "/v1/recordings/{id}": {
        "get": _op("One recording with its files (one file per track); for a clinician only a recording of "
                   "the token's room they started, consented to or have a file in, else 404 "
                   "recording_not_found (as for one that does not exist)", {
            "200": _json({"type": "object"}, "Recording"), **_errors(401, 403, 404, 503)}, tag="recordings",
            parameters=[_path_param("id", "Recording id")]),
    },
    "/v1/recordings/{id}/files/{file_id}": {
        "get": _op("Download one recorded file (WebM or Matroska); Range supported; audited; a clinician "
                   "only from a recording they may see (as for GET /v1/recordings/{id}), else 404 "
                   "recording_not_found; 404 file_not_found for a file not in it", {
            "200": {"description": "The file", "content": {"video/webm": {}, "audio/webm": {}, "video/x-matroska": {}}},
            "206": {"description": "Partial content"}, **_errors(401, 403, 404, 416, 503)}, tag="recordings",
            parameters=[_path_param("id", "Recording id"), _path_param("file_id", "File id"),
                        _header("Range", {"type": "string"}, "bytes=start-end")]),
    },
    "/v1/audit": {
        "get": _op("Audit log, newest first (admin)", {
            "200": _json({"type": "object", "properties": {
                "entries": {"type": "array", "items": _ref("AuditEntry")},
                "next_before_id": {"type": ["integer", "null"]}}}, "Entries"),
            **_errors(400, 401, 403)}, tag="audit", parameters=[
                _query("action", {"type": "string", "minLength": 1, "maxLength": 128}, "e.g. message.read"),
                _query("room", {"type": "string", "minLength": 1, "maxLength": 128}, "Room name"),
                _query("visit", {"type": "string", "minLength": 1, "maxLength": 128},
                       "Visit id: the entries about one visit"),
                _query("since", {"type": "number"}, "Unix time"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
                _query("before_id", {"type": "integer", "minimum": 1}, "Cursor: next_before_id")]),
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "mediasrv control API", "version": __version__,
                 "description": "Rooms, tokens, store-and-forward messages with tus uploads, vitals, "
                                "recordings, audit log. The WHIP/WHEP endpoints (/whip/..., /whep/..., including "
                                "recorded messages at POST /whip/messages/{recipient}, which answers 409 "
                                "sender_gone when the sender goes while its recording starts) take SDP, not "
                                "JSON, and are described in docs/signaling.md and docs/recording.md."},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "In the Authorization header only: a token in the URL (?access_token=) is "
                               "answered 400 token_in_query on every route of this document"}},
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(document())


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", openapi_json, allow_head=False)
