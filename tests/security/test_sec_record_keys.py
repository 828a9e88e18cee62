"""Records are sealed with a key derived from the storage key, never with the storage key itself;
records written by the earlier format still open, and tampering is still caught."""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mediasrv.storage.crypto import IntegrityError, RecordCipher, records_key

AAD = b"vitals:visit1:7"


def test_records_are_not_sealed_with_the_storage_key_itself() -> None:
    master = os.urandom(32)
    blob = RecordCipher(master).seal(b"spo2=97", AAD)
    assert blob[:1] == b"\x02"
    assert records_key(master) != master
    with pytest.raises(InvalidTag):  # the raw storage key does not open it
        AESGCM(master).decrypt(blob[1:13], blob[13:], AAD)
    assert AESGCM(records_key(master)).decrypt(blob[1:13], blob[13:], AAD) == b"spo2=97"


def test_records_of_the_earlier_format_still_open() -> None:
    master = os.urandom(32)
    nonce = os.urandom(12)
    legacy = b"\x01" + nonce + AESGCM(master).encrypt(nonce, b"hr=72", AAD)
    assert RecordCipher(master).open(legacy, AAD) == b"hr=72"


@pytest.mark.parametrize("mutate", [
    lambda b: b[:1] + bytes([b[1] ^ 1]) + b[2:],   # nonce
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),          # tag
    lambda b: b"\x01" + b[1:],                      # version swapped to the legacy key
    lambda b: b"\x03" + b[1:],                      # unknown version
    lambda b: b[:20],                               # truncated
])
def test_tampered_records_fail_their_integrity_check(mutate) -> None:
    cipher = RecordCipher(os.urandom(32))
    with pytest.raises(IntegrityError):
        cipher.open(mutate(cipher.seal(b"bp=120/80", AAD)), AAD)


def test_a_record_bound_to_another_row_does_not_open() -> None:
    cipher = RecordCipher(os.urandom(32))
    with pytest.raises(IntegrityError):
        cipher.open(cipher.seal(b"x", AAD), b"vitals:visit1:8")
