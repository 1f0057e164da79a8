"""A person's view of the runner's port-4912 page: headless Chromium renders it to a screenshot."""
from __future__ import annotations

import shutil
import signal
import subprocess

import cv2
import numpy as np
import pytest

from helpers.device.runtime import free_port
from test_runner_model import CARD, start_runner, tiny_detector, wait_http

pytestmark = pytest.mark.timeout(150)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here (.ci/run installs Debian's chromium)")
def test_runner_page_renders_in_headless_chromium(cloud, tmp_path, unique_name):
    onnx_path = tiny_detector(tmp_path / "model" / "model.onnx")
    version = cloud.studio.register_model(onnx_path, dict(CARD)).version
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_runner(tmp_path / "runner", {
        "STUDIO_URL": cloud.url, "EI_API_KEY": cloud.studio.api_key.get_secret_value(),
        "MODEL_VERSION": str(version), "PORT": str(port), "IOTEDGE_DEVICEID": unique_name("browser"),
    })
    shot = tmp_path / "runner-page.png"
    try:
        wait_http(f"{base}/api/health", lambda r: r.status_code == 200 and r.json()["frames"] >= 3, proc=proc)
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
               f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=900,700",
               "--virtual-time-budget=4000", f"--screenshot={shot}", base + "/"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
        assert shot.exists(), run.stderr[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[0] >= 600 and img.shape[1] >= 800
    # A rendered page, not a blank or error page: many distinct colours (the live camera frame).
    colours = np.unique(img.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 200, f"the screenshot looks empty ({len(colours)} colours): {shot}"
