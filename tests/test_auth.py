import time

import jwt
import pytest

from mediasrv.auth import AuthError, bearer_token, mint_token, verify_token
from mediasrv.authz import PUBLISHING_ROLES, is_moderator_of

SECRET = "test-secret-that-is-long-enough-for-hs256-keys"


def test_round_trip_carries_all_claims():
    tok = mint_token(SECRET, identity="dr-lee", role="clinician", room="visit1", name="Dr Lee", ttl_s=60)
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "dr-lee" and claims["room"] == "visit1" and claims["role"] == "clinician"
    # iat is to the millisecond (a token issued just after a room closed is told from one just before)
    assert claims["exp"] - int(claims["iat"]) == 60 and claims["name"] == "Dr Lee"
    ident = verify_token(SECRET, tok, room="visit1")
    assert ident.sub == "dr-lee" and ident.role in PUBLISHING_ROLES and is_moderator_of(ident, "visit1")


@pytest.mark.parametrize(
    "make, status, code",
    [
        (lambda: "", 401, "missing_token"),
        (lambda: mint_token(SECRET, identity="a", role="patient", room="r", now=time.time() - 7200, ttl_s=60),
         401, "token_expired"),
        (lambda: mint_token("another-secret-of-sufficient-length-000000", identity="a", role="patient", room="r"),
         401, "bad_signature"),
        (lambda: mint_token(SECRET, identity="a", role="patient", room="other"), 403, "wrong_room"),
        (lambda: jwt.encode({"sub": "a", "role": "patient", "room": "r"}, SECRET, algorithm="HS256"),
         401, "invalid_token"),
        (lambda: jwt.encode({"sub": "a", "role": "king", "room": "r", "exp": time.time() + 60}, SECRET,
                            algorithm="HS256"), 401, "invalid_token"),
        (lambda: jwt.encode({"sub": "a", "role": "patient", "room": "r", "exp": time.time() + 60}, SECRET,
                            algorithm="HS512"), 401, "invalid_token"),
        (lambda: "not.a.jwt", 401, "invalid_token"),
    ],
)
def test_bad_tokens_are_refused_precisely(make, status, code):
    with pytest.raises(AuthError) as err:
        verify_token(SECRET, make(), room="r")
    assert (err.value.status, err.value.code) == (status, code)


def test_unsigned_tokens_are_refused():
    tok = jwt.encode({"sub": "a", "role": "admin", "exp": time.time() + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        verify_token(SECRET, tok)


def test_admin_tokens_have_no_room_and_pass_room_checks():
    tok = mint_token(SECRET, identity="ops", role="admin")
    assert verify_token(SECRET, tok, room="any").is_admin
    with pytest.raises(ValueError):
        mint_token(SECRET, identity="ops", role="admin", room="r")


@pytest.mark.parametrize("identity", ["", "a/b", "x" * 200, "tab\there", "del\x7fhere"])
def test_unsafe_identities_cannot_be_minted(identity):
    with pytest.raises(ValueError):
        mint_token(SECRET, identity=identity, role="patient", room="r")


def test_bearer_header_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token(None) == ""
    with pytest.raises(AuthError):
        bearer_token("Basic dXNlcjpwYXNz")
