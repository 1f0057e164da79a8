# %% [markdown]
# # 3. Label the images
#
# In Edge Impulse's labeling queue you draw a box around the apple in the first image; in the
# next ones the box follows the object, so most images need only a check. Here the queue offers a
# **proposal** for every image: the previous frame's boxes **tracked** to where the object moved
# (OpenCV template matching), or, once a model exists, the model's own detections. When the scene
# changed (new fruit put down, the camera carried to another table) the tracked boxes are not
# offered: a model's are (ours or the COCO model's), or none and you draw them. **Save** accepts
# the boxes as they are on screen; **Skip** leaves the image in the queue; **Delete frame**
# removes a bad frame and **Undo** brings it back.
#
# **Label assist**: before any model of ours exists, the COCO-pretrained model (NanoDet, fetched
# once by `make weights`) proposes boxes for the classes COCO knows (apple, banana, orange) beside
# tracking and the current model. Each proposal names its origin (`tracking from #12`, `model v3`,
# `COCO model`), and the assist report below counts how many of each source's proposals, and of
# its boxes per class, were accepted unchanged.
#
# Headless runs (papermill, CI) use an **oracle labeler**: it plays the human with the synthetic
# camera's ground truth (never shown in the panel) and measures how good the proposals were.

# %% tags=["parameters"]
labeler = "human"   # "human": the panel below; "oracle": label from synthetic ground truth (headless)
classes = ["apple"] # the project's label set (more can be added in the panel)
coco_assist = "auto"  # COCO model proposals: "auto" (where `make weights` ran), True (required), False (off)
seed = 0

# %% tags=["nbval-ignore-output"]
from helpers import session, ui, results
from helpers.labeling import plots
from helpers.labeling.queue import LabelQueue

s = session.connect()
print(f"workspace: {s.workspace} (set EDGELOOP_WORKSPACE, or `make lab WORKSPACE=...`, to use another)")
overview = plots.dataset_overview(s.studio.samples())
print(ui.text_table(overview))

# %% tags=["nbval-ignore-output"]
from helpers.labeling.proposals import coco_assist_proposers

assist = coco_assist_proposers(coco_assist)  # [] (and why) where `make weights` has not run
print("label assist:", ", ".join(f"COCO model ({p.weights})" for p in assist) or "off")

# %%
queue = LabelQueue(s.studio, proposers=assist)
for c in classes:
    queue.add_label(c)
already_done = queue.done and bool(s.studio.samples(labeled=True))  # this workspace is past step 3
if already_done:
    print(f"Nothing to label here: the {len(s.studio.samples(labeled=True))} images of this workspace are labeled "
          "already (step 3 was done before). To label them yourself, open a fresh workspace: `make lab` "
          "(workspace/lab).")
else:
    print(f"{queue.remaining} images to label; labels: {queue.labels}")

# %% [markdown]
# ## The labeling panel
# Drag on the image to draw a box, drag its edges to adjust it, pick the class, then **Save
# (Enter)**; **Skip (Space)** and **Undo (U)** work from the keyboard too. Each proposal is listed
# with where it comes from and its confidence; switch between them with the toggle. A new class
# can be added in the panel's text box. While you label, the keys stay in the panel (JupyterLab's
# notebook shortcuts do not fire); Esc gives them back.
#
# **Look before you press Enter.** A proposal is a guess: the COCO model sometimes calls an orange
# an apple, and tracking then carries that box from frame to frame. Whatever you save is what the
# model will learn.

# %% tags=["nbval-ignore-output"]
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
# ## The dataset
# With the panel, the cells below say how many labels they wait for, and fill in when you finish
# the queue: no need to rerun them.

# %% tags=["nbval-ignore-output"]
after_labeling(lambda: plots.dataset_figures(s.studio))

# %% [markdown]
# ## Your labels against the truth
# The simulated cameras know what was really on the table (the panel never shows it). Each box
# you saved is graded: **right** (on the fruit, with its class), **wrong class** (on a fruit of
# another class: an orange saved as `apple`), **missed** (a fruit of the project's classes with no
# box), **extra** (a box on nothing). The frames to look at again follow as thumbnails.
#
# This is the lesson of the whole tutorial: **a model learns what it is shown**. Oranges saved
# as apples teach the model that oranges are apples, and no check on the training run will say
# so: its test images carry the same labels. On a real camera nobody holds the truth,
# so the only defence is the labeler looking at every box before saving.

# %% tags=["nbval-ignore-output"]
from helpers.sim.grading import grade_queue, grade_widget

def show_grade():
    grade = grade_queue(queue)
    print(grade.summary())
    results.record("03_label_review", label_grade=grade.to_dict())
    return grade_widget(grade, queue)

def nothing_to_grade():
    print("nothing was labeled in this notebook: nothing to grade")

after_labeling(nothing_to_grade if already_done else show_grade)

# %% [markdown]
# ## Assist quality
# How often was the proposal right as it stood (every box within IoU 0.9 of what was saved)?
# That is the share of images a human only had to confirm: with the panel, your own
# accept-unchanged rate. One row per source (`offered` is whichever was offered first), then per
# class how many of each source's boxes were kept as proposed. On the drawn synthetic fruit the
# COCO model finds the fruit but rarely to within IoU 0.9, so tracking stays the one offered
# while the scene holds; the COCO model helps on a camera's first frame and after a scene change.
# A high accept-unchanged rate is not a high grade above: Enter on a wrong proposal counts here
# as "accepted unchanged".

# %% tags=["nbval-ignore-output"]
from helpers.sim.oracle import assist_report

def show_assist():
    report = assist_report(queue.records)
    print(report.summary())
    return plots.assist_quality(report) if report.saved else None

after_labeling(show_assist)

# %%
def run_checks():
    labeled = s.studio.samples(labeled=True)
    remaining = s.studio.samples(labeled=False)
    report = assist_report(queue.records)
    results.check("every collected image labeled", len(remaining) == 0)
    results.check("every box is an apple", all(b.label == "apple" for x in labeled for b in x.boxes))
    results.check("most images hold an apple", sum(any(b.label == "apple" for b in x.boxes) for x in labeled) > len(labeled) / 2)
    if labeler == "human":
        grade = grade_queue(queue)
        results.check("your labels match the camera's truth (>= 90% of boxes right)", grade.share_right >= 0.9,
                      measured=grade.to_dict())
    if labeler == "oracle":
        results.check("tracking proposals accepted unchanged >= 50%", report.row("tracking").share_unchanged >= 0.5)
        results.record("03_label_review", labeled=len(labeled), assist=report.to_dict(),
                       coco_assist=report.source_figures("coco"))

def no_checks():
    print("step 3 was done before this notebook ran (nothing labeled here): no checks to run")

after_labeling(no_checks if already_done else run_checks)
