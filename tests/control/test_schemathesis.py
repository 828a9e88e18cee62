"""schemathesis fuzzes every documented operation of a real server on 127.0.0.1: no 5xx.

Bounded: a few examples per operation, for an admin and for a patient's messaging token, so both
the admin routes and the message/upload routes get past authentication.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
from ctl_helpers import Server

pytestmark = pytest.mark.slow
MAX_EXAMPLES = 6
HERE = Path(__file__).parent


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis")
    if found is None:
        pytest.skip("schemathesis is not installed")
    return [found]


@pytest.mark.parametrize("who", [("ops", "admin"), ("pat-ana", "patient")])
async def test_no_server_errors(srv: Server, who: tuple[str, str], tmp_path: Path) -> None:
    await srv.send_message(("dr-lee", "clinician"), who[0])  # something to find in the inbox
    proc = await asyncio.create_subprocess_exec(
        *_cli(), "run", f"{srv.url}/v1/openapi.json", "--url", srv.url,
        "--checks", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing", "--workers", "1",
        "--header", f"Authorization: Bearer {srv.token(*who)}",
        "--request-timeout", "30", "--no-color", "--suppress-health-check", "all",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
             "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])},
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
