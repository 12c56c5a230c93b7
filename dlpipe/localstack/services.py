"""The local services: a Kafka broker (KRaft), a MinIO server and a Spark standalone cluster.

Each function returns a ``Service`` that knows how to run and health-check the real
program; nothing here is a fake. Files for each service live under the stack's state dir.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from dlpipe.core.config import Config
from dlpipe.core.errors import MissingToolError, ServiceError
from dlpipe.core.process import Service
from dlpipe.localstack.install import Installed


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    path = Path(home, "bin", "java") if home else shutil.which("java")
    if not path or not Path(path).exists():
        raise MissingToolError(
            "java is not installed (Kafka and Spark need Java 17 or 21)",
            fix="apt-get install -y openjdk-17-jre-headless, or set JAVA_HOME",
        )
    return str(path)


def _http_ok(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read() if resp.status == 200 else None
    except OSError:
        return None


# -- Kafka ----------------------------------------------------------------------------

KAFKA_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka
        level: WARN
      - name: org.apache.kafka
        level: WARN
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


def kafka_properties(cfg: Config, data_dir: Path) -> str:
    host, k = cfg.stack.host, cfg.stack.kafka
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers={host}:{k.controller_port}",
        f"listeners=PLAINTEXT://{host}:{k.port},CONTROLLER://{host}:{k.controller_port}",
        f"advertised.listeners=PLAINTEXT://{host}:{k.port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        # A single node: every internal topic has one replica, and idempotent and
        # transactional producers (acks=all) work because min.insync.replicas is 1.
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=false",
        "",
    ])


def private_dir(path: Path) -> Path:
    """A data folder only its owner can enter (0700): messages and objects live there."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def new_cluster_id(draw: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A KRaft cluster id drawn as Kafka's own ``random-uuid`` draws it: 16 random bytes in
    URL-safe base64, redrawn when it would start with ``-`` (StorageTool would read such an
    id as an option and fail: 1 fresh stack in 64 did before this)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(draw().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def format_kafka_storage(jvm: Sequence[str], props: Path, data: Path, cluster_id: str) -> None:
    """Format a new broker's log dirs; a failure names the service, the cause and the fix."""
    out = subprocess.run(
        [*jvm, "kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={cluster_id}",
         "-c", str(props)],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        lines = (out.stdout + out.stderr).strip().splitlines()[-15:]
        raise ServiceError(
            f"kafka: formatting its storage in {data} with cluster id {cluster_id} failed "
            f"(exit {out.returncode}):\n" + "\n".join(f"    {line}" for line in lines),
            fix=f"remove {data} and run `dlpipe stack up` again (a new id is drawn)",
        )


def kafka_service(cfg: Config, installed: Installed) -> Service:
    home = cfg.stack.state_dir / "kafka"
    data = home / "data"
    props = home / "server.properties"
    log4j = home / "log4j2.yaml"
    classpath = f"{installed.kafka_libs}/*"
    jvm = [
        java(), f"-Xmx{cfg.stack.kafka.heap}", f"-Xms{cfg.stack.kafka.heap}",
        "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
    ]

    def prepare() -> None:
        props.parent.mkdir(parents=True, exist_ok=True)
        props.write_text(kafka_properties(cfg, data))
        log4j.write_text(KAFKA_LOG4J2)
        private_dir(data)
        if not (data / "meta.properties").exists():
            format_kafka_storage(jvm, props, data, new_cluster_id())

    def healthy() -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({
            "bootstrap.servers": f"{cfg.stack.host}:{cfg.stack.kafka.port}",
            "socket.timeout.ms": 2000, "log_level": 0,
        })
        md = admin.list_topics(timeout=2)
        return bool(md.brokers)

    return Service(
        name="kafka", argv=[*jvm, "kafka.Kafka", str(props)], log=home / "kafka.log",
        pid_file=home / "kafka.pid", ports=[cfg.stack.kafka.port, cfg.stack.kafka.controller_port],
        healthy=healthy, host=cfg.stack.host, prepare=prepare,
    )


# -- MinIO ----------------------------------------------------------------------------

def minio_service(cfg: Config, installed: Installed) -> Service:
    home = cfg.stack.state_dir / "minio"
    host, m = cfg.stack.host, cfg.stack.minio

    def healthy() -> bool:
        return _http_ok(f"http://{host}:{m.port}/minio/health/live") is not None

    def prepare() -> dict[str, str]:
        private_dir(home / "data")
        key, secret = cfg.s3_credentials()
        return {"MINIO_ROOT_USER": key, "MINIO_ROOT_PASSWORD": secret}

    return Service(
        name="minio",
        argv=[str(installed.minio_bin), "server", "--quiet", "--address", f"{host}:{m.port}",
              "--console-address", f"{host}:{m.console_port}", str(home / "data")],
        log=home / "minio.log", pid_file=home / "minio.pid", ports=[m.port, m.console_port],
        healthy=healthy, host=host, env={"MINIO_UPDATE": "off"}, prepare=prepare,
    )


# -- Spark standalone cluster ---------------------------------------------------------

def _spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def _spark_env() -> dict[str, str]:
    return {
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_DAEMON_MEMORY": "512m",
    }


def _worker_dir_and_keys(cfg: Config, work: Path) -> dict[str, str]:
    """A worker's executors read the S3 keys from the environment they inherit from it
    (dlpipe.core.session: never from SparkConf)."""
    from dlpipe.core.session import s3_env

    work.mkdir(parents=True, exist_ok=True)
    return s3_env(cfg)


def spark_master_status(cfg: Config) -> dict | None:
    body = _http_ok(f"http://{cfg.stack.host}:{cfg.stack.spark_cluster.master_ui_port}/json/")
    return json.loads(body) if body else None


def spark_cluster_services(cfg: Config) -> list[Service]:
    home = cfg.stack.state_dir / "spark"
    host, c = cfg.stack.host, cfg.stack.spark_cluster

    def master_healthy() -> bool:
        st = spark_master_status(cfg)
        return bool(st) and st.get("status") == "ALIVE"

    master = Service(
        name="spark-master",
        argv=[_spark_class(), "org.apache.spark.deploy.master.Master", "--host", host,
              "--port", str(c.master_port), "--webui-port", str(c.master_ui_port)],
        log=home / "master.log", pid_file=home / "master.pid",
        ports=[c.master_port, c.master_ui_port], healthy=master_healthy, host=host,
        env=_spark_env(), prepare=lambda: home.mkdir(parents=True, exist_ok=True),
    )
    services = [master]
    for i in range(1, c.workers + 1):
        work = home / f"worker-{i}"

        def worker_healthy(n: int = i) -> bool:
            st = spark_master_status(cfg) or {}
            alive = [w for w in st.get("workers", []) if w.get("state") == "ALIVE"]
            return len(alive) >= n

        services.append(Service(
            name=f"spark-worker-{i}",
            argv=[_spark_class(), "org.apache.spark.deploy.worker.Worker", "--host", host,
                  "--cores", str(c.worker_cores), "--memory", c.worker_memory,
                  "--webui-port", "0", "--work-dir", str(work), f"spark://{host}:{c.master_port}"],
            log=home / f"worker-{i}.log", pid_file=home / f"worker-{i}.pid", ports=[],
            healthy=worker_healthy, host=host, env=_spark_env(),
            prepare=lambda w=work: _worker_dir_and_keys(cfg, w),
        ))
    return services


# -- Spark Connect server -------------------------------------------------------------

CONNECT_PORT_ENV = "DLPIPE_SPARK_CONNECT_PORT"
DEFAULT_CONNECT_PORT = 15002
_CONNECT_SERVER = "org.apache.spark.sql.connect.service.SparkConnectServer"


def connect_home(cfg: Config) -> Path:
    return cfg.stack.state_dir / "spark-connect"


def connect_port(cfg: Config) -> int:
    """The port of this state dir's Connect server (kept next to it once started), else
    ``$DLPIPE_SPARK_CONNECT_PORT``, else Spark's default 15002."""
    kept = connect_home(cfg) / "port"
    if kept.is_file():
        return int(kept.read_text().strip())
    return int(os.environ.get(CONNECT_PORT_ENV, DEFAULT_CONNECT_PORT))


def connect_url(cfg: Config) -> str:
    return f"sc://{cfg.stack.host}:{connect_port(cfg)}"


def _connect_answers(host: str, port: int) -> bool:
    """Ask the server for a conf value over its own gRPC API (what every client does first)."""
    import grpc
    from pyspark.sql.connect.proto import base_pb2, base_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        request = base_pb2.ConfigRequest(
            session_id=str(uuid.uuid4()), client_type="dlpipe-health",
            operation=base_pb2.ConfigRequest.Operation(
                get=base_pb2.ConfigRequest.Get(keys=["spark.app.name"])))
        base_pb2_grpc.SparkConnectServiceStub(channel).Config(request, timeout=3)
    return True


def spark_connect_service(cfg: Config, installed: Installed, *, port: int | None = None) -> Service:
    """A Spark Connect server on loopback: one warm driver JVM with the connector jars, Delta
    and s3a (dlpipe's own session conf), that notebooks and the CLI attach to with
    ``sc://127.0.0.1:<port>``. Its conf is a 0600 properties file; the S3 keys are only in
    its environment (dlpipe.core.session.s3_env), never in a file or on a command line."""
    home = connect_home(cfg)
    host = cfg.stack.host
    port = port or connect_port(cfg)
    props = home / "spark-connect.conf"

    def prepare() -> dict[str, str]:
        from dlpipe.core.session import s3_env, spark_conf

        home.mkdir(parents=True, exist_ok=True)
        conf = spark_conf(cfg, jars=installed.spark_jar_paths(), app_name="dlpipe-connect", extra={
            "spark.connect.grpc.binding.address": host,
            "spark.connect.grpc.binding.port": str(port),
        })
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{key} {value}\n" for key, value in conf.items())
        (home / "port").write_text(f"{port}\n")
        return s3_env(cfg)

    submit = str(Path(_spark_class()).with_name("spark-submit"))
    return Service(
        name="spark-connect",
        argv=[submit, "--class", _CONNECT_SERVER, "--name", "dlpipe-connect",
              "--properties-file", str(props)],
        log=home / "connect.log", pid_file=home / "connect.pid", ports=[port],
        healthy=lambda: _connect_answers(host, port), host=host, env=_spark_env(), prepare=prepare,
    )
