"""Inspect models: activations, receptive fields and patches, probes, feature visualisation."""

from nettle.inspect.activations import LayerStats, TopK, activation_stats, capture, top_k
from nettle.inspect.attributions import (
    Attribution,
    attribute,
    grad_cam,
    integrated_gradients,
    saliency,
)
from nettle.inspect.featurevis import (
    FeatureVis,
    Objective,
    channel,
    class_model,
    deepdream,
    direction,
    fourier_image,
    neuron,
    pixel_image,
    render,
    standard_transforms,
)
from nettle.inspect.interpolation import InterpolationGrid, interpolate_grid
from nettle.inspect.probes import (
    AugmentationEffect,
    PatchSensitivity,
    PatchTransfer,
    Probabilities,
    TopPatches,
    augmentation_effect,
    interpolate_activation,
    paste_patch,
    patch_sensitivity,
    patch_transfer_effect,
    prediction_probabilities,
    top_patches,
)
from nettle.inspect.redirect import redirected_relu
from nettle.inspect.trace import (
    FieldTracer,
    Rect,
    UntraceableError,
    receptive_field,
    register_pointwise,
    register_receptive_field,
)

__all__ = [
    "Attribution",
    "AugmentationEffect",
    "FeatureVis",
    "FieldTracer",
    "InspectionFiles",
    "InterpolationGrid",
    "LayerStats",
    "Objective",
    "PatchSensitivity",
    "PatchTransfer",
    "Probabilities",
    "Rect",
    "TopK",
    "TopPatches",
    "UntraceableError",
    "activation_stats",
    "attribute",
    "augmentation_effect",
    "capture",
    "channel",
    "class_model",
    "deepdream",
    "direction",
    "fourier_image",
    "grad_cam",
    "inspect_run",
    "integrated_gradients",
    "interpolate_activation",
    "interpolate_grid",
    "neuron",
    "paste_patch",
    "patch_sensitivity",
    "patch_transfer_effect",
    "pixel_image",
    "prediction_probabilities",
    "receptive_field",
    "redirected_relu",
    "register_pointwise",
    "register_receptive_field",
    "render",
    "saliency",
    "standard_transforms",
    "top_k",
    "top_patches",
]


def __getattr__(name: str):
    """`inspect_run` and `InspectionFiles` load on first use (they pull in matplotlib)."""
    if name in ("inspect_run", "InspectionFiles"):
        from nettle.inspect import report

        return getattr(report, name)
    raise AttributeError(f"module 'nettle.inspect' has no attribute {name!r}")
