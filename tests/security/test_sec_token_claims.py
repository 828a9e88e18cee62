"""Signed tokens with odd claim types are refused with 401, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from mediasrv.auth import AuthError, verify_token

SECRET = "security-test-secret-long-enough-for-hs256"


def _signed(payload_json: str, secret: str = SECRET) -> str:
    """A correctly signed HS256 token around an arbitrary (even odd) JSON payload."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(payload_json.encode())
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


@pytest.mark.parametrize("payload", [
    {"sub": "a", "role": ["admin"], "exp": 4102444800},
    {"sub": "a", "role": {"admin": 1}, "exp": 4102444800},
    {"sub": "a", "role": 7, "exp": 4102444800},
    {"sub": "a", "role": "admin", "exp": "4102444800"},
    {"sub": "a", "role": "admin", "exp": 10**40},
    {"sub": "a", "role": "admin", "exp": True},
])
def test_odd_claim_types_are_invalid_tokens(payload: dict) -> None:
    with pytest.raises(AuthError) as err:
        verify_token(SECRET, _signed(json.dumps(payload)))
    assert err.value.status == 401


async def test_server_answers_401_for_a_list_role(srv) -> None:
    token = _signed(json.dumps({"sub": "a", "role": ["admin"], "exp": 4102444800}),
                    srv.settings.api_secret)
    r = await srv.request("GET", "/v1/rooms", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 401
    assert (await r.json())["error"]["code"] == "invalid_token"
