# %% [markdown]
# # 1. Set up the hub and register the edge devices
#
# In the tutorial you create an **Azure IoT Hub** in the portal, add two **IoT Edge devices**
# (Raspberry Pis), copy their connection strings and install the IoT Edge runtime on each Pi.
# Here the same steps run from code. With the embedded defaults the hub is a local service in
# your workspace and the two Pis are simulated devices: processes running the same edge agent
# loop as `edgeAgent` does, with a synthetic camera in front of them.
#
# Switching to your real Azure IoT Hub is configuration only: set `EDGELOOP_HUB=azure` and
# `IOTHUB_CONNECTION_STRING` in `.env` (see `.env.example`). Secrets never go in this notebook.

# %% tags=["parameters"]
# Parameters (papermill overrides these in headless runs)
backend = None            # None: from EDGELOOP_HUB (default "local"); or "local" / "azure"
device_ids = ["pi-1", "pi-2"]
lab_tag = "fruit-lab"      # later deployments target devices with this tag
simulate_devices = True    # start simulated devices for the registered identities
reset_lab_deployments = True  # remove at-scale deployments an earlier run made for the lab
seed = 0

# %% [markdown]
# ## Connect
# `session.connect()` reads the settings, starts the embedded local cloud if it is the chosen
# backend (idempotent: a second run finds it running), and returns the hub and studio clients.

# %%
from helpers import session, ui, results
from helpers.device import fleet

s = session.connect(backend=backend)
print(s.describe())

# %% [markdown]
# ## Register the edge devices
# An *IoT Edge device* identity has the edge capability and a symmetric key. Tags describe the
# device; at-scale deployments pick their devices with a **target condition** over tags.

# %%
tags = {"lab": lab_tag, "hardware": "raspberry-pi-4", "camera": "usb"}
for d in device_ids:
    s.hub.create_edge_device(d, tags=tags, exist_ok=True)
print(ui.text_table([{"device": d.device_id, "edge": d.edge, "tags": ", ".join(f"{k}={v}" for k, v in sorted(d.tags.items()))}
                     for d in s.hub.list_devices() if d.device_id in device_ids]))

# %% [markdown]
# ## Symmetric keys or certificates
# `pi-1` and `pi-2` authenticate with **symmetric keys**: the device's connection string carries
# the key itself, and the hub holds the same key. Whoever copies the string (from a notebook, a
# shell history, an SD card) *is* the device until the key is regenerated. The tutorial's advice
# for production is **X.509 certificates**: the private key is made for the device and never
# leaves it, the hub stores only the certificate's thumbprint (self-signed) or trusts a CA you
# register (CA-signed), and rotating means issuing a new certificate, not editing every copy of a
# secret. Below, one more device is registered with a self-signed certificate made here with the
# `cryptography` package; its key stays owner-only in the workspace (`hub/x509/`), and its
# connection string holds no key at all (`...;x509=true`).

# %%
cert_device = f"{device_ids[0]}-x509"
s.hub.create_edge_device(cert_device, tags={"lab": f"{lab_tag}-certificates"}, exist_ok=True, auth="x509")
cert_file, key_file = s.hub.device_certificate(cert_device)
rows = [{"device": d.device_id, "authentication": {"sas": "symmetric key", "selfSigned": "X.509 self-signed"}.get(d.auth, d.auth)}
        for d in s.hub.list_devices() if d.device_id in (*device_ids, cert_device)]
print(ui.text_table(sorted(rows, key=lambda r: r["device"])))
results.check(f"{cert_device} key file is owner-only", oct(key_file.stat().st_mode & 0o777) == "0o600")
results.check(f"{cert_device} connection string holds no key", s.hub.connection_string(cert_device).get_secret_value().endswith("x509=true"))

# %% [markdown]
# Each device authenticates with its **connection string**. It is a secret: it is shown masked
# here and in every output. On a real Raspberry Pi (Raspberry Pi OS / Debian 11 or 12) these are
# the commands the tutorial runs:

# %%
print(ui.install_commands(s.hub, device_ids[0]))

# %% [markdown]
# ## Start from a clean slate
# An **at-scale deployment** wins over modules set on one device: Azure IoT Edge overwrites a
# targeted device's modules, and so does the local hub. Notebook 06 ends with one for the lab
# (`fruit-v2`), so running the workshop again first removes the deployments that target the lab's
# devices; nothing else on the hub is touched.

# %%
from helpers import deploy

if reset_lab_deployments:
    removed = deploy.remove_deployments(s.hub, f"tags.lab='{lab_tag}'")
    print(f"removed earlier lab deployments: {', '.join(removed) or 'none'}")

# %% [markdown]
# ## Start the simulated devices
# Each simulated device is one edge-agent process with its own working folder: it authenticates
# with its connection string (SAS tokens signed by its key, as Azure does), polls its deployment,
# and reports its modules and a heartbeat in the device twin.

# %%
if simulate_devices and s.local:
    fleet.start_devices(s.hub, device_ids, s.workspace)
online = fleet.wait_online(s.hub, device_ids, timeout=60)

# %% tags=["nbval-ignore-output"]
ui.device_table(s.hub, device_ids)

# %%
for d in device_ids:
    results.check(f"{d} registered as IoT Edge device", s.hub.get_device(d).edge)
    results.check(f"{d} online", s.hub.device_status(d).connected)
results.record("01_setup_hub", devices=device_ids, lab_tag=lab_tag)
