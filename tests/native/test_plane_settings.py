"""Settings of the native media plane: datapath choice, the one media port, workers, loss simulation."""

from __future__ import annotations

import socket

import pytest

from mediasrv.config import ConfigError, load_settings

mediasrv_native = pytest.importorskip("mediasrv_native")


def test_defaults_are_the_native_plane_on_an_ephemeral_port():
    s = load_settings(env={})
    assert (s.datapath, s.media_udp_port, s.media_workers, s.media_test_drop_ppm) == ("native", 0, 0, 0)


def test_environment_overrides_and_bad_values_are_precise_errors():
    s = load_settings(env={"MEDIASRV_DATAPATH": "python", "MEDIASRV_MEDIA_UDP_PORT": "40000",
                           "MEDIASRV_MEDIA_WORKERS": "3"})
    assert (s.datapath, s.media_udp_port, s.media_workers) == ("python", 40000, 3)
    for env, name in [({"MEDIASRV_DATAPATH": "rust"}, "datapath"),
                      ({"MEDIASRV_MEDIA_UDP_PORT": "70000"}, "media_udp_port"),
                      ({"MEDIASRV_MEDIA_TEST_DROP_PPM": "2000000"}, "media_test_drop_ppm")]:
        with pytest.raises(ConfigError, match=name):
            load_settings(env=env)


def test_the_plane_binds_the_configured_port_once_for_all_peers():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    plane = mediasrv_native.MediaPlane(["127.0.0.1"], port, 1)
    try:
        assert plane.sockets() == [("127.0.0.1", port)]
        with pytest.raises(OSError):  # the port is taken: a second server must not start silently
            mediasrv_native.MediaPlane(["127.0.0.1"], port, 1)
    finally:
        plane.close()
    with pytest.raises(ValueError, match="closed"):
        plane.stats()
