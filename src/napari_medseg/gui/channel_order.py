"""Which checked Image layer feeds which channel of a trained model.

A model learns its channels in one order (``FLAIR, T1c``); the viewer lists layers in
whatever order they were opened or dragged to. Feeding them in list order silently
swaps the inputs, so the prediction and training widgets order the checked layers by
the model's channel names first. numpy-free and Qt-free.
"""

from __future__ import annotations

from collections.abc import Sequence

from napari_medseg.core import io


def channel_label(name: str) -> str:
    """A model channel's short name (a CLI-trained model stores paths: ``.../flair.nii.gz``)."""
    return io.file_stem(name)


def match_channels(model_channels: Sequence[str], layers: Sequence[str]) -> list[str] | None:
    """Order ``layers`` as the model's channels when each name points at exactly one layer.

    ``T1``/``FLAIR`` (or ``.../t1.nii.gz``) match the layers ``case2 t1`` and
    ``case2 flair`` whatever their order in the viewer: a layer name containing
    the channel's short name, ignoring case. None when any channel matches no
    layer or several, or two channels the same layer: then the list order stands.
    """
    if not model_channels or len(model_channels) != len(layers):
        return None
    keys = [channel_label(c).lower() for c in model_channels]
    picked = []
    for key in keys:
        hits = [x for x in layers if key and key in x.lower()]
        if len(hits) != 1:
            # "t1" is inside "t1c": prefer the layer whose name ends with the key
            hits = [x for x in hits if x.lower().rstrip().endswith(key)]
            if len(hits) != 1:
                return None
        picked.append(hits[0])
    return picked if len(set(picked)) == len(picked) else None


def order_for_model(model_channels: Sequence[str], checked: Sequence[str],
                    chosen: Sequence[str] | None = None) -> tuple[list[str], bool]:
    """The checked layers in the model's channel order, and whether names decided it.

    ``chosen``: an order the user or a caller set explicitly for exactly these layers;
    it wins. Then the model's own layer names, then :func:`match_channels`; else the
    list order stands (returned with False, so the caller can say so).
    """
    if chosen and set(chosen) == set(checked):
        return list(chosen), True
    if model_channels and set(model_channels) == set(checked) \
            and len(model_channels) == len(checked):
        return list(model_channels), True
    matched = match_channels(model_channels, checked)
    if matched:
        return matched, True
    return list(checked), False


def describe_order(model_channels: Sequence[str], names: Sequence[str]) -> str:
    """``"Channels: FLAIR <- 'case2 flair', T1c <- 'case2 t1c'."`` for the status line."""
    want = list(model_channels) or [f"channel {i + 1}" for i in range(len(names))]
    return "Channels: " + ", ".join(f"{channel_label(w)} <- '{x}'"
                                    for w, x in zip(want, names)) + "."
