"""The process supervisor, on real child processes (a Python HTTP server and a stubborn sleeper)."""

from __future__ import annotations

import socket
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from dlpipe.core.errors import ServiceError
from dlpipe.core.process import Service, free_ports


def _http_ok(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp:
        return resp.status == 200


def http_service(tmp_path: Path, port: int) -> Service:
    return Service(
        name="http",
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
              "--directory", str(tmp_path)],
        log=tmp_path / "http.log", pid_file=tmp_path / "http.pid", ports=[port],
        healthy=lambda: _http_ok(port),
    )


def test_start_waits_for_health_reuses_and_stops(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    svc = http_service(tmp_path, port)
    assert svc.status() == "stopped"
    assert svc.start(timeout_s=20) is True
    assert svc.status() == "healthy" and _http_ok(port)
    pid = svc.pid()
    assert svc.start(timeout_s=5) is False, "a healthy service is reused, not started twice"
    assert svc.pid() == pid
    assert svc.stop(timeout_s=5) is True
    assert svc.status() == "stopped" and not svc.pid_file.exists()
    with pytest.raises(OSError):
        _http_ok(port)


def test_port_taken_names_the_port_and_the_fix(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(ServiceError) as err:
            http_service(tmp_path, port).start(timeout_s=5)
    assert f"127.0.0.1:{port} is already in use" in str(err.value)
    assert "--free-ports" in str(err.value)


def test_process_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    svc = Service(
        name="broken", argv=[sys.executable, "-c", "import sys; print('bad flag --x'); sys.exit(3)"],
        log=tmp_path / "b.log", pid_file=tmp_path / "b.pid", ports=[], healthy=lambda: False,
    )
    with pytest.raises(ServiceError, match=r"(?s)exited with code 3.*bad flag --x"):
        svc.start(timeout_s=10)
    assert not svc.pid_file.exists()


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(textwrap.dedent("""
        import signal, time
        signal.signal(signal.SIGTERM, lambda *a: None)
        print("ready", flush=True)
        while True:
            time.sleep(1)
    """))
    log = tmp_path / "s.log"
    svc = Service(name="stubborn", argv=[sys.executable, str(script)], log=log,
                  pid_file=tmp_path / "s.pid", ports=[], healthy=lambda: "ready" in log.read_text())
    svc.start(timeout_s=10)
    started = time.monotonic()
    assert svc.stop(timeout_s=1.0) is True
    assert svc.pid() is None
    assert time.monotonic() - started < 8


def test_unhealthy_start_times_out_and_cleans_up(tmp_path: Path) -> None:
    svc = Service(name="mute", argv=[sys.executable, "-c", "import time; time.sleep(60)"],
                  log=tmp_path / "m.log", pid_file=tmp_path / "m.pid", ports=[], healthy=lambda: False)
    with pytest.raises(ServiceError, match="did not become healthy within 1s"):
        svc.start(timeout_s=1)
    assert svc.pid() is None


def test_run_streaming_feeds_lines_and_reports_the_tail_on_failure() -> None:
    from dlpipe.core.progress import run_streaming

    seen: list[str] = []
    run_streaming([sys.executable, "-c", "print('a'); print('b')"], on_line=seen.append, failure="x")
    assert seen == ["a", "b"]
    with pytest.raises(RuntimeError, match=r"(?s)build failed:.*why it broke"):
        run_streaming([sys.executable, "-c", "print('why it broke'); raise SystemExit(1)"],
                      on_line=lambda _: None, failure="build failed")


def test_kafka_cluster_ids_never_start_with_a_dash() -> None:
    """An id starting with "-" is read as an option by Kafka's StorageTool; redraw it."""
    import uuid

    from dlpipe.localstack.services import new_cluster_id

    dash_first = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # base64 of 0b111110... is "-"
    plain = uuid.UUID(bytes=bytes(16))
    draws = iter([dash_first, dash_first, plain])
    assert new_cluster_id(lambda: next(draws)) == "AAAAAAAAAAAAAAAAAAAAAA"
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)


def test_a_failing_prepare_step_is_reported_as_that_service_failing(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    svc = http_service(tmp_path, port)

    def prepare():
        raise PermissionError(13, "Permission denied", str(tmp_path / "data"))

    svc.prepare = prepare
    with pytest.raises(ServiceError) as err:
        svc.start(timeout_s=5)
    assert str(err.value).startswith("http: preparing to start failed: PermissionError")
    assert "fix: check " in str(err.value)
    assert svc.pid() is None


def test_stop_never_signals_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    """A stale pid file whose pid now belongs to another process: stop leaves that one alone."""
    import subprocess

    (port,) = free_ports(1)
    svc = http_service(tmp_path, port)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        svc.pid_file.write_text(f"{stranger.pid} 12345\n")  # the pid, another start time
        assert svc.pid() is None and svc.status() == "stopped"
        assert svc.stop(timeout_s=2) is False
        assert stranger.poll() is None, "the stranger must still run"
    finally:
        stranger.kill()
        stranger.wait()


def test_the_pid_file_names_the_process_by_pid_and_start_time(tmp_path: Path) -> None:
    from dlpipe.core.process import start_time

    (port,) = free_ports(1)
    svc = http_service(tmp_path, port)
    assert svc.start(timeout_s=20)
    try:
        pid_text, started = svc.pid_file.read_text().split()
        assert int(pid_text) == svc.pid() and started == start_time(int(pid_text))
    finally:
        svc.stop(timeout_s=5)
