"""The runner's settings, read from the module's environment (`RunnerConfig.from_env`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.config import Secret
from helpers.device.collector import camera_options, env_float, env_int
from helpers.errors import ConfigError


@dataclass
class RunnerConfig:
    """The runner's settings, read from the environment by `from_env`."""

    studio_url: str
    api_key: Secret
    model_version: str | None
    model_path: Path | None
    workdir: Path
    device: str
    port: int = 4912
    bind_host: str = "127.0.0.1"
    camera_source: str = "synthetic"
    camera_opts: dict[str, Any] | None = None
    rate_hz: float = 5.0
    score_threshold: float | None = None
    telemetry_interval_s: float = 10.0
    low_confidence: float = 0.6
    sampling_band: tuple[float, float] | None = None
    sampling_max_per_min: float = 6.0
    fail_grace_s: float = 5.0
    threads: int = 1

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RunnerConfig:
        """Read the configuration; raises ConfigError naming the variable that is wrong."""
        env = dict(os.environ if env is None else env)
        version = env.get("MODEL_VERSION", "").strip() or None
        path = env.get("MODEL_PATH", "").strip() or None
        if not version and not path:
            raise ConfigError("set MODEL_VERSION (a studio model version, e.g. 3) or MODEL_PATH (a folder with "
                              "model.onnx + model.json)")
        if version and not path:
            try:
                if int(version) < 1:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"MODEL_VERSION={version!r} must be a positive integer (the studio's version)") from None
        band = None
        raw_band = env.get("SAMPLING_BAND", "").strip()
        if raw_band:
            try:
                lo, hi = (float(v) for v in raw_band.split(","))
            except ValueError:
                raise ConfigError(f"SAMPLING_BAND={raw_band!r} must be 'low,high', e.g. '0.3,0.6'") from None
            if not 0.0 <= lo <= hi <= 1.0:
                raise ConfigError(f"SAMPLING_BAND={raw_band!r} needs 0 <= low <= high <= 1")
            band = (lo, hi)
        threshold = env.get("SCORE_THRESHOLD", "").strip()
        return cls(
            studio_url=env.get("STUDIO_URL", "").rstrip("/"),
            api_key=Secret(env.get("EI_API_KEY", ""), "EI_API_KEY"),
            model_version=version,
            model_path=Path(path) if path else None,
            workdir=Path(env.get("MODULE_WORKDIR", ".")),
            device=env.get("IOTEDGE_DEVICEID", "") or os.uname().nodename,
            port=env_int(env, "PORT", 4912, minimum=0),
            bind_host=env.get("BIND_HOST", "127.0.0.1"),
            camera_source=env.get("CAMERA_SOURCE", "synthetic"),
            camera_opts=camera_options(env),
            rate_hz=env_float(env, "INFER_RATE_HZ", 5.0, minimum=0.01),
            score_threshold=float(threshold) if threshold else None,
            telemetry_interval_s=env_float(env, "TELEMETRY_INTERVAL_S", 10.0, minimum=0.1),
            low_confidence=env_float(env, "LOW_CONFIDENCE", 0.6, minimum=0.0),
            sampling_band=band,
            sampling_max_per_min=env_float(env, "SAMPLING_MAX_PER_MIN", 6.0, minimum=0.0),
            fail_grace_s=env_float(env, "FAIL_GRACE_S", 5.0, minimum=0.0),
            threads=env_int(env, "THREADS", 1, minimum=1),
        )


__all__ = ["RunnerConfig"]
