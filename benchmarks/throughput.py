"""Training and inference throughput: our UNet against MONAI's BasicUNet, side by side.

The reference is ``monai.networks.nets.BasicUNet`` because it is the same
network: 5 levels of two conv(3)-instance-norm-LeakyReLU blocks, widths
16-32-64-128-256, transposed-convolution up-sampling, skip concatenation,
1x1 head. (``monai.networks.nets.UNet`` is not: one strided conv per level,
residual units.) Ours is ``ModelConfig(arch="unet", depth=5, base_width=16,
norm="instance", upsample="transpose")``; both print their parameter count.

MONAI runs twice: as shipped (contiguous memory) and channels-last; the
ratio is taken against the faster of the two, so a win is not an artefact
of a memory format. (``--quick`` runs MONAI inference channels-last only,
always the faster of the two here, on a 96-slice crop of the volume.)

* Training: samples/s of forward + Dice-CE loss + backward + AdamW step on
  random patches (2D 8x2x128x128, 3D 2x2x64x64x64).
* Inference: voxels/s of sliding-window prediction on a 2x240x240x155
  volume (BraTS-sized) under ``torch.inference_mode``, Gaussian blending,
  softmax. Ours is the whole pipeline ``napari_medseg.core.inference.
  predict_volume`` (which also computes labels and entropy); MONAI's is
  ``monai.inferers.sliding_window_inference`` (3D) / ``SliceInferer``
  (2D, slice by slice) plus softmax, argmax and entropy. Without ``--quick`` a
  further line runs *both* networks through MONAI's inferer, isolating
  the networks.
* Peak memory: each (network, task) runs once more in a fresh subprocess
  that reports its ``ru_maxrss`` growth over the measured work (train: two
  steps, including the optimiser state; inference: one window batch).

Both networks run in one process, alternating, several rounds; the median
is reported, as a wall-clock rate and as ratios of wall-clock and of
process CPU time (steadier when other processes share the cores). Threads:
PyTorch's default (``torch.get_num_threads()``), waiting passively
(``OMP_WAIT_POLICY=PASSIVE`` unless set: see the comment at the imports). glibc's allocator returns
large blocks to the OS, so every fresh activation is page-faulted in again;
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736`` in the
environment stops that, for both networks (3D training ~20-35% faster).

Usage::

    python benchmarks/throughput.py --quick      # ~5 min on two idle cores
    python benchmarks/throughput.py              # more rounds, + same-inferer line
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: by default its idle threads spin, and on cores
# shared with other processes a spinning thread starves its descheduled
# sibling. Measured here with the load average above the core count: a 2D
# training step took 4.0 s spinning, 0.52 s passive (both networks alike).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from napari_medseg.core.config import ModelConfig  # noqa: E402
from napari_medseg.core.inference import predict_volume  # noqa: E402
from napari_medseg.core.models import build_model, count_parameters  # noqa: E402

CLASSES = 5
IN_CHANNELS = 2
VOLUME = (IN_CHANNELS, 240, 240, 155)
QUICK_VOLUME = (IN_CHANNELS, 240, 240, 96)
TRAIN_BATCH = {2: (8, IN_CHANNELS, 128, 128), 3: (2, IN_CHANNELS, 64, 64, 64)}
# 3D: 96^3 windows, 25% overlap -> 3x3x2 = 18 windows; 2D: whole 240x240 slices.
INFER = {2: dict(patch=(240, 240), batch=8), 3: dict(patch=(96, 96, 96), batch=2)}
OVERLAP = 0.25
NETS = ("ours", "monai", "monai-cl")


# --------------------------------------------------------------------------- networks


def make_net(name: str, dims: int) -> nn.Module:
    """``ours``, ``monai`` (contiguous) or ``monai-cl`` (channels-last)."""
    if name == "ours":
        cfg = ModelConfig(arch="unet", spatial_dims=dims, in_channels=IN_CHANNELS,
                          out_channels=CLASSES, base_width=16, depth=5, norm="instance",
                          upsample="transpose")
        return build_model(cfg)
    from monai.networks.nets import BasicUNet

    net = BasicUNet(spatial_dims=dims, in_channels=IN_CHANNELS, out_channels=CLASSES,
                    features=(16, 32, 64, 128, 256, 16), upsample="deconv")
    if name == "monai-cl":
        net = net.to(memory_format=_cl(dims))
    return net


def _cl(dims: int) -> torch.memory_format:
    return torch.channels_last_3d if dims == 3 else torch.channels_last


def _fmt_input(name: str, x: torch.Tensor) -> torch.Tensor:
    """MONAI channels-last needs channels-last input; ours converts internally."""
    return x.contiguous(memory_format=_cl(x.dim() - 2)) if name == "monai-cl" else x


def dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the foreground classes (same for both nets)."""
    ce = F.cross_entropy(logits, target)
    prob = logits.softmax(1)
    onehot = F.one_hot(target, CLASSES).movedim(-1, 1).to(prob.dtype)
    axes = (0, *range(2, logits.dim()))
    inter = (prob * onehot).sum(axes)
    denom = prob.sum(axes) + onehot.sum(axes)
    return ce + 1 - ((2 * inter + 1e-5) / (denom + 1e-5))[1:].mean()


