# %% [markdown]
# # 6. A banana appears: collect, label, retrain, redeploy
#
# The tutorial's twist: someone holds a **banana** in front of the camera and the apple model
# calls it an apple. It has never seen anything else. We measure it from the devices' own
# telemetry and results, switch the fleet back to collecting, label the bananas (the model's
# proposals start the work), train a two-class model, **gate** it against the production model,
# and roll it out at scale to every device tagged for the lab.

# %% tags=["parameters"]
banana_images = 120
capture_rate_hz = 10.0
epochs = 30              # the workshop's (TrainParams' default is 40; docs/training.md)
batch_size = 16
input_size = 160
min_f1 = 0.85
min_heldout_confusion = 0.1  # the story: the apple model calls at least this share of held-out bananas apples
train_timeout_s = None    # cancel the training job after this many seconds; None: from images x epochs
observe_s = 10            # seconds of runner telemetry per measurement
telemetry_interval_s = 2  # each runner sends one telemetry window this often
rollout_timeout_s = 180
lab_tag = "fruit-lab"
labeler = "human"         # "human": the labeling panel, as in notebook 03; "oracle": label from synthetic ground truth (headless)
coco_assist = "auto"      # COCO model proposals while labeling: "auto" (where `make weights` ran), True, False
seed = 0

# %%
from helpers import session, ui, results, images, deploy, observe
from helpers.device import fleet
from helpers.protocol import manifest as mf
from helpers.sim.scenes import story_scenes

s = session.connect()
devices = s.lab_devices(lab_tag)
production = s.production_model()
print(f"production model: v{production.version} labels {production.card['labels']}")

# %% [markdown]
# ## Put a banana in front of the cameras

# %% tags=["nbval-ignore-output"]
for d in devices:
    fleet.set_scene(s.workspace, d, ["banana"], mix=story_scenes("bananas"))
before = observe.observe_confusion(s.hub, devices, true_label="banana", predicted_label="apple", seconds=observe_s,
                                   model_version=production.version)
print(before.summary())

# %% [markdown]
# ## Back to collecting
# The fleet goes back to the collector, now labelled `banana`, with bananas (and sometimes apples
# beside them) in front of the cameras.

