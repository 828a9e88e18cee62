"""Settings: embedded defaults, overridden by a TOML file, overridden by MEDIASRV_* environment variables.

Every key of `Settings` maps to `MEDIASRV_<KEY>` (upper case), e.g. `MEDIASRV_API_SECRET`,
`MEDIASRV_DATA_DIR`, `MEDIASRV_MEDIA_ANNOUNCED_ADDRESSES=127.0.0.1,10.0.0.5`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import secrets
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "MEDIASRV_"
MIN_API_SECRET_CHARS = 32


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    # HS256 secret for access tokens; generated into <data_dir>/api_secret when empty.
    api_secret: str = ""
    # Development mode: the demo page may mint tokens itself. Never enable in production.
    dev_mode: bool = False
    # Addresses the media plane binds (ICE host candidates) and announces in SDP.
    media_bind_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    media_announced_addresses: list[str] = field(default_factory=list)
    # "native": Rust workers own the UDP socket, SRTP and routing; "python": aiortc's per-packet
    # path (kept as a benchmark baseline).
    datapath: str = "native"
    # The UDP media port (open it in the firewall); 0 picks ephemeral ones. With
    # media_port_per_worker each media worker has its own: worker w uses media_udp_port + w (open
    # the range media_udp_port .. + media_workers - 1), and a room's peers use its worker's port,
    # so each worker reads its own rooms' media. Off: every peer on the one port, read by one
    # thread that hands other workers' media on (a copy and a wake-up each).
    media_udp_port: int = 0
    media_port_per_worker: bool = True
    # ICE-TCP (RFC 6544): a TCP listener beside the UDP port on each media address, announced as a
    # passive host candidate below UDP's priority, for networks that block UDP. Its port (0: the
    # same number as media_udp_port, ephemeral if that is 0), the port announced instead when the
    # firewall maps another one to it (e.g. 443; 0: the bound port), and the most connections open.
    ice_tcp: bool = True
    media_tcp_port: int = 0
    media_tcp_announced_port: int = 0
    ice_tcp_max_connections: int = 1024
    # ICE consent freshness (RFC 7675) of connected peers, run by the native media plane: a check
    # every 0.8-1.2 x the interval, and a peer that answers none for the timeout is disconnected.
    ice_consent_interval_s: float = 5.0
    ice_consent_timeout_s: float = 30.0
    # TURN relay (coturn with use-auth-secret) for clients whose network blocks UDP or all but 443:
    # the URLs handed to clients (e.g. "turn:turn.example.org:3478?transport=udp",
    # "turns:turn.example.org:443?transport=tcp"), the secret shared with coturn's
    # static-auth-secret, and how long a credential lives (never past the client's token).
    # No URLs or no secret: no TURN, clients get no iceServers.
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str = ""
    turn_ttl_s: int = 3600
    # For `mediasrv turn-config`: the realm, and coturn's TLS certificate and key files (turns: on 443).
    turn_realm: str = "mediasrv"
    turn_tls_cert: str = ""
    turn_tls_key: str = ""
    # Media worker threads (a room is pinned to one); 0 = one per CPU core.
    media_workers: int = 0
    # After a receive of fewer than 16 datagrams a worker waits this long (up to 4x as long after
    # a read of very few) before reading again, so that it reads, routes and sends in batches:
    # fewer wake-ups and system calls per packet, at up to 4x this much added forwarding delay.
    # 0 reads as soon as anything arrives.
    media_rx_coalesce_us: int = 500
    # Loss simulation for tests: share of publishers' RTP dropped on arrival, parts per million.
    media_test_drop_ppm: int = 0
    # Most the server tells a publisher it may send for its video (REMB), bits per second. Below it,
    # the REMB follows what the track's viewers' links take (their own REMB, audio first): one viewer
    # (a 1:1 visit) shapes it down to min_video_bitrate; several, down to video_group_floor at most.
    max_video_bitrate: int = 2_500_000
    min_video_bitrate: int = 50_000
    video_group_floor: int = 150_000
    # Per subscriber, its bandwidth estimate goes to audio first; when what is left for one video
    # stream is below video_pause_bitrate its video is paused (audio only, `stream_paused`), and it
    # resumes once that share has stayed above video_resume_bitrate for video_resume_hold_s (twice
    # as long after each pause that follows a resume within 10 s, up to 8x). The
    # estimate starts at bwe_start_bitrate for subscribers that negotiated transport-cc.
    video_pause_bitrate: int = 150_000
    video_resume_bitrate: int = 200_000
    video_resume_hold_s: float = 2.0
    # A transport-cc subscriber's video is paced near its estimate once what it is sent comes close
    # to it (audio never waits), so a keyframe does not fill the bottleneck's queue ahead of audio.
    downlink_pacing: bool = True
    bwe_start_bitrate: int = 1_000_000
    # Largest HTTP body accepted for SDP and JSON (uploads have their own limit).
    max_signaling_body_bytes: int = 64 * 1024
    # Seconds a request body may take to arrive (JSON, SDP), or may sit idle between reads (tus
    # uploads); past it the request is answered 408 body_timeout and its connection closed.
    body_read_timeout_s: float = 15.0
    # Room WebSocket: messages a second each connection may send (0 = unlimited), the burst it may
    # send at once, and how many refused messages (one forgiven per second) close it with 4429.
    room_ws_messages_per_s: float = 20.0
    room_ws_burst: int = 40
    room_ws_close_after_refused: int = 50
    # Room WebSocket liveness: a ping after this many seconds in which nothing came from the client
    # (and again each time as long), and the session over (the others see `disconnected`) once
    # nothing, not even a pong, came for `room_ws_idle_timeout_s`: a waiting-room patient who closed
    # the laptop leaves the list within about that. A participant with a connected media
    # connection gets at least twice `ice_consent_timeout_s`: ICE consent watches its network, and
    # an outage shorter than consent never ends the session by its socket.
    room_ws_ping_s: float = 10.0
    room_ws_idle_timeout_s: float = 25.0
    # A WHIP/WHEP or room media connection that has not completed ICE and DTLS this long after it was
    # set up is closed, and its participant leaves (reason `setup_timeout`).
    session_setup_timeout_s: float = 20.0
    # A room token for a room that does not exist creates it (with default options) on join. Convenient
    # for development; turn it off in production, so every visit is a room created through the
    # control API (otherwise joining is 404 room_not_found).
    rooms_created_on_join: bool = True
    # Recorded messages (POST /whip/messages/...) one sender may be leaving at once; more is 429.
    max_message_sessions_per_sender: int = 2
    # What one client may hold open at once (0 = no limit); past it 429 (HTTP) or a close 4429 (room
    # WebSocket). Per address: HTTP connections (WebSockets included) plus WHIP/WHEP sessions, except
    # from the networks in `connection_caps_exempt` (loopback: behind a local reverse proxy every client
    # has its address, so the proxy must limit them; the load generator runs there too). Per identity:
    # WHIP, WHEP, recorded-message and room WebSocket sessions of one token subject. Per token: the
    # WHIP/WHEP sessions opened with one token.
    max_connections_per_address: int = 256
    max_sessions_per_identity: int = 16
    max_sessions_per_token: int = 8
    connection_caps_exempt: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    default_token_ttl_s: int = 3600
    max_token_ttl_s: int = 24 * 3600
    # Static bearer token for Prometheus scrapers (empty: /metrics needs an admin access token).
    metrics_token: str = ""
    log_level: str = "INFO"
    # Encryption key for stored patient data (base64, 32 bytes); generated into the data dir when empty.
    storage_key: str = ""
    retention_days: int = 30
    max_upload_bytes: int = 2 * 1024**3
    upload_expiry_s: int = 24 * 3600
    # Per sender (0 = off): declared bytes of unfinished uploads, and of uploads created in the last
    # 24 hours that are still stored. Over either, creating an upload is 413 quota_exceeded.
    upload_quota_pending_bytes: int = 4 * 1024**3
    upload_quota_daily_bytes: int = 10 * 1024**3
    # Metadata database (docs/cluster.md): empty = SQLite in <data_dir>/mediasrv.sqlite3, or
    # sqlite:///path, or postgresql://user[:password]@host:port/db (nodes of a cluster share it).
    database_url: str = ""
    # Encrypted blobs (attachments, recordings): empty = <data_dir>/blobs. Nodes sharing a database
    # share this directory too (a shared mount), so an upload can resume on any of them.
    blob_dir: str = ""
    # How long a node's claim to write an upload lasts unrenewed (renewed every third of it while it
    # writes): after a node dies, its unfinished uploads resume on another once this has passed.
    upload_lease_s: float = 30.0
    # How often old messages and abandoned uploads are purged (seconds; 0 disables the task).
    retention_purge_interval_s: float = 3600.0
    # Vitals alert thresholds (reading key -> [low, high]; either end may be null).
    vitals_thresholds: dict[str, list[float | None]] = field(
        default_factory=lambda: {"spo2_pct": [90.0, None], "heart_rate_bpm": [40.0, 130.0]}
    )
    # Cluster (docs/cluster.md): the Redis URL of the shared cluster state (empty: one node on its
    # own, as without a cluster), this node's id (empty: derived from host and port), the URL
    # clients and other nodes reach this node's HTTP at (empty: http://host:port), how long a room's
    # placement lease and a node's registry entry live without renewal (renewed every third of it),
    # how long a command sent to another node waits for its answer, and how long SIGTERM lets visits
    # go on before the node closes them and exits.
    redis_url: str = ""
    node_id: str = ""
    node_url: str = ""
    cluster_lease_ttl_s: float = 5.0
    cluster_command_timeout_s: float = 5.0
    drain_timeout_s: float = 300.0

    @property
    def announced_addresses(self) -> list[str]:
        return self.media_announced_addresses or self.media_bind_addresses


def _coerce(name: str, typ: typing.Any, value: typing.Any) -> typing.Any:
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if typ is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        if typ is Path:
            return Path(value)
        if origin is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError(value)
            (inner,) = typing.get_args(typ)
            return [_coerce(name, inner, v) for v in value]
        if origin is dict:
            if isinstance(value, str):
                import json

                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"setting {name!r}: cannot use {value!r} as {typ}") from exc
    return value


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: typing.Mapping[str, str] | None = None,
    **overrides: typing.Any,
) -> Settings:
    """Defaults < TOML file < environment < explicit overrides (command-line flags)."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(Settings)
    values: dict[str, typing.Any] = {}
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = env[ENV_PREFIX + "CONFIG"]
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from exc
        section = data.get("mediasrv", data)
        for key, value in section.items():
            if key not in hints:
                raise ConfigError(f"config file {config_file}: unknown setting {key!r}")
            values[key] = _coerce(key, hints[key], value)
    for f in dataclasses.fields(Settings):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = _coerce(f.name, hints[f.name], raw)
    for key, value in overrides.items():
        if value is not None:
            values[key] = _coerce(key, hints[key], value)
    settings = Settings(**values)
    if settings.port < 0 or settings.port > 65535:
        raise ConfigError(f"setting 'port': {settings.port} is not a TCP port")
    if settings.datapath not in ("native", "python"):
        raise ConfigError(f"setting 'datapath': {settings.datapath!r} is not 'native' or 'python'")
    if not 0 <= settings.media_udp_port <= 65535:
        raise ConfigError(f"setting 'media_udp_port': {settings.media_udp_port} is not a UDP port")
    if settings.media_port_per_worker and settings.media_udp_port + max(0, settings.media_workers - 1) > 65535:
        raise ConfigError("settings 'media_udp_port' + 'media_workers' - 1 go past 65535 "
                          "(each media worker has its own port with 'media_port_per_worker')")
    for name in ("media_tcp_port", "media_tcp_announced_port"):
        if not 0 <= getattr(settings, name) <= 65535:
            raise ConfigError(f"setting '{name}': {getattr(settings, name)} is not a TCP port")
    if not 0 <= settings.min_video_bitrate <= settings.video_group_floor <= settings.max_video_bitrate:
        raise ConfigError("video bitrates must satisfy 0 <= min_video_bitrate <= video_group_floor "
                          "<= max_video_bitrate")
    if not (0 <= settings.video_pause_bitrate <= settings.video_resume_bitrate
            and settings.bwe_start_bitrate > 0 and math.isfinite(settings.video_resume_hold_s)
            and settings.video_resume_hold_s >= 0):
        raise ConfigError("settings must satisfy 0 <= video_pause_bitrate <= video_resume_bitrate, "
                          "bwe_start_bitrate > 0 and video_resume_hold_s >= 0")
    if not (math.isfinite(settings.ice_consent_interval_s) and math.isfinite(settings.ice_consent_timeout_s)
            and 0 < settings.ice_consent_interval_s < settings.ice_consent_timeout_s):
        raise ConfigError("settings must satisfy 0 < ice_consent_interval_s < ice_consent_timeout_s")
    if settings.ice_tcp_max_connections < 1:
        raise ConfigError("setting 'ice_tcp_max_connections' must be at least 1")
    if not 0 <= settings.media_rx_coalesce_us <= 10_000:
        raise ConfigError("setting 'media_rx_coalesce_us' must be in 0..10000 (microseconds)")
    if settings.media_workers < 0 or not 0 <= settings.media_test_drop_ppm <= 1_000_000:
        raise ConfigError("settings 'media_workers' must be >= 0 and 'media_test_drop_ppm' in 0..1000000")
    if not (math.isfinite(settings.room_ws_ping_s) and math.isfinite(settings.room_ws_idle_timeout_s)
            and 0 < settings.room_ws_ping_s < settings.room_ws_idle_timeout_s):
        raise ConfigError("settings must satisfy 0 < room_ws_ping_s < room_ws_idle_timeout_s")
    if not (math.isfinite(settings.room_ws_messages_per_s) and settings.room_ws_messages_per_s >= 0
            and settings.room_ws_burst >= 1 and settings.room_ws_close_after_refused >= 1):
        raise ConfigError("setting 'room_ws_messages_per_s' must be >= 0 (0 = unlimited), "
                          "'room_ws_burst' and 'room_ws_close_after_refused' >= 1")
    if not (math.isfinite(settings.session_setup_timeout_s) and settings.session_setup_timeout_s > 0):
        raise ConfigError("setting 'session_setup_timeout_s' must be a number of seconds > 0")
    if not (math.isfinite(settings.body_read_timeout_s) and settings.body_read_timeout_s > 0):
        raise ConfigError("setting 'body_read_timeout_s' must be a number of seconds > 0")
    if settings.turn_ttl_s < 60:
        raise ConfigError("setting 'turn_ttl_s' must be at least 60 seconds")
    for url in settings.turn_urls:
        if not url.startswith(("turn:", "turns:")):
            raise ConfigError(f"setting 'turn_urls': {url!r} is not a turn: or turns: URL")
    if settings.turn_urls and len(settings.turn_secret) < MIN_API_SECRET_CHARS:
        raise ConfigError(f"setting 'turn_secret' must be at least {MIN_API_SECRET_CHARS} characters "
                          "when 'turn_urls' is set")
    if settings.max_message_sessions_per_sender < 1:
        raise ConfigError("setting 'max_message_sessions_per_sender' must be >= 1")
    for name in ("max_connections_per_address", "max_sessions_per_identity", "max_sessions_per_token"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"setting '{name}' must be >= 0 (0 = no limit)")
    for net in settings.connection_caps_exempt:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"setting 'connection_caps_exempt': {net!r} is not an address or network") from None
    if settings.upload_quota_pending_bytes < 0 or settings.upload_quota_daily_bytes < 0:
        raise ConfigError("settings 'upload_quota_pending_bytes' and 'upload_quota_daily_bytes' must be >= 0 "
                          "(0 = no limit)")
    if settings.database_url and not settings.database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError("setting 'database_url' must be empty, sqlite:///path or postgresql://...")
    if not (math.isfinite(settings.upload_lease_s) and settings.upload_lease_s > 0):
        raise ConfigError("setting 'upload_lease_s' must be a number of seconds > 0")
    for name in ("cluster_lease_ttl_s", "cluster_command_timeout_s", "drain_timeout_s"):
        value = getattr(settings, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"setting '{name}' must be a number of seconds > 0")
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("setting 'redis_url' must be a redis://, rediss:// or unix:// URL")
    if settings.redis_url and settings.host in ("", "0.0.0.0", "::"):
        # The defaults derive from host and port: every node on 0.0.0.0:8080 would share one id (one
        # command channel, leases each renews for the others) and send clients to http://0.0.0.0:8080.
        for name in ("node_id", "node_url"):
            if not getattr(settings, name):
                raise ConfigError(f"setting '{name}' must be set for a cluster node listening on all "
                                  f"addresses (host {settings.host!r})")
    if settings.redis_url and settings.port == 0:
        for name in ("node_id", "node_url"):  # the defaults would name port 0, not the one picked
            if not getattr(settings, name):
                raise ConfigError(f"setting '{name}' must be set for a cluster node on port 0")
    return settings


