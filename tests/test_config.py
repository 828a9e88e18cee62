import os
import stat

import pytest

from mediasrv.config import ConfigError, load_settings, prepare_data_dir


def test_defaults_work_without_any_configuration(tmp_path):
    s = load_settings(env={}, data_dir=tmp_path / "d")
    notes = prepare_data_dir(s)
    secret = tmp_path / "d" / "api_secret"
    assert s.api_secret and secret.read_text().strip() == s.api_secret
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert any("generated API secret" in n for n in notes)
    # A second start reuses the same secret (tokens stay valid across restarts).
    s2 = load_settings(env={}, data_dir=tmp_path / "d")
    prepare_data_dir(s2)
    assert s2.api_secret == s.api_secret


def test_precedence_file_then_env_then_flags(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('port = 9000\nhost = "0.0.0.0"\nmedia_bind_addresses = ["127.0.0.1", "10.1.2.3"]\n')
    env = {"MEDIASRV_PORT": "9100", "MEDIASRV_API_SECRET": "s3cret", "MEDIASRV_DEV_MODE": "true"}
    s = load_settings(cfg, env=env, port=9200)
    assert s.port == 9200 and s.host == "0.0.0.0"
    assert s.api_secret == "s3cret" and s.dev_mode is True
    assert s.media_bind_addresses == ["127.0.0.1", "10.1.2.3"]
    s = load_settings(cfg, env={"MEDIASRV_MEDIA_ANNOUNCED_ADDRESSES": "203.0.113.5"})
    assert s.announced_addresses == ["203.0.113.5"]


@pytest.mark.parametrize(
    "text, env",
    [("port = 'x'\n", {}), ("nonsense = 1\n", {}), ("port = [\n", {}), ("", {"MEDIASRV_PORT": "eighty"}),
     ("", {"MEDIASRV_DEV_MODE": "maybe"}), ("port = 70000\n", {}),
     ("min_video_bitrate = 200000\nvideo_group_floor = 100000\n", {}),
     ("video_group_floor = 3000000\n", {}),
     ("media_rx_coalesce_us = 20000\n", {}), ("media_rx_coalesce_us = -1\n", {}),
     ("media_udp_port = 65535\nmedia_workers = 2\n", {}),
     ("room_ws_ping_s = 30\n", {}), ("room_ws_ping_s = 0\n", {})],
)
def test_bad_settings_are_refused_with_the_key_named(tmp_path, text, env):
    cfg = tmp_path / "m.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError):
        load_settings(cfg, env=env)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_cluster_node_on_a_wildcard_address_needs_its_id_and_url(host):
    """Every node bound to 0.0.0.0:8080 would be node '0.0.0.0-8080' at http://0.0.0.0:8080: one
    command channel, leases each renews for the others, redirects clients cannot follow."""
    env = {"MEDIASRV_REDIS_URL": "redis://127.0.0.1:6379/0"}
    with pytest.raises(ConfigError, match="node_id"):
        load_settings(env=env, host=host)
    with pytest.raises(ConfigError, match="node_url"):
        load_settings(env={**env, "MEDIASRV_NODE_ID": "a"}, host=host)
    s = load_settings(env={**env, "MEDIASRV_NODE_ID": "a", "MEDIASRV_NODE_URL": "https://a.example"}, host=host)
    assert s.node_id == "a"
    assert load_settings(env=env, host="10.0.0.5").node_id == ""  # derived from a real address
    assert load_settings(env={}, host=host).redis_url == ""  # not in a cluster: nothing needed


def test_cluster_node_on_port_zero_needs_its_id_and_url():
    """Port 0 is picked at start: a node id or URL derived from it would say port 0."""
    env = {"MEDIASRV_REDIS_URL": "redis://127.0.0.1:6379/0"}
    with pytest.raises(ConfigError, match="node_url.*port 0"):
        load_settings(env={**env, "MEDIASRV_NODE_ID": "a"}, port=0)
    assert load_settings(env={}, port=0).port == 0  # a single server may pick its port


def test_one_media_port_for_all_workers_may_be_the_last_port(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text("media_udp_port = 65535\nmedia_workers = 2\nmedia_port_per_worker = false\n")
    s = load_settings(cfg, env={})
    assert (s.media_udp_port, s.media_port_per_worker) == (65535, False)
