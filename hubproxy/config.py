"""Settings: defaults < YAML file < HUBPROXY_* environment < command-line flags.

One validated object for the whole process. Every setting is documented in
``config/hubproxy.example.yaml``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting."""


@dataclass
class Settings:
    """Every hubproxy setting with its default."""

    #: Loopback by default: listening on every interface (0.0.0.0) is a decision (the image and chart make it).
    host: str = "127.0.0.1"
    port: int = 8000
    #: Serve HTTPS: a PEM certificate (chain) and its private key; both or neither.
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    upstream: str = "https://huggingface.co"
    data_dir: Path = Path("./hubproxy-data")
    offline: bool = False
    upstream_token: str | None = field(default=None, repr=False)
    #: PEM file of CA certificates to trust for the upstream besides the system's (a corporate TLS proxy's CA).
    upstream_ca_bundle: str | None = None
    #: Database URL; default is a SQLite file inside the data dir.
    database_url: str | None = None
    #: Public base URL clients use (for Link headers); default: derived from the request.
    public_url: str | None = None
    #: Path prefix hubproxy is served under (``/hf`` for ``HF_ENDPOINT=http://host/hf``); empty for none.
    path_prefix: str = ""
    #: Seconds a branch or tag -> commit mapping (and other mutable metadata) stays fresh.
    revision_ttl: float = 60.0
    #: Seconds to wait for the upstream when a stale cached answer could be served instead.
    stale_timeout: float = 5.0
    #: Seconds to connect to the upstream and between received bytes.
    upstream_timeout: float = 30.0
    #: How often a fill retries (with a Range request) after the upstream drops it.
    fill_retries: int = 5
    #: Concurrent Range requests that fill one large blob (1: a single stream). CDNs limit each stream.
    fill_connections: int = 16
    #: Bytes per Range request of a parallel fill; blobs under twice this take one stream.
    fill_part_bytes: int = 16 * 1024 * 1024
    #: A fill's first stream at least this fast (MB/s) is not joined by more connections (the proxy's CPU, not
    #: the stream, is then the limit); 0: always open fill_connections.
    fill_single_stream_mbps: float = 300.0
    #: A fill's single fast stream writes its spool file with direct I/O (past the page cache) where the
    #: filesystem allows (not NFS or other network filesystems), and its readers are sent the bytes from the
    #: buffers they were written from: new page-cache memory is the dearest part of a fast cold fill. The
    #: stored blob is then not in the page cache after its fill. false: always through the page cache.
    fill_direct_writes: bool = True
    #: MiB of a parallel fill's parts that a worker process holds in memory (over all its fills) until they are
    #: hashed and sent, where the spool takes direct I/O; beyond it they are read back from the spool. 0: never.
    fill_held_mib: int = 256
    #: Entries per tree page (the Hub uses 1000, and 50 with expand=true).
    tree_page_size: int = 1000
    tree_expand_page_size: int = 50
    #: Bytes per read when serving a stored blob.
    serve_chunk_size: int = 1024 * 1024
    log_level: str = "info"
    #: ``json`` (one object per line, with the request id), ``text``, or ``auto``: text on a terminal, JSON otherwise.
    log_format: str = "auto"
    #: One log line per request (method, path, status, bytes, duration, time to first byte, request id).
    access_log: bool = True
    #: Seconds SIGTERM waits for in-flight downloads before closing them (then the audit queue is flushed).
    shutdown_timeout: float = 30.0
    #: Size budget of the blob store in bytes (suffixes K, M, G, T accepted); 0 = no limit.
    cache_max_bytes: int = 0
    #: Seconds between maintenance rounds (access statistics written, eviction to the budget).
    maintenance_interval: float = 10.0
    #: Where blobs live: ``local`` (the data dir, local disk or NFS) or ``s3``.
    store: str = "local"
    s3_bucket: str | None = None
    #: Key prefix inside the bucket (blobs go under ``<prefix>blobs/``).
    s3_prefix: str = "hubproxy/"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    #: Path-style addressing (most S3-compatible servers want it).
    s3_path_style: bool = False
    #: Answer downloads of stored LFS blobs with a 302 to a presigned URL instead of streaming them.
    s3_redirect: bool = False
    #: Seconds a presigned URL stays valid (it must outlive a resumed download).
    s3_presign_ttl: int = 3600
    #: Ranged GETs at once for one read of a large stored object whose first stream is slower than
    #: ``s3_read_single_stream_mbps`` (a bucket that holds each connection back); 1: always one stream.
    s3_read_connections: int = 8
    s3_read_single_stream_mbps: float = 200.0
    #: Seconds an upload to the bucket may stay unfinished (its process died) before it is aborted, unless its
    #: blob is being filled; 0 = never. Must exceed the longest upload of one blob.
    s3_abandoned_upload_seconds: float = 86400.0
    #: URL other replicas reach this one at (fill relays with the S3 store); default: this host's address and port.
    advertise_url: str | None = None
    #: Seconds a replica's claim to fill a blob lasts without renewal (a dead replica's claim then lapses).
    fill_lease_seconds: float = 30.0
    #: Callers without a valid token: ``read`` (download what the upstream serves anonymously) or ``off``.
    anonymous_access: str = "read"
    #: Project whose policy anonymous callers read under (as developers); none: free while no project exists.
    anonymous_project: str | None = None
    #: Who may read ``/metrics``: ``open`` (anyone who reaches the port, as Prometheus expects) or ``token`` (any
    #: valid hubproxy token, sent as ``Authorization: Bearer``). ``/health`` and ``/ready`` are always open.
    metrics_access: str = "open"
    #: OpenTelemetry spans (request, fill, upstream, store, database) exported over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT;
    #: needs the ``tracing`` extra.
    tracing: bool = False
    #: Seconds a token check is remembered (a revoked token stops working within this time).
    token_cache_seconds: float = 30.0
    #: Proxies whose X-Forwarded-For is believed (comma-separated addresses or CIDRs); others' is ignored.
    trusted_proxies: str = ""
    #: Days download events are kept (0: for ever).
    audit_retention_days: float = 365.0
    #: Server processes sharing the port and the store (fills are coordinated through the store).
    workers: int = 1
    #: PEM file of the ed25519 private key ``hubproxy sync export`` signs bundle manifests with; none: unsigned.
    sync_signing_key: str | None = None
    #: PEM files (comma-separated) of the public keys ``sync import``/``verify`` accept; set: unsigned is refused.
    sync_trusted_keys: str = ""
    #: Hosted repos speak Xet (hubproxy's own CAS): current clients upload large files and download any size.
    xet: bool = True
    #: Hosted files uploaded without Xet (over LFS, inline) of at least this size get a Xet form in the background,
    #: so current clients can download them (they refuse plain-HTTP downloads above 50 GB).
    xet_convert_min_bytes: int = 50 * 1000**3
    #: A user's own name is a hosted namespace (``create_repo("name")`` puts the repo there).
    personal_namespaces: bool = True
    #: Visibility of a new hosted repo when the client does not say: private, internal or public.
    hosted_default_visibility: str = "private"
    #: Upload mode preupload answers: ``auto`` (by client, ``docs/protocol.md``) or ``lfs`` (always, non-empty).
    hosted_upload_mode: str = "auto"
    #: Largest file accepted inline in a commit (regular mode), in bytes (suffixes K, M, G accepted).
    regular_upload_max_bytes: int = 1024**3
    #: LFS objects larger than this are uploaded in parts of ``lfs_multipart_chunk_bytes`` (a failed part is resent
    #: alone).
    lfs_multipart_threshold_bytes: int = 2 * 1024**3
    lfs_multipart_chunk_bytes: int = 256 * 1024**2
    #: Most operations (files added or deleted) one commit may hold.
    max_commit_operations: int = 25_000

    @property
    def db_url(self) -> str:
        """The effective database URL."""
        return self.database_url or default_db_url(self.data_dir)

    @property
    def upstream_url(self) -> str:
        """The upstream base URL without a trailing slash."""
        return self.upstream.rstrip("/")


