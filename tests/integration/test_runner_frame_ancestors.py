"""The runner's page may be framed by the local JupyterLab (notebook 05 embeds it) and by no other site.

The header from the real runner process (start.sh, `MODE=infer`), then a real browser: headless
Chromium (Playwright, the system binary) opens a page on 127.0.0.1 that frames the runner (a
JupyterLab's origin: the live page shows inside) and the same page on 127.0.0.2, another origin
(the frame stays empty: Chromium refused it by `frame-ancestors`).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lab_server import CHROMIUM
from test_runner_model import CARD, start_runner, tiny_detector, wait_http

from helpers.device.runner.server import DEFAULT_FRAME_ANCESTORS, PAGE, frame_ancestors, page_csp
from helpers.device.runtime import free_port
from helpers.errors import ConfigError

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the [test] extra is not installed
    sync_playwright = None

pytestmark = pytest.mark.timeout(150)
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]


def directive(csp: str, name: str) -> str:
    found = [d.strip()[len(name):].strip() for d in csp.split(";") if d.strip().startswith(name + " ")]
    assert len(found) == 1, csp
    return found[0]


def test_frame_ancestors_default_env_and_bad_values(monkeypatch):
    monkeypatch.delenv("FRAME_ANCESTORS", raising=False)
    assert frame_ancestors() == DEFAULT_FRAME_ANCESTORS == "'self' http://127.0.0.1:* http://localhost:*"
    monkeypatch.setenv("FRAME_ANCESTORS", "https://lab.example.org:8888 'self'")
    assert frame_ancestors() == "https://lab.example.org:8888 'self'"
    assert directive(page_csp(PAGE.read_bytes(), frame_ancestors()), "frame-ancestors") == "https://lab.example.org:8888 'self'"
    assert frame_ancestors("'none'") == "'none'"
    for bad in ("*", "http:", "https://lab.example.org; script-src *", "self", "'none' 'self'", "javascript:alert(1)"):
        with pytest.raises(ConfigError, match="FRAME_ANCESTORS"):
            frame_ancestors(bad)


class _Embedder(BaseHTTPRequestHandler):
    target = ""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        body = f'<html><body><iframe id="runner" src="{self.target}" width="700" height="480"></iframe></body></html>'
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve_embedder(host: str, target: str) -> ThreadingHTTPServer:
    handler = type("Embedder", (_Embedder,), {"target": target})
    server = ThreadingHTTPServer((host, free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def framed_title(page, url: str) -> str:
    """The document title inside the iframe of the page at `url` (the runner page's, or an error page's)."""
    page.goto(url, wait_until="load")
    page.wait_for_timeout(1000)  # the frame's own load (or Chromium's refusal) settles
    frames = [f for f in page.frames if f != page.main_frame]
    assert len(frames) == 1, [f.url for f in page.frames]
    return frames[0].evaluate("() => document.title")


@pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium: apt-get install chromium (make system does it as root)")
@pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e .[test])")
def test_runner_page_shows_in_a_local_lab_frame_and_not_in_another_site(tmp_path):
    model_dir = tmp_path / "model"
    tiny_detector(model_dir / "model.onnx")
    (model_dir / "model.json").write_text(json.dumps(CARD))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_runner(tmp_path / "runner", {"STUDIO_URL": "http://127.0.0.1:9", "EI_API_KEY": "ei_fake_test_key_0000",
                                              "MODEL_PATH": str(model_dir), "PORT": str(port), "IOTEDGE_DEVICEID": "frame"})
    servers = []
    try:
        r = wait_http(f"{base}/", lambda r: r.status_code == 200, proc=proc)
        assert directive(r.headers["Content-Security-Policy"], "frame-ancestors") == DEFAULT_FRAME_ANCESTORS
        lab = serve_embedder("127.0.0.1", base + "/")  # stands for JupyterLab on this machine, any port
        other = serve_embedder("127.0.0.2", base + "/")  # another origin: not in the list
        servers += [lab, other]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
            try:
                page = browser.new_page()
                refused: list[str] = []
                page.on("console", lambda m: refused.append(m.text) if "frame-ancestors" in m.text else None)
                assert framed_title(page, f"http://127.0.0.1:{lab.server_address[1]}/") == "Edge runner"
                assert not refused, refused
                assert framed_title(page, f"http://127.0.0.2:{other.server_address[1]}/") != "Edge runner"
                assert any("frame-ancestors" in m for m in refused), "Chromium did not say why it refused the frame"
            finally:
                browser.close()
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        proc.terminate()
        proc.wait(timeout=20)