# %%
per_device = max(1, banana_images // len(devices))
collector = mf.collector_module(s.device_image, s.studio.url, label="banana", count=per_device, rate_hz=capture_rate_hz,
                                camera_source="synthetic", version="2.0")
manifest = mf.build_manifest([collector], secrets={"EI_API_KEY": s.studio.device_key()},
                             registry=images.registry_credentials(s.settings, s.device_image))
for d in devices:
    fleet.set_scene(s.workspace, d, ["banana", "apple"], mix=story_scenes("apples_bananas"))
report = deploy.rollout(s.hub, devices, manifest, absent=["runner"], workspace=s.workspace, timeout=rollout_timeout_s, health=False)
print(report.summary())
counts = ui.wait_for_samples(s.studio, {d: per_device for d in devices}, label="banana", timeout=600)

# %% [markdown]
# ## Label the bananas
# The class `banana` is added to the project, then the queue opens on the new images, as in
# notebook 03. The proposals now come from two models, each named in the panel:
#
# - **the apple model** (`model v1`): it calls every banana an `apple` (it has never seen anything
#   else). That wrong box is what to correct: pick `banana` (key 2) and press **C** on the box,
#   or switch to another proposal;
# - **the COCO model** (where `make weights` ran): it knows bananas before any banana model of
#   ours exists, and proposes them with their class.
#
# Look at each image before you press Enter: an apple beside the banana stays an apple. Headless
# runs use the oracle labeler, as in 03.

# %% tags=["nbval-ignore-output"]
from helpers.labeling.queue import LabelQueue
from helpers.labeling.proposals import coco_assist_proposers
from helpers.labeling import plots
from helpers.sim.oracle import assist_report
from helpers.sim.grading import grade_queue, grade_widget

s.studio.add_label("banana")
queue = LabelQueue(s.studio, proposers=coco_assist_proposers(coco_assist))
if queue.done and s.studio.samples(labeled=True, label="banana"):
    print("Nothing to label here: the banana images of this workspace are labeled already (step 6 ran before). "
          "To label them yourself, open a fresh workspace: `make lab` (workspace/lab).")
else:
    print(f"{queue.remaining} images to label; labels: {queue.labels}")
if labeler == "human":
    from helpers.labeling.panel import LabelPanel
    panel = LabelPanel(queue)
    display(panel.widget)
    after_labeling = panel.when_done  # the cells below wait for the queue, then fill in
else:
    from helpers.sim.oracle import OracleLabeler
    OracleLabeler(queue).run(progress=False)
    after_labeling = ui.show_now

# %% [markdown]
# How the labels compare with what the cameras really saw (bananas saved as `apple` show up as
# *wrong class*), how often each source's proposal was kept as it stood, and the classes now in
# the dataset. With the panel these fill in when you finish the queue.

# %% tags=["nbval-ignore-output"]
def show_labels():
    grade = grade_queue(queue)
    assist = assist_report(queue.records)
    print(grade.summary())
    print(assist.summary())
    results.record("06_retrain_banana", coco_assist=assist.source_figures("coco"), label_grade=grade.to_dict())
    return [grade_widget(grade, queue), plots.class_counts(s.studio.samples(labeled=True))]

after_labeling(show_labels)

# %% [markdown]
# The training below needs every banana labeled: with the panel, Run All stops here until the
# queue is done; then run this cell and the ones below.

# %% tags=["nbval-ignore-output"]
ui.continue_when_labeled(queue)

# %% [markdown]
# ## Retrain with two classes
# The impulse keeps its input and colour depth; a training job trains it on both classes, its log
# drawn below as it runs, and the model comes back for evaluation here.

# %% tags=["nbval-ignore-output"]
from helpers.train import data, trainer, evaluate
from helpers.inference.card import model_file, read_card
from helpers.studio.edgeimpulse import training_timeout_s
train_items, test_items, labels, snapshot_id = data.load_studio_snapshot(s.studio)
params = trainer.TrainParams(input_size=input_size, epochs=epochs, batch_size=batch_size, seed=seed)
s.studio.set_impulse(input_size=params.input_size, color=params.color, arch=params.arch, epochs=params.epochs,
                     learning_rate=params.lr, batch_size=params.batch_size, validation_split=params.val_fraction,
                     seed=params.seed, time_budget_s=params.time_budget_s)
out_dir = s.workspace / "models" / f"apple-banana-{snapshot_id[:8]}"
timeout_s = train_timeout_s or training_timeout_s(len(train_items), params.epochs, params.arch, params.time_budget_s)
job = s.studio.train(out_dir, timeout_s=timeout_s, on_log=ui.JobLog(ui.LivePlot("apple + banana", epochs=epochs)),
                     register=False, card_extra={"parent_version": production.version})
model_path = model_file(out_dir)  # model.onnx here; model.eim when the studio is a real Edge Impulse project
report = evaluate.evaluate_model(str(out_dir), test_items)
print(ui.text_table(ui.metrics_rows(report)))
candidate = s.studio.register_model(model_path, read_card(out_dir))
print(f"registered v{candidate.version} as {candidate.stage}")

# %% [markdown]
# ## The same bananas, before and after
# What the runners scored above depends on which frames they happened to see in a few seconds
# (two runs of the same models measured 4 % and 16 %), so it is shown, not checked. The held-out
# banana images of the studio are a fixed set: both models look at the same images, so these
# figures are the same on every run, and the story's checks use them.

# %% tags=["nbval-ignore-output"]
from helpers.inference.loader import load_detector
held_bananas = [(rgb, boxes) for rgb, boxes in test_items if any(b.label == "banana" for b in boxes)]
held_before = observe.confusion_on_images(s.model_detector(production.version), held_bananas, "banana", "apple")
held_after = observe.confusion_on_images(load_detector(out_dir), held_bananas, "banana", "apple")
print(f"apple model v{production.version}:  {held_before.summary()}")
print(f"two-class model:  {held_after.summary()}")

# %% [markdown]
# ## The evaluation gate
# Both models are evaluated on the same held-out images, old classes included. The candidate
# replaces production only if nothing regressed beyond the tolerance (5 points). On a few dozen
# images two boxes flipping is 7 points, so a drop counts only if it holds when the held-out
# images are resampled (the `upper` column: the 90% bound of the difference, below zero).

# %% tags=["nbval-ignore-output"]
gate = deploy.evaluation_gate(s.studio, candidate.version)
print(gate.summary())

# %% [markdown]
# ## Deploy at scale to every lab device

# %% tags=["nbval-ignore-output"]
manifest = deploy.runner_manifest(candidate.version, s.device_image, s.studio, camera_source="synthetic", version="2.0",
                                  telemetry_interval_s=telemetry_interval_s,
                                  registry=images.registry_credentials(s.settings, s.device_image))
rollout = deploy.rollout_deployment(s.hub, f"fruit-v{candidate.version}", manifest, f"tags.lab='{lab_tag}'", devices,
                                    priority=10 + candidate.version, absent=["collector"], workspace=s.workspace,
                                    timeout=rollout_timeout_s, secrets={"EI_API_KEY": s.studio.device_key})
print(rollout.summary())
for d in devices:
    fleet.set_scene(s.workspace, d, ["banana"], mix=story_scenes("bananas"))
after = observe.observe_confusion(s.hub, devices, true_label="banana", predicted_label="apple", seconds=observe_s,
                                  model_version=candidate.version)
print(after.summary())

# %%
results.check("gate passed", gate.passed)
results.check(f"banana F1 >= {min_f1}", report.per_class["banana"].f1 >= min_f1, measured=round(report.per_class["banana"].f1, 4))
results.check(f"apple F1 >= {min_f1}", report.per_class["apple"].f1 >= min_f1, measured=round(report.per_class["apple"].f1, 4))
results.check(f"the apple model calls held-out bananas apples (rate >= {min_heldout_confusion})",
              held_before.rate >= min_heldout_confusion, measured=round(held_before.rate, 4))
results.check("the two-class model calls fewer held-out bananas apples", held_after.rate < held_before.rate,
              measured=[round(held_before.rate, 4), round(held_after.rate, 4)])
found = observe.detected_on_fleet(s.hub, devices, "banana", min_per_frame=0.2, model_version=candidate.version)
results.check("bananas detected on the fleet", any(found.values()))
if labeler == "human":
    label_grade = grade_queue(queue)
    results.check("your banana labels match the camera's truth (>= 90% of boxes right)", label_grade.share_right >= 0.9,
                  measured=label_grade.to_dict())
results.record("06_retrain_banana", banana_called_apple_before=before.rate, banana_called_apple_after=after.rate,
               heldout_banana_called_apple_before=held_before.rate, heldout_banana_called_apple_after=held_after.rate,
               heldout_banana_images=held_before.frames_with_true,
               model_version=candidate.version, f1={k: v.f1 for k, v in report.per_class.items()},
               map50=report.map50, map=report.map, gate_passed=gate.passed, bananas_detected=found)

# %% [markdown]
# Per device (each camera sees its own table, so the share of frames with a banana found varies):

# %% tags=["nbval-ignore-output"]
for d, ok in found.items():
    print(f"bananas detected on {d}: {ok}")
