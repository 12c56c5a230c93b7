"""Which version of each model is live, and the swap to a newly promoted one.

A poll asks the model store for each model's newest promoted version. A version that is not
live yet is copied to the local model folder (atomically, see ``dlpipe.registry.sync``),
loaded and warmed up while the old one keeps answering; then one assignment makes it live.
Requests that already hold the old version finish on it. A version that fails to load is
reported once and skipped until a newer one is promoted; the old one stays live.

Model names and versions from requests are only ever looked up here, in memory: they never
become paths. Paths come from the configured model names and the store's version numbers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlpipe.core.config import Config
from dlpipe.core.s3 import is_version
from dlpipe.serving.batching import Batcher
from dlpipe.serving.metrics import Metrics
from dlpipe.serving.protocol import RequestError
from dlpipe.serving.servable import Servable, load_servable

log = logging.getLogger("dlpipe.serve")
RETIRE_AFTER_S = 60.0   # a replaced version's batchers close this long after the swap


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str          # LOADING | AVAILABLE | END
    error: str = ""


class ModelRegistry:
    def __init__(self, cfg: Config, metrics: Metrics, *, client: Any = None) -> None:
        self.cfg = cfg
        self.models = list(cfg.serving.models)
        self.metrics = metrics
        self.model_dir = Path(cfg.serving.model_dir).expanduser()
        self._client = client
        self._live: dict[str, Servable] = {}
        self._loading: dict[str, int] = {}
        self._failed: dict[str, dict[int, str]] = {m: {} for m in self.models}
        self._batchers: dict[tuple[str, int, str], Batcher] = {}
        for m in self.models:
            metrics.loaded_version.labels(m).set(0)

    # -- lookups (event loop) -----------------------------------------------------------
    def ready(self) -> dict[str, int | None]:
        return {m: (self._live[m].version if m in self._live else None) for m in self.models}

    def get(self, model: str, version: str | None = None) -> Servable:
        if model not in self.models:
            raise RequestError(f"Servable not found for request: model {model!r} is not served "
                               f"here (served: {', '.join(self.models)})", status=404)
        live = self._live.get(model)
        if live is None:
            raise RequestError(f"model {model!r} has no promoted version loaded yet", status=404)
        if version is not None and version != str(live.version):
            if not (is_version(version) and len(version) <= 18):
                raise RequestError(f"model version must be a number, got {version!r}", status=400)
            raise RequestError(f"Servable not found for request: version {version} of {model!r} "
                               f"is not loaded (loaded: {live.version})", status=404)
        return live

    def states(self, model: str) -> list[VersionState]:
        self.get(model)  # 404 for an unknown model, as TF Serving does
        out = [VersionState(self._live[model].version, "AVAILABLE")]
        if model in self._loading:
            out.insert(0, VersionState(self._loading[model], "LOADING"))
        return out

    def batcher(self, servable: Servable, signature: str) -> Batcher:
        key = (servable.model, servable.version, signature)
        if key not in self._batchers:
            self._batchers[key] = Batcher(
                lambda inputs: servable.run(signature, inputs),
                max_size=self.cfg.serving.batch_max_size,
                timeout_ms=self.cfg.serving.batch_timeout_ms,
                on_batch=self.metrics.batch_size.observe)
        return self._batchers[key]

    # -- polling ------------------------------------------------------------------------
    async def poll_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a store outage must not stop serving
                log.warning("model store poll failed (still serving what is loaded): %s", exc)
            await asyncio.sleep(self.cfg.serving.poll_interval_s)

    async def refresh(self) -> None:
        loop = asyncio.get_running_loop()
        for model in self.models:
            version = await loop.run_in_executor(None, self._promoted, model)
            live = self._live.get(model)
            if version is None or (live and live.version == version) or version in self._failed[model]:
                continue
            self._loading[model] = version
            try:
                servable = await loop.run_in_executor(None, self._load, model, version)
            except Exception as exc:  # reported, old version keeps serving
                self._failed[model][version] = str(exc)
                self.metrics.loads.labels(model, "failed").inc()
                log.error("could not load %s version %s (still serving %s): %s", model, version,
                          live.version if live else "nothing", exc)
                continue
            finally:
                self._loading.pop(model, None)
            self._live[model] = servable
            self.metrics.loads.labels(model, "loaded").inc()
            self.metrics.loaded_version.labels(model).set(version)
            log.info("serving %s version %s%s", model, version,
                     f" (was {live.version})" if live else "")
            if live is not None:
                loop.call_later(RETIRE_AFTER_S, self._retire, model, live.version)

    def _client_(self) -> Any:
        if self._client is None:
            from dlpipe.core.s3 import s3_client

            self._client = s3_client(self.cfg)
        return self._client

    def _promoted(self, model: str) -> int | None:
        from dlpipe.registry.store import serving_version

        return serving_version(self._client_(), self.cfg.buckets.models, model)

    def _load(self, model: str, version: int) -> Servable:
        from dlpipe.registry.sync import download_version

        path = download_version(self._client_(), self.cfg.buckets.models, model, version,
                                self.model_dir)
        return load_servable(path, model=model, version=version)

    def _retire(self, model: str, version: int) -> None:
        for key in [k for k in self._batchers if k[:2] == (model, version)]:
            self._batchers.pop(key).close()

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()
        self._batchers.clear()
