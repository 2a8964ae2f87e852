"""Training from several raters: does the predicted uncertainty track rater disagreement?

Three small 2D UNets are trained on the same BU-BIL cell images
(``../shared/data/bubil_cells``, 10 expert masks per image: 5 experts x 2
tools), with the same seed, step count, patch locations and augmentation
draws, differing only in ``TrainConfig.raters`` (``--minutes`` caps each mode
on a loaded machine; the table prints the steps each got):

* ``majority``: the plurality vote of the 10 masks (ties -> background);
* ``sample``:   each patch takes one expert mask drawn at random;
* ``soft``:     vote fractions as soft targets (soft CE + semimetric soft Dice).

Each is then evaluated on held-out images (never trained on) at the images'
full resolution, against all 10 masks:

* ``qubiq``: QUBIQ soft Dice (mean Dice of ``p > t`` vs ``vote > t`` over
  t = 0.1 .. 0.9, :func:`napari_medseg.core.raters.qubiq_dice`);
* ``mae band`` / ``mae all``: mean |p - vote fraction| in the band around the
  cell (see below) and over the whole image;
* ``spearman`` / ``pearson``: correlation of the predicted entropy with the
  raters' vote entropy, in the band;
* ``auroc``: predicted entropy as a detector of "disagreement" pixels (some,
  not all, experts say cell), in the band;
* ``dice vs majority``: Dice of ``p > 0.5`` with the plurality vote, so a mode
  that learns ambiguity can be seen not to lose the segmentation.

The band is every pixel within ``--band`` px (full resolution) of the union of
the masks and not deeper than that inside their intersection: all disagreement
pixels plus a margin of agreed cell and agreed background. Away from the cell
every mode is certain and right, and those pixels would only dilute the numbers.

Images are 811x1024 (B02: 1030x1300) phase contrast; training runs at
``--downsample`` x coarser spacing (``TrainConfig.spacing``: the pipeline
resamples on the way in and the predictions back). Numbers are means over
held-out images. Note: in this copy of BU-BIL ``expert2_amira`` and
``expert2_imagej`` are pixel-identical, so expert 2 counts twice; the data are
used as they are.

Usage::

    python benchmarks/raters_training.py             # ~7 min on 1 CPU thread
    python benchmarks/raters_training.py --quick     # ~2 min, smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from scipy import stats

from napari_medseg.core.config import ModelConfig, TrainConfig
from napari_medseg.core.data import LabelMapping
from napari_medseg.core.engine import fit, run
from napari_medseg.core.metrics import dice
from napari_medseg.core.pipeline import segment
from napari_medseg.core.prepare import prepare_rater_case
from napari_medseg.core.raters import majority_vote, qubiq_dice, vote_entropy, vote_fraction

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bubil_cells"
RESULTS = ROOT / "benchmarks" / "results"
RATERS = [f"expert{k}_{tool}.png" for k in range(1, 6) for tool in ("amira", "imagej")]
MODES = ("majority", "sample", "soft")
ROWS = [("qubiq", "QUBIQ soft Dice", "+"), ("mae_band", "MAE p vs vote (band)", "-"),
        ("mae_all", "MAE p vs vote (image)", "-"),
        ("spearman", "Spearman H_pred~H_vote", "+"), ("pearson", "Pearson H_pred~H_vote", "+"),
        ("auroc", "AUROC H_pred->disagree", "+"), ("dice_majority", "Dice p>.5 vs majority", "+"),
        ("p_in_disagreement", "mean p where 0<vote<1", ""),
        ("vote_in_disagreement", "mean vote where 0<vote<1", "")]


def load(name: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image (float32) and the 10 expert masks (uint8 0/1) of one BU-BIL image."""
    import imageio.v3 as iio

    d = DATA / name
    img = np.asarray(iio.imread(d / "image.png"), np.float32)
    if img.ndim == 3:  # an RGB(A) copy: the channels are equal grey values
        img = img[..., :3].mean(axis=-1)
    masks = [(np.asarray(iio.imread(d / "raters" / f)) > 0).astype(np.uint8) for f in RATERS]
    return img, masks


def band(masks: list[np.ndarray], width: int) -> np.ndarray:
    """Pixels near the cell outline: within ``width`` of the union, not deep in the intersection."""
    st = np.stack(masks).astype(bool)
    union, inter = st.any(axis=0), st.all(axis=0)
    # Distance transforms: a dilation by a 31 px disk is ~50x slower on these images.
    near_union = ndi.distance_transform_edt(~union) <= width
    deep_inside = ndi.distance_transform_edt(inter) > width
    return near_union & ~deep_inside


def auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count half)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(score)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def evaluate(prob: np.ndarray, entropy: np.ndarray, masks: list[np.ndarray], width: int
             ) -> dict[str, float | None]:
    """The metrics of the module docstring for one image."""
    vf = vote_fraction(masks, dtype=np.float64)
    h_vote = vote_entropy(masks)
    b = band(masks, width)
    dis = (vf > 0) & (vf < 1)
    hb, vb = entropy[b], h_vote[b]
    both_vary = hb.std() > 0 and vb.std() > 0
    return {
        "qubiq": qubiq_dice(prob, masks),
        "mae_band": float(np.abs(prob[b] - vf[b]).mean()),
        "mae_all": float(np.abs(prob - vf).mean()),
        "spearman": float(stats.spearmanr(hb, vb)[0]) if both_vary else None,
        "pearson": float(stats.pearsonr(hb, vb)[0]) if both_vary else None,
        "auroc": auroc(hb, dis[b]),
        "dice_majority": dice(prob > 0.5, majority_vote(masks) > 0),
        "p_in_disagreement": float(prob[dis].mean()) if dis.any() else None,
        "vote_in_disagreement": float(vf[dis].mean()) if dis.any() else None,
    }


def train_and_eval(mode: str, train: list[str], test: list[str], args: argparse.Namespace
                   ) -> dict[str, Any]:
    ds = float(args.downsample)
    tc = TrainConfig(patch_size=(args.patch, args.patch), batch_size=args.batch, loss="dice_ce",
                     lr=args.lr, epochs=1, steps_per_epoch=args.steps, minutes=args.minutes,
                     seed=args.seed, device="cpu", spacing=(ds, ds), crop_foreground=False,
                     fg_oversample=0.5, raters=mode)
    mc = ModelConfig(spatial_dims=2, in_channels=1, out_channels=2, base_width=args.width,
                     depth=args.depth)
    mapping = LabelMapping((0, 1))
    cases = []
    for name in train:
        img, masks = load(name)
        case, _ = prepare_rater_case([img], masks, (1.0, 1.0), mapping=mapping, config=tc,
                                     name=name, rater_names=RATERS)
        cases.append(case)
    t0 = time.perf_counter()
    res = run(fit(cases, model_config=mc, train_config=tc, mapping=mapping))
    train_s = time.perf_counter() - t0
    per_image: dict[str, dict[str, float | None]] = {}
    for name in test:
        img, masks = load(name)
        seg = run(segment(res.checkpoint, [img], (1.0, 1.0), model=res.model, device="cpu"))
        per_image[name] = evaluate(seg.probabilities[1], seg.entropy, masks, args.band)
    means = {}
    for key, _, _ in ROWS:
        vals = [m[key] for m in per_image.values() if m[key] is not None]
        means[key] = float(np.mean(vals)) if vals else None
    print(f"  {mode}: {res.steps} steps in {train_s:.0f} s, evaluated on {len(test)} images",
          flush=True)
    return {"mode": mode, "steps": res.steps, "train_s": train_s, "mean": means,
            "per_image": per_image, "checkpoint_raters": res.checkpoint.extra.get("raters")}


def print_table(results: dict[str, dict[str, Any]]) -> None:
    modes = list(results)
    print(f"\n{'metric (held-out mean)':<28}" + "".join(f"{m:>10}" for m in modes) + "  better")
    for key, label, better in ROWS:
        cells = []
        for m in modes:
            v = results[m]["mean"][key]
            cells.append(f"{'n/a' if v is None else f'{v:.3f}':>10}")
        hint = {"+": "higher", "-": "lower"}.get(better, "")
        print(f"{label:<28}" + "".join(cells) + f"  {hint}")
    print(f"{'steps':<28}" + "".join(f"{results[m]['steps']:>10}" for m in modes))
    print(f"{'training time (s)':<28}" + "".join(f"{results[m]['train_s']:>10.0f}" for m in modes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 train / 4 test images, 80 steps")
    ap.add_argument("--train", nargs="*", help="training images (default B01..B15)")
    ap.add_argument("--test", nargs="*", help="held-out images (default B16..B25)")
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    ap.add_argument("--steps", type=int, default=450, help="optimisation steps per mode")
    ap.add_argument("--minutes", type=float, default=2.2, help="time cap per mode")
    ap.add_argument("--downsample", type=int, default=8, help="training spacing in pixels")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--band", type=int, default=15, help="band half-width in full-res pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (at most 2 here)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"BU-BIL: {DATA} is absent (a fresh clone has no ../shared/data); nothing to run.")
        return
    torch.set_num_threads(args.threads)
    names = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    train = args.train or (names[:6] if args.quick else names[:15])
    test = args.test or (names[15:19] if args.quick else names[15:])
    if args.quick:
        args.steps = min(args.steps, 80)
    if set(train) & set(test):
        raise SystemExit(f"train and test images overlap: {sorted(set(train) & set(test))}")
    print(f"BU-BIL: train {train[0]}..{train[-1]} ({len(train)}), held out {test[0]}..{test[-1]} "
          f"({len(test)}), {len(RATERS)} expert masks each; {args.steps} steps x {args.batch} "
          f"patches {args.patch}^2 at {args.downsample}x spacing, UNet width {args.width} depth "
          f"{args.depth}, {args.threads} thread(s)", flush=True)
    results = {m: train_and_eval(m, train, test, args) for m in args.modes}
    print_table(results)
    out = args.out or RESULTS / f"raters_training{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "train": train, "test": test, "results": results,
               "torch": str(torch.__version__), "python": platform.python_version()}
    out.write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
