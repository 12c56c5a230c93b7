"""``dlpipe serve``: run the REST API (uvicorn) and the gRPC API in one process.

    dlpipe serve [--host 0.0.0.0] [--port 8501] [--grpc-port 8500] [--model NAME ...]

With ``serving.admin_port`` set, ``/metrics`` moves to that port; with
``serving.auth_tokens_file`` set, the APIs need a bearer token (``dlpipe.serving.auth``); with
``serving.tls_cert_file`` and ``serving.tls_key_file``, REST is HTTPS and gRPC is over TLS.

Both APIs share one model registry, so both serve the same version and hot-reload together.
SIGTERM stops accepting, finishes requests in flight, then exits (Kubernetes-friendly).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence

from dlpipe.core.args import add_config_args, config_from_args
from dlpipe.core.config import Config, with_overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlpipe serve",
        description="Serve the newest promoted version of each model over the TensorFlow Serving "
                    "REST API (and gRPC), reloading when a newer version is promoted.")
    add_config_args(parser)
    parser.add_argument("--host", help="address to bind (default: serving.host)")
    parser.add_argument("--port", type=int, help="REST port (default: serving.port, 8501)")
    parser.add_argument("--grpc-port", type=int,
                        help="gRPC port, 0 for none (default: serving.grpc_port, 8500)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help="a model to serve; repeat for several (default: serving.models)")
    parser.add_argument("--poll-interval", type=float, metavar="S",
                        help="seconds between model store checks (default: serving.poll_interval_s)")
    return parser


def _apply_flags(cfg: Config, args: argparse.Namespace) -> Config:
    flags = {"serving.host": args.host, "serving.port": args.port,
             "serving.grpc_port": args.grpc_port, "serving.models": args.models,
             "serving.poll_interval_s": args.poll_interval}
    return with_overrides(cfg, {k: v for k, v in flags.items() if v is not None})


async def serve(cfg: Config) -> None:
    import uvicorn

    from dlpipe.serving.app import create_admin_app, create_app
    from dlpipe.serving.tls import grpc_server_credentials, tls_files

    tls = tls_files(cfg.serving)  # checked before any model loads
    app = create_app(cfg)
    # A backstop under the app's own limits: connections (idle keep-alive ones included)
    # and tasks beyond this get uvicorn's plain 503, so no client can grow memory unbounded.
    # asyncio's loop, not uvloop: libuv accepts one connection per loop iteration, so under
    # overload new connections waited seconds in the kernel's queue before they could even be
    # shed (bench_serve_overload); asyncio accepts up to the backlog at once, and the server's
    # throughput (TensorFlow-bound, batched) is the same.
    config = uvicorn.Config(app, host=cfg.serving.host, port=cfg.serving.port, loop="asyncio",
                            http="httptools", access_log=False, log_level="info",
                            limit_concurrency=4 * cfg.serving.max_concurrent_requests,
                            timeout_graceful_shutdown=20,
                            ssl_certfile=str(tls.cert) if tls else None,
                            ssl_keyfile=str(tls.key) if tls else None)
    servers = [uvicorn.Server(config)]
    if cfg.serving.admin_port:  # metrics apart from the API, e.g. reachable by Prometheus only
        servers.append(uvicorn.Server(uvicorn.Config(
            create_admin_app(app.state.registry.metrics), host=cfg.serving.host,
            port=cfg.serving.admin_port, loop="asyncio", access_log=False, log_level="warning")))
    grpc_server = None
    if cfg.serving.grpc_port:
        from dlpipe.serving.grpc_api import start_grpc

        grpc_server = await start_grpc(app.state.registry, host=cfg.serving.host,
                                       port=cfg.serving.grpc_port,
                                       credentials=grpc_server_credentials(tls) if tls else None)
    from dlpipe.core.telemetry import announced

    host = "127.0.0.1" if cfg.serving.host in ("0.0.0.0", "::") else cfg.serving.host
    target = contextlib.ExitStack()  # the Prometheus target file, removed at app shutdown
    if tls and not cfg.serving.admin_port:
        logging.getLogger("dlpipe.serve").warning(
            "/metrics is served over HTTPS on the API port; the stack's Prometheus scrapes plain "
            "HTTP: set serving.admin_port to give it a plain metrics port")
    target.enter_context(announced(cfg, "serve", cfg.serving.admin_port or cfg.serving.port, host=host))
    app.state.shutdown_hooks = [target.close]
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        target.close()
        if grpc_server is not None:
            await grpc_server.stop(grace=5)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = _apply_flags(config_from_args(args), args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dlpipe.serve").info(
        "REST on %s://%s:%s%s, models %s from s3://%s (endpoint %s)",
        "https" if cfg.serving.tls_cert_file else "http", cfg.serving.host,
        cfg.serving.port, f", gRPC{' over TLS' if cfg.serving.tls_cert_file else ''} on "
                          f"{cfg.serving.host}:{cfg.serving.grpc_port}"
        if cfg.serving.grpc_port else "", ", ".join(cfg.serving.models), cfg.buckets.models,
        cfg.s3_endpoint)
    asyncio.run(serve(cfg))
    return 0


if __name__ == "__main__":
    from dlpipe.core.args import run_main

    run_main(main, prog="serve")
