"""Events yielded by the core's generator engines (training, inference).

Small frozen dataclasses: the CLI prints them, the GUI shows them, the tests
iterate them. They carry plain Python numbers so they cross threads cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """Generic progress of a long job.

    Parameters
    ----------
    done, total : int
        Units finished and units in all (e.g. windows of a sliding window).
    stage : str
        What is running, for display ("predict", "load", ...).
    eta_s : float or None
        Estimated seconds left, when known.
    """

    done: int
    total: int
    stage: str = ""
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        """Done / total in [0, 1]."""
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class StepDone:
    """One optimisation step finished."""

    step: int
    epoch: int
    loss: float
    lr: float
    elapsed_s: float
    eta_s: float | None
    total_steps: int | None


@dataclass(frozen=True)
class EpochDone:
    """One epoch (``steps_per_epoch`` steps) finished."""

    epoch: int
    step: int
    loss: float
    elapsed_s: float
    eta_s: float | None


@dataclass(frozen=True)
class Validated:
    """Validation after an epoch.

    ``dice`` maps each foreground label value (as in the user's label file) to
    its Dice, or to ``None`` when the class is absent from both prediction and
    reference in the validation data.
    """

    epoch: int
    step: int
    dice: dict[int, float | None]
    mean_dice: float
    best: bool
    elapsed_s: float


@dataclass(frozen=True)
class Message:
    """A human-readable note (device picked, checkpoint written, ...)."""

    text: str
    level: str = "info"
    extra: dict[str, object] = field(default_factory=dict)
