"""Per-sender upload quota: unfinished bytes and bytes of the last 24 hours, 413 quota_exceeded on creation."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ctl_helpers import TUS, Server, create_upload, make_settings, upload_bytes
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError
from tusclient.uploader import Uploader

from mediasrv.api.appkeys import MESSAGES

PATIENT = ("pat-ana", "patient")
OTHER = ("pat-bob", "patient")
CLINICIAN = "dr-lee"
KiB = 1024


async def _server(tmp_path: Path, database_url: str, **quota: int) -> Server:
    srv = Server(make_settings(tmp_path / "data", database_url=database_url, **quota))
    await srv.start()
    return srv


@pytest.fixture
async def pending_srv(tmp_path: Path, database_url: str) -> AsyncIterator[Server]:
    srv = await _server(tmp_path, database_url, upload_quota_pending_bytes=1000 * KiB, upload_quota_daily_bytes=0)
    yield srv
    await srv.stop()


@pytest.fixture
async def daily_srv(tmp_path: Path, database_url: str) -> AsyncIterator[Server]:
    srv = await _server(tmp_path, database_url, upload_quota_pending_bytes=0, upload_quota_daily_bytes=1000 * KiB)
    yield srv
    await srv.stop()


def _uploader(srv: Server, who: tuple[str, str], path: Path, message_id: str) -> Uploader:
    client = tus_client.TusClient(srv.url + "/v1/uploads/", headers=srv.auth(*who))
    return Uploader(file_path=str(path), client=client, chunk_size=100 * KiB,
                    metadata={"message": message_id, "filename": path.name})


async def test_tuspy_is_refused_413_while_unfinished_uploads_hold_the_quota(pending_srv: Server,
                                                                              tmp_path: Path) -> None:
    srv = pending_srv
    first_file, second_file = tmp_path / "a.bin", tmp_path / "b.bin"
    first_file.write_bytes(os.urandom(600 * KiB))
    second_file.write_bytes(os.urandom(600 * KiB))
    msg = await srv.send_message(PATIENT, CLINICIAN)
    first = _uploader(srv, PATIENT, first_file, msg["id"])
    await asyncio.to_thread(first.upload, stop_at=200 * KiB)  # the app is paused: 600 KiB reserved

    second = _uploader(srv, PATIENT, second_file, msg["id"])
    with pytest.raises(TusCommunicationError) as refused:
        await asyncio.to_thread(second.upload)
    assert refused.value.status_code == 413
    resp = await create_upload(srv, PATIENT, msg["id"], 600 * KiB)
    assert resp.status == 413 and resp.headers["Tus-Resumable"] == "1.0.0"
    error = (await resp.json())["error"]
    assert error["code"] == "quota_exceeded" and "1024000" in error["message"]
    # up to the limit is fine, and another sender has their own quota
    assert (await create_upload(srv, PATIENT, msg["id"], 400 * KiB)).status == 201
    other_msg = await srv.send_message(OTHER, CLINICIAN)
    assert (await create_upload(srv, OTHER, other_msg["id"], 600 * KiB)).status == 201

    assert (await create_upload(srv, PATIENT, msg["id"], 1 * KiB)).status == 413  # 600 + 400 held

    # finishing the first upload frees its reservation (it is no longer unfinished): 400 + 600 fit
    await asyncio.to_thread(first.upload)
    assert (await create_upload(srv, PATIENT, msg["id"], 600 * KiB)).status == 201
    assert (await create_upload(srv, PATIENT, msg["id"], 1 * KiB)).status == 413


async def test_terminating_an_upload_gives_its_bytes_back(pending_srv: Server) -> None:
    srv = pending_srv
    msg = await srv.send_message(PATIENT, CLINICIAN)
    resp = await create_upload(srv, PATIENT, msg["id"], 900 * KiB)
    assert resp.status == 201
    assert (await create_upload(srv, PATIENT, msg["id"], 200 * KiB)).status == 413
    assert (await srv.request("DELETE", resp.headers["Location"], who=PATIENT, headers=TUS)).status == 204
    assert (await create_upload(srv, PATIENT, msg["id"], 200 * KiB)).status == 201


async def test_concurrent_creations_cannot_both_pass_the_check(pending_srv: Server) -> None:
    srv = pending_srv
    msg = await srv.send_message(PATIENT, CLINICIAN)
    statuses = sorted(r.status for r in await asyncio.gather(
        *(create_upload(srv, PATIENT, msg["id"], 600 * KiB) for _ in range(4))))
    assert statuses == [201, 413, 413, 413]


async def test_daily_quota_counts_stored_uploads_of_the_last_24_hours(daily_srv: Server) -> None:
    srv = daily_srv
    msg = await srv.send_message(PATIENT, CLINICIAN)
    await upload_bytes(srv, PATIENT, msg["id"], os.urandom(700 * KiB), "application/octet-stream")
    resp = await create_upload(srv, PATIENT, msg["id"], 400 * KiB)  # finished uploads count here
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "quota_exceeded"

    # A day later the window has moved on (the stored row is aged instead of waiting a day).
    store = srv.app[MESSAGES]
    await store.db.execute("UPDATE attachments SET created_at = created_at - 86401")
    assert (await create_upload(srv, PATIENT, msg["id"], 400 * KiB)).status == 201
    assert (await create_upload(srv, PATIENT, msg["id"], 700 * KiB)).status == 413

    # deleting the message gives its bytes back
    assert (await srv.request("DELETE", f"/v1/messages/{msg['id']}", who=PATIENT)).status == 204
    msg2 = await srv.send_message(PATIENT, CLINICIAN)
    assert (await create_upload(srv, PATIENT, msg2["id"], 1000 * KiB)).status == 201


async def test_expired_unfinished_uploads_do_not_count(pending_srv: Server) -> None:
    srv = pending_srv
    msg = await srv.send_message(PATIENT, CLINICIAN)
    assert (await create_upload(srv, PATIENT, msg["id"], 900 * KiB)).status == 201
    await srv.app[MESSAGES].db.execute("UPDATE attachments SET expires_at = 1")
    assert (await create_upload(srv, PATIENT, msg["id"], 900 * KiB)).status == 201


def test_quota_settings_are_validated() -> None:
    from mediasrv.config import ConfigError, load_settings

    with pytest.raises(ConfigError):
        load_settings(env={"MEDIASRV_UPLOAD_QUOTA_DAILY_BYTES": "-1"})
    assert load_settings(env={"MEDIASRV_UPLOAD_QUOTA_PENDING_BYTES": "0"}).upload_quota_pending_bytes == 0
