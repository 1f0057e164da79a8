"""A person's view of the runner's port-4912 page: headless Chromium renders it to a screenshot."""
from __future__ import annotations

import html
import json
import re
import shutil
import signal
import subprocess

import cv2
import numpy as np
import pytest
from test_runner_model import CARD, start_runner, tiny_detector, wait_http

from helpers.device.runtime import free_port

pytestmark = pytest.mark.timeout(150)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here: apt-get install chromium (make system does it as root)")
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


# A health reason holding markup: the card's head type lands in the broken-model reason. No
# slash and no quotes, so neither a path filter nor Python's repr changes it on the way.
HOSTILE = "<img src=x onerror=document.title+=1337>"


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium here: apt-get install chromium (make system does it as root)")
def test_hostile_health_reason_shows_as_text_and_runs_nothing(tmp_path):
    model_dir = tmp_path / "model"
    tiny_detector(model_dir / "model.onnx")
    (model_dir / "model.json").write_text(json.dumps({**CARD, "head": {"type": HOSTILE}}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_runner(tmp_path / "runner", {
        "STUDIO_URL": "http://127.0.0.1:9", "EI_API_KEY": "ei_fake_test_key_0000", "MODEL_PATH": str(model_dir),
        "PORT": str(port), "FAIL_GRACE_S": "60", "IOTEDGE_DEVICEID": "browser-xss",
    })
    try:
        health = wait_http(f"{base}/api/health", lambda r: r.status_code == 503 and HOSTILE in (r.json()["reason"] or ""),
                           proc=proc)
        assert health.json()["healthy"] is False
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
               f"--user-data-dir={tmp_path / 'chrome-profile'}", "--virtual-time-budget=4000", "--dump-dom", base + "/"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    dom = run.stdout
    assert "<title>" in dom, run.stderr[-2000:]
    # the reason is on the page as text: escaped in the serialised DOM, not an element
    health_span = re.search(r'<span id="health">(.*?)</span>\s*</div>', dom, re.S)
    assert health_span, dom[:3000]
    assert "unhealthy: broken model" in health_span.group(1)
    assert html.escape(HOSTILE, quote=False) in health_span.group(1), health_span.group(1)
    assert "<img" not in health_span.group(1)
    # and nothing ran: the onerror handler would have appended 1337 to the title
    assert "<title>Edge runner</title>" in dom and "1337</title>" not in dom
