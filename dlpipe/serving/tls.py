"""TLS for ``dlpipe serve``'s REST and gRPC APIs (issue 16): one PEM certificate (chain) and key.

Both servers load the same pair, and the pair is checked once at start: a missing, unreadable
or mismatched file must stop the server with the setting to fix, not surface as an ``ssl``
traceback from inside uvicorn or as a gRPC port that never binds.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlpipe.core.errors import ConfigError


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def tls_files(serving: Any) -> TlsFiles | None:
    """The configured pair, checked to load as a server certificate; None for plain HTTP."""
    cert, key = serving.tls_cert_file, serving.tls_key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given = "tls_cert_file" if cert is not None else "tls_key_file"
        raise ConfigError(f"serving.{given} is set but not its pair: TLS needs a certificate and its key",
                          fix="set both serving.tls_cert_file and serving.tls_key_file, or neither "
                              "for plain HTTP")
    files = TlsFiles(Path(cert).expanduser(), Path(key).expanduser())
    for setting, path in (("tls_cert_file", files.cert), ("tls_key_file", files.key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"serving.{setting}: cannot read {path} ({exc.strerror})",
                              fix="point it at a readable PEM file") from None
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        raise ConfigError(f"serving.tls_cert_file {files.cert} and serving.tls_key_file {files.key} "
                          f"do not load as a certificate and its private key ({exc.reason or exc})",
                          fix="give a PEM certificate (its chain after it) and the PEM key it was "
                              "issued for, unencrypted") from None
    return files


def grpc_server_credentials(files: TlsFiles) -> Any:
    import grpc

    return grpc.ssl_server_credentials([(files.key.read_bytes(), files.cert.read_bytes())])
