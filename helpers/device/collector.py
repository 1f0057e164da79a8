"""The camera collector module (`MODE=collect`): frames to the studio, nothing lost, nothing twice.

Each captured frame goes into an on-disk spool first (`helpers.device.spool`), then an
uploader thread sends the oldest spooled frame through `IngestionClient` (Edge Impulse's
ingestion API: works against the local studio and `https://ingestion.edgeimpulse.com`) and
removes it from the spool only when the studio acknowledged it. Uploads carry
`x-disallow-duplicates`: the studio keys samples by content hash, so a frame re-sent after a
crash or a lost answer comes back as a duplicate, which counts as acknowledged. Hence the
studio ends up with every captured frame exactly once, across studio restarts and collector
restarts. Connection errors and 5xx answers are retried with exponential backoff (0.5 s
doubling to 15 s); a file the studio rejects (4xx) is dropped from the spool and counted as
`rejected`; a refused API key (401/403) is retried slowly and shown as `last_error`.

Progress is written to `$MODULE_WORKDIR/reported.json` (the agent relays it to the twin):
`captured`, `target`, `uploaded`, `duplicates`, `rejected`, `pending`, `dropped`,
`last_error`, `state` (`capturing` / `uploading` / `done`).

Capture state (frames captured so far) is kept in `$MODULE_WORKDIR/collector_state.json`
for one module generation: a collector restarted by the agent continues its count instead of
starting over; a new deployment of the module (new env or version) starts a new count.

When it has captured `SAMPLE_COUNT` frames and the spool is empty, the collector stays alive
and idle (`state: done`) rather than exiting: under `restartPolicy: always` a module that
exits is restarted. Deploy the next module, or `status: stopped`, to end it.
SIGTERM stops capture at once and leaves the spool intact for the next start.

Environment: MODE=collect, STUDIO_URL, EI_API_KEY, LABEL (none: unlabeled, x-no-label),
SAMPLE_COUNT (or CAPTURE_COUNT; 0 = forever), RATE_HZ (or CAPTURE_RATE_HZ; default 1),
CATEGORY (training | testing | split, default split: 20 % testing by content hash),
CAMERA_SOURCE (synthetic | folder | webcam; default synthetic), CAMERA_DEVICE (webcam),
CAMERA_PATH (folder), CAMERA_SIZE (e.g. 320x320), CAMERA_SEED, SPOOL_MAX_ITEMS (1000 frames) and
SPOOL_MAX_MB (unset: no byte bound), the spool's quota: past it the oldest unacknowledged frames are
dropped, counted in `dropped` and logged, UPLOAD_TIMEOUT_S (15), MODULE_WORKDIR, IOTEDGE_DEVICEID,
IOTEDGE_MODULEGENERATIONID, EDGELOOP_SCENE_FILE (synthetic scene).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from helpers.config import Secret, mask
from helpers.device.module_client import ModuleHub, run_until_stopped
from helpers.device.spool import Spool, SpoolItem
from helpers.errors import ConfigError, Forbidden, ServiceError, ServiceUnavailable, Unauthorized
from helpers.frames import CameraError

log = logging.getLogger("helpers.device.collector")

TEST_FRACTION = 0.2
CATEGORIES = ("training", "testing", "split")
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 15.0
AUTH_BACKOFF_S = 30.0
HUB_REPORT_S = 2.0  # the shortest time between two module twin reports (IoT Hub throttles twin updates)


# --------------------------------------------------------------------------- small helpers


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds and `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def env_float(env: Mapping[str, str], name: str, default: float, minimum: float | None = None) -> float:
    """A float variable, or ConfigError naming it."""
    raw = str(env.get(name, "")).strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw} must be at least {minimum}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int | None = None) -> int:
    """An integer variable, or ConfigError naming it."""
    raw = str(env.get(name, "")).strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw} must be at least {minimum}")
    return value


def split_for(sha256_hex: str, test_fraction: float = TEST_FRACTION) -> str:
    """`training` or `testing`, decided by the content hash (stable across re-sends)."""
    return "testing" if int(sha256_hex[:8], 16) / 0xFFFFFFFF < test_fraction else "training"


def camera_options(env: Mapping[str, str]) -> dict[str, Any]:
    """`open_camera` options for CAMERA_SOURCE from the environment."""
    source = env.get("CAMERA_SOURCE", "synthetic")
    opts: dict[str, Any] = {}
    size = env.get("CAMERA_SIZE", "").strip()
    if size:
        try:
            w, _, h = size.lower().partition("x")
            opts["size"] = (int(w), int(h or w))
        except ValueError:
            raise ConfigError(f"CAMERA_SIZE={size!r} must be WIDTHxHEIGHT, e.g. 320x320") from None
    if source == "synthetic":
        if env.get("EDGELOOP_SCENE_FILE"):
            opts["scene_file"] = env["EDGELOOP_SCENE_FILE"]
        # Each device looks at its own table unless a seed is given: derive it from the device id.
        device = env.get("IOTEDGE_DEVICEID", "")
        default_seed = int(hashlib.sha256(device.encode()).hexdigest()[:8], 16) if device else 0
        opts["seed"] = env_int(env, "CAMERA_SEED", default_seed)
        opts["shuffle_every"] = env_int(env, "CAMERA_SHUFFLE_EVERY", 5, minimum=0)
        opts["move_every"] = env_int(env, "CAMERA_MOVE_EVERY", 3, minimum=0)
    elif source == "webcam":
        opts["device"] = env.get("CAMERA_DEVICE", "/dev/video0")
    elif source == "folder":
        if not env.get("CAMERA_PATH"):
            raise ConfigError("CAMERA_SOURCE=folder needs CAMERA_PATH (a folder of images)")
        opts["path"] = env["CAMERA_PATH"]
    else:
        raise ConfigError(f"CAMERA_SOURCE={source!r} is not valid: use synthetic, folder or webcam")
    return opts


def open_spool(workdir: Path, name: str, env: Mapping[str, str]) -> Spool:
    """The module's spool `<workdir>/spool/<name>` with its bound from SPOOL_MAX_ITEMS / SPOOL_MAX_MB."""
    max_items = env_int(env, "SPOOL_MAX_ITEMS", 1000, minimum=1)
    max_mb = env_float(env, "SPOOL_MAX_MB", 0.0, minimum=0.0)
    return Spool(workdir / "spool" / name, max_items=max_items, max_bytes=int(max_mb * 1024 * 1024) or None)