def _secret_file(path: Path, make: typing.Callable[[], str]) -> tuple[str, bool]:
    """Read a secret from `path`, or create it with mode 0600. Returns (secret, created)."""
    if path.exists():
        if os.stat(path).st_mode & 0o077:  # copied or restored with a loose mode: tighten it
            os.chmod(path, 0o600)
        secret = path.read_text().strip()
        if not secret:  # e.g. a crash between creating and writing it; never run keyless
            raise ConfigError(f"{path} is empty; delete it to generate a new secret")
        return secret, False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        secret = make()
        fh.write(secret + "\n")
    return secret, True


def prepare_data_dir(settings: Settings) -> list[str]:
    """Create the data directory and fill in generated secrets. Returns messages for the operator."""
    notes: list[str] = []
    settings.data_dir = settings.data_dir.resolve()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    if not settings.api_secret:
        path = settings.data_dir / "api_secret"
        settings.api_secret, created = _secret_file(path, lambda: secrets.token_urlsafe(48))
        notes.append(
            f"{'generated' if created else 'using'} API secret in {path} (mode 0600); "
            "set MEDIASRV_API_SECRET to use your own"
        )
    if len(settings.api_secret) < MIN_API_SECRET_CHARS:
        # HS256 tokens can be brute-forced offline against a short secret: anyone could mint admin.
        raise ConfigError(f"setting 'api_secret' must be at least {MIN_API_SECRET_CHARS} characters")
    if not settings.storage_key:
        import base64

        path = settings.data_dir / "storage_key"
        settings.storage_key, created = _secret_file(
            path, lambda: base64.b64encode(secrets.token_bytes(32)).decode()
        )
        if created:
            notes.append(f"generated storage encryption key in {path} (mode 0600)")
    return notes
