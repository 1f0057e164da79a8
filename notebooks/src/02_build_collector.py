# %% [markdown]
# # 2. Build the collector and deploy it to the devices
#
# The tutorial builds a Docker image that captures camera frames and uploads them to Edge
# Impulse, pushes it to Docker Hub, and deploys it to the Pis as an IoT Edge **module**. The same
# image runs the inference runner later: `start.sh` picks the mode from the `MODE` variable.

# %% tags=["parameters"]
apple_images = 120      # images to collect in all, shared between the devices
capture_rate_hz = 10.0  # frames per second per device
lab_tag = "fruit-lab"
seed = 0

# %%
from helpers import session, ui, results, images
from helpers.protocol import manifest as mf
from helpers.device import fleet
from helpers.sim.scenes import story_scenes
from helpers import deploy

s = session.connect()
devices = s.lab_devices(lab_tag)
print("lab devices:", devices)

# %% [markdown]
# ## The device image
# One image for both modules, on `python:3.11-slim` (arm64 and amd64), with only the device's
# dependencies (onnxruntime, OpenCV headless, numpy, requests; no torch), a non-root user, a
# health check and port 4912. No key is baked in: a *device key* arrives at deploy time as the
# `EI_API_KEY` environment variable of the module. It may only upload samples (and, for the
# runner, download the model version it runs); the studio's management key never leaves here.

# %%
ui.show_file("Dockerfile.device")
ui.show_file("start.sh")

# %% [markdown]
# ## Build and push
# With a Docker engine and a registry configured (`EDGELOOP_REGISTRY`, `REGISTRY_USERNAME`,
# `REGISTRY_PASSWORD`), this builds `Dockerfile.device` for this machine's platform and pushes it;
# the login also goes into the deployment's `registryCredentials` so the devices can pull. On Linux
# without Docker, `make containers` provides podman's Docker API, a registry on 127.0.0.1 and an
# offline base image. The `runtime` setting (`EDGELOOP_RUNTIME`) decides how the simulated devices
# run the modules: `container` pulls this image and runs it; `process` runs the same `start.sh`
# from the checkout, without an engine.

# %% tags=["nbval-ignore-output"]
builder = images.get_image_builder(s.settings)
print("module runtime:", s.settings.runtime, "| image:", s.device_image)
for line in builder.build(s.device_image):
    print(line)
for line in builder.push(s.device_image):
    print(line)

# %% [markdown]
# ## The collector deployment
# An IoT Edge deployment manifest: `$edgeAgent` (runtime, system modules, our modules),
# `$edgeHub` (routes). The collector maps the camera device instead of running `Privileged`,
# binds port 4912, and gets its settings as environment variables. The API key is masked in
# every display of the manifest.

# %% tags=["nbval-ignore-output"]
per_device = max(1, apple_images // len(devices))
collector = mf.collector_module(s.device_image, s.studio.url, label="apple", count=per_device, rate_hz=capture_rate_hz,
                                camera_source="synthetic")
manifest = mf.build_manifest([collector], secrets={"EI_API_KEY": s.studio.device_key()},
                             registry=images.registry_credentials(s.settings, s.device_image))
expected = {d: per_device for d in devices}
already = ui.sample_counts(s.studio, devices, label="apple")  # before deploying: a workspace past step 2 has them
warnings = mf.validate_manifest(manifest)
print("validation warnings:", warnings or "none")
ui.show_json(mf.redact_manifest(manifest))

# %% [markdown]
# Put apples in front of the cameras (for the simulated devices: their synthetic scene; every few
# frames the person in front of the camera rearranges the fruit, as you would while collecting),
# then deploy to `pi-1` first, check it, and then to the whole fleet.

# %%
for d in devices:
    fleet.set_scene(s.workspace, d, ["apple"], mix=story_scenes("apples"))
first = deploy.rollout(s.hub, devices[:1], manifest, workspace=s.workspace, timeout=120, health=False)
print(first.summary())
rest = deploy.rollout(s.hub, devices, manifest, workspace=s.workspace, timeout=120, health=False)
print(rest.summary())

# %% [markdown]
# ## Watch the samples arrive
# The collector writes each frame to an on-disk spool first and deletes it only when the studio
# acknowledged it, so a network outage or a restart loses nothing; the content hash makes a
# resend harmless.

# %% tags=["nbval-ignore-output"]
if all(already[d] >= per_device for d in devices):
    print(f"This workspace holds its apple images already ({', '.join(f'{d}: {already[d]}' for d in devices)}; "
          f"{per_device} asked for per device): step 2 was done before, nothing new to wait for. To collect them "
          "yourself, open a fresh workspace: `make lab` (workspace/lab).")
panel = ui.CollectionPanel(s.hub, s.studio, devices, label="apple", expected=expected)
display(panel.widget)
counts = ui.wait_for_samples(s.studio, expected, label="apple", timeout=600,
                             on_poll=panel.refresh)
panel.refresh();

# %%
for d in devices:
    results.check(f"{d} uploaded {per_device} apple images", counts[d] >= per_device)
results.record("02_build_collector", samples=counts, image=s.device_image)
