"""Segmentation training input of ``napari-medseg train``: label groups, rater files, cases.

Each ``--image`` group (the channel files of one case) pairs with one ``--label``
group: one label file (a plain labelled case, prepared by
:func:`~napari_medseg.core.prepare.prepare_case`, exactly as before several raters
were supported) or several rater files of that image (prepared by
:func:`~napari_medseg.core.prepare.prepare_rater_case`; ``TrainConfig.raters`` says
how training uses them). Like the rest of :mod:`napari_medseg.cli`, this module never
imports napari or Qt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_medseg.cli.common import CliError, warn_if_placed_apart
from napari_medseg.core import io
from napari_medseg.core.data import label_values_problem

if TYPE_CHECKING:
    from napari_medseg.core.config import TrainConfig
    from napari_medseg.core.data import Case, LabelMapping


def read_label_groups(vols: Sequence[Sequence[io.Volume]], labels: Sequence[Sequence[str]],
                      masks: Sequence[str]) -> list[list[io.Volume]]:
    """Read every case's label (or rater) files, apply the label masks, check them.

    Parameters
    ----------
    vols : sequence of sequence of io.Volume
        The channels of each case, already read.
    labels : sequence of sequence of str
        One group per case: its label file, or one file per rater.
    masks : sequence of str
        Empty, or one annotation mask per case: where the mask is 0 every rater of
        that case becomes unlabelled (-1).

    Returns
    -------
    list of list of io.Volume
        The label volumes of each case, float32 where a mask was applied.

    Raises
    ------
    CliError
        A label or mask file off its image's grid (naming it), one that is not a label
        map (NaN, fractions, values below -1, too many values), a mask count that
        differs from the number of cases, or a case whose label files are all empty.
    """
    groups = [[io.read_spatial(p) for p in g] for g in labels]
    for g, raters in zip(vols, groups):
        for lv in raters:
            for v in g:
                if v.data.shape != lv.data.shape:
                    raise CliError(f"{v.path} has shape {v.data.shape} but {lv.path} has "
                                   f"{lv.data.shape}; resample the labels onto the image grid.")
            problem = label_values_problem(lv.data)
            if problem:
                raise CliError(f"{lv.path} {problem}. A --label file holds one whole number per "
                               "voxel: 0 background, 1, 2, ... the classes, -1 unlabelled.")
            warn_if_placed_apart(g[0], lv)
    if masks and len(masks) != len(groups):
        raise CliError(f"Give one --label-mask per --label group (got {len(masks)} and "
                       f"{len(groups)}); a mask applies to every rater file of its group.")
    for m, raters in zip(masks, groups):
        mv = io.read_spatial(m)
        lv = raters[0]
        if mv.data.shape != lv.data.shape:
            raise CliError(f"{m} has shape {mv.data.shape} but {lv.path} has {lv.data.shape}.")
        if not np.all(np.isfinite(mv.data)):
            raise CliError(f"{m} holds NaN or infinite values; an annotation mask is 1 where "
                           "voxels are labelled, 0 elsewhere.")
        warn_if_placed_apart(lv, mv)
        for lv in raters:
            # Voxels outside the annotation mask are unlabelled, not background.
            lv.data = np.where(mv.data > 0, np.asarray(lv.data, np.float32), -1).astype(np.float32)
    where = " where its --label-mask is not 0" if masks else ""
    for raters in groups:
        if all(lv.data.size and not np.any(lv.data > 0) for lv in raters):
            if len(raters) == 1:
                raise CliError(f"{raters[0].path}: label volume is empty (no value > 0{where}); "
                               "label at least one structure.")
            raise CliError(f"every rater's label volume is empty (no value > 0{where}): "
                           f"{', '.join(str(lv.path) for lv in raters)}; at least one rater "
                           "must label a structure.")
    return groups


def prepare_cases(vols: Sequence[Sequence[io.Volume]], groups: Sequence[Sequence[io.Volume]], *,
                  mapping: LabelMapping, config: TrainConfig
                  ) -> tuple[list[Case], tuple[Any, ...]]:
    """One training case per image group: plain with one label file, multi-rater with several.

    Parameters
    ----------
    vols : sequence of sequence of io.Volume
        The channels of each case.
    groups : sequence of sequence of io.Volume
        From :func:`read_label_groups`.
    mapping : LabelMapping
        Built from every label volume of every case.
    config : TrainConfig

    Returns
    -------
    cases : list of Case
    norms : tuple of ChannelNorm
        The first case's intensity normalisation, kept in the model file for reference
        (each image is normalised by its own statistics when predicted).

    Raises
    ------
    CliError
        A core validation error (NaN, foreground outside the image, ...), its message kept.
    """
    from napari_medseg.core.prepare import prepare_case, prepare_rater_case

    cases = []
    norms: tuple[Any, ...] = ()
    for g, raters in zip(vols, groups):
        chans = [v.data for v in g]
        names = [str(v.path) for v in g]
        try:
            if len(raters) == 1:
                lv = raters[0]
                case, prep = prepare_case(chans, lv.data, g[0].spacing, mapping=mapping,
                                          config=config, name=str(lv.path), channel_names=names)
            else:
                case, prep = prepare_rater_case(chans, [lv.data for lv in raters], g[0].spacing,
                                                mapping=mapping, config=config,
                                                name=str(g[0].path), channel_names=names,
                                                rater_names=[str(lv.path) for lv in raters])
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        cases.append(case)
        norms = norms or tuple(prep.norms)
    return cases, norms


def rater_summary(groups: Sequence[Sequence[object]], mode: str) -> str | None:
    """``"raters ('soft'): case 1: 3 raters, case 2: 1 label"``; None when no case has several."""
    if all(len(g) == 1 for g in groups):
        return None
    parts = [f"case {i}: {len(g)} raters" if len(g) > 1 else f"case {i}: 1 label"
             for i, g in enumerate(groups, 1)]
    return f"raters ({mode!r}): " + ", ".join(parts)