def default_db_url(data_dir: Path) -> str:
    """The SQLite file inside a data dir: the index when no ``database_url`` is set."""
    return f"sqlite:///{(data_dir / 'hubproxy.db').resolve()}"


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Convert ``value`` to the type of setting ``name`` or raise ConfigError."""
    if value is None:
        return None
    try:
        if kind is bool or kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _BOOL_TRUE:
                return True
            if text in _BOOL_FALSE:
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        if kind in (int, "int"):
            if isinstance(value, bool):
                raise ValueError("expected a whole number")
            if name.endswith("_bytes"):
                return parse_size(value)
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind in (Path, "Path"):
            return Path(str(value)).expanduser()
        if isinstance(value, bool):  # YAML reads a bare off/on as a boolean
            return "on" if value else "off"
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: {exc}") from None


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: Any) -> int:
    """``123``, ``500M``, ``20G``, ``1.5T`` (binary units, optional ``B``/``iB``) to bytes."""
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in "KMGT" and text[-1:] else ""
    number = text[: len(text) - len(unit)] if unit else text
    size = float(number) * _UNITS[unit]
    if size < 0:
        raise ValueError("a size cannot be negative")
    return int(size)


def _field_kinds() -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        annotation = str(f.type).replace(" | None", "")
        kinds[f.name] = annotation
    return kinds


def _validate(s: Settings) -> Settings:
    if not 0 < s.port < 65536:
        raise ConfigError(f"setting 'port': {s.port} is not a TCP port (1-65535)")
    parts = urlsplit(s.upstream)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"setting 'upstream': {s.upstream!r} is not an http(s) URL")
    if bool(s.tls_certfile) != bool(s.tls_keyfile):
        raise ConfigError("settings 'tls_certfile' and 'tls_keyfile' go together")
    for name in ("tls_certfile", "tls_keyfile"):
        if getattr(s, name) and not Path(getattr(s, name)).is_file():
            raise ConfigError(f"setting {name!r}: {getattr(s, name)} is not a file")
    if s.upstream_ca_bundle and not Path(s.upstream_ca_bundle).is_file():
        raise ConfigError(f"setting 'upstream_ca_bundle': {s.upstream_ca_bundle} is not a file")
    if s.public_url:
        p = urlsplit(s.public_url)
        if p.scheme not in ("http", "https") or not p.netloc:
            raise ConfigError(f"setting 'public_url': {s.public_url!r} is not an http(s) URL")
    for name in ("revision_ttl", "stale_timeout", "upstream_timeout", "maintenance_interval", "cache_max_bytes",
                 "fill_lease_seconds", "fill_single_stream_mbps", "s3_read_single_stream_mbps", "token_cache_seconds", "audit_retention_days", "shutdown_timeout",
                 "s3_abandoned_upload_seconds"):
        if getattr(s, name) < 0:
            raise ConfigError(f"setting {name!r} must not be negative")
    for name in ("tree_page_size", "tree_expand_page_size", "serve_chunk_size", "workers", "s3_read_connections"):
        if getattr(s, name) < 1:
            raise ConfigError(f"setting {name!r} must be at least 1")
    if s.path_prefix:
        if not s.path_prefix.startswith("/") or "//" in s.path_prefix or "?" in s.path_prefix:
            raise ConfigError(f"setting 'path_prefix': {s.path_prefix!r} must look like /name")
        s.path_prefix = s.path_prefix.rstrip("/")
    try:
        trusted_networks(s.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"setting 'trusted_proxies': {exc}") from None
    if s.anonymous_access not in ("read", "off"):
        raise ConfigError(f"setting 'anonymous_access': {s.anonymous_access!r} is not one of read, off")
    if s.metrics_access not in ("open", "token"):
        raise ConfigError(f"setting 'metrics_access': {s.metrics_access!r} is not one of open, token")
    if s.hosted_default_visibility not in ("private", "internal", "public"):
        raise ConfigError(f"setting 'hosted_default_visibility': {s.hosted_default_visibility!r} is not one of "
                          "private, internal, public")
    if s.hosted_upload_mode not in ("auto", "lfs"):
        raise ConfigError(f"setting 'hosted_upload_mode': {s.hosted_upload_mode!r} is not one of auto, lfs")
    if s.lfs_multipart_chunk_bytes < 5 * 1024**2:
        raise ConfigError("setting 'lfs_multipart_chunk_bytes' must be at least 5M")
    if s.max_commit_operations < 1:
        raise ConfigError("setting 'max_commit_operations' must be at least 1")
    if s.store not in ("local", "s3"):
        raise ConfigError(f"setting 'store': {s.store!r} is not one of local, s3")
    if s.store == "s3" and not s.s3_bucket:
        raise ConfigError("setting 's3_bucket' is required with store: s3")
    if not 60 <= s.s3_presign_ttl <= 7 * 24 * 3600:
        raise ConfigError("setting 's3_presign_ttl' must be between 60 seconds and 7 days (604800), "
                          "the longest a SigV4 presigned URL is valid")
    if s.fill_retries < 0:
        raise ConfigError("setting 'fill_retries' must not be negative")
    if not 1 <= s.fill_connections <= 64:
        raise ConfigError("setting 'fill_connections' must be between 1 and 64")
    if not 0 <= s.fill_held_mib <= 1024 * 1024:
        raise ConfigError("setting 'fill_held_mib' must be between 0 and 1048576")
    if s.fill_part_bytes < 1024 * 1024:
        raise ConfigError("setting 'fill_part_bytes' must be at least 1 MiB (1048576)")
    if s.log_format not in ("json", "text", "auto"):
        raise ConfigError(f"setting 'log_format': {s.log_format!r} is not one of auto, json, text")
    if s.log_level.lower() not in ("critical", "error", "warning", "info", "debug"):
        raise ConfigError(f"setting 'log_level': {s.log_level!r} is not a log level")
    return s


def trusted_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Parse ``trusted_proxies``."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]


def settings_to_env(s: Settings) -> dict[str, str]:
    """The settings as HUBPROXY_* variables (for worker processes, which re-read the environment)."""
    env: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        value = getattr(s, f.name)
        if value is not None:
            env[f"HUBPROXY_{f.name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the settings: defaults, then the YAML file, then env vars, then ``overrides`` (flags)."""
    env = os.environ if environ is None else environ
    kinds = _field_kinds()
    values: dict[str, Any] = {}

    path = config_file or env.get("HUBPROXY_CONFIG")
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: invalid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: expected a mapping of settings")
        for key, value in raw.items():
            name = str(key).replace("-", "_")
            if name not in kinds:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[name] = _coerce(name, kinds[name], value)

    for name, kind in kinds.items():
        env_value = env.get(f"HUBPROXY_{name.upper()}")
        if env_value is not None:
            values[name] = _coerce(name, kind, env_value)

    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, kinds[name], value)

    return _validate(Settings(**values))