# --------------------------------------------------------------------------- uploader


class Uploader(threading.Thread):
    """Sends spooled frames, oldest first, and acknowledges them once the studio has them.

    Spool item metadata: `filename`, `category` (training/testing), `label` (or None) and
    `metadata` (sent as x-metadata).

    Args:
        spool: the queue to drain.
        client: an `IngestionClient`.
        stop: set to end the thread (the item in flight, if any, stays spooled unless acked).
    """

    def __init__(self, spool: Spool, client: Any, stop: threading.Event):
        super().__init__(name="uploader", daemon=True)
        self.spool = spool
        self.client = client
        self.stop_event = stop
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self.uploaded = 0
        self.duplicates = 0
        self.rejected = 0
        self.retries = 0
        self.last_error: str | None = None
        self.last_upload_at: str | None = None
        self._failures = 0

    def wake(self) -> None:
        """Tell the thread a new item is queued."""
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        """Counters for telemetry (this process's life) plus the spool's state."""
        spool = self.spool.stats()
        with self._lock:
            return {"uploaded": self.uploaded, "duplicates": self.duplicates, "rejected": self.rejected,
                    "retries": self.retries, "pending": spool["pending"], "dropped": spool["dropped"],
                    "last_error": self.last_error, "last_upload_at": self.last_upload_at}

    def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        self.stop_event.wait(seconds)

    def run(self) -> None:
        while not self.stop_event.is_set():
            item = self.spool.peek()
            if item is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            delay = self.send(item)
            if delay:
                self._sleep(delay)

    def send(self, item: SpoolItem) -> float:
        """Upload one item; returns the seconds to wait before the next try (0 after success)."""
        try:
            data = self.spool.read(item)
        except KeyError:
            return 0.0  # acknowledged meanwhile
        meta = item.meta
        import requests  # here, not at the top: a runner without sampling never loads it (RSS on a small device)

        try:
            results = self.client.upload(
                meta.get("category", "training"), [(meta.get("filename") or f"{item.key[:16]}.jpg", data)],
                label=meta.get("label"), metadata=meta.get("metadata") or None, disallow_duplicates=True,
            )
        except (Unauthorized, Forbidden) as exc:
            return self._failed(f"the studio refused the API key ({exc.status}): check EI_API_KEY in the "
                                "deployment; retrying", AUTH_BACKOFF_S)
        except ServiceUnavailable as exc:
            return self._failed(f"studio unreachable: {exc}", self._backoff())
        except ServiceError as exc:
            if exc.status >= 500 or exc.status in (0, 408, 429):
                return self._failed(f"studio error {exc.status}: {exc}", self._backoff())
            self._reject(item, f"studio rejected {meta.get('filename')}: {exc}")
            return 0.0
        except requests.RequestException as exc:  # e.g. the connection dropped mid-answer
            return self._failed(f"upload interrupted: {type(exc).__name__}: {exc}", self._backoff())
        result = results[0] if results else None
        if result is None:
            return self._failed("the studio answered without a file result; retrying", self._backoff())
        with self._lock:
            if result.duplicate:
                self.duplicates += 1  # already there: acknowledged
            elif result.error:
                self.rejected += 1
                self.last_error = mask(f"studio rejected {meta.get('filename')}: {result.error}")
            else:
                self.uploaded += 1
            self.last_upload_at = utc_now()
            self._failures = 0
            if not result.error or result.duplicate:
                self.last_error = None
        self.spool.ack(item)
        return 0.0

    def _backoff(self) -> float:
        with self._lock:
            self._failures += 1
            self.retries += 1
            return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (self._failures - 1))

    def _failed(self, message: str, delay: float) -> float:
        with self._lock:
            first = self.last_error is None
            self.last_error = mask(message)
        (log.warning if first else log.debug)("%s (next try in %.1f s)", mask(message), delay)
        return delay

    def _reject(self, item: SpoolItem, message: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_error = mask(message)
        log.error("%s; dropping it from the spool", mask(message))
        self.spool.ack(item)


# --------------------------------------------------------------------------- collector


@dataclass
class CollectorConfig:
    """The collector's settings, read from the environment by `from_env`."""

    studio_url: str
    api_key: Secret
    label: str | None
    count: int
    rate_hz: float
    category: str
    camera_source: str
    camera_opts: dict[str, Any]
    workdir: Path
    device: str
    generation: str
    upload_timeout_s: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CollectorConfig:
        """Read the configuration; raises ConfigError naming the variable that is wrong."""
        env = dict(os.environ if env is None else env)
        url = env.get("STUDIO_URL", "").strip().rstrip("/")
        key = env.get("EI_API_KEY", "")
        if not url or not key:
            raise ConfigError("the collector needs STUDIO_URL and EI_API_KEY in its Env")
        count_var = "SAMPLE_COUNT" if env.get("SAMPLE_COUNT", "").strip() else "CAPTURE_COUNT"
        rate_var = "RATE_HZ" if env.get("RATE_HZ", "").strip() else "CAPTURE_RATE_HZ"
        category = env.get("CATEGORY", "split").strip() or "split"
        if category not in CATEGORIES:
            raise ConfigError(f"CATEGORY={category!r} is not one of {CATEGORIES}")
        label = env.get("LABEL", "").strip().lower() or None
        return cls(
            studio_url=url,
            api_key=Secret(key, "EI_API_KEY"),
            label=label,
            count=env_int(env, count_var, 0, minimum=0),
            rate_hz=env_float(env, rate_var, 1.0, minimum=0.001),
            category=category,
            camera_source=env.get("CAMERA_SOURCE", "synthetic"),
            camera_opts=camera_options(env),
            workdir=Path(env.get("MODULE_WORKDIR", ".")),
            device=env.get("IOTEDGE_DEVICEID", "") or os.uname().nodename,
            generation=env.get("IOTEDGE_MODULEGENERATIONID", ""),
            upload_timeout_s=env_float(env, "UPLOAD_TIMEOUT_S", 15.0, minimum=1.0),
        )

    def run_id(self) -> str:
        """Identifies one collection job: a restart continues it, a new deployment starts anew."""
        doc = [self.generation, self.label, self.count, self.category, self.camera_source, self.device]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


class Collector:
    """Captures frames into the spool at the configured rate while the uploader drains it."""

    def __init__(self, cfg: CollectorConfig, client: Any = None):
        self.cfg = cfg
        self.stop = threading.Event()
        self.spool = open_spool(cfg.workdir, "collector", os.environ)
        if client is None:
            from helpers.studio.ingestion import IngestionClient  # loaded by the module that uploads, not on import

            client = IngestionClient(cfg.studio_url, cfg.api_key, timeout=cfg.upload_timeout_s)
        self.uploader = Uploader(self.spool, client, self.stop)
        self.state_path = cfg.workdir / "collector_state.json"
        self.run_id = cfg.run_id()
        self.captured = 0
        self.camera_errors = 0
        self.last_camera_error: str | None = None
        self._load_state()
        # counts go to the module twin through the IoT Edge SDK (at most every HUB_REPORT_S, and on changes of state)
        self.hub = ModuleHub.from_environment()
        self._hub_reported: tuple[float, str] = (0.0, "")

    def _load_state(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("collector state %s unreadable (%s): counting from 0", self.state_path, exc)
            return
        if state.get("run") == self.run_id:
            self.captured = int(state.get("captured", 0))
            # A kill between spooling a frame and saving the count leaves the frame in the spool
            # with an index the state has not counted yet: count it, so it is not captured twice.
            spooled = [int(i.meta.get("metadata", {}).get("frame_index", -1)) for i in self.spool.pending()
                       if i.meta.get("run") == self.run_id]
            if spooled and max(spooled) >= self.captured:
                log.info("frame %d was spooled after the last saved count: counting it", max(spooled))
                self.captured = max(spooled) + 1
                self._save_state()
            log.info("continuing collection %s at %d/%s frames", self.run_id, self.captured, self.cfg.count or "inf")

    def _save_state(self) -> None:
        write_json_atomic(self.state_path, {"run": self.run_id, "captured": self.captured, "updated_at": utc_now()})

    @property
    def capturing(self) -> bool:
        return self.cfg.count == 0 or self.captured < self.cfg.count

    def progress(self) -> dict[str, Any]:
        up = self.uploader.stats()
        if self.capturing:
            state = "capturing"
        elif up["pending"]:
            state = "uploading"
        else:
            state = "done"
        return {"mode": "collect", "state": state, "updated_at": utc_now(), "label": self.cfg.label,
                "captured": self.captured, "target": self.cfg.count, "rate_hz": self.cfg.rate_hz,
                "camera_errors": self.camera_errors, "camera_error": self.last_camera_error, **up}

    def write_progress(self, final: bool = False) -> None:
        progress = self.progress()
        write_json_atomic(self.cfg.workdir / "reported.json", progress)
        if self.hub is not None:
            last, state = self._hub_reported
            if final or progress["state"] != state or time.monotonic() - last >= HUB_REPORT_S:
                self.hub.report(progress)
                self._hub_reported = (time.monotonic(), progress["state"])

    def capture_one(self, camera: Any) -> None:
        """Read one frame and spool it with its upload metadata."""
        frame = camera.read()
        index = self.captured
        data = frame.jpeg
        sha = hashlib.sha256(data).hexdigest()
        metadata: dict[str, Any] = {"device": self.cfg.device, "captured_at": frame.captured_at,
                                    "frame_index": index, "source": "collector"}
        if frame.ground_truth is not None:
            metadata["ground_truth"] = [b.to_dict() for b in frame.ground_truth]
        if frame.source_name:
            metadata["source_name"] = frame.source_name
        category = split_for(sha) if self.cfg.category == "split" else self.cfg.category
        name = f"{self.cfg.label or 'unlabeled'}.{self.cfg.device}.{index:06d}.{sha[:8]}.jpg"
        self.spool.put(data, {"filename": name, "category": category, "label": self.cfg.label,
                              "metadata": metadata, "run": self.run_id})
        self.captured += 1
        self._save_state()
        self.uploader.wake()

    def run(self) -> int:
        """Capture and upload until SIGTERM; returns the exit code."""
        opts = dict(self.cfg.camera_opts)
        if self.cfg.camera_source == "synthetic":
            # A continued collection must not replay the frames it already sent (hence `captured`),
            # and the same collection on the same device must see the same world in every run, so
            # headless runs are reproducible: the seed leaves out the module generation, which
            # changes with the studio URL and key of each workspace.
            job = [self.cfg.label, self.cfg.count, self.cfg.category, self.cfg.device]
            opts["seed"] = int(hashlib.sha256(f"{opts.get('seed', 0)}:{job}:{self.captured}".encode())
                               .hexdigest()[:8], 16)
        from helpers.device.camera import open_camera  # cv2, datasets, the simulator: only when frames are taken

        camera = open_camera(self.cfg.camera_source, **opts) if self.capturing else None
        self.uploader.start()
        log.info("collector %s: label=%s target=%s rate=%.2f Hz, %d frame(s) spooled from before",
                 self.run_id, self.cfg.label, self.cfg.count or "forever", self.cfg.rate_hz, len(self.spool))
        period = 1.0 / self.cfg.rate_hz
        next_capture = time.monotonic()
        next_progress = 0.0
        announced_done = False
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if camera is not None and self.capturing and now >= next_capture:
                    try:
                        self.capture_one(camera)
                        self.last_camera_error = None
                    except CameraError as exc:
                        self.camera_errors += 1
                        self.last_camera_error = str(exc)
                        log.warning("camera: %s", exc)
                    next_capture = max(next_capture + period, now)
                    if not self.capturing:
                        camera.close()
                        camera = None
                if now >= next_progress or not self.capturing:
                    self.write_progress()
                    next_progress = now + 1.0
                if not self.capturing and not len(self.spool) and not announced_done:
                    log.info("done: %d frames captured and acknowledged; idling until stopped", self.captured)
                    announced_done = True
                wait = (next_capture - time.monotonic()) if self.capturing else 1.0
                self.stop.wait(min(max(wait, 0.0), 1.0))
        finally:
            if camera is not None:
                camera.close()
            # an upload in flight is not waited for long: unacknowledged, it stays spooled and is
            # re-sent (and recognised as a duplicate) by the next start
            self.uploader.join(timeout=3.0)
            self.write_progress(final=True)
            if self.hub is not None:
                self.hub.close()
        log.info("collector stopped: %d captured, %d still spooled for the next start", self.captured, len(self.spool))
        return 0


def main() -> int:
    """Run the collector until SIGTERM; returns the exit code."""
    return run_until_stopped(CollectorConfig.from_env(), Collector, log, "stopping (the spool stays for the next start)")


__all__ = ["Collector", "CollectorConfig", "Uploader", "camera_options", "main", "open_spool", "split_for"]
