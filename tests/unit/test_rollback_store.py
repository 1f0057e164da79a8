"""Last-known-good store: persisted without secrets, restored with them."""
from __future__ import annotations

import pytest

from helpers.config import Secret
from helpers.deploy.rollback import LastKnownGood, manifest_secrets
from helpers.errors import RolloutError
from helpers.protocol import manifest as mf

KEY = "ei_00112233445566778899aabb"


def _manifest(model=1):
    runner = mf.runner_module("me/edgeloop:1", model, "http://127.0.0.1:1", host_port=None, camera=None)
    return mf.build_manifest([runner], secrets={"EI_API_KEY": Secret(KEY, "EI_API_KEY")})


def test_record_and_restore_keeps_secrets_off_disk(tmp_path):
    store = LastKnownGood(tmp_path)
    m = _manifest(1)
    store.record("dev1", m, {"runner": 1}, note="first")
    text = store.path.read_text()
    assert KEY not in text and "********" in text
    assert store.path == tmp_path / "deploy" / "last_known_good.json"
    entry = LastKnownGood(tmp_path).get("dev1")  # a new instance reads the file
    assert entry.expect == {"runner": 1} and entry.meta == {"note": "first"}
    assert entry.secret_env == {"runner": ["EI_API_KEY"]}
    restored = entry.restore(manifest_secrets(m))
    assert mf.reveal_secrets(restored) == mf.reveal_secrets(m)
    mf.validate_manifest(restored)
    with pytest.raises(RolloutError, match="EI_API_KEY"):
        entry.restore({})


def test_newer_record_replaces_and_forget(tmp_path):
    store = LastKnownGood(tmp_path)
    store.record("dev1", _manifest(1))
    store.record("dev1", _manifest(2))
    store.record("deployment:fleet", _manifest(2))
    assert store.keys() == ["deployment:fleet", "dev1"]
    env = mf.module_env(store.get("dev1").manifest["$edgeAgent"]["properties.desired"]["modules"]["runner"])
    assert env["MODEL_VERSION"] == "2"
    store.forget("dev1")
    assert store.get("dev1") is None and store.keys() == ["deployment:fleet"]


def test_corrupt_store_says_how_to_fix(tmp_path):
    store = LastKnownGood(tmp_path)
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    with pytest.raises(RolloutError, match="delete it"):
        store.get("dev1")


def test_restore_gives_each_module_the_device_key_for_its_model_version(tmp_path):
    """A runner rolled back to model 1 needs the key for model 1, not the newer manifest's."""
    from helpers.localcloud.studio.keys import device_key, key_role

    management = Secret("ei_management_key_for_this_test_0000", "EI_API_KEY")
    store = LastKnownGood(tmp_path)
    store.record("dev1", _manifest(1))
    restored = store.get("dev1").restore({"EI_API_KEY": lambda version: device_key(management, version)})
    env = mf.module_env(mf.reveal_secrets(restored)["$edgeAgent"]["properties.desired"]["modules"]["runner"])
    assert key_role(env["EI_API_KEY"], management).model_version == 1
