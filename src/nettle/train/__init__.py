"""nettle.train: one training loop for every kind of run, with its data, schedules and guards.

Example:
    >>> from nettle.config import TrainConfig
    >>> from nettle.train import Trainer, create_dataset
    >>> trainer = Trainer(model, create_dataset("digits"), create_dataset("digits", "test"),
    ...                   TrainConfig(epochs=2))  # doctest: +SKIP
    >>> trainer.fit()["final"]["test_acc"]  # doctest: +SKIP
"""

from nettle.train.augment import BatchAugment, build_augment
from nettle.train.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from nettle.train.ctc import CTCMetric, CTCObjective
from nettle.train.data import DatasetInfo, create_dataset, get_dataset_info, list_datasets
from nettle.train.guards import (
    NonFiniteLossError,
    check_finite,
    clip_gradients,
    default_dtype_guard,
)
from nettle.train.loop import Trainer, build_optimizer, evaluate, resolve_device
from nettle.train.objectives import (
    ClassificationMetric,
    CrossEntropy,
    EvalMetric,
    LossOutput,
    Objective,
)
from nettle.train.schedules import SCHEDULES, create_scheduler, lr_at, schedule_factor

__all__ = [
    "SCHEDULES",
    "BatchAugment",
    "CTCMetric",
    "CTCObjective",
    "CheckpointError",
    "ClassificationMetric",
    "CrossEntropy",
    "DatasetInfo",
    "EvalMetric",
    "LossOutput",
    "NonFiniteLossError",
    "Objective",
    "Trainer",
    "build_augment",
    "build_optimizer",
    "capture_rng",
    "check_finite",
    "clip_gradients",
    "create_dataset",
    "create_scheduler",
    "default_dtype_guard",
    "evaluate",
    "get_dataset_info",
    "list_datasets",
    "load_checkpoint",
    "lr_at",
    "resolve_device",
    "restore_rng",
    "save_checkpoint",
    "schedule_factor",
]
