"""The impulse and its training job (`ImpulseApi`, `DSPApi`, `LearnApi`, `JobsApi`, `DeploymentApi`)."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.errors import ConfigError, MissingExtra
from helpers.inference.eim import EimDetector
from helpers.protocol.ei_vocab import ARCH_EI_MODEL, COLOR_EI, EI_MODEL_ARCH
from helpers.studio.edgeimpulse.connection import EdgeImpulseConnection, TrainingFailed, enum_text

# Seconds of training per image and epoch that `training_timeout_s` allows: a generous multiple of
# what 2 busy cores take (fomo-box: about 0.09 s measured with another process beside it; the
# pipeline's cell limits use the same 0.5), nanodet-ft and ssdlite320 about 6x the compute.
TRAIN_SECONDS_PER_IMAGE_EPOCH = {"fomo-box": 0.5, "nanodet-ft": 3.0, "ssdlite320": 3.0}
TRAIN_OVERHEAD_S = 300  # starting the job, loading the snapshot, export, evaluation, download


def training_timeout_s(images: int, epochs: int, arch: str = "fomo-box", time_budget_s: float | None = None) -> float:
    """How long `EdgeImpulseStudio.train` waits for a job on `images` training images: the
    overhead plus the per-image-epoch allowance of `arch`; with a time budget, at most the budget
    plus the overhead. Below the pipeline's cell limit, so a slow job ends with `TrainingFailed`
    (and is cancelled) before the cell is killed."""
    per = TRAIN_SECONDS_PER_IMAGE_EPOCH.get(arch, max(TRAIN_SECONDS_PER_IMAGE_EPOCH.values()))
    limit = TRAIN_OVERHEAD_S + per * max(1, int(images)) * max(1, int(epochs))
    if time_budget_s is not None:
        limit = min(limit, TRAIN_OVERHEAD_S + float(time_budget_s) * 1.5)
    return float(limit)


class EdgeImpulseTraining(EdgeImpulseConnection):
    """The project's impulse (image input, image block, object detection) and its training job."""

    def get_impulse(self) -> dict[str, Any] | None:
        """The impulse as settings: input size, resize mode, colour depth, architecture, epochs,
        learning rate, batch size, and the block ids; None when the project has none yet."""
        imp = self._call("ImpulseApi", "get_impulse", self.project_id).impulse
        if imp is None or not imp.learn_blocks:
            return None
        inp, dsp, learn = imp.input_blocks[0], imp.dsp_blocks[0], imp.learn_blocks[0]
        color = "RGB"
        cfg = self._call("DSPApi", "get_dsp_config", self.project_id, int(dsp.id))
        for group in cfg.config or []:
            for item in group.items:
                if item.param == "channels" and item.value:
                    color = "grayscale" if str(item.value).lower().startswith("gray") else "RGB"
        keras = self._call("LearnApi", "get_keras", self.project_id, int(learn.id))
        layer = enum_text(keras.visual_layers[0].type) if keras.visual_layers else None
        custom = getattr(keras, "custom_parameters", None) or {}
        arch = custom.get("arch") or EI_MODEL_ARCH.get(layer, layer)
        budget = custom.get("time_budget_s")
        return {"input_size": int(inp.image_width), "resize_mode": enum_text(inp.resize_mode),
                "color": color, "arch": arch, "epochs": int(keras.training_cycles), "learning_rate": float(keras.learning_rate),
                "batch_size": int(keras.default_batch_size),
                "validation_split": None if keras.train_test_split is None else float(keras.train_test_split),
                "seed": int(custom["seed"]) if custom.get("seed") not in (None, "") else None,
                "time_budget_s": float(budget) if budget not in (None, "") else None,
                "impulse_id": int(imp.id), "dsp_id": int(dsp.id),
                "learn_id": int(learn.id), "learn_block_type": enum_text(learn.type)}

    def set_impulse(self, *, input_size: int = 160, color: str = "RGB", arch: str = "fomo-box", epochs: int = 30,
                    learning_rate: float = 0.005, batch_size: int = 16, resize_mode: str = "squash",
                    validation_split: float = 0.2, seed: int = 0, time_budget_s: float | None = None) -> dict[str, Any]:
        """Create the impulse (image input, image block, object-detection learn block) and set its
        colour depth and training settings: what notebooks 04 and 06 set. Returns `get_impulse()`.

        `validation_split` is Edge Impulse's validation set size (`trainTestSplit`); what Edge
        Impulse has no field for travels as the learn block's custom parameters: `arch` (an
        architecture of helpers.train without an Edge Impulse model), `seed` and `time_budget_s`
        (seconds of training before the best epoch so far is kept). The local job builds from
        these exactly the `TrainParams` the notebooks build (`helpers.localcloud.studio.train_job.train_params`).
        """
        from edgeimpulse_api.models import (  # the generated client takes seconds to import: on use
            DSPConfigRequest,
            Impulse,
            ImpulseDspBlock,
            ImpulseInputBlock,
            ImpulseLearnBlock,
            SetKerasParameterRequest,
        )

        if color not in COLOR_EI:
            raise ValueError(f"color must be one of {list(COLOR_EI)}, got {color!r}")
        if not 0 < validation_split < 1:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
        if time_budget_s is not None and not time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0 seconds or None, got {time_budget_s}")
        impulse = Impulse(
            id=1, name="Object detection", type="default", post_processing_blocks=[],
            input_blocks=[ImpulseInputBlock(id=1, type="image", name="Image data", title="Image data", image_width=input_size,
                                            image_height=input_size, resize_mode=resize_mode)],
            dsp_blocks=[ImpulseDspBlock(id=2, type="image", name="Image", axes=["image"], title="Image", implementation_version=1,
                                        input=1)],
            learn_blocks=[ImpulseLearnBlock(id=3, type="keras-object-detection", name="Object detection", dsp=[2],
                                            title="Object detection (Images)")])
        self._call("ImpulseApi", "create_impulse", self.project_id, impulse)
        imp = self._call("ImpulseApi", "get_impulse", self.project_id).impulse
        dsp_id, learn_id = int(imp.dsp_blocks[0].id), int(imp.learn_blocks[0].id)
        self._call("DSPApi", "set_dsp_config", self.project_id, dsp_id, DSPConfigRequest(config={"channels": COLOR_EI[color]}))
        keras: dict[str, Any] = {"training_cycles": int(epochs), "learning_rate": float(learning_rate), "batch_size": float(batch_size),
                                 "train_test_split": float(validation_split)}
        custom = {"seed": str(int(seed)), "time_budget_s": "" if time_budget_s is None else repr(float(time_budget_s))}
        if arch in ARCH_EI_MODEL:
            keras["visual_layers"] = [{"type": ARCH_EI_MODEL[arch]}]
        else:
            custom["arch"] = arch
        keras["custom_parameters"] = custom
        self._call("LearnApi", "set_keras", self.project_id, learn_id, SetKerasParameterRequest(**keras))
        return self.get_impulse() or {}

    def train(self, dest: str | Path, *, timeout_s: float = 3600.0, poll_s: float = 2.0,
              on_log: Callable[[str], Any] | None = None, register: bool = True,
              card_extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the impulse's training job, stream its log, fetch the model into `dest`.

        Starts `JobsApi.train_keras_job`, polls `get_job_status` every `poll_s` seconds and passes
        each new log line (`get_jobs_logs`) to `on_log` (the notebook's progress view); after
        `timeout_s` the job is cancelled (`cancel_job`) and `TrainingFailed` raised. On success the
        model is downloaded: from the local studio `model.onnx` + `model.json`
        (`LearnApi.download_learn_model`), from Edge Impulse the Linux `.eim` build
        (`DeploymentApi.download_build`, type runner-linux-x86_64) with a card of format "eim"
        whose labels and threshold the executable itself reports (`edge_impulse_linux`); with
        `register` either goes into the model registry and the version is returned, so the
        notebooks deploy it the same way.

        Returns:
            {"job_id", "model_dir", "format" ("onnx" | "eim"), "log" (lines), "version" (or None)}.
        """
        imp = self.get_impulse()
        if imp is None:
            raise ConfigError("the project has no impulse yet: call set_impulse(...) (notebook 04) first")
        pid, learn_id = self.project_id, imp["learn_id"]
        job_id = int(self._call("JobsApi", "train_keras_job", pid, learn_id, _set_keras_request()).id)
        seen = 0
        log: list[str] = []
        deadline = time.monotonic() + timeout_s

        def pump() -> None:
            nonlocal seen
            resp = self._call("JobsApi", "get_jobs_logs", pid, job_id)
            lines = [item.data.rstrip("\n") for item in reversed(resp.stdout)]  # served newest first
            for line in lines[seen:]:
                log.append(line)
                if on_log is not None:
                    on_log(line)
            seen = max(seen, len(lines))

        while True:
            job = self._call("JobsApi", "get_job_status", pid, job_id).job
            pump()
            if job.finished is not None:
                break
            if time.monotonic() > deadline:
                self._call("JobsApi", "cancel_job", pid, job_id, force_cancel="true")
                raise TrainingFailed(f"training job {job_id} did not finish within {timeout_s:.0f} s and was cancelled; "
                                     "give it more time (timeout_s; in notebooks 04 and 06 the train_timeout_s parameter) "
                                     "or train less (fewer epochs, or a time_budget_s)", 0)
            time.sleep(poll_s)
        if not job.finished_successful:
            tail = "\n".join(log[-8:])
            raise TrainingFailed(f"training job {job_id} failed: {job.additional_info or ''}\n{tail}", 200)
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        result: dict[str, Any] = {"job_id": job_id, "model_dir": str(out), "log": log, "version": None}
        if self.target == "local":
            onnx = self._raw("LearnApi", "download_learn_model", pid, learn_id, "onnx")
            card = json.loads(self._raw("LearnApi", "download_learn_model", pid, learn_id, "card"))
            card.update(card_extra or {})
            card["studio_job"] = {"job_id": job_id, "project_id": pid, "target": self.target}
            (out / "model.onnx").write_bytes(onnx)
            (out / "model.json").write_text(json.dumps(card, indent=2))
            result["format"] = "onnx"
            if register:
                result["version"] = self.registry.register_model(out / "model.onnx", card).version
        else:
            eim = self._raw("DeploymentApi", "download_build", pid, "runner-linux-x86_64")
            path = out / "model.eim"
            path.write_bytes(eim)
            path.chmod(0o755)
            card = {"format": "eim", "input_size": imp["input_size"], "color": imp["color"],
                    "preprocessing": {"resize": imp.get("resize_mode") or "squash"},
                    "studio_job": {"job_id": job_id, "project_id": pid, "target": self.target}, **(card_extra or {})}
            (out / "model.json").write_text(json.dumps(card, indent=2))
            card.update(_eim_model_info(out))
            (out / "model.json").write_text(json.dumps(card, indent=2))
            result["format"] = "eim"
            if register:  # the registry keeps the .eim itself; the runner runs it by the card's format
                result["version"] = self.registry.register_model(path, card).version
        return result

    def download_eim(self, dest: str | Path) -> Path:
        """The trained impulse as an `.eim` Linux executable (`DeploymentApi.download_build`)."""
        data = self._raw("DeploymentApi", "download_build", self.project_id, "runner-linux-x86_64")
        p = Path(dest)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(0o755)
        return p


def _eim_model_info(model_dir: Path) -> dict[str, Any]:
    """What an Edge Impulse `.eim` says about itself (labels, score threshold), for its card: the
    executable is started once through `edge_impulse_linux` (which checks it against the card's
    input size). Without the `[eim]` extra the card leaves them out and the runner asks the model."""
    try:
        det = EimDetector(model_dir)
    except MissingExtra as exc:
        logging.getLogger(__name__).warning("%s: the card lists no labels; the runner reads them from the .eim", exc)
        return {}
    try:
        return {"labels": det.labels, "score_threshold": det.score_threshold,
                "model_type": det.model_parameters.get("model_type"), "edge_impulse_project": det.project}
    finally:
        det.close()


def _set_keras_request() -> Any:
    """An empty `SetKerasParameterRequest`: train with the settings stored on the learn block."""
    from edgeimpulse_api.models import SetKerasParameterRequest  # the generated client takes seconds to import: on use

    return SetKerasParameterRequest()


__all__ = ["EdgeImpulseTraining", "TRAIN_SECONDS_PER_IMAGE_EPOCH", "TRAIN_OVERHEAD_S", "training_timeout_s"]
