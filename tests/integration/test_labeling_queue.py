"""The labeling queue, oracle, panel and plots against the real local studio (fixture `cloud`)."""
from __future__ import annotations

import pytest

from helpers.errors import DatasetError, NotFound
from helpers.geometry import boxes_to_dicts
from helpers.labeling.proposals import compare_boxes
from helpers.labeling.queue import LabelQueue
from helpers.sim.oracle import OracleLabeler
from helpers.sim.scenes import SceneStream
from helpers.widgets import encode_jpeg


def upload_stream(studio, device, n, objects=("apple", "apple"), seed=0, ground_truth=True, order=None, size=(160, 160),
                  distractors=("orange",)):
    """Upload `n` consecutive frames of one synthetic camera, as the collector would; returns the truth."""
    stream = SceneStream(list(objects), list(distractors), size=size, seed=seed)
    frames = [stream.next_frame() for _ in range(n)]
    truth = {}
    for i in order or range(n):
        rgb, boxes = frames[i]
        meta = {"device": device, "captured_at": f"2025-01-01T00:00:{i:02d}.000Z", "frame_index": i + 1,
                "source": "collector"}
        if ground_truth:
            meta["ground_truth"] = boxes_to_dicts(boxes)
        name = f"{device}-{i:03d}.jpg"
        (res,) = studio.upload([(name, encode_jpeg(rgb, quality=95))], metadata=meta, device=device)
        assert res.sample_id is not None, res
        truth[i + 1] = (res.sample_id, boxes)
    return truth


@pytest.fixture()
def labels(cloud):
    cloud.studio.add_label("apple")
    return cloud.studio


def test_queue_order_tracking_save_skip_delete(cloud, labels, unique_name):
    studio = cloud.studio
    dev = unique_name("cam")
    truth = upload_stream(studio, dev, 5, seed=11, order=[3, 0, 4, 1, 2])  # uploaded out of order
    q = LabelQueue(studio, device=dev, model=None)
    assert q.pending_ids() == [truth[i][0] for i in range(1, 6)]  # capture order
    assert q.progress().text == "0 of 5, 0 accepted unchanged"

    first = q.current()
    assert first.position == 1 and first.proposals == {} and first.offered is None
    assert "ground_truth" not in first.info
    q.save(truth[1][1])
    saved = studio.get_sample(truth[1][0])
    assert saved.labeled and compare_boxes(saved.boxes, truth[1][1]).mean_iou > 0.99

    second = q.current()
    assert second.sample_id == truth[2][0] and second.offered == "tracking"
    prop = second.proposals["tracking"]
    assert prop.detail["from_sample"] == truth[1][0]
    assert compare_boxes(prop.boxes, truth[2][1]).mean_iou > 0.85
    q.save()  # accept the proposal as it is
    assert q.records[-1].accepted_unchanged
    assert studio.get_sample(truth[2][0]).labeled

    third = q.skip()
    assert third.sample_id == truth[4][0]
    assert not studio.get_sample(truth[3][0]).labeled  # skipped: still in the studio's queue
    # tracking from frame 2 across the skipped frame (gap 2)
    assert third.proposals["tracking"].detail["frame_gap"] == 2
    q.delete()
    with pytest.raises(NotFound):
        studio.get_sample(truth[4][0])
    with pytest.raises(DatasetError, match="add them first"):  # a class no test adds to the shared studio
        q.save([{"label": f"pear-{dev}", "x": 1, "y": 1, "width": 5, "height": 5}])
    q.save(truth[5][1])
    assert q.current() is None and len(q) == 0
    p = q.progress()
    assert (p.handled, p.saved, p.skipped, p.deleted) == (5, 3, 1, 1)
    unchanged = sum(r.accepted_unchanged for r in q.records)
    assert unchanged >= 1 and p.accepted_unchanged == unchanged
    assert p.text == f"5 of 5, {unchanged} accepted unchanged, 1 skipped, 1 deleted"
    with pytest.raises(DatasetError, match="refresh"):
        q.skip()
    assert q.refresh() == 1 and q.pending_ids() == [truth[3][0]]  # the skipped one comes back
    assert len(q.recent()) == 3


def test_add_label_normalises_and_rejects(cloud, labels, unique_name):
    q = LabelQueue(cloud.studio, device=unique_name("cam"), model=None)
    assert "banana" in q.add_label("  Banana ")
    assert "banana" in cloud.studio.labels()
    with pytest.raises(DatasetError, match="lowercase"):
        q.add_label("ba nana!")


def test_oracle_labels_from_ground_truth_and_reports_assist(cloud, labels, unique_name):
    studio = cloud.studio
    dev = unique_name("cam")
    truth = upload_stream(studio, dev, 8, objects=("apple", "apple"), seed=4)
    q = LabelQueue(studio, device=dev, model=None)
    report = OracleLabeler(q).run(progress=False)
    assert report.saved == 8 and report.skipped == report.deleted == 0
    tracking = report.row("tracking")
    assert tracking.proposals == 7  # every frame after the first
    assert tracking.share_unchanged >= 0.7 and tracking.mean_iou > 0.85
    assert report.row("model").proposals == 0
    assert report.offered_by == {"none": 1, "tracking": 7}
    assert report.row("offered").proposals == 7
    assert "accepted unchanged" in report.summary()
    for sample_id, boxes in truth.values():
        s = studio.get_sample(sample_id)
        assert s.labeled and compare_boxes(s.boxes, boxes).unchanged


def test_oracle_refuses_real_images(cloud, labels, unique_name):
    studio = cloud.studio
    dev = unique_name("cam")
    truth = upload_stream(studio, dev, 2, seed=5, ground_truth=False)
    q = LabelQueue(studio, device=dev, model=None)
    with pytest.raises(DatasetError, match="Label real images in the panel"):
        OracleLabeler(q).run(progress=False)
    assert not any(studio.get_sample(sid).labeled for sid, _ in truth.values())


def test_oracle_leaves_out_classes_not_in_label_set(cloud, labels, unique_name):
    studio = cloud.studio
    dev = unique_name("cam")
    upload_stream(studio, dev, 2, objects=("apple", "banana"), seed=6)
    q = LabelQueue(studio, device=dev, model=None)
    OracleLabeler(q, labels=["apple"]).run(progress=False)
    for s in studio.samples(device=dev):
        assert s.labeled and {b.label for b in s.boxes} == {"apple"}


def test_no_tracking_across_collector_restart_or_long_gap(cloud, labels, unique_name):
    studio = cloud.studio
    dev = unique_name("cam")
    stream = SceneStream(["apple"], size=(96, 96), seed=8)
    frames = [stream.next_frame() for _ in range(3)]
    # (frame_index, captured_at): a restarted collector counts from 1 again; then a frame 10 min later
    stamps = [(40, "2025-01-01T00:00:00Z"), (1, "2025-01-01T00:00:05Z"), (2, "2025-01-01T00:10:05Z")]
    for (rgb, boxes), (fi, at) in zip(frames, stamps):
        meta = {"device": dev, "captured_at": at, "frame_index": fi, "ground_truth": boxes_to_dicts(boxes)}
        studio.upload([(f"{dev}-{fi}.jpg", encode_jpeg(rgb))], metadata=meta, device=dev)
    q = LabelQueue(studio, device=dev, model=None)
    q.save(frames[0][1])
    assert q.current().proposals == {}  # frame index went backwards: a restart
    q.save(frames[1][1])
    assert q.current().proposals == {}  # ten minutes later: another scene, most likely
    assert LabelQueue(studio, device=dev, model=None, max_track_seconds=None).current().proposals.keys() == {"tracking"}
