"""Move a dataset between two studios, idempotent by content hash.

    from helpers.studio import get_studio
    from helpers.studio.transfer import copy_dataset
    copy_dataset(get_studio("local"), get_studio("edgeimpulse"))   # upload the local dataset to Edge Impulse
    copy_dataset(get_studio("edgeimpulse"), get_studio("local"))   # import an Edge Impulse project here

Every sample keeps its file name, split (training/testing), label, boxes and metadata. A sample
whose content (sha256 of the file) the destination already has is not uploaded again; if it is
labeled at the source and still in the destination's label queue, its boxes are copied. Run it
twice and the second run copies nothing. The ingestion service's own duplicate check
(`x-disallow-duplicates`) backs this up where a project hashes differently.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from helpers.studio.base import CATEGORIES


@dataclass
class TransferReport:
    """What `copy_dataset` did: sample ids of the source, by outcome."""

    copied: list[int] = field(default_factory=list)
    already_there: list[int] = field(default_factory=list)
    boxes_updated: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {"copied": len(self.copied), "already_there": len(self.already_there),
                "boxes_updated": len(self.boxes_updated), "failed": len(self.failed)}


def copy_dataset(src: Any, dst: Any, *, labeled_only: bool = False,
                 progress: Callable[[int, int], Any] | None = None) -> TransferReport:
    """Copy `src`'s samples into `dst` (both `Studio`s), skipping content `dst` already holds.

    Args:
        labeled_only: copy only samples that have been labeled at the source.
        progress: called as progress(done, total) after each sample.

    Returns:
        A `TransferReport`; `failed` maps source ids to the destination's error message.
    """
    report = TransferReport()
    have = {s.sha256: s for s in dst.samples()}
    todo = src.samples(labeled=True) if labeled_only else src.samples()
    for n, s in enumerate(todo, 1):
        existing = have.get(s.sha256)
        if existing is not None:
            report.already_there.append(s.id)
            if s.labeled and not existing.labeled:
                dst.set_boxes(existing.id, s.boxes)
                report.boxes_updated.append(s.id)
        else:
            data = src.get_image(s.id)
            digest = hashlib.sha256(data).hexdigest()
            category = s.category if s.category in CATEGORIES else "training"
            meta = {k: v for k, v in (s.metadata or {}).items() if k != "device"}
            r = dst.upload([(s.filename, data)], category=category, label=s.label,
                           boxes={s.filename: s.boxes} if s.labeled and s.boxes else None,
                           metadata=meta or None, device=s.device)[0]
            if r.duplicate:
                report.already_there.append(s.id)
            elif r.sample_id is None:
                report.failed[s.id] = r.error or "upload failed"
            else:
                report.copied.append(s.id)
                have[digest] = dst.get_sample(r.sample_id)
                if s.labeled and not s.boxes:
                    dst.set_boxes(r.sample_id, [])  # labeled "no objects": out of the label queue
        if progress is not None:
            progress(n, len(todo))
    return report


__all__ = ["copy_dataset", "TransferReport"]
