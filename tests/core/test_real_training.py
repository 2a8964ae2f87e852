"""A short real training run on BraTS beats chance clearly (needs ../shared/data)."""

import numpy as np

from napari_medseg.core import io
from napari_medseg.core.config import ModelConfig, TrainConfig
from napari_medseg.core.data import LabelMapping
from napari_medseg.core.engine import fit, run
from napari_medseg.core.metrics import dice
from napari_medseg.core.pipeline import segment
from napari_medseg.core.prepare import prepare_case
from tests.conftest import shared_data


def _load(root, pat):
    d = root / pat
    chans = [io.read_spatial(d / f"{m}.nii.gz") for m in ("flair", "t1c")]
    lab = io.read_spatial(d / "labels.nii.gz")
    return [c.data for c in chans], lab.data, chans[0].spacing


def test_short_brats_training_beats_chance():
    root = shared_data("brats2013")
    chans, lab, sp = _load(root, "pat0001")
    wt = (lab > 0).astype(np.uint8)  # whole tumour, binary
    mapping = LabelMapping((0, 1))
    # 3 mm voxels and small patches keep this to well under a minute on 2 cores.
    tc = TrainConfig(patch_size=(32, 32, 32), batch_size=2, epochs=2, steps_per_epoch=40,
                     spacing=(3.0, 3.0, 3.0), seed=0, lr=3e-3, fg_oversample=0.5)
    mc = ModelConfig(spatial_dims=3, in_channels=2, out_channels=2, base_width=8, depth=3)
    case, prep = prepare_case(chans, wt, sp, mapping=mapping, config=tc, name="pat0001")
    assert case.image.shape[1:] == (48, 61, 47)  # cropped to the brain, then 3 mm
    res = run(fit([case], model_config=mc, train_config=tc, mapping=mapping))
    t_chans, t_lab, t_sp = _load(root, "pat0002")
    seg = run(segment(res.checkpoint, t_chans, t_sp, model=res.model))
    truth = t_lab > 0
    d = dice(seg.labels > 0, truth)
    brain = np.any(np.stack(t_chans) != np.stack(t_chans)[:, :1, :1, :1], axis=0)
    chance = dice(brain, truth)  # "everything in the brain is tumour"
    assert seg.labels.shape == t_lab.shape
    assert chance < 0.3
    # 80 small steps at 3 mm: far from converged, but clearly above chance.
    assert d > max(0.3, 3 * chance), f"held-out whole-tumour Dice {d:.3f} (chance {chance:.3f})"