# --------------------------------------------------------------------------- tasks


def train_task(name: str, dims: int) -> Callable[[], None]:
    """Return a closure doing one optimisation step of net ``name``."""
    torch.manual_seed(0)
    net = make_net(name, dims).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    shape = TRAIN_BATCH[dims]
    x = _fmt_input(name, torch.randn(shape))
    target = torch.randint(0, CLASSES, (shape[0], *shape[2:]))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        dice_ce(net(x), target).backward()
        opt.step()

    return step


def _monai_infer(net: nn.Module, name: str, dims: int, volume: np.ndarray) -> object:
    from monai.inferers import SliceInferer, sliding_window_inference

    cfg = INFER[dims]
    x = torch.from_numpy(volume)[None]

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return net(_fmt_input(name, batch))

    with torch.inference_mode():
        if dims == 3:
            logits = sliding_window_inference(x, cfg["patch"], cfg["batch"], predictor,
                                              overlap=OVERLAP, mode="gaussian")
        else:
            inferer = SliceInferer(roi_size=cfg["patch"], sw_batch_size=cfg["batch"],
                                   spatial_dim=2, overlap=OVERLAP, mode="gaussian")
            logits = inferer(x, predictor)
        # The same outputs as predict_volume: probabilities, labels, entropy.
        prob = torch.softmax(logits, 1)[0]
        entropy = -torch.special.xlogy(prob, prob).sum(0)
        return prob.argmax(0).numpy(), entropy.numpy()


def _ours_infer(net: nn.Module, dims: int, volume: np.ndarray) -> np.ndarray:
    cfg = INFER[dims]
    gen = predict_volume(net, volume, spatial_dims=dims, patch_size=cfg["patch"],
                         overlap=OVERLAP, batch_size=cfg["batch"], slice_axis=2)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value.labels


def infer_task(name: str, dims: int, volume: np.ndarray, *, inferer: str) -> Callable[[], None]:
    """Return a closure predicting ``volume`` once with net ``name``.

    ``inferer="native"``: ours through ``predict_volume``, MONAI through its
    own inferer; ``"monai"``: every net through MONAI's inferer.
    """
    torch.manual_seed(0)
    net = make_net(name, dims).eval()
    if name == "ours" and inferer == "native":
        return lambda: _ours_infer(net, dims, volume)
    return lambda: _monai_infer(net, name, dims, volume)


def window_batch_task(name: str, dims: int) -> Callable[[], None]:
    """One forward pass on a batch of inference windows (for the memory probe)."""
    net = make_net(name, dims).eval()
    cfg = INFER[dims]
    x = _fmt_input(name, torch.randn(cfg["batch"], IN_CHANNELS, *cfg["patch"]))

    def run() -> None:
        with torch.inference_mode():
            torch.softmax(net(x), 1)

    return run


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    """Median wall-clock and process CPU seconds per call, one entry per net."""

    seconds: dict[str, float]
    cpu: dict[str, float]

    def ratio(self, ref: str) -> float:
        return self.seconds[ref] / self.seconds["ours"]

    def cpu_ratio(self, ref: str) -> float:
        return self.cpu[ref] / self.cpu["ours"]

    def best_ref(self) -> str:
        return min((n for n in self.seconds if n != "ours"), key=self.seconds.__getitem__)


