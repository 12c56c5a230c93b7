"""The local MLflow tracking server: runs and the model registry in SQLite under the state
dir, artifacts in the ``buckets.mlflow`` bucket on the stack's MinIO (through MLflow's own S3
client, so the server proxies artifact uploads and clients need no S3 credentials).

Like Kafka and MinIO it is the real program (``mlflow server`` from PyPI), started and
health-checked by ``dlpipe stack up``; ``stack.mlflow.enabled: false`` leaves it out.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dlpipe.core.config import Config
from dlpipe.core.errors import MissingToolError
from dlpipe.core.process import Service
from dlpipe.localstack.services import _http_ok, private_dir


def mlflow_bin() -> Path:
    path = Path(sys.executable).parent / "mlflow"
    if not path.exists():
        raise MissingToolError("the mlflow command is not installed in this environment",
                               fix="make setup (it installs requirements.lock, mlflow included)")
    return path


def mlflow_service(cfg: Config) -> Service:
    home = cfg.stack.state_dir / "mlflow"
    host, port = cfg.stack.host, cfg.stack.mlflow.port

    def healthy() -> bool:
        return _http_ok(f"http://{host}:{port}/health") is not None

    def prepare() -> dict[str, str]:
        private_dir(home)
        key, secret = cfg.s3_credentials()
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}

    return Service(
        name="mlflow",
        argv=[str(mlflow_bin()), "server", "--host", host, "--port", str(port), "--workers", "1",
              "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
              "--artifacts-destination", f"s3://{cfg.buckets.mlflow}/artifacts",
              "--serve-artifacts"],
        log=home / "mlflow.log", pid_file=home / "mlflow.pid", ports=[port], healthy=healthy,
        host=host, prepare=prepare,
        env={"MLFLOW_S3_ENDPOINT_URL": cfg.s3_endpoint, "AWS_DEFAULT_REGION": cfg.s3.region,
             "MLFLOW_S3_IGNORE_TLS": "true", "PYTHONUNBUFFERED": "1",
             # GenAI job runners (5 huey consumers, ~1 GB): nothing of dlpipe uses them.
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
