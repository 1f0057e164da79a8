"""The labeling queue: unlabeled studio samples in capture order, each with box proposals.

A `LabelQueue` walks the studio's unlabeled samples device by device, in capture order
(`captured_at`, then `frame_index`, then upload order). For the sample in front of the labeler it
offers proposals (`helpers.labeling.proposals`):

- tracking: the boxes of the previous labeled frame of the same device, moved to where each
  object went;
- model: the detections of the newest production model in the registry (else the newest
  candidate), when one exists;
- coco (label assist, `proposers=coco_assist_proposers()`): the COCO-pretrained model's boxes
  for the project's classes COCO knows, before any model of ours exists.

The best one (highest score) is offered first; `select()` switches. When the scene changed since
the tracked frame (new fruit put down, the camera carried elsewhere), the tracking proposal
carries a warning and is not offered (see `helpers.labeling.proposals.detect_scene_change`);
more sources (the COCO model, any callable) plug in through `proposers`. `save()` writes the boxes to
the studio, `skip()` leaves the sample unlabeled (it comes back on `refresh()`), `delete()`
removes a bad frame, and `undo()` takes the last of these back (a deleted frame is uploaded
again with its metadata). Each save is recorded with how far every proposal was from what was
saved, which is what the assist-quality report (`helpers.sim.oracle.assist_report`) sums up.

The queue never reads `metadata["ground_truth"]`; only the oracle labeler does.
"""
from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helpers.config import load_settings
from helpers.errors import DatasetError
from helpers.geometry import BBox
from helpers.inference.card import FORMAT_FILES, model_format
from helpers.inference.loader import load_detector
from helpers.labeling.proposals import (
    Proposal,
    best_proposal,
    compare_boxes,
    detect_scene_change,
    flag_scene_change,
    model_proposal,
    tracking_proposal,
)
from helpers.labeling.records import LabelRecord, QueueItem, QueueProgress
from helpers.labeling.samples import capture_key, captured_epoch, decode_image, normalise_label, sample_device, sample_frame_index


@dataclass
class _Labeled:
    key: tuple[str, str, int, int]
    sample_id: int
    frame_index: int | None
    captured: float | None
    boxes: list[BBox]


