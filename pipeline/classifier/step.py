"""One optimizer update of a classifier on ``cross-entropy + alpha * similarity loss``.

Batch norm: the running statistics, which test-time evaluation uses, come from the classification
batches in every arm.  The stimulus batch is normalised with its own batch statistics (train mode)
and by default (``pair_bn_update=False``) leaves the running statistics alone.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.classifier.batches import PairBatch
from pipeline.classifier.config import ClassifierConfig
from pipeline.classifier.regularizer import SimilarityRegularizer
from pipeline.classifier.resnet import ResNet18

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
"""torch's batch-norm layers (their lazy variants subclass these)."""


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module, frozen: bool = True):
    """Batch norm layers keep using batch statistics in train mode but leave running statistics as is.

    torch updates ``running = (1 - momentum) * running + momentum * batch``; momentum 0 keeps them.
    """
    norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS)] if frozen else []
    saved = [m.momentum for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def training_step(
    model: ResNet18,
    regularizer: SimilarityRegularizer,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    pairs: PairBatch | None,
    config: ClassifierConfig,
) -> tuple[torch.Tensor, float, float | None]:
    """One optimizer update on ``cross-entropy + alpha * similarity loss`` (the baseline: ``pairs`` None).

    Every arm takes exactly one update per iteration, so weight decay and momentum act once per
    iteration in all of them; the arms differ only by the similarity term, and with ``alpha = 0``
    the regularized path gives the baseline's weights.  Batch norm: the running statistics come
    from the classification batches in every arm; the stimulus pairs are normalised with their
    own batch statistics and leave the running ones alone (unless ``config.pair_bn_update``).

    Returns the logits (B, n_classes, detached), the cross-entropy and the unweighted similarity
    loss (None for the baseline).
    """
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    similarity_loss = None
    total = loss
    if pairs is not None:
        with frozen_batchnorm_statistics(model, frozen=not config.pair_bn_update):
            _, features = model(pairs.images, return_features=config.layers)
        assert pairs.first is not None and pairs.second is not None  # filled in by PairBatch
        similarity_loss = regularizer.pair_loss(features, pairs.first, pairs.second, pairs.target)
        total = loss + config.alpha * similarity_loss
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return (logits.detach(), float(loss.detach()), None if similarity_loss is None else float(similarity_loss.detach()))
