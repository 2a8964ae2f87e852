"""Checkpoints: round trip, atomic write, safe loading, clear errors for foreign files."""

import pickle

import pytest
import torch

from napari_medseg.core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from napari_medseg.core.config import ModelConfig, TrainConfig
from napari_medseg.core.data import LabelMapping
from napari_medseg.core.models import build_model
from napari_medseg.core.normalize import ChannelNorm


def _ckpt():
    mc = ModelConfig(spatial_dims=2, in_channels=2, out_channels=4, base_width=4, depth=2)
    tc = TrainConfig(patch_size=(16, 16), epochs=1)
    return Checkpoint(model_config=mc, train_config=tc, mapping=LabelMapping((0, 1, 2, 4)),
                      norms=(ChannelNorm(0, 1, 0.5, 0.2), ChannelNorm(-1, 1, 0, 1)),
                      spacing=(1.0, 2.0), state_dict=build_model(mc).state_dict(),
                      history=[{"epoch": 1, "dice": {"1": 0.5, "4": None}}],
                      channel_names=["flair", "t1c"], fingerprints=["abc"])


def test_round_trip(tmp_path):
    c = _ckpt()
    save_checkpoint(tmp_path / "m.pt", c)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind
    d = load_checkpoint(tmp_path / "m.pt")
    assert d.model_config == c.model_config and d.train_config == c.train_config
    assert d.mapping.values == (0, 1, 2, 4) and d.spacing == (1.0, 2.0)
    assert d.history == c.history and d.channel_names == ["flair", "t1c"]
    assert "torch" in d.versions
    m = d.build_model()
    for k, v in c.state_dict.items():
        assert torch.equal(m.state_dict()[k], v)
    assert "label values [0, 1, 2, 4]" in d.describe()


def test_foreign_pt_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*not a napari-medseg model"):
        load_checkpoint(tmp_path / "other.pt")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "napari-medseg-checkpoint", "x": Evil()}, f)
    with pytest.raises(ValueError, match="evil.pt.*not a loadable"):
        load_checkpoint(tmp_path / "evil.pt")


def test_garbage_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01junk" * 10)
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


def test_describe_is_task_aware(tmp_path):
    from napari_medseg.core.restoration import RestoreConfig, restoration_model_config

    mc = restoration_model_config(spatial_dims=2, base_width=4, depth=2)
    rc = RestoreConfig(mode="synthetic", degrade="blur:1+rician:0.05", loss="l1+ssim")
    c = Checkpoint(model_config=mc, train_config=TrainConfig(patch_size=(16, 16)),
                   mapping=LabelMapping((0,)), norms=(ChannelNorm(0, 1, 0.5, 0.2),), spacing=None,
                   state_dict=build_model(mc).state_dict(), task="restore",
                   history=[{"psnr": 28.5}, {"psnr": None}, {"psnr": 30.25}],
                   channel_names=["t1"], extra={"restore": rc.to_dict()})
    save_checkpoint(tmp_path / "r.pt", c)
    text = load_checkpoint(tmp_path / "r.pt").describe()
    assert text == ("2D unet restoration model, 1 channel(s) (t1), trained on clean images with "
                    "synthetic blur (sigma 1 vox), Rician noise (sigma 5%), loss l1+ssim, best "
                    "validation PSNR 30.25 dB")
    assert "label values" not in text
    c.extra = {"restore": {"mode": "noise2void", "loss": "mse"}}
    c.history = []
    assert c.describe().endswith("self-supervised (Noise2Void) on noisy images, loss mse")
    assert "label values [0, 1, 2, 4]" in _ckpt().describe()  # segmentation: unchanged


def test_describe_names_a_threshold_only_where_the_decision_reads_it():
    """A 4-class argmax model was described as 'foreground above 0.3', a threshold its
    decision never reads."""
    from dataclasses import replace

    c = _ckpt()  # 4 classes
    argmax = replace(c, train_config=replace(c.train_config, threshold=0.3))
    assert "foreground above" not in argmax.describe()
    fg = replace(c, train_config=replace(c.train_config, threshold=0.3, decision="foreground"))
    assert "foreground above 0.3" in fg.describe()
    binary = replace(argmax, model_config=replace(c.model_config, out_channels=2))
    assert "foreground above 0.3" in binary.describe()
