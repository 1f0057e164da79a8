"""COCO label assist on the synthetic camera: how many of its proposals a labeler keeps unchanged.

The workshop's synthetic camera (`SyntheticCamera`, new fruit every 5 frames, another table
every 3 shuffles, 320 px, JPEG as uploaded) fills a real local studio; a real `LabelQueue` with
the COCO-pretrained NanoDet (`make weights`) as a proposer, beside tracking (no model of ours:
the state of notebook 03, and of notebook 06's bananas before a banana model exists), is worked
through by the oracle labeler, which saves the ground truth. Two scene mixes: notebook 03's
`apples` (labels: apple) and notebook 06's `apples_bananas` (labels: apple, banana; lemons,
oranges and balls as distractors).

Reported per mix: the queue's `assist_report` (per source: samples whose proposal was kept
unchanged; per class: boxes kept at IoU >= 0.9), and what `best_proposal` offered first: how
often the COCO model was offered over a trusted (unwarned, non-empty) tracking proposal, over an
empty one (tracking from a frame labeled empty), and where tracking had nothing to offer or was
not trusted, with how often the offered proposal was right at IoU 0.5.

    .venv/bin/python bench/bench_coco_assist.py [--seeds 3] [--frames 60]
Writes bench/results/coco_assist_synthetic.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import write_result  # noqa: I001  (bench/ is the script's folder)

from helpers.geometry import boxes_to_dicts
from helpers.labeling.proposals import COCO_SOURCE, coco_assist_proposers, compare_boxes
from helpers.labeling.queue import LabelQueue
from helpers.sim.camera import SyntheticCamera
from helpers.sim.oracle import OracleLabeler, assist_report, ground_truth
from helpers.sim.scenes import story_scenes

SHUFFLE_EVERY, MOVE_EVERY = 5, 3
MIXES = {"apples": ["apple"], "apples_bananas": ["apple", "banana"]}


def upload_camera(studio, device: str, mix: str, seed: int, n: int) -> None:
    cam = SyntheticCamera(seed=seed, shuffle_every=SHUFFLE_EVERY, move_every=MOVE_EVERY)
    scenes = story_scenes(mix)
    cam.set_scene(scenes[0]["objects"], scenes[0]["distractors"])
    cam.mix = scenes  # the scene file's mix, as the collector follows it
    for i in range(n):
        frame = cam.read()
        meta = {"device": device, "captured_at": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z",
                "frame_index": i + 1, "source": "collector", "ground_truth": boxes_to_dicts(frame.ground_truth or [])}
        (res,) = studio.upload([(f"{device}-{i:03d}.jpg", frame.jpeg)], metadata=meta, device=device)
        assert res.sample_id is not None, res


def offers() -> dict:
    return {"frames": 0, "right_at_iou_0.5": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=60, help="frames per camera (a shuffle every 5)")
    args = ap.parse_args()

    from helpers.localcloud import ensure_running, stop
    from helpers.studio import get_studio

    (coco,) = coco_assist_proposers(True)
    results = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for mix, labels in MIXES.items():
            ws = Path(tmp) / mix
            ensure_running(ws)
            try:
                studio = get_studio("local", workspace=ws)
                for label in labels:
                    studio.add_label(label)
                for seed in range(args.seeds):
                    upload_camera(studio, f"cam-{seed}", mix, seed, args.frames)
                q = LabelQueue(studio, model=None, proposers=[coco])
                oracle = OracleLabeler(q, labels=labels)
                cases = {k: offers() for k in ("over_trusted_tracking", "over_empty_tracking",
                                               "tracking_not_trusted", "no_tracking")}
                while (item := q.current()) is not None:
                    tracked = item.proposals.get("tracking")
                    if item.offered == COCO_SOURCE:
                        kind = ("no_tracking" if tracked is None else "tracking_not_trusted" if tracked.warning
                                else "over_empty_tracking" if tracked.empty else "over_trusted_tracking")
                        truth = [b for b in ground_truth(item.sample) if b.label in labels]
                        cases[kind]["frames"] += 1
                        cases[kind]["right_at_iou_0.5"] += compare_boxes(item.proposals[COCO_SOURCE].boxes, truth, 0.5).unchanged
                    oracle.label_one()
                report = assist_report(q.records)
                print(f"--- {mix} ({args.seeds} cameras x {args.frames} frames)\n{report.summary()}\n"
                      f"COCO offered first: {cases}", flush=True)
                results[mix] = {"labels": labels, "assist": report.to_dict(), "coco": report.source_figures(COCO_SOURCE),
                                "coco_offered_first": cases}
            finally:
                stop(ws)
    path = write_result("coco_assist_synthetic", {
        "setup": {"seeds": args.seeds, "frames_per_camera": args.frames, "shuffle_every": SHUFFLE_EVERY,
                  "move_every": MOVE_EVERY, "size": [320, 320], "iou_unchanged": 0.9, "weights": coco.weights,
                  "score_threshold": "the zero-shot card's"},
        "mixes": results, "wall_s": round(time.perf_counter() - t0, 1)})
    print("->", path)


if __name__ == "__main__":
    main()
