"""dlpipe.core.telemetry's /metrics server: it ends with the run, without holding it up."""

from __future__ import annotations

import socket
import time
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from dlpipe.core.telemetry import serve_metrics, stop_metrics


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return True
    return False


def test_stopping_returns_at_once_and_the_port_closes_soon_after():
    registry = CollectorRegistry()
    Counter("dlpipe_test_rows", "rows", registry=registry).inc(3)
    server, port = serve_metrics(registry, host="127.0.0.1", port=0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert "dlpipe_test_rows_total 3.0" in reply.read().decode()

    started = time.monotonic()
    stop_metrics(server)
    # shutdown() itself waits for the serving loop's next poll (up to 0.5 s): every
    # `dlpipe ingest --once` paid that at its end.
    assert time.monotonic() - started < 0.2  # right after a request: a waiting stop takes ~0.5 s
    deadline = time.monotonic() + 5
    while not _refused(port):
        assert time.monotonic() < deadline, f"port {port} still open 5 s after stop_metrics"
        time.sleep(0.05)
