"""Install what dlpipe runs besides Python packages: Kafka, MinIO, Prometheus, the Spark jars.

Everything goes under one tools folder (``$DLPIPE_HOME``, default ``~/.cache/dlpipe``) shared
by every clone on the machine, so a fresh checkout reuses earlier downloads. Each install
finishes by writing a marker whose content is the pinned versions; an install whose marker
matches is skipped, and an interrupted one is redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from dlpipe.core.errors import MissingToolError
from dlpipe.core.progress import run_streaming, step
from dlpipe.localstack import versions
from dlpipe.localstack.maven import copy_dependencies

log = logging.getLogger(__name__)

MARKER = ".dlpipe-installed"
_JAR_ARTIFACT = re.compile(r"^(?P<artifact>.+?)-\d[^/]*\.jar$")


def tools_home() -> Path:
    return Path(os.environ.get("DLPIPE_HOME", Path.home() / ".cache" / "dlpipe")).expanduser()


def _fingerprint(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _is_installed(folder: Path, fingerprint: str) -> bool:
    marker = folder / MARKER
    return marker.is_file() and marker.read_text().strip() == fingerprint


def _mark_installed(folder: Path, fingerprint: str) -> None:
    (folder / MARKER).write_text(fingerprint + "\n")


@dataclass(frozen=True)
class Installed:
    """Where the installed pieces are; every path exists once ``install_all`` ran."""

    kafka_libs: Path
    minio_bin: Path
    spark_jars: Path
    prometheus_bin: Path    # promtool beside it

    def spark_jar_paths(self) -> list[Path]:
        return sorted(self.spark_jars.glob("*.jar"))


def _kafka_spec() -> dict[str, object]:
    return {
        "coordinates": [
            f"org.apache.kafka:kafka_{versions.SCALA_BINARY}:{versions.KAFKA_VERSION}",
            # The broker logs through SLF4J 2 to log4j2, as the binary distribution does.
            f"org.slf4j:slf4j-api:{versions.SLF4J_VERSION}",
            f"org.apache.logging.log4j:log4j-slf4j2-impl:{versions.LOG4J_VERSION}",
            f"org.apache.logging.log4j:log4j-core:{versions.LOG4J_VERSION}",
        ],
        "overrides": {"org.slf4j:slf4j-api": versions.SLF4J_VERSION},
    }


def _spark_spec() -> dict[str, object]:
    return {
        "coordinates": list(versions.SPARK_PACKAGES),
        "overrides": versions.SPARK_PACKAGE_OVERRIDES,
        "excludes": list(versions.SPARK_PACKAGE_EXCLUDES),
    }


def locate(home: Path | None = None) -> Installed:
    """Paths of the pinned installs, whether or not they are installed yet."""
    home = home or tools_home()
    return Installed(
        kafka_libs=home / f"kafka-{versions.KAFKA_VERSION}" / "libs",
        minio_bin=home / f"minio-{versions.MINIO_VERSION}" / "minio",
        spark_jars=home / f"spark-jars-{_fingerprint(_spark_spec())}",
        prometheus_bin=home / f"prometheus-{versions.PROMETHEUS_VERSION}" / "prometheus",
    )


def missing(installed: Installed | None = None, *, spark_only: bool = False) -> list[str]:
    """Names of the pieces that are not installed, for error messages and ``status``.

    ``spark_only``: only what a Spark job needs (a container image has the connector jars
    but no local Kafka broker or MinIO server)."""
    installed = installed or locate()
    out = []
    if not spark_only:
        if not _is_installed(installed.kafka_libs.parent, _fingerprint(_kafka_spec())):
            out.append(f"Kafka {versions.KAFKA_VERSION} broker jars ({installed.kafka_libs})")
        if not (installed.minio_bin.is_file() and os.access(installed.minio_bin, os.X_OK)):
            out.append(f"MinIO server ({installed.minio_bin})")
        for tool in (installed.prometheus_bin, installed.prometheus_bin.with_name("promtool")):
            if not (tool.is_file() and os.access(tool, os.X_OK)):
                out.append(f"Prometheus {versions.PROMETHEUS_VERSION} ({tool})")
    if not _is_installed(installed.spark_jars, _fingerprint(_spark_spec())):
        out.append(f"Spark connector jars ({installed.spark_jars})")
    return out


def require_installed(installed: Installed | None = None, *, spark_only: bool = False) -> Installed:
    installed = installed or locate()
    lacking = missing(installed, spark_only=spark_only)
    if lacking:
        raise MissingToolError(
            "not installed: " + "; ".join(lacking), fix="dlpipe install  (or: make setup)"
        )
    return installed


def install_kafka(installed: Installed) -> None:
    folder = installed.kafka_libs.parent
    spec = _kafka_spec()
    if _is_installed(folder, _fingerprint(spec)):
        log.info(f"    Kafka {versions.KAFKA_VERSION}: already installed in {folder}")
        return
    folder.mkdir(parents=True, exist_ok=True)
    copy_dependencies(
        spec["coordinates"], installed.kafka_libs, overrides=spec["overrides"],
        label=f"Kafka {versions.KAFKA_VERSION} broker",
    )
    _mark_installed(folder, _fingerprint(spec))


def install_spark_jars(installed: Installed) -> None:
    spec = _spark_spec()
    if _is_installed(installed.spark_jars, _fingerprint(spec)):
        log.info(f"    Spark connector jars: already installed in {installed.spark_jars}")
        return
    copy_dependencies(
        spec["coordinates"], installed.spark_jars, overrides=spec["overrides"],
        excludes=spec["excludes"], label="Spark connector jars",
    )
    _drop_jars_pyspark_ships(installed.spark_jars)
    _mark_installed(installed.spark_jars, _fingerprint(spec))


def _drop_jars_pyspark_ships(folder: Path) -> None:
    """Keep one copy of each library: pyspark's own jars win over transitive duplicates."""
    import pyspark

    bundled = {
        m["artifact"]
        for jar in (Path(pyspark.__file__).parent / "jars").glob("*.jar")
        if (m := _JAR_ARTIFACT.match(jar.name))
    }
    for jar in folder.glob("*.jar"):
        m = _JAR_ARTIFACT.match(jar.name)
        if m and m["artifact"] in bundled:
            jar.unlink()


