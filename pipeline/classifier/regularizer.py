"""Neural-similarity regularizer of Li et al. (NeurIPS 2019).

For a batch of P image pairs (a_m, b_m) and a set of network layers k:

* centring: each layer's feature maps are centred by a per-channel running mean ``mu_k`` (C_k,).
  In training mode, before centring, the mean of the batch over images *and* spatial positions
  (every image of the batch, e.g. both members of P disjoint pairs) updates it as
  ``mu_k <- momentum * mu_k + (1 - momentum) * batch_mean`` with ``momentum = 0.9``; the very first
  update sets ``mu_k = batch_mean`` (no bias towards the zero initialisation).  Centring uses the
  updated running mean, detached from the graph (like batch norm's running statistics, it is an
  estimate, not something to optimise).  In eval mode ``mu_k`` is used as is.
* ``S_k[m] = cos(flatten(f_k(a_m) - mu_k), flatten(f_k(b_m) - mu_k))``; pairs may share images
  (:meth:`SimilarityRegularizer.pair_similarities`): each image of the batch then goes through the
  network once and counts once in the batch mean;
* ``S_model[m] = sum_k softmax(gamma)_k S_k[m]`` with trainable logits ``gamma`` (zeros initially:
  equal weights);
* loss ``= mean_m (arctanh(c(S_model[m])) - arctanh(c(S_neural[m])))^2`` where ``c`` clamps to
  ``[-1 + eps, 1 - eps]`` so that identical images (cosine 1) give a finite loss.

Note ``momentum`` follows the paper's convention (weight of the old value), the opposite of
``torch.nn.BatchNorm``'s.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


def fisher_z_loss(s_model: torch.Tensor, s_neural: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean squared difference of arctanh-transformed similarities, both clamped to (-1, 1) by ``eps``."""
    if s_model.shape != s_neural.shape:
        raise ValueError(f"s_model {tuple(s_model.shape)} and s_neural {tuple(s_neural.shape)} differ in shape")
    lim = 1.0 - eps
    z_model = torch.atanh(s_model.clamp(-lim, lim))
    z_neural = torch.atanh(s_neural.to(s_model.dtype).clamp(-lim, lim))
    return (z_model - z_neural).pow(2).mean()


