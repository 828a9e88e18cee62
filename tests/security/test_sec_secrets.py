"""The token secret is never empty or short, and secret files are kept private."""

from __future__ import annotations

import os
import stat

import pytest

from mediasrv.config import ConfigError, load_settings, prepare_data_dir


@pytest.mark.parametrize("secret", ["s3cret", "x" * 31])
def test_short_api_secret_is_refused(tmp_path, secret) -> None:
    settings = load_settings(env={"MEDIASRV_API_SECRET": secret}, data_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match="api_secret"):
        prepare_data_dir(settings)


def test_empty_secret_file_is_refused_not_used_as_an_empty_hmac_key(tmp_path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "api_secret").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        prepare_data_dir(load_settings(env={}, data_dir=data))


def test_world_readable_secret_files_are_tightened(tmp_path) -> None:
    data = tmp_path / "d"
    prepare_data_dir(load_settings(env={}, data_dir=data))
    for name in ("api_secret", "storage_key"):
        os.chmod(data / name, 0o644)
    prepare_data_dir(load_settings(env={}, data_dir=data))
    for name in ("api_secret", "storage_key"):
        assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600


def test_long_secret_from_the_environment_is_used(tmp_path) -> None:
    settings = load_settings(env={"MEDIASRV_API_SECRET": "k" * 32}, data_dir=tmp_path / "d")
    prepare_data_dir(settings)
    assert settings.api_secret == "k" * 32