def install_minio(installed: Installed) -> None:
    _go_install("MinIO", [f"{versions.MINIO_MODULE}@{versions.MINIO_VERSION}"],
                [installed.minio_bin], minutes=6)


def install_prometheus(installed: Installed) -> None:
    # remove_all_sd: no cloud service discovery (the stack finds its targets in file_sd),
    # which halves the build and drops most of its dependencies.
    _go_install("Prometheus", [f"{versions.PROMETHEUS_MODULE}/cmd/{c}@{versions.PROMETHEUS_VERSION}"
                               for c in ("prometheus", "promtool")],
                [installed.prometheus_bin, installed.prometheus_bin.with_name("promtool")],
                minutes=8, tags="remove_all_sd")


def _go_install(what: str, modules: list[str], targets: list[Path], *, minutes: int,
                tags: str = "") -> None:
    """Build ``modules`` with ``go install`` into a staging folder, then move each binary to
    its target (the folder appears complete or not at all)."""
    if all(t.is_file() and os.access(t, os.X_OK) for t in targets):
        log.info(f"    {what}: already installed at {targets[0].parent}")
        return
    go = shutil.which("go")
    if go is None:
        raise MissingToolError(
            f"go is not on PATH; dlpipe builds {what} from source with `go install`.",
            fix="install Go 1.24+ (https://go.dev/doc/install) or apt-get install -y golang",
        )
    folder = targets[0].parent
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with step(f"building {what} from source (go install {' '.join(modules)}; ~{minutes} min on "
              "2 cores)") as s:
        downloads = 0

        def on_line(line: str) -> None:
            nonlocal downloads
            if line.startswith("go: downloading"):
                downloads += 1
                if downloads % 25 == 0:
                    s.detail(f"{downloads} modules downloaded")

        run_streaming(
            [go, "install", "-trimpath", *(["-tags", tags] if tags else []), *modules],
            on_line=on_line, failure=f"go install of {what} failed",
            env={**os.environ, "GOBIN": str(staging), "CGO_ENABLED": "0"},
        )
    folder.mkdir(parents=True, exist_ok=True)
    for target in targets:
        shutil.move(str(staging / target.name), target)
    shutil.rmtree(staging, ignore_errors=True)


def install_all(home: Path | None = None) -> Installed:
    """Install every missing piece; a no-op (a second or so) when all are there."""
    installed = locate(home)
    with step(f"installing Kafka, MinIO, Prometheus and Spark jars into "
              f"{installed.kafka_libs.parents[1]}"):
        install_kafka(installed)
        install_spark_jars(installed)
        install_minio(installed)
        install_prometheus(installed)
    return installed
