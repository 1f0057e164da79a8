"""The local cloud's state is owner-only: WORKSPACE/localcloud/ and everything under it."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers import localcloud

pytestmark = pytest.mark.timeout(120)


def loose_modes(root: Path) -> dict[str, str]:
    """`{relative path: mode}` of every directory not 0700 and every file not 0600 under `root`."""
    out = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            out[str(path.relative_to(root.parent))] = oct(stat.S_IMODE(st.st_mode))
    return out


def _write_some_state(handle, make_jpeg, tmp_path: Path, seed: int) -> None:
    from test_runner_model import tiny_detector

    handle.hub.create_edge_device(f"perm-{seed}")
    handle.studio.upload([(f"s{seed}.jpg", make_jpeg(seed))], label="apple")
    handle.studio.register_model(tiny_detector(tmp_path / f"m{seed}" / "model.onnx"), {"labels": ["apple"], "input_size": 64})


def test_state_is_owner_only_also_after_a_restart(fresh_cloud, make_jpeg, tmp_path):
    old_umask = os.umask(0o022)  # a usual login umask: the service must not rely on the caller's
    try:
        d = fresh_cloud.workspace / "localcloud"
        _write_some_state(fresh_cloud, make_jpeg, tmp_path, 1)
        names = {p.name for p in d.iterdir()}
        assert {"state.db", "state.db-wal", "state.db-shm", "files", "service.json", "credentials.json"} <= names, names
        assert any((d / "files").rglob("*.jpg")) and any((d / "files").rglob("model.onnx"))
        assert loose_modes(d) == {}

        # a workspace left loose (by hand, or by an older version) is tightened on the next start
        localcloud.stop(fresh_cloud.workspace)
        os.chmod(d, 0o755)
        os.chmod(d / "state.db", 0o644)
        os.chmod(d / "service.json", 0o644)
        os.chmod(d / "files", 0o775)
        next(p for p in (d / "files").rglob("*.jpg")).chmod(0o644)
        assert loose_modes(d)
        localcloud.ensure_running(fresh_cloud.workspace)
        fresh_cloud.refresh()
        _write_some_state(fresh_cloud, make_jpeg, tmp_path, 2)
        assert loose_modes(d) == {}
    finally:
        os.umask(old_umask)
