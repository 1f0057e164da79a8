"""Collector configuration and the uploader's retry / reject rules against a real HTTP server."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers.device.collector import CollectorConfig, Uploader, split_for
from helpers.device.spool import Spool
from helpers.errors import ConfigError
from helpers.studio.ingestion import IngestionClient


def test_config_from_env():
    base = {"STUDIO_URL": "http://h:1", "EI_API_KEY": "ei_k"}
    cfg = CollectorConfig.from_env({**base, "SAMPLE_COUNT": "5", "RATE_HZ": "2", "LABEL": "Apple"})
    assert (cfg.count, cfg.rate_hz, cfg.label, cfg.category) == (5, 2.0, "apple", "split")
    alias = CollectorConfig.from_env({**base, "CAPTURE_COUNT": "7", "CAPTURE_RATE_HZ": "0.5"})
    assert (alias.count, alias.rate_hz, alias.label) == (7, 0.5, None)
    assert cfg.run_id() != alias.run_id()
    with pytest.raises(ConfigError, match="STUDIO_URL and EI_API_KEY"):
        CollectorConfig.from_env({"SAMPLE_COUNT": "1"})
    with pytest.raises(ConfigError, match="CATEGORY"):
        CollectorConfig.from_env({**base, "CATEGORY": "validation"})
    with pytest.raises(ConfigError, match="SAMPLE_COUNT"):
        CollectorConfig.from_env({**base, "SAMPLE_COUNT": "-1"})
    with pytest.raises(ConfigError, match="CAMERA_PATH"):
        CollectorConfig.from_env({**base, "CAMERA_SOURCE": "folder"})


def test_split_is_stable_and_near_the_fraction():
    import hashlib

    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    tests = sum(split_for(k) == "testing" for k in keys)
    assert 300 < tests < 500 and all(split_for(k) == split_for(k) for k in keys[:10])


class _Studio(BaseHTTPRequestHandler):
    """An ingestion endpoint that answers with the status codes queued in `answers`."""

    answers: list[int] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        code = self.answers.pop(0)
        body = json.dumps({"success": code == 200, "error": f"status {code}",
                           "files": [{"success": True, "fileName": "a.jpg", "sampleId": 1}] if code == 200 else []})
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())


def test_uploader_retries_5xx_and_drops_4xx(tmp_path, make_jpeg):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Studio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spool = Spool(tmp_path)
        up = Uploader(spool, IngestionClient(f"http://127.0.0.1:{server.server_address[1]}", "ei_k", timeout=5),
                      threading.Event())
        a = spool.put(make_jpeg(1), {"filename": "a.jpg", "category": "training"})
        _Studio.answers[:] = [500, 503, 200, 400]
        assert up.send(a) == 0.5 and a.key in spool and "500" in up.stats()["last_error"]
        assert up.send(a) == 1.0 and a.key in spool  # exponential backoff
        assert up.send(a) == 0.0 and a.key not in spool and up.stats()["uploaded"] == 1
        assert up.stats()["last_error"] is None
        b = spool.put(make_jpeg(2), {"filename": "b.jpg", "category": "training"})
        assert up.send(b) == 0.0 and b.key not in spool  # a 400 is not retried: dropped, counted
        assert up.stats()["rejected"] == 1 and "400" in up.stats()["last_error"]
    finally:
        server.shutdown()
        server.server_close()
