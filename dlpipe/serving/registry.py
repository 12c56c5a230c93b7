"""Which version of each model is live, and the swap to a newly promoted one.

A poll asks the model store which version of each model is served (one GET of its release
pointer, ``dlpipe.registry.release``). A version that is not
live yet is copied to the local model folder (atomically, see ``dlpipe.registry.sync``),
loaded and warmed up while the old one keeps answering; then one assignment makes it live.
Requests that already hold the old version finish on it. A version that fails to load (a
store outage looks the same as a damaged copy) is reported, counted and tried again at later
polls, backing off from ``poll_interval_s`` to ``load_retry_max_s``; the old one stays live.
A version republished under the same number (a wiped store) is loaded again: the release the
store shows is compared with the live one's, and the local copy is verified against the
store (``dlpipe.registry.sync``). After a swap, local copies beyond ``keep_versions`` go.

Model names and versions from requests are only ever looked up here, in memory: they never
become paths. Paths come from the configured model names and the store's version numbers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
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


@dataclass
class _Failure:
    version: int
    info: dict[str, Any]
    attempts: int
    retry_at: float      # time.monotonic()
    error: str


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
        from dlpipe.serving.sampling import Sampler

        self.sampler = Sampler(cfg, metrics)  # for `dlpipe drift` (serving.sample_rate)
        self.model_dir = Path(cfg.serving.model_dir).expanduser()
        self._client = client
        self._live: dict[str, Servable] = {}
        self._released: dict[str, dict[str, Any]] = {}  # the release each live version came from
        self._loading: dict[str, int] = {}
        self._failed: dict[str, _Failure] = {}
        self._batchers: dict[tuple[int, str], Batcher] = {}  # (id of the servable, signature)
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
        key, limits = (id(servable), signature), self.cfg.serving
        if key not in self._batchers:
            self._batchers[key] = Batcher(
                lambda inputs: servable.run(signature, inputs),
                max_size=limits.batch_max_size, timeout_ms=limits.batch_timeout_ms,
                max_queued=limits.max_queued_examples, max_cost=limits.max_request_pixels,
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
            promoted = await loop.run_in_executor(None, self._promoted, model)
            if promoted is None or not self._due(model, *promoted):
                continue
            version, info = promoted
            live = self._live.get(model)
            self._loading[model] = version
            try:
                servable = await loop.run_in_executor(None, self._load, model, version)
            except Exception as exc:  # reported, retried later; the old version keeps serving
                self._failed_to_load(model, version, info, exc)
                continue
            finally:
                self._loading.pop(model, None)
            self._failed.pop(model, None)
            self._live[model] = servable
            self._released[model] = info
            self.metrics.loads.labels(model, "loaded").inc()
            self.metrics.loaded_version.labels(model).set(version)
            log.info("serving %s version %s%s", model, version,
                     f" (was {live.version})" if live else "")
            if live is not None:
                loop.call_later(RETIRE_AFTER_S, self._retire, live)
            await loop.run_in_executor(None, self._prune, model, version,
                                       live.version if live else version)

    def _due(self, model: str, version: int, info: dict[str, Any]) -> bool:
        """Whether the served ``version`` (released as ``info``) should be loaded now: it is
        not the live one (or was republished), and is not waiting out a failure's backoff."""
        live = self._live.get(model)
        if live is not None and live.version == version and self._released.get(model) == info:
            return False
        failed = self._failed.get(model)
        return not (failed and (failed.version, failed.info) == (version, info)
                    and time.monotonic() < failed.retry_at)

    def _failed_to_load(self, model: str, version: int, info: dict[str, Any], exc: Exception) -> None:
        failed = self._failed.get(model)
        attempts = failed.attempts + 1 if failed and (failed.version, failed.info) == (version, info) else 1
        wait = min(self.cfg.serving.poll_interval_s * 2 ** (attempts - 1),
                   self.cfg.serving.load_retry_max_s)
        self._failed[model] = _Failure(version, info, attempts, time.monotonic() + wait, str(exc))
        self.metrics.loads.labels(model, "failed").inc()
        live = self._live.get(model)
        log.error("could not load %s version %s (attempt %d, next in %.0fs; still serving %s): %s",
                  model, version, attempts, wait, live.version if live else "nothing", exc)

    def _client_(self) -> Any:
        if self._client is None:
            from dlpipe.core.s3 import s3_client

            self._client = s3_client(self.cfg)
        return self._client

    def _promoted(self, model: str) -> tuple[int, dict[str, Any]] | None:
        """The served version and what identifies its release: one GET of the release pointer
        (``dlpipe.registry.release``), whatever the number of versions in the store."""
        from dlpipe.registry.release import served_version

        served = served_version(self._client_(), self.cfg.buckets.models, model)
        if served is None:
            return None
        released = served.record.get("at") or served.record.get("created_at")
        if released:  # for the "no release for N days" alert
            self.metrics.released_at.labels(model).set(
                datetime.strptime(released, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
        return served.version, served.identity

    def _load(self, model: str, version: int) -> Servable:
        from dlpipe.registry.sync import download_version

        path = download_version(self._client_(), self.cfg.buckets.models, model, version,
                                self.model_dir)
        return load_servable(path, model=model, version=version)

    def _prune(self, model: str, version: int, previous: int) -> None:
        from dlpipe.registry.sync import prune_versions

        removed = prune_versions(self.model_dir, model, current=version,
                                 keep=self.cfg.serving.keep_versions, protect=[previous])
        if removed:
            log.info("removed local copies of %s versions %s", model, removed)

    def _retire(self, servable: Servable) -> None:
        for key in [k for k in self._batchers if k[0] == id(servable)]:
            self._batchers.pop(key).close()

    def close(self) -> None:
        self.sampler.close()
        for batcher in self._batchers.values():
            batcher.close()
        self._batchers.clear()
