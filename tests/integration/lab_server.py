"""A real JupyterLab on 127.0.0.1 for the browser tests: its own port and token, stopped by pid."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

from helpers.device.runtime import free_port

# The system Chromium the browser tests drive (Playwright never downloads one here).
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and os.path.exists(p)), None)
# Its flags: headless, no sandbox (root in a container), and nothing that reaches past loopback.
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start_lab(root: Path, tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
    """Start JupyterLab serving `root` with `env`; returns (process, base URL, token) once it answers."""
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
         "--LabApp.expose_app_in_browser=True"] + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited ({proc.returncode}): {(tmp / 'lab.log').read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/api/status", params={"token": token}, timeout=2).status_code == 200:
                return proc, base, token
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise AssertionError(f"JupyterLab did not answer in 120 s: {(tmp / 'lab.log').read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # the server shuts its kernels down on SIGTERM
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def draw(page, box, steps: int = 4) -> None:
    """Drag a box on the labeling panel's image at `box` (image pixels), as a person does with the mouse."""
    img = page.locator(".edgeloop-bbox img")
    img.evaluate("e => e.scrollIntoView({block: 'center'})")
    rect = img.bounding_box()
    natural = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    sx, sy = rect["width"] / natural[0], rect["height"] / natural[1]
    x0, y0 = rect["x"] + box.x * sx, rect["y"] + box.y * sy
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + box.width * sx / 2, y0 + box.height * sy / 2, steps=steps)
    page.mouse.move(x0 + box.width * sx, y0 + box.height * sy, steps=steps)
    page.mouse.up()
