"""The queue's undo and its extra proposal sources, against the real local studio (fixture `cloud`)."""
from __future__ import annotations

import pytest
from test_labeling_queue import upload_stream

from helpers.errors import DatasetError
from helpers.geometry import BBox
from helpers.labeling.proposals import Proposal
from helpers.labeling.queue import LabelQueue
from helpers.sim.oracle import assist_report


def test_undo_save_skip_and_delete(cloud, unique_name):
    studio = cloud.studio
    studio.add_label("apple")
    dev = unique_name("cam")
    truth = upload_stream(studio, dev, 4, seed=41)
    q = LabelQueue(studio, device=dev, model=None)
    with pytest.raises(DatasetError, match="nothing to undo"):
        q.undo()
    q.save(truth[1][1])
    q.save()  # frame 2: the tracked boxes as offered
    assert q.progress().accepted_unchanged == 1 and len(q.recent()) == 2

    # undo a save: frame 2 is back with its saved boxes on screen (not counted as accepted)
    item = q.undo()
    assert item.sample_id == truth[2][0] and q.source == "saved"
    assert item.proposals["saved"].boxes == studio.get_sample(truth[2][0]).boxes
    p = q.progress()
    assert (p.handled, p.saved, p.accepted_unchanged) == (1, 1, 0) and len(q.recent()) == 1
    q.save(None)  # re-save what is on screen
    assert not q.records[-1].accepted_unchanged  # the labeler's own boxes, not a proposal accepted
    assert q.records[-1].offered == "tracking"

    # undo a skip: the same frame again
    skipped = q.current().sample_id
    q.skip()
    assert q.undo().sample_id == skipped and q.progress().skipped == 0

    # undo a delete: uploaded again with its metadata, category and device; a new id
    before = studio.get_sample(skipped)
    q.delete()
    assert skipped not in [s.id for s in studio.samples(device=dev)]
    back = q.undo()
    restored = studio.get_sample(back.sample_id)
    assert back.sample_id != skipped and not restored.labeled
    assert (restored.device, restored.category, restored.metadata["frame_index"], restored.sha256) == (
        before.device, before.category, before.metadata["frame_index"], before.sha256)
    assert q.progress().deleted == 0 and len(q) == 2
    report = assist_report(q.records)
    assert report.saved == 2 and report.deleted == 0


def test_extra_proposal_source_is_offered_by_score(cloud, unique_name):
    studio = cloud.studio
    studio.add_label("apple")
    dev = unique_name("cam")
    upload_stream(studio, dev, 2, seed=42)
    calls = []

    def assist(rgb, labels):
        calls.append((rgb.shape, tuple(labels)))
        return Proposal("assist", [BBox("apple", 5, 6, 20, 20, value=0.7)], 0.7, {"model": "test"})

    q = LabelQueue(studio, device=dev, model=None, proposers=[assist])
    item = q.current()
    assert item.offered == "assist" and item.proposals["assist"].boxes[0].x == 5
    assert calls and calls[0][1] == tuple(studio.labels())

    def broken(rgb, labels):
        return [BBox("apple", 1, 1, 2, 2)]

    with pytest.raises(TypeError, match="must return a Proposal"):
        LabelQueue(studio, device=dev, model=None, proposers=[broken]).current()
