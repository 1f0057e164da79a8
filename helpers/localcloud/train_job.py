"""The local studio's training job: `python -m helpers.localcloud.train_job --workspace WS --out DIR --params JSON`.

Started by `POST /v1/api/{projectId}/jobs/train/keras/{learnId}` (the stand-in of Edge Impulse's
`JobsApi.train_keras_job`) as a background process. It trains `helpers.train` on the studio's
labeled snapshot with the impulse's settings, exports `model.onnx` + `model.json` into `--out`,
and prints one line per epoch and a closing summary on stdout: the job log that
`JobsApi.get_jobs_logs` serves. Exit status 0 on success, 2 with `error: ...` on a dataset or
settings problem.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.localcloud.train_job")
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params", required=True, help="JSON: arch, epochs, learningRate, batchSize, inputSize, color")
    args = ap.parse_args(argv)
    from helpers.errors import EdgeLoopError
    from helpers.studio import get_studio
    from helpers.train.cli import train_and_export
    from helpers.train.trainer import TrainParams

    p = json.loads(args.params)
    try:
        params = TrainParams(arch=p["arch"], epochs=int(p["epochs"]), lr=float(p["learningRate"]), batch_size=int(p["batchSize"]),
                             input_size=int(p["inputSize"]), color=p["color"])
        params.check()
        print(f"Training {params.arch} on the studio's labeled samples: {params.epochs} training cycles, "
              f"learning rate {params.lr}, batch size {params.batch_size}, {params.input_size}x{params.input_size} {params.color}",
              flush=True)

        def on_epoch(rec: dict[str, Any]) -> None:
            print(f"Epoch {rec['epoch']}/{params.epochs}: loss {rec.get('loss', float('nan')):.4f}, "
                  f"validation F1 {rec.get('val_f1', float('nan')):.3f}", flush=True)

        studio = get_studio("local", workspace=args.workspace)
        summary = train_and_export(args.out, None, params=params, progress=False, studio=studio, callback=on_epoch,
                                   studio_job={"source": "local studio training job"})
    except (EdgeLoopError, ValueError, KeyError) as e:
        print(f"error: {e}", flush=True)
        return 2
    ev = summary["evaluation"]
    print(f"Finished training: best epoch {summary['best_epoch']}, {ev['split']} F1 {ev['f1']:.3f}, mAP50 {ev['map50']:.3f}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