def alternate(tasks: dict[str, Callable[[], None]], *, rounds: int, calls: int) -> Result:
    """Time ``calls`` calls per net per round, rotating which net goes first.

    Process CPU time is recorded too: when other processes share the cores,
    time spent descheduled inflates wall-clock time but not CPU time, so the
    CPU-time ratio is the steadier one on a busy machine.
    """
    names = list(tasks)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(calls):
                tasks[n]()
            wall[n].append((time.perf_counter() - t0) / calls)
            cpu[n].append((time.process_time() - c0) / calls)
    med = statistics.median
    return Result({n: med(v) for n, v in wall.items()}, {n: med(v) for n, v in cpu.items()})


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def probe_memory(task: str, name: str, dims: int) -> None:
    """Subprocess entry: print peak RSS growth (MiB) over the measured work as JSON.

    Linux resets the peak (``VmHWM``) when "5" is written to
    ``/proc/self/clear_refs``, so the peak covers the measured work only;
    elsewhere ``ru_maxrss`` (peak since start) stands in, an upper bound.
    """
    fn = train_task(name, dims) if task == "train" else window_batch_task(name, dims)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base, peak = _status_kib("VmRSS"), lambda: _status_kib("VmHWM")
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        base, peak = 0, lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale // 1024
    for _ in range(2 if task == "train" else 1):
        fn()
    print(json.dumps({"peak_mib": (peak() - base) / 1024}))


def peak_mib(task: str, name: str, dims: int) -> float:
    """Run :func:`probe_memory` in a fresh interpreter (RSS peaks are per process)."""
    cmd = [sys.executable, __file__, "--probe", task, name, str(dims)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def summary(kind: str, dims: int, what: str, unit: str, amount: float, res: Result,
            mem: dict[str, float] | None, mem_what: str = "") -> str:
    """One line: ours, each MONAI variant, ratio to the best MONAI, peak memory."""
    rates = {n: amount / s for n, s in res.seconds.items()}
    ref = res.best_ref()
    parts = [f"{kind:<5} {dims}D {what:<22}", f"ours {rates['ours']:.3g} {unit}"]
    parts += [f"{n} {rates[n]:.3g}" for n in res.seconds if n != "ours"]
    parts.append(f"ours/MONAI {res.ratio(ref):.2f}x (cpu time {res.cpu_ratio(ref):.2f}x) vs {ref}")
    if mem:
        parts.append(f"peak MiB{mem_what} " + " ".join(f"{n} {v:.0f}" for n, v in mem.items())
                     + f" (ours/{ref} {mem['ours'] / max(mem[ref], 1e-9):.2f})")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds; skip the same-inferer line")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    p.add_argument("--no-memory", action="store_true", help="skip the subprocess memory probes")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: PyTorch's choice, one per core)")
    p.add_argument("--probe", nargs=3, metavar=("TASK", "NET", "DIMS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        probe_memory(args.probe[0], args.probe[1], int(args.probe[2]))
        return

    import monai

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, monai {monai.__version__}, cpu, "
          f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    for dims in args.dims:
        print(f"{dims}D params: ours {count_parameters(make_net('ours', dims)):,} "
              f"monai BasicUNet {count_parameters(make_net('monai', dims)):,}", flush=True)
    rng = np.random.default_rng(0)
    volume = rng.standard_normal(QUICK_VOLUME if args.quick else VOLUME, dtype=np.float32)
    infer_nets = ("ours", "monai-cl") if args.quick else NETS
    t_rounds, t_calls = (5, 1) if args.quick else (7, 2)
    i_rounds = 1 if args.quick else 3

    for dims in args.dims:
        tasks = {n: train_task(n, dims) for n in NETS}
        for fn in tasks.values():  # warm-up: oneDNN primitives, optimiser state
            fn()
        res = alternate(tasks, rounds=t_rounds, calls=t_calls)
        mem = None if args.no_memory else {n: peak_mib("train", n, dims) for n in NETS}
        shape = TRAIN_BATCH[dims]
        print(summary("train", dims, "x".join(map(str, shape)), "samples/s", shape[0], res, mem),
              flush=True)
        del tasks

        variants = ["native"] if args.quick else ["native", "monai"]
        for inferer in variants:
            tasks = {n: infer_task(n, dims, volume, inferer=inferer) for n in infer_nets}
            for n in infer_nets:  # warm-up on one window batch, not a whole volume
                window_batch_task(n, dims)()
            res = alternate(tasks, rounds=i_rounds, calls=1)
            mem = (None if args.no_memory or inferer != "native"
                   else {n: peak_mib("infer", n, dims) for n in infer_nets})
            what = "x".join(map(str, volume.shape)) + ("" if inferer == "native" else " same")
            mvox = float(np.prod(volume.shape[1:])) / 1e6
            print(summary("infer", dims, what, "Mvox/s", mvox, res, mem, " (1 window batch)"),
                  flush=True)
            del tasks
    load = os.getloadavg()[0]
    busy = load > (os.cpu_count() or 1)
    note = " (above the core count: trust ratios over absolute rates)" if busy else ""
    print(f"load average {load:.1f}{note}")


if __name__ == "__main__":
    main()
