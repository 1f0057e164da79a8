"""Limits of the studio's API against a hostile device or client: image bombs, huge ids, deep JSON, version-bound keys."""
from __future__ import annotations

import struct
import zlib

import pytest
import requests
from test_limits_hub import tracebacks

from helpers.localcloud.common import limits

pytestmark = pytest.mark.timeout(180)


def png_claiming(width: int, height: int, size: int = 12_000) -> bytes:
    """A valid-looking PNG of about `size` bytes whose header claims `width` x `height` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 200, 9)[: size]  # the first rows of a black image
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.fixture()
def studio(cloud):
    before = tracebacks(cloud)
    yield cloud
    assert tracebacks(cloud) == before, "a refusal left a traceback in service.log"


def call(cloud, method: str, path: str, key: str | None = None, **kw) -> requests.Response:
    key = key or cloud.studio.api_key.get_secret_value()
    return requests.request(method, cloud.url + path, headers={"x-api-key": key, **kw.pop("headers", {})}, timeout=60, **kw)


def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(studio, make_jpeg):
    cloud = studio
    device = cloud.studio.device_key().get_secret_value()
    for w, h in ((10_000, 10_000), (20_000, 20_000), (limits.MAX_IMAGE_PIXELS // 1000 + 1, 1000)):
        bomb = png_claiming(w, h)
        assert len(bomb) < 20_000
        r = call(cloud, "POST", "/api/training/files", device, files={"data": ("bomb.png", bomb, "image/png")})
        assert r.status_code == 400, (w, h, r.status_code, r.text[:200])
        err = r.json()["error"]
        assert "megapixel limit" in err and (f"{w}x{h}" in err or f"({w * h} pixels)" in err), err
    # an ordinary frame still goes in
    r = call(cloud, "POST", "/api/training/files", device, files={"data": ("ok.jpg", make_jpeg(991), "image/jpeg")})
    assert r.status_code == 200 and r.json()["success"], r.text
    stats = requests.get(cloud.url + "/api/samples", headers={"x-api-key": cloud.studio.api_key.get_secret_value()}, timeout=10)
    assert stats.status_code == 200


def test_ids_beyond_the_store_are_400_not_500(studio):
    cloud = studio
    pid = call(cloud, "GET", "/v1/api/projects/api-key-info").json()["projectId"]
    huge = str(10**40)
    for method, path in (("GET", f"/api/samples/{huge}"), ("GET", f"/api/samples/{huge}/image"),
                         ("DELETE", f"/api/samples/{huge}"), ("GET", f"/api/models/{huge}"),
                         ("GET", f"/v1/api/{pid}/raw-data/{huge}"), ("GET", f"/v1/api/{pid}/jobs/{huge}/status"),
                         ("GET", f"/v1/api/{pid}/raw-data?category=training&limit={huge}"),
                         ("GET", f"/v1/api/{huge}/raw-data/1")):
        r = call(cloud, method, path)
        assert r.status_code in (400, 404), (path, r.status_code, r.text[:200])
    r = call(cloud, "GET", f"/api/samples/{huge}")
    assert r.status_code == 400 and "out of range" in r.json()["error"] and r.json()["field"] == "sample_id"


def test_deep_or_non_finite_json_is_400_everywhere(studio):
    cloud = studio
    pid = call(cloud, "GET", "/v1/api/projects/api-key-info").json()["projectId"]
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    for path in ("/api/devicekeys", f"/v1/api/{pid}/raw-data/1/bounding-boxes", "/api/labels"):
        for headers in ({"content-type": "application/json"}, {}):  # the studio reads untyped bodies as JSON too
            r = call(cloud, "POST", path, data=deep, headers=headers)
            assert r.status_code == 400 and "nested deeper" in r.json()["error"], (path, r.status_code, r.text[:200])
    r = call(cloud, "POST", "/api/devicekeys", data=b'{"modelVersion": NaN}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "NaN" in r.json()["error"]
    # JSON in query parameters and headers is held to the same limits
    r = call(cloud, "GET", f"/v1/api/{pid}/raw-data", params={"category": "training", "labels": "[" * 5000 + "]" * 5000})
    assert r.status_code == 400, r.text[:200]
    r = call(cloud, "POST", "/api/training/files", files={"data": ("x.jpg", b"\xff\xd8\xff", "image/jpeg")},
             headers={"x-metadata": "{" + '"a":{' * 2000 + "}" * 2001})
    assert r.status_code == 400 and "x-metadata" in r.json()["error"], r.text[:200]


def test_device_keys_do_not_reach_the_unversioned_model_downloads(studio):
    cloud = studio
    pid = call(cloud, "GET", "/v1/api/projects/api-key-info").json()["projectId"]
    runner = cloud.studio.device_key(1).get_secret_value()
    for path in (f"/v1/api/{pid}/learn-data/3/model/onnx", f"/v1/api/{pid}/deployment/download?type=runner-linux-x86_64"):
        r = call(cloud, "GET", path, runner)
        assert r.status_code == 403 and "management API key" in r.json()["error"], (path, r.status_code, r.text[:200])
        # the management key reaches them (404 here: nothing trained in this workspace)
        assert call(cloud, "GET", path).status_code in (200, 404)
