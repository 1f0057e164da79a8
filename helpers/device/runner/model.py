"""The runner's model: `MODEL_PATH`, or version `MODEL_VERSION` downloaded from the studio with
`x-api-key`, its sha256 checked, cached under `$MODULE_WORKDIR/models/<version>/`."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from helpers.config import mask
from helpers.device.runner.config import RunnerConfig
from helpers.device.runner.server import RunnerState
from helpers.errors import ConfigError, ModelError
from helpers.inference.card import FORMAT_FILES, model_format

log = logging.getLogger("helpers.device.runner")


def fetch_model(cfg: RunnerConfig, stop: threading.Event, status: RunnerState) -> Path:
    """The model folder: `MODEL_PATH`, or version `MODEL_VERSION` from the studio (cached).

    Retries while the studio is unreachable (health says so); a version the studio does not
    have, or a download whose sha256 does not match, is a broken model.

    Raises:
        ModelError: unknown version, or the bytes do not match the studio's sha256 twice.
    """
    if cfg.model_path is not None:
        return cfg.model_path
    version = int(cfg.model_version or 0)
    dest = cfg.workdir / "models" / str(version)
    card_path = dest / "model.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        cached = dest / FORMAT_FILES.get(card.get("format") or "onnx", "model.onnx")
        if card.get("sha256") and cached.is_file() and _sha256(cached.read_bytes()) == card["sha256"]:
            log.info("model v%d from the cache %s", version, dest)
            return dest
    if not cfg.studio_url:
        raise ConfigError("STUDIO_URL is not set: the runner downloads MODEL_VERSION from the studio")
    import requests  # only a download needs it: ~15 MB of RSS a runner with MODEL_PATH or a cached model never pays

    headers = {"x-api-key": cfg.api_key.get_secret_value()}
    delay, mismatches = 1.0, 0
    while not stop.is_set():
        status.set_unhealthy(f"downloading model v{version} from the studio")
        try:
            meta = requests.get(f"{cfg.studio_url}/api/models/{version}", headers=headers, timeout=10)
            if meta.status_code == 404:
                raise ModelError(f"the studio has no model version {version}: deploy a registered version "
                                 "(studio.models() lists them)")
            if meta.status_code in (401, 403):
                raise ConfigError(f"the studio refused the API key ({meta.status_code}): check EI_API_KEY in the deployment")
            meta.raise_for_status()
            info = meta.json()["model"]
            fmt = model_format(info.get("card") or {})  # onnx, eim or tflite: the file the card names
            resp = requests.get(f"{cfg.studio_url}/api/models/{version}/file", headers=headers, timeout=60)
            resp.raise_for_status()
        except (requests.ConnectionError, requests.Timeout) as exc:
            status.set_unhealthy(f"downloading model v{version}: studio unreachable, retrying in {delay:.0f} s")
            log.warning("studio unreachable for the model download (%s); retrying in %.0f s", mask(str(exc)), delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
            continue
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code < 500:
                raise ModelError(f"model v{version} download refused: {exc.response.status_code} "
                                 f"{exc.response.text[:200]}") from None
            status.set_unhealthy(f"downloading model v{version}: studio error, retrying")
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
            continue
        data = resp.content
        expected = info.get("sha256") or resp.headers.get("x-sha256")
        if expected and _sha256(data) != expected:
            mismatches += 1
            if mismatches >= 2:
                raise ModelError(f"model v{version} downloaded twice with a sha256 other than the studio's "
                                 f"({expected[:12]}...): the stored file is damaged; register the model again")
            log.warning("model v%d sha256 mismatch; downloading again", version)
            continue
        dest.mkdir(parents=True, exist_ok=True)
        card = dict(info.get("card") or {})
        card.setdefault("version", version)
        card.setdefault("sha256", expected or _sha256(data))
        model_path = dest / FORMAT_FILES[fmt]
        write_bytes_atomic(model_path, data)
        if fmt == "eim":
            model_path.chmod(0o755)
        write_bytes_atomic(card_path, json.dumps(card, indent=2).encode())
        log.info("model v%d downloaded (%d bytes, sha256 %s...)", version, len(data), card["sha256"][:12])
        return dest
    raise InterruptedError("stopped while downloading the model")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = ["fetch_model", "write_bytes_atomic"]
