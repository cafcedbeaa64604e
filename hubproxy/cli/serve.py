"""``hubproxy serve``: run the server under uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil

from hubproxy.config import Settings, load_settings, settings_to_env
from hubproxy.memory import limit_malloc_arenas

#: The settings people change most, as flags: (flag, setting, type, help). Every other setting is in the YAML file
#: or a HUBPROXY_<NAME> variable (config/hubproxy.example.yaml).
FLAGS = (
    ("--host", "host", str, "address to listen on; 0.0.0.0 for every interface"),
    ("--port", "port", int, "port to listen on"),
    ("--upstream", "upstream", str, "the hub to mirror"),
    ("--data-dir", "data_dir", str, "blobs, spool and (by default) the SQLite database"),
    ("--database-url", "database_url", str, "PostgreSQL for replicas, e.g. postgresql://user:pw@host/db"),
    ("--workers", "workers", int, "server processes sharing the port"),
    ("--log-level", "log_level", str, "debug, info, warning or error"),
    ("--log-format", "log_format", str, "json, text, or auto (text on a terminal)"),
    ("--anonymous-access", "anonymous_access", str, "read, or off (every request needs a token)"),
    ("--tls-certfile", "tls_certfile", str, "serve HTTPS with this PEM certificate (and --tls-keyfile)"),
    ("--tls-keyfile", "tls_keyfile", str, "the certificate's PEM private key"),
)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    defaults = Settings()
    serve = sub.add_parser("serve", help="run the proxy server",
                           description="Run hubproxy. Flags win over HUBPROXY_* variables, which win over --config.")
    serve.add_argument("--config", help="YAML config file (HUBPROXY_CONFIG)")
    for flag, name, kind, text in FLAGS:
        default = getattr(defaults, name)
        shown = f"default {default}" if default not in (None, "") else "no default"
        serve.add_argument(flag, dest=name, type=kind, help=f"{text} ({shown}; HUBPROXY_{name.upper()})")
    serve.add_argument("--offline", action="store_true", default=None,
                       help="never contact the upstream (HUBPROXY_OFFLINE)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from hubproxy.http_protocol import HubproxyHttpProtocol
    from hubproxy.observability.logs import setup_logging

    limit_malloc_arenas()
    overrides = {name: getattr(args, name) for _, name, _, _ in FLAGS}
    overrides["offline"] = args.offline
    settings = load_settings(args.config, overrides)
    setup_logging(settings.log_level, settings.log_format)
    common = {"host": settings.host, "port": settings.port, "log_level": settings.log_level, "loop": "uvloop",
              "http": HubproxyHttpProtocol, "timeout_keep_alive": 30, "server_header": False,
              "proxy_headers": False,  # X-Forwarded-* are judged by trusted_proxies, not uvicorn
              "log_config": None, "access_log": False,  # our logging setup; our own access log, with request ids
              "timeout_graceful_shutdown": settings.shutdown_timeout,
              "ssl_certfile": settings.tls_certfile, "ssl_keyfile": settings.tls_keyfile}
    if settings.workers > 1:
        # Metrics of all workers are kept in files here and summed by whichever worker is scraped.
        multiproc = settings.data_dir / "prometheus-multiproc"
        shutil.rmtree(multiproc, ignore_errors=True)
        multiproc.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
        # Worker processes build their app from the environment: hand them the resolved settings.
        os.environ.update(settings_to_env(settings))
        os.environ.pop("HUBPROXY_CONFIG", None)
        from hubproxy.workers import run_workers  # each worker accepts on a socket of its own

        run_workers(uvicorn.Config("hubproxy.app:app_from_env", factory=True, workers=settings.workers, **common))
    else:
        from hubproxy.app import create_app  # only here: a multi-worker parent stays small

        uvicorn.run(create_app(settings), **common)
    return 0
