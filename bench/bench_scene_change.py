"""How often the labeling queue offers a wrong proposal right after the scene changes.

The synthetic camera of the workshop (`SyntheticCamera`, the 'apples' scene mix, new fruit
every 5 frames, another table every 3 shuffles, 320 px, JPEG as uploaded) plays the queue of
one device; the labeler saves the ground truth of every frame, so each frame's tracking
proposal starts from exactly right boxes. For each frame the queue's own proposal functions
decide what is offered first:

- before: tracking and the model compete on score alone (the queue before scene-change
  detection);
- after: `detect_scene_change` flags tracking across a change and `best_proposal` does not
  offer it (the model's proposal, or nothing, comes first).

"Wrong" means the offered proposal does not match the truth at IoU 0.5 (a box missing, extra
or off by more than IoU 0.5: `compare_boxes(..., 0.5).unchanged` is False). Frames where
nothing is offered are counted apart (the labeler draws). Measured with tracking alone and with
a small fomo-box model trained here on renders (a stand-in for the notebook's model).

    .venv/bin/python bench/bench_scene_change.py [--seeds 6] [--frames 60] [--train-images 200] [--epochs 20] [--no-model]
Writes bench/results/scene_change.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
from common import write_result  # noqa: I001  (bench/ is the script's folder)

from helpers.labeling.proposals import (
    best_proposal,
    compare_boxes,
    detect_scene_change,
    flag_scene_change,
    model_proposal,
    tracking_proposal,
)
from helpers.labeling.samples import decode_image
from helpers.sim.camera import SyntheticCamera
from helpers.sim.scenes import story_scenes

SHUFFLE_EVERY, MOVE_EVERY = 5, 3


def camera_frames(seed: int, n: int):
    """(rgb as the studio stores it, truth boxes, right after a shuffle?, right after a camera move?)."""
    cam = SyntheticCamera(seed=seed, shuffle_every=SHUFFLE_EVERY, move_every=MOVE_EVERY)
    mix = story_scenes("apples")
    cam.set_scene(mix[0]["objects"], mix[0]["distractors"])
    cam.mix = mix  # the scene file's mix, as the collector follows it
    out = []
    for i in range(n):
        frame = cam.read()
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        shuffled = i > 0 and i % SHUFFLE_EVERY == 0
        moved = shuffled and (i // SHUFFLE_EVERY) % MOVE_EVERY == 0
        out.append((decode_image(buf.tobytes()), list(frame.ground_truth or []), shuffled, moved))
    return out


def train_model(train_images: int, epochs: int, out: Path):
    from helpers.inference.onnx import OnnxDetector
    from helpers.sim.scenes import render_dataset
    from helpers.train.export import export_result
    from helpers.train.run import train_detector
    from helpers.train.trainer import TrainParams

    train = render_dataset(train_images, story_scenes("apples"), (320, 320), seed=7000)
    val = render_dataset(max(20, train_images // 5), story_scenes("apples"), (320, 320), seed=8000)
    t0 = time.perf_counter()
    result = train_detector(train, val, ["apple"], TrainParams(input_size=160, epochs=epochs, seed=0), progress=False)
    export_result(result, out)
    return OnnxDetector(out, threads=1), {"train_images": train_images, "epochs": epochs, "val_f1": result.val_f1,
                                          "train_wall_s": round(time.perf_counter() - t0, 1)}


def tally() -> dict:
    return {"frames": 0, "offered": 0, "wrong": 0, "nothing_offered": 0, "offered_by": {}}


def count(t: dict, proposals: dict, truth) -> None:
    t["frames"] += 1
    src = best_proposal(proposals)
    if src is None:
        t["nothing_offered"] += 1
        return
    t["offered"] += 1
    t["offered_by"][src] = t["offered_by"].get(src, 0) + 1
    if not compare_boxes(proposals[src].boxes, truth, 0.5).unchanged:
        t["wrong"] += 1


def rates(t: dict) -> dict:
    n = max(1, t["frames"])
    return {**t, "wrong_rate": round(t["wrong"] / n, 4), "nothing_offered_rate": round(t["nothing_offered"] / n, 4),
            "wrong_among_offered": round(t["wrong"] / max(1, t["offered"]), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--frames", type=int, default=60, help="frames per seed (a shuffle every 5)")
    ap.add_argument("--train-images", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--no-model", action="store_true", help="tracking only (no model trained)")
    args = ap.parse_args()

    detector, model_info = None, None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_model:
            detector, model_info = train_model(args.train_images, args.epochs, Path(tmp) / "model")
            print("model:", model_info, flush=True)
        # variant -> (frame kind -> tally)
        variants = {v: {"after_shuffle": tally(), "after_camera_move": tally(), "within_scene": tally()}
                    for v in ("tracking_before", "tracking_after")
                    + (("tracking_and_model_before", "tracking_and_model_after") if detector else ())}
        flagged_within = 0
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            frames = camera_frames(seed, args.frames)
            for i in range(1, len(frames)):
                (prev, prev_truth, _, _), (rgb, truth, shuffled, moved) = frames[i - 1], frames[i]
                tracked = tracking_proposal(prev, prev_truth, rgb, from_sample=i - 1)
                change = detect_scene_change(prev, prev_truth, rgb, tracked)
                flagged = flag_scene_change(tracked, change)
                kind = "after_shuffle" if shuffled else "within_scene"
                flagged_within += int(change.changed and not shuffled)
                sets = {"tracking_before": {"tracking": tracked}, "tracking_after": {"tracking": flagged}}
                if detector is not None:
                    model = model_proposal(detector, rgb, labels=["apple"])
                    sets["tracking_and_model_before"] = {"tracking": tracked, "model": model}
                    sets["tracking_and_model_after"] = {"tracking": flagged, "model": model}
                for name, proposals in sets.items():
                    count(variants[name][kind], proposals, truth)
                    if moved:
                        count(variants[name]["after_camera_move"], proposals, truth)
        result = {
            "setup": {"seeds": args.seeds, "frames_per_seed": args.frames, "shuffle_every": SHUFFLE_EVERY,
                      "move_every": MOVE_EVERY, "scene_mix": "apples", "size": [320, 320], "wrong": "IoU < 0.5"},
            "model": model_info,
            "false_alarms_within_scene": flagged_within,
            "variants": {v: {k: rates(t) for k, t in kinds.items()} for v, kinds in variants.items()},
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    path = write_result("scene_change", result)
    for v, kinds in result["variants"].items():
        a = kinds["after_shuffle"]
        print(f"{v:>28}: after a shuffle wrong {a['wrong_rate']:.0%} ({a['wrong']}/{a['frames']}), nothing offered "
              f"{a['nothing_offered_rate']:.0%}; within a scene wrong {kinds['within_scene']['wrong_rate']:.1%}")
    print("false alarms within a scene:", flagged_within, "->", path)


if __name__ == "__main__":
    main()
