"""One scan as torch tensors at model resolution, and a batch iterator without per-sample overhead.

Model units (see :class:`pipeline.stats.NormalizationStats`):

- images: area-averaged to the model resolution, then ``(x - image_mean) / image_std`` with the
  training statistics of the source images (area averaging keeps the mean; the std of the smaller
  images comes out slightly below 1);
- responses: clipped at 0 and divided by each unit's training std;
- behaviour and pupil centre: standardised with training mean and std.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.recording import TIERS, Recording
from pipeline.stats import NormalizationStats


def downsample_images(images: np.ndarray, shape: tuple[int, int], chunk: int = 512) -> np.ndarray:
    """Area-average ``images`` (n, H, W) to ``shape`` (h, w); float32.  Exact block means for integer factors."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"downsample_images: expected (n, H, W), got shape {images.shape}")
    h, w = shape
    if images.shape[1:] == (h, w):
        return images.astype(np.float32, copy=False)
    if images.shape[1] < h or images.shape[2] < w:
        raise ValueError(f"downsample_images: cannot upsample {images.shape[1:]} to {(h, w)}")
    out = np.empty((len(images), h, w), dtype=np.float32)
    for start in range(0, len(images), chunk):
        block = torch.from_numpy(images[start : start + chunk].astype(np.float32))[:, None]
        out[start : start + chunk] = F.adaptive_avg_pool2d(block, (h, w))[:, 0].numpy()
    return out


class Batch(NamedTuple):
    """A batch of trials: images (B,1,h,w), responses (B,n_units), behavior (B,3), pupil_center (B,2)."""

    images: torch.Tensor
    responses: torch.Tensor
    behavior: torch.Tensor
    pupil_center: torch.Tensor


@dataclasses.dataclass
class ScanTensors:
    """Trials of one scan in model units (see module docstring).

    Attributes
    ----------
    images : (n_trials, 1, h, w) float32.
    responses : (n_trials, n_units) float32, clipped at 0 and divided by ``response_std``;
        zero for withheld trials.
    behavior : (n_trials, 3) float32, standardised.
    pupil_center : (n_trials, 2) float32, standardised.
    tiers : (n_trials,) str.
    image_ids : (n_trials,) int64, stimulus of each trial.
    trial_idx : (n_trials,) int64.
    withheld : (n_trials,) bool, responses withheld (no information).
    response_std : (n_units,) float64, the training std the responses were divided by:
        ``original units = model units * response_std``.
    """

    images: torch.Tensor
    responses: torch.Tensor
    behavior: torch.Tensor
    pupil_center: torch.Tensor
    tiers: np.ndarray
    image_ids: np.ndarray
    trial_idx: np.ndarray
    withheld: np.ndarray
    response_std: np.ndarray

    @classmethod
    def from_recording(
        cls, recording: Recording, stats: NormalizationStats, image_shape: tuple[int, int] = (36, 64)
    ) -> "ScanTensors":
        """Convert a :class:`Recording` to model units with ``stats`` (from its training trials)."""
        if len(stats.response_std) != recording.n_units:
            raise ValueError(
                f"from_recording: stats are for {len(stats.response_std)} units, scan "
                f"{recording.scan_name} has {recording.n_units}"
            )
        unique = downsample_images(recording.images, (image_shape[0], image_shape[1]))
        unique = (unique - np.float32(stats.image_mean)) / np.float32(stats.image_std)
        position = {int(i): k for k, i in enumerate(recording.image_ids)}
        index = torch.as_tensor([position[int(i)] for i in recording.trial_image_ids], dtype=torch.long)
        images = torch.from_numpy(unique)[index][:, None].contiguous()

        withheld = np.asarray(recording.withheld, bool)
        responses = np.clip(np.asarray(recording.responses, dtype=np.float64), 0, None) / stats.response_std
        responses[withheld] = 0.0

        def standardise(values, mean, std):
            return torch.from_numpy(((np.asarray(values, np.float64) - mean) / std).astype(np.float32))

        return cls(
            images=images,
            responses=torch.from_numpy(responses.astype(np.float32)),
            behavior=standardise(recording.behavior, stats.behavior_mean, stats.behavior_std),
            pupil_center=standardise(recording.pupil_center, stats.pupil_center_mean, stats.pupil_center_std),
            tiers=np.asarray(recording.tiers).astype(str),
            image_ids=np.asarray(recording.trial_image_ids, dtype=np.int64),
            trial_idx=np.asarray(recording.trial_idx, dtype=np.int64),
            withheld=withheld,
            response_std=np.asarray(stats.response_std, dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.tiers)

    @property
    def n_units(self) -> int:
        return self.responses.shape[1]

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, index: np.ndarray) -> "ScanTensors":
        """The trials at ``index`` (integer or boolean array), same order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        rows = torch.as_tensor(index, dtype=torch.long)
        return dataclasses.replace(
            self,
            images=self.images[rows],
            responses=self.responses[rows],
            behavior=self.behavior[rows],
            pupil_center=self.pupil_center[rows],
            tiers=self.tiers[index],
            image_ids=self.image_ids[index],
            trial_idx=self.trial_idx[index],
            withheld=self.withheld[index],
        )

    def split(self, tier: str | Sequence[str], include_withheld: bool = False) -> "ScanTensors":
        """Trials of ``tier`` (a name or several); withheld trials only when ``include_withheld``."""
        tiers = (tier,) if isinstance(tier, str) else tuple(tier)
        unknown = sorted(set(tiers) - set(TIERS))
        if unknown:
            raise ValueError(f"split: unknown tier(s) {unknown}; expected some of {list(TIERS)}")
        keep = np.isin(self.tiers, tiers)
        if not include_withheld:
            keep &= ~self.withheld
        return self.subset(keep)

    def mean_responses(self) -> np.ndarray:
        """(n_units,) mean model-unit response over the non-withheld trials (for readout bias init)."""
        kept = torch.as_tensor(~self.withheld)
        if not kept.any():
            raise ValueError("mean_responses: every trial is withheld")
        return self.responses[kept].mean(dim=0).double().numpy()

    def to(self, device: torch.device | str) -> "ScanTensors":
        """Copy of the tensors on ``device`` (pinned, non-blocking transfer to CUDA)."""
        device = torch.device(device)

        def move(t: torch.Tensor) -> torch.Tensor:
            if device.type == "cuda" and t.device.type == "cpu":
                return t.pin_memory().to(device, non_blocking=True)
            return t.to(device)

        return dataclasses.replace(
            self,
            images=move(self.images),
            responses=move(self.responses),
            behavior=move(self.behavior),
            pupil_center=move(self.pupil_center),
        )

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """One pass over the trials in batches of ``batch_size`` (last one smaller), by direct indexing.

        Shuffling draws the order on the CPU from ``generator`` so that it does not depend on the device.
        """
        if batch_size < 1:
            raise ValueError(f"batches: batch_size must be positive, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            yield Batch(self.images[rows], self.responses[rows], self.behavior[rows], self.pupil_center[rows])