class LabelQueue:
    """Unlabeled samples of a studio, in capture order per device, with proposals.

    Args:
        studio: a `helpers.studio.base.Studio`.
        device: only this device's samples (None: all devices, grouped by device).
        category: `training`, `testing` or None for both.
        model: `"auto"` (newest production model, else newest candidate, else none), a
            registry version number, a ready detector (`load_detector`), or None for no model proposals.
        model_dir: where registry models are downloaded (default: `<workspace>/models/registry`).
        score_threshold: detector score threshold (None: the model card's default).
        tracking: offer tracking proposals.
        max_track_gap: no tracking from a labeled frame more than this many frames back.
        max_track_seconds: nor from one captured more than this many seconds earlier (None: no limit).
        min_track_score: tracked boxes below this correlation are dropped.
        iou_threshold: IoU for "accepted unchanged".
        recent_size: how many just-labeled samples `recent()` keeps.
        scene_check: flag tracking across a scene change (it is then not offered first).
        proposers: more proposal sources: callables `(rgb, labels) -> Proposal` (e.g. a
            label-assist model); each proposal is offered under its own `source` name.

    Example:
        >>> q = LabelQueue(studio)
        >>> item = q.current()
        >>> q.save(item.proposals[item.offered].boxes)  # accept the offered proposal
    """

    def __init__(
        self,
        studio: Any,
        *,
        device: str | None = None,
        category: str | None = None,
        model: Any = "auto",
        model_dir: str | Path | None = None,
        score_threshold: float | None = None,
        tracking: bool = True,
        max_track_gap: int = 30,
        max_track_seconds: float | None = 120.0,
        min_track_score: float = 0.3,
        iou_threshold: float = 0.9,
        recent_size: int = 8,
        scene_check: bool = True,
        proposers: Sequence[Any] = (),
    ):
        if category is not None and category not in ("training", "testing"):
            raise ValueError(f"category must be 'training', 'testing' or None, got {category!r}")
        self.studio = studio
        self.device = device
        self.category = category
        self.score_threshold = score_threshold
        self.tracking = tracking
        self.max_track_gap = int(max_track_gap)
        self.max_track_seconds = max_track_seconds
        self.min_track_score = float(min_track_score)
        self.iou_threshold = float(iou_threshold)
        self.recent_size = int(recent_size)
        self.scene_check = bool(scene_check)
        self.proposers = list(proposers)
        self._model_spec = model
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._detector: Any = None
        self._model_version: int | None = None
        self._model_resolved = False
        self.records: list[LabelRecord] = []
        self._recent: list[tuple[int, np.ndarray, list[BBox]]] = []
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._pending: list[Any] = []
        self._cursor = 0
        self._item: QueueItem | None = None
        self.source: str | None = None
        self.refresh()

    # ------------------------------------------------------------------ loading
    def refresh(self) -> int:
        """Reload the unlabeled samples from the studio (skipped ones come back); returns how many."""
        pending = self.studio.samples(category=self.category, labeled=False, device=self.device)
        self._pending = sorted(pending, key=capture_key)
        labeled = self.studio.samples(category=self.category, labeled=True, device=self.device)
        self._labeled: dict[str, list[_Labeled]] = {}
        for s in labeled:
            self._remember(s, list(s.boxes))
        self._cursor = 0
        self._item = None
        self._counts = {"saved": 0, "skipped": 0, "deleted": 0, "unchanged": 0}
        self._total = len(self._pending)
        self._undo: list[tuple[LabelRecord, Any, bytes | None, tuple[int, np.ndarray, list[BBox]] | None]] = []
        return self._total

    def _remember(self, sample: Any, boxes: list[BBox]) -> None:
        entries = self._labeled.setdefault(sample_device(sample), [])
        entries[:] = [e for e in entries if e.sample_id != int(sample.id)]
        entries.append(_Labeled(capture_key(sample), int(sample.id), sample_frame_index(sample), captured_epoch(sample),
                                list(boxes)))
        entries.sort(key=lambda e: e.key)

    def __len__(self) -> int:
        """Samples not yet handled since the last refresh."""
        return max(0, len(self._pending) - self._cursor)

    @property
    def remaining(self) -> int:
        return len(self)

    def pending(self) -> list[Any]:
        """The samples still ahead (current one first), in queue order."""
        return list(self._pending[self._cursor:])

    def pending_ids(self) -> list[int]:
        """Ids of the samples still ahead, in queue order."""
        return [int(s.id) for s in self._pending[self._cursor:]]

    # ------------------------------------------------------------------ model
    def _workspace_models(self) -> Path:
        if self._model_dir is not None:
            return self._model_dir
        ws = getattr(self.studio, "workspace", None)
        if ws is None:
            ws = load_settings().workspace
        return Path(ws) / "models" / "registry"

    def _resolve_model(self) -> None:
        if self._model_resolved:
            return
        self._model_resolved = True
        spec = self._model_spec
        if spec is None:
            return
        if hasattr(spec, "detect"):
            self._detector = spec
            card = getattr(spec, "card", {}) or {}
            self._model_version = card.get("version") if isinstance(card, dict) else None
            return
        if spec == "auto":
            versions = [m for m in self.studio.models() if m.stage in ("production", "candidate")]
            if not versions:
                return
            production = [m for m in versions if m.stage == "production"]
            chosen = max(production or versions, key=lambda m: m.version)
        else:
            chosen = self.studio.get_model(int(spec))
        self._detector = self._load_registry_model(chosen)
        self._model_version = int(chosen.version)

    def _load_registry_model(self, mv: Any) -> Any:
        dest = self._workspace_models() / f"v{int(mv.version)}"
        model = dest / FORMAT_FILES[model_format(mv.card or {})]  # model.onnx, or the .eim / .tflite of the card
        cached = model.is_file() and (dest / "model.json").is_file() and (
            not mv.sha256 or hashlib.sha256(model.read_bytes()).hexdigest() == mv.sha256
        )
        if not cached:
            dest.mkdir(parents=True, exist_ok=True)
            self.studio.download_model(int(mv.version), dest)
        return load_detector(dest, threads=1)

    @property
    def model_version(self) -> int | None:
        """The registry version used for model proposals (None: no model)."""
        self._resolve_model()
        return self._model_version

    # ------------------------------------------------------------------ images
    def image(self, sample_id: int) -> np.ndarray:
        """The sample's image as RGB (a few recent ones are cached)."""
        sample_id = int(sample_id)
        if sample_id in self._images:
            self._images.move_to_end(sample_id)
            return self._images[sample_id]
        rgb = decode_image(self.studio.get_image(sample_id))
        self._images[sample_id] = rgb
        while len(self._images) > 6:
            self._images.popitem(last=False)
        return rgb

    # ------------------------------------------------------------------ proposals
    def _previous_labeled(self, sample: Any) -> _Labeled | None:
        key = capture_key(sample)
        before = [e for e in self._labeled.get(sample_device(sample), []) if e.key < key]
        return before[-1] if before else None

    def propose(self, sample: Any) -> dict[str, Proposal]:
        """Compute every available proposal for `sample` (tracking and/or model)."""
        out: dict[str, Proposal] = {}
        rgb = self.image(sample.id)
        labels = self.studio.labels()
        if self.tracking and sample_device(sample):
            prev = self._previous_labeled(sample)
            if prev is not None:
                fi = sample_frame_index(sample)
                gap = (fi - prev.frame_index) if (fi is not None and prev.frame_index is not None) else 1
                now, then = captured_epoch(sample), prev.captured
                seconds = (now - then) if (now is not None and then is not None) else 0.0
                # a restarted collector counts frames from 1 again, and a frame from long ago
                # shows another scene: track only from a recent, earlier frame
                recent = self.max_track_seconds is None or seconds <= self.max_track_seconds
                if 0 < gap <= self.max_track_gap and recent:
                    prev_rgb = self.image(prev.sample_id)
                    tracked = tracking_proposal(
                        prev_rgb, prev.boxes, rgb,
                        frame_gap=gap, min_score=self.min_track_score, from_sample=prev.sample_id,
                    )
                    if self.scene_check:
                        tracked = flag_scene_change(tracked, detect_scene_change(prev_rgb, prev.boxes, rgb, tracked))
                    out["tracking"] = tracked
        self._resolve_model()
        if self._detector is not None:
            out["model"] = model_proposal(
                self._detector, rgb, labels=labels, score_threshold=self.score_threshold,
                model_version=self._model_version,
            )
        for proposer in self.proposers:
            extra = proposer(rgb, labels)
            if not isinstance(extra, Proposal):
                raise TypeError(f"a proposer must return a Proposal, {proposer!r} returned {type(extra).__name__}")
            out[extra.source] = extra
        return out

    # ------------------------------------------------------------------ the labeler's actions
    def current(self) -> QueueItem | None:
        """The sample to label now with its proposals, or None when the queue is done."""
        if self._cursor >= len(self._pending):
            self._item = None
            return None
        sample = self._pending[self._cursor]
        if self._item is None or self._item.sample_id != int(sample.id):
            proposals = self.propose(sample)
            offered = best_proposal(proposals)
            self._item = QueueItem(sample, proposals, offered, self._cursor + 1, self._total)
            self.source = offered
        return self._item

    def proposal(self, source: str | None = None) -> Proposal | None:
        """The proposal of `source` (default: the one selected) for the current sample."""
        item = self.current()
        if item is None:
            return None
        src = source or self.source
        return item.proposals.get(src) if src else None

    def select(self, source: str) -> Proposal:
        """Switch the proposal on screen to `source` (`tracking`, `model`, `coco`, ...).

        Raises:
            DatasetError: the queue is done, or that source has no proposal for this sample.
        """
        item = self._require_item()
        if source not in item.proposals:
            have = ", ".join(item.proposals) or "none"
            raise DatasetError(f"no {source!r} proposal for sample {item.sample_id} (available: {have})")
        self.source = source
        return item.proposals[source]

    def _require_item(self) -> QueueItem:
        item = self.current()
        if item is None:
            raise DatasetError("the labeling queue is done: call refresh() to bring back skipped samples")
        return item

    def _advance(self, record: LabelRecord) -> QueueItem | None:
        self.records.append(record)
        self._counts[record.action] += 1
        self._cursor += 1
        self._item = None
        self.source = None
        return self.current()

    def save(self, boxes: Sequence[BBox | dict] | None = None, *, source: str | None = None) -> QueueItem | None:
        """Write `boxes` to the studio for the current sample and move on.

        Args:
            boxes: the boxes to save (BBox or dicts with x, y, width, height, label); None
                saves the selected proposal as it is. An empty list labels the frame as
                "nothing here".
            source: the proposal that was on screen (default: the selected one); used for
                the accepted-unchanged count.

        Returns:
            The next item, or None when the queue is done.

        Raises:
            DatasetError: a box has a class outside the project's label set (add it first
                with `add_label`), or the queue is done.
        """
        item = self._require_item()
        shown = source or self.source
        if boxes is None:
            chosen = item.proposals.get(shown) if shown else None
            boxes = list(chosen.boxes) if chosen is not None else []
        parsed = [b if isinstance(b, BBox) else BBox.from_dict(b) for b in boxes]
        labels = set(self.studio.labels())
        unknown = sorted({b.label for b in parsed} - labels)
        if unknown:
            raise DatasetError(
                f"class(es) {unknown} are not in the project's label set {sorted(labels)}: "
                "add them first (LabelQueue.add_label / the panel's 'add class' box)"
            )
        w, h = item.sample.width or 0, item.sample.height or 0
        clean = []
        for b in parsed:
            b = BBox(b.label, b.x, b.y, b.width, b.height)  # a saved label has no score
            if w and h:
                b = b.clipped(w, h)
            if b.width > 0 and b.height > 0:
                clean.append(b)
        self.studio.set_boxes(item.sample_id, clean)
        comparisons = {src: compare_boxes(p.boxes, clean, self.iou_threshold) for src, p in item.proposals.items()}
        record = LabelRecord(item.sample_id, sample_device(item.sample), "saved", item.offered, shown, len(clean), comparisons,
                             dict(Counter(b.label for b in clean)))
        if record.accepted_unchanged:
            self._counts["unchanged"] += 1
        self._remember(item.sample, clean)
        recent = (item.sample_id, self.image(item.sample_id), clean)
        self._recent.append(recent)
        del self._recent[: -self.recent_size]
        self._undo.append((record, item.sample, None, recent))
        return self._advance(record)

    def skip(self) -> QueueItem | None:
        """Leave the current sample unlabeled (it stays in the studio's queue) and move on."""
        item = self._require_item()
        record = LabelRecord(item.sample_id, sample_device(item.sample), "skipped", item.offered, self.source)
        self._undo.append((record, item.sample, None, None))
        return self._advance(record)

    def delete(self) -> QueueItem | None:
        """Delete the current sample from the studio (a bad frame) and move on (`undo()` brings it back)."""
        item = self._require_item()
        image = self.studio.get_image(item.sample_id)  # kept for undo(): the studio forgets it
        self.studio.delete_sample(item.sample_id)
        self._images.pop(item.sample_id, None)
        record = LabelRecord(item.sample_id, sample_device(item.sample), "deleted", item.offered, self.source)
        self._undo.append((record, item.sample, image, None))
        return self._advance(record)

    @property
    def can_undo(self) -> bool:
        """Whether `undo()` has an action to take back (since the last refresh)."""
        return bool(self._undo)

    def undo(self) -> QueueItem:
        """Take back the last save, skip or delete and show that sample again.

        A skipped sample simply comes back. A deleted one is uploaded again (same image,
        metadata, category and device; the studio gives it a new id). A saved one comes back
        with its saved boxes offered (source `saved`); the studio keeps them until it is saved
        again.

        Returns:
            The item now in front of the labeler (the sample the action was about).

        Raises:
            DatasetError: nothing to undo (since the last refresh), or the studio refused the
                re-upload.
        """
        if not self._undo:
            raise DatasetError("nothing to undo: no save, skip or delete since the queue was (re)loaded")
        record, sample, image, recent = self._undo.pop()
        if record.action == "deleted":
            meta = dict(sample.metadata or {})
            (res,) = self.studio.upload([(sample.filename, image)], category=sample.category, metadata=meta,
                                        device=sample_device(sample) or None)
            if res.sample_id is None:
                raise DatasetError(f"could not restore deleted sample {sample.id} ({sample.filename}): "
                                   f"{res.error or 'duplicate of sample ' + str(res.duplicate_of)}")
            sample = self.studio.get_sample(res.sample_id)
        elif record.action == "saved":
            self._counts["unchanged"] -= int(record.accepted_unchanged)
            entries = self._labeled.get(sample_device(sample), [])
            entries[:] = [e for e in entries if e.sample_id != record.sample_id]
            if recent is not None and recent in self._recent:
                self._recent.remove(recent)
        self._counts[record.action] -= 1
        for i in range(len(self.records) - 1, -1, -1):
            if self.records[i] is record:
                del self.records[i]
                break
        self._cursor -= 1
        self._pending[self._cursor] = sample
        self._item = None
        self.source = None
        item = self.current()
        assert item is not None  # the cursor points at the restored sample
        if record.action == "saved" and recent is not None:
            # shown, not offered: re-saving it unchanged is not an "accepted proposal"
            item.proposals["saved"] = Proposal("saved", list(recent[2]), 1.0, {"from_sample": record.sample_id})
            self.source = "saved"
        return item

    @property
    def done(self) -> bool:
        """Every sample since the last refresh was handled."""
        return self._cursor >= len(self._pending)

    def skipped_count(self) -> int:
        """How many samples were skipped since the last refresh (they come back on `refresh()`)."""
        return self._counts["skipped"]

    @property
    def labels(self) -> list[str]:
        """The project's class names."""
        return list(self.studio.labels())

    def add_label(self, name: str) -> list[str]:
        """Add a class (e.g. `banana`) to the project's label set; returns the new set."""
        return list(self.studio.add_label(normalise_label(name)))

    # ------------------------------------------------------------------ reporting
    def progress(self) -> QueueProgress:
        """Counts since the last refresh."""
        c = self._counts
        handled = c["saved"] + c["skipped"] + c["deleted"]
        return QueueProgress(self._total, handled, c["saved"], c["unchanged"], c["skipped"], c["deleted"], len(self))

    def recent(self) -> list[tuple[int, np.ndarray, list[BBox]]]:
        """The just-labeled samples, oldest first: (sample id, RGB image, saved boxes)."""
        return list(self._recent)
