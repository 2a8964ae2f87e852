"""Sparse labels: unlabelled voxels (-1) must not be trained, as background or as anything else.

A user who paints a few strokes leaves most of the volume at -1. If the engine ever turned those
voxels into class 0 before the loss (a ``clamp(min=0)``, a cast to an unsigned type, a default
fill), the model would be taught that everything the user did not paint is background, and
sparse annotation would silently stop working. Counting steps or checking that a model file
exists does not notice that, so these tests look at what the loss sees and what the model learns:

* the gradient that reaches the network's outputs is zero at every unlabelled voxel of every
  training batch (deterministic; the loss's own ignore rule is tested in ``test_losses.py``,
  this checks that ``fit`` hands the unlabelled voxels to it as unlabelled);
* bright stripes labelled on two rows only are still predicted foreground on the unlabelled
  rows; trained as background there, the model learns the opposite.
"""

import numpy as np
import pytest
import torch

from napari_medseg.core import losses, sampling
from napari_medseg.core.config import ModelConfig, TrainConfig
from napari_medseg.core.data import UNLABELLED, Case, LabelMapping
from napari_medseg.core.engine import fit, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32


def _tc(**kw):
    # No augmentation in the gradient test: the batch's pixels then sit where the sampler cut
    # them, so a marker channel says exactly which of them were unlabelled.
    base = dict(patch_size=(16, 16), batch_size=4, epochs=1, steps_per_epoch=6, seed=0,
                lr=1e-2, augment=False)
    return TrainConfig(**(base | kw))


def _marked_case():
    """A bright square on noise, labelled in the left half only; channel 1 marks the rest."""
    rng = np.random.default_rng(0)
    img = rng.normal(0, 0.3, (2, SIZE, SIZE)).astype(np.float32)
    full = np.zeros((SIZE, SIZE), np.int16)
    full[8:24, 8:24] = 1
    img[0][full == 1] += 2.0
    target = full.copy()
    target[:, SIZE // 2:] = UNLABELLED  # patches centred in the left half reach into the right
    img[1] = (target == UNLABELLED).astype(np.float32)
    return Case(img, target, (1.0, 1.0), "marked")


def test_unlabelled_voxels_get_no_gradient(monkeypatch):
    inputs, grads = [], []
    sample, make_loss = sampling.PatchSampler.sample, losses.make_loss

    def recording_sample(self, batch_size):
        x, y = sample(self, batch_size)
        inputs.append(x.clone())
        return x, y

    def spying_make_loss(name, **kw):
        loss_fn = make_loss(name, **kw)

        def spy(logits, target, mask=None):
            loss = loss_fn(logits, target, mask)
            grad, = torch.autograd.grad(loss, logits, retain_graph=True)
            grads.append(grad.detach().abs().sum(1))  # (N, *spatial): any class's gradient
            return loss

        return spy

    # The gradient with respect to the logits, whatever form the engine gives the loss its
    # targets in (-1, a mask, weights): it is what actually reaches the network.
    monkeypatch.setattr(sampling.PatchSampler, "sample", recording_sample)
    monkeypatch.setattr(losses, "make_loss", spying_make_loss)  # fit looks it up when it starts
    mc = ModelConfig(spatial_dims=2, in_channels=2, out_channels=2, base_width=4, depth=2)
    run(fit([_marked_case()], model_config=mc, train_config=_tc(), mapping=LabelMapping((0, 1))))
    # A refactor that bypasses either spy must fail here, not pass without checking anything.
    assert len(grads) == len(inputs) == 6, "the spies did not see every training step"
    n_unlabelled = 0
    for grad, x in zip(grads, inputs):
        unlabelled = x[:, 1] > 0.5
        n_unlabelled += int(unlabelled.sum())
        # The labelled voxels do train (otherwise a zero gradient everywhere would pass)...
        assert float(grad[~unlabelled].max()) > 0, "no gradient at the labelled voxels"
        # ...and the unlabelled ones contribute exactly nothing.
        if unlabelled.any():
            assert float(grad[unlabelled].max()) == 0.0, "unlabelled voxels were trained"
    assert n_unlabelled > 0, "no batch reached into the unlabelled half; the test proves nothing"


def _stripes_case():
    """Bright vertical stripes on noise; only the two middle rows are labelled."""
    rng = np.random.default_rng(1)
    img = rng.normal(0, 0.3, (1, SIZE, SIZE)).astype(np.float32)
    truth = np.zeros((SIZE, SIZE), np.int16)
    for col in range(2, SIZE, 8):
        truth[:, col:col + 4] = 1
    img[0][truth == 1] += 2.0
    target = np.full((SIZE, SIZE), UNLABELLED, np.int16)
    target[15:17] = truth[15:17]
    return Case(img, target, (1.0, 1.0), "stripes"), truth


def test_unlabelled_rows_of_a_structure_are_still_predicted_foreground():
    # Every row of the image looks the same, so a model that learnt from the two labelled rows
    # finds the stripes everywhere. Patches are centred on the labelled rows and reach 7-8 rows
    # up and down: trained as background, those unlabelled stripe voxels outnumber the labelled
    # foreground 7 to 1 and the model learns "stripe means background" (measured: at most 28%
    # of the unlabelled stripe voxels foreground over 8 seeds, against 100% when ignored).
    case, truth = _stripes_case()
    unlabelled = case.target == UNLABELLED
    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, base_width=4, depth=2)
    # One epoch: one validation at the end, so the result is the trained model rather than an
    # early one that the best-model choice happened to keep.
    res = run(fit([case], model_config=mc,
                  train_config=_tc(epochs=1, steps_per_epoch=40, augment=True),
                  mapping=LabelMapping((0, 1))))
    with torch.no_grad():
        pred = res.model.eval()(torch.from_numpy(case.image[None])).argmax(1)[0].numpy()
    assert pred[(truth == 1) & unlabelled].mean() > 0.9, "unlabelled stripes learnt as background"
    # A model that calls everything foreground fails here.
    assert pred[(truth == 0) & unlabelled].mean() < 0.1
