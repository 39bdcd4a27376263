"""Tensor memory layout at the boundaries of the networks.

oneDNN chooses convolution kernels by CPU instruction set *and* by the input's strides.  A tensor
can be "contiguous" for torch and still carry unusual strides: for a one-channel batch made by
``permute(0, 3, 1, 2)``, ``.contiguous()`` is a no-op because the stride of a size-1 dimension is
ignored, and the tensor keeps strides ``(H*W, 1, W, 1)``.  On AVX2-only CPUs the convolution
backward chosen for that layout hangs or corrupts memory, while AVX-512 machines run it fine.
Channels-last inputs and expanded (stride-0) batches likewise select kernels the rest of the
pipeline never exercises.  So every network normalises its input here, once, at its entry: the one
layout all our kernels are tested with, whatever the caller (training, attacks, noise, stimulus
batches) did to the tensor before.
"""

from __future__ import annotations

import torch


def row_major_strides(shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    """The strides of a freshly allocated (C-order) tensor of ``shape``, size-1 dimensions included."""
    strides, step = [], 1
    for size in reversed(tuple(shape)):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


def standard_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its strides are row-major, else a row-major copy (same values, same device).

    ``x.contiguous()`` is not enough: it keeps the strides of size-1 dimensions and of channels-last
    tensors that torch already calls contiguous.  Autograd flows through the copy.
    """
    if x.stride() == row_major_strides(x.shape) and x.storage_offset() == 0:
        return x
    return x.clone(memory_format=torch.contiguous_format)