class SimilarityRegularizer(nn.Module):
    """Similarity of network features on image pairs, and its distance to a neural similarity.

    Parameters
    ----------
    layer_channels : ordered mapping layer name -> number of channels (e.g.
        ``{name: model.feature_channels[name] for name in layers}``).
    momentum : weight of the old running mean in the per-channel running-mean update (paper: 0.9).
    eps : clamping margin before arctanh.

    Buffers ``running_mean_<layer>`` (C,) and ``n_updates``; parameter ``gamma`` (n_layers,).
    """

    n_updates: torch.Tensor  # () long, buffer

    def __init__(self, layer_channels: Mapping[str, int], momentum: float = 0.9, eps: float = 1e-4):
        super().__init__()
        if not layer_channels:
            raise ValueError("layer_channels is empty: the regularizer needs at least one layer")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        self.layers = tuple(layer_channels)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.gamma = nn.Parameter(torch.zeros(len(self.layers)))
        for name, channels in layer_channels.items():
            self.register_buffer(f"running_mean_{name}", torch.zeros(int(channels)))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    def running_mean(self, layer: str) -> torch.Tensor:
        """(C,) current running mean of ``layer``."""
        return getattr(self, f"running_mean_{layer}")

    def layer_weights(self) -> dict[str, float]:
        """Layer name -> softmax(gamma) weight (sums to 1)."""
        return dict(zip(self.layers, torch.softmax(self.gamma.detach(), 0).tolist()))

    def _centred(self, name: str, features: torch.Tensor, first: bool) -> torch.Tensor:
        """(N, C, ...) features of N images minus the layer's running mean (updated first in training)."""
        running = self.running_mean(name)
        if features.ndim < 2 or features.shape[1] != running.numel():
            raise ValueError(
                f"layer {name}: features must have shape (N, {running.numel()}, ...), got {tuple(features.shape)}"
            )
        if self.training:
            with torch.no_grad():
                dims = [0] + list(range(2, features.ndim))
                batch_mean = features.mean(dim=dims).to(running.dtype)
                if first:
                    running.copy_(batch_mean)
                else:
                    running.mul_(self.momentum).add_(batch_mean, alpha=1.0 - self.momentum)
        shape = (1, -1) + (1,) * (features.ndim - 2)
        return features - running.detach().to(features.dtype).view(shape)

    def pair_similarities(
        self, features: Mapping[str, torch.Tensor], first: torch.Tensor, second: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model similarity of pairs of images that share one batch.

        Parameters
        ----------
        features : layer name -> (N, C, H, W) features of N images; in training mode their mean over
            images and positions updates the running means.
        first, second : (P,) long indices into the N images of each pair's members.

        Returns
        -------
        s_model : (P,) weighted similarity ``sum_k softmax(gamma)_k S_k``.
        s_layers : (P, n_layers) per-layer cosines ``S_k`` in the order of :attr:`layers`.

        The cosines of all N x N pairs come from one product of unit-length rows, so P can reach
        N (N - 1) / 2 at the cost of the N images' forward pass.
        """
        missing = [name for name in self.layers if name not in features]
        if missing:
            raise ValueError(f"features missing for layer(s) {missing}")
        if first.shape != second.shape or first.ndim != 1:
            raise ValueError(
                f"first and second must be (P,) index tensors, got {tuple(first.shape)}, {tuple(second.shape)}"
            )
        initial = self.training and int(self.n_updates) == 0
        per_layer = []
        for name in self.layers:
            flat = self._centred(name, features[name], initial).flatten(1)
            unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-8)
            per_layer.append((unit @ unit.T)[first, second])
        if self.training:
            self.n_updates += 1
        s_layers = torch.stack(per_layer, dim=1)
        weights = torch.softmax(self.gamma, 0).to(s_layers.dtype)
        return s_layers @ weights, s_layers

    def similarities(
        self, features_a: Mapping[str, torch.Tensor], features_b: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model similarity of pairs (a_m, b_m): :meth:`pair_similarities` of the 2P images [a; b].

        features_a, features_b : layer name -> (P, C, H, W) features of the first / second members.
        """
        missing = [name for name in self.layers if name not in features_a or name not in features_b]
        if missing:
            raise ValueError(f"features missing for layer(s) {missing}")
        shapes = {name: (tuple(features_a[name].shape), tuple(features_b[name].shape)) for name in self.layers}
        unequal = {name: pair for name, pair in shapes.items() if pair[0] != pair[1]}
        if unequal:
            raise ValueError(f"pair features must share a shape per layer, got {unequal}")
        p = len(features_a[self.layers[0]])
        device = features_a[self.layers[0]].device
        joined = {name: torch.cat([features_a[name], features_b[name]]) for name in self.layers}
        return self.pair_similarities(joined, torch.arange(p, device=device), torch.arange(p, 2 * p, device=device))

    def pair_loss(
        self, features: Mapping[str, torch.Tensor], first: torch.Tensor, second: torch.Tensor, s_neural: torch.Tensor
    ) -> torch.Tensor:
        """Scalar loss over the pairs ``(first[m], second[m])`` of one batch's images, (P,) target ``s_neural``."""
        s_model, _ = self.pair_similarities(features, first, second)
        return fisher_z_loss(s_model, s_neural, self.eps)

    def forward(
        self,
        features_a: Mapping[str, torch.Tensor],
        features_b: Mapping[str, torch.Tensor],
        s_neural: torch.Tensor,
    ) -> torch.Tensor:
        """Scalar loss ``mean_m (arctanh S_model - arctanh S_neural)^2`` for (P,) target ``s_neural``."""
        s_model, _ = self.similarities(features_a, features_b)
        return fisher_z_loss(s_model, s_neural, self.eps)
