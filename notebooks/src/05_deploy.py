# %% [markdown]
# # 5. Deploy the model over the air
#
# The tutorial replaces the collector with Edge Impulse's Linux runner, deployed as a module that
# downloads the model and serves a page on port 4912 showing what the camera sees and what the
# model finds. Here the runner module does the same with onnxruntime. The rollout waits for each
# device to report the new module running and healthy; a device whose new module fails is
# **rolled back** to its last good deployment.

# %% tags=["parameters"]
model_version = None      # None: the newest registered model
rollout_timeout_s = 180
lab_tag = "fruit-lab"
page_frame_ancestors = None  # who may show the device page in a frame; None: this machine's JupyterLab (any port)
telemetry_interval_s = 2  # each runner sends one telemetry window this often (IoT Hub D2C message)
seed = 0

# %%
from helpers import session, ui, results, images, deploy, observe
from helpers.device import fleet

s = session.connect()
devices = s.lab_devices(lab_tag)
model = s.studio.get_model(model_version) if model_version else max(s.studio.models(), key=lambda m: m.version)
print(f"model v{model.version} ({model.stage}): labels {model.card['labels']}, input {model.card['input_size']}px")

# %% tags=["nbval-ignore-output"]
ui.show_json({k: model.card.get(k) for k in ("labels", "input_size", "arch", "score_threshold", "dataset", "parent_version", "git_commit")})

# %% [markdown]
# ## Replace the collector with the runner

# %% tags=["nbval-ignore-output"]
manifest = deploy.runner_manifest(model.version, s.device_image, s.studio, camera_source="synthetic",
                                  telemetry_interval_s=telemetry_interval_s,
                                  registry=images.registry_credentials(s.settings, s.device_image),
                                  extra_env={"FRAME_ANCESTORS": page_frame_ancestors} if page_frame_ancestors else None)
print("module runtime:", s.settings.runtime, "| image:", s.device_image)
board = deploy.RolloutBoard(s.hub, devices)
display(board.widget)
report = deploy.rollout(s.hub, devices, manifest, absent=["collector"], workspace=s.workspace,
                        timeout=rollout_timeout_s, on_poll=board.on_poll,
                        secrets={"EI_API_KEY": s.studio.device_key})  # a rollback gets the old module's device key
print(report.summary())

# %% [markdown]
# ## Each device's page
# Open the URL of a device to see its live view; the notebook embeds one. The same server
# answers `/api/results` (latest detections), `/api/health` and `/api/info` (the model card).
# The page lets only this machine's JupyterLab show it in a frame (its `Content-Security-Policy`
# names `http://127.0.0.1:*` and `http://localhost:*`); no other site can. A lab served from
# elsewhere: set `page_frame_ancestors` above to its origin (the runner's `FRAME_ANCESTORS`).

# %% tags=["nbval-ignore-output"]
urls = ui.runner_urls(s.hub, devices)
for d, url in urls.items():
    print(d, url)
from IPython.display import IFrame
IFrame(urls[devices[0]], width=700, height=480)

# %% [markdown]
# ## What the runners see, from their telemetry
# Each runner also sends a telemetry message every `telemetry_interval_s` seconds: frames,
# detections per class and, with the synthetic camera, how many objects it got right. The hub
# keeps them on its built-in Event Hubs-compatible endpoint; `observe` reads them with
# `azure-eventhub` (the stand-in's endpoint here, Azure's with `IOTHUB_EVENTHUB_CONNECTION_STRING`),
# only the windows of this model version that began after this cell started.

# %% tags=["nbval-ignore-output"]
windows = observe.telemetry_windows(s.hub, devices, seconds=4, model_version=model.version)
for d in devices:
    print(d, "sees", observe.detections(windows[d]), f"in {len(windows[d])} windows")

# %%
for d in devices:
    results.check(f"{d} running model v{model.version}", any(w.json["healthy"] for w in windows[d]))
apples = {d: rate >= 0.2 for d, rate in observe.per_frame(windows, "apple").items()}
results.check("apples detected on the fleet", any(apples.values()))
s.studio.set_model_stage(model.version, "production")
results.record("05_deploy", model_version=model.version, apples_detected=apples, rollout_s=report.result.duration_s if hasattr(report.result, "duration_s") else None,
               ok=report.ok)

# %% [markdown]
# ## A module's log, from the notebook
# IoT Edge's agent answers direct methods: `GetModuleLogs` returns a module's log and
# `RestartModule` restarts it (`s.hub.restart_module(device, "runner")`). The hub relays the call
# to the device: here over MQTT to the simulated agent, on Azure IoT Hub to the Raspberry Pi's
# edgeAgent, so the same cell works against either.

# %% tags=["nbval-ignore-output"]
print(s.hub.module_logs(devices[0], "runner", tail=8))
