"""STAPLE speed and agreement: ours against SimpleITK's ``STAPLEImageFilter``, side by side.

Two workloads:

* synthetic: 5 raters x 256^3 uint8 masks (a lobed blob each rater outlines
  a little differently, plus 0.5 % scattered label noise per rater);
* BU-BIL: the 25 cell images of ``../shared/data/bubil_cells`` (811x1024 or
  similar), 10 expert masks each (``raters/expert*_{amira,imagej}.png``).
  Skipped with a message when the shared data is absent.

Both sides start from numpy arrays already in memory and run with their
defaults (ours: ``napari_medseg.core.raters.staple``; SimpleITK: foreground
1, confidence weight 1, unlimited iterations, which stop at a squared change
of 1e-14 = our ``tol=1e-7``). Ours is timed end to end (vote-pattern table,
EM, probability map and consensus); SimpleITK's time is ``Execute`` alone
(array -> image conversion excluded). Also printed: the largest difference in
per-rater sensitivity / specificity and in the probability map, and the Dice
of the two consensus masks (``probability > 0.5``).

Usage::

    python benchmarks/raters.py            # synthetic + all 25 BU-BIL images
    python benchmarks/raters.py --quick    # synthetic + 5 BU-BIL images
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from napari_medseg.core.metrics import dice
from napari_medseg.core.raters import staple

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bubil_cells"
RATERS = [f"expert{k}_{tool}.png" for k in range(1, 6) for tool in ("amira", "imagej")]


def synthetic(n: int = 5, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    c = (size - 1) / 2
    z, y, x = np.ogrid[:size, :size, :size]
    r = np.sqrt((z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2).astype(np.float32)
    lobes = (np.cos(6 * np.arctan2(y - c, x - c)) * np.ones_like(z)).astype(np.float32)
    out = []
    for j in range(n):
        radius = size * (0.28 + 0.01 * (j - n // 2))
        m = r < radius + size * 0.03 * (1 + 0.2 * j) * lobes
        m ^= rng.random(m.shape, dtype=np.float32) < 0.005
        out.append(m.astype(np.uint8))
    return out


def run_ours(masks: list[np.ndarray], rounds: int) -> tuple[float, object]:
    times, res = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        res = staple(masks)
        times.append(time.perf_counter() - t)
    return statistics.median(times), res


def run_sitk(masks: list[np.ndarray]) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    imgs = [sitk.GetImageFromArray(m) for m in masks]
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    t = time.perf_counter()
    out = f.Execute(imgs)
    elapsed = time.perf_counter() - t
    return (elapsed, sitk.GetArrayFromImage(out), np.array(f.GetSensitivity()),
            np.array(f.GetSpecificity()))


def compare(name: str, masks: list[np.ndarray], rounds: int) -> tuple[float, float]:
    t_ours, res = run_ours(masks, rounds)
    t_sitk, prob, sens, spec = run_sitk(masks)
    d_sens = float(np.abs(res.sensitivity - sens).max())
    d_spec = float(np.abs(res.specificity - spec).max())
    d_prob = float(np.abs(res.probability - prob).max())
    cons_dice = dice(res.consensus > 0, prob > 0.5)
    print(f"{name:<22} ours {t_ours:8.3f}s  sitk {t_sitk:8.3f}s  sitk/ours {t_sitk / t_ours:7.1f}x"
          f"  | max d sens {d_sens:.1e}  d spec {d_spec:.1e}  d prob {d_prob:.1e}  "
          f"consensus dice {cons_dice:.6f}  iters {res.iterations} patterns {res.n_patterns}",
          flush=True)
    return t_ours, t_sitk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 BU-BIL images instead of 25")
    ap.add_argument("--size", type=int, default=256, help="synthetic volume edge")
    ap.add_argument("--rounds", type=int, default=3, help="median of this many runs of ours")
    args = ap.parse_args()
    import SimpleITK as sitk

    print(f"SimpleITK {sitk.Version.VersionString()}, numpy {np.__version__}")
    print(f"synthetic: 5 raters x {args.size}^3", flush=True)
    masks = synthetic(size=args.size)
    compare(f"synthetic {args.size}^3", masks, args.rounds)
    del masks
    if not DATA.exists():
        print(f"BU-BIL: {DATA} absent (a fresh clone has no ../shared/data); skipped")
        return
    import imageio.v3 as iio

    cases = sorted(p for p in DATA.iterdir() if p.is_dir())[: 5 if args.quick else None]
    print(f"BU-BIL: {len(cases)} images x {len(RATERS)} expert masks", flush=True)
    tot_o = tot_s = 0.0
    for case in cases:
        ms = [np.asarray(iio.imread(case / "raters" / f)) for f in RATERS]
        o, s = compare(f"BU-BIL {case.name} {ms[0].shape}", ms, args.rounds)
        tot_o, tot_s = tot_o + o, tot_s + s
    print(f"{'BU-BIL total':<22} ours {tot_o:8.3f}s  sitk {tot_s:8.3f}s  "
          f"sitk/ours {tot_s / tot_o:7.1f}x")


if __name__ == "__main__":
    main()
