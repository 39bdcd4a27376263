"""Small fake ``cifar-10-batches-py`` folders for tests.

``key_spelling`` selects how the dict keys (and label names) are stored:

- ``"py2"``: what the real download holds — a protocol-2 pickle in which every Python-2 ``str``
  (keys, label names and the raw bytes of each array) is a BINSTRING, and arrays are rebuilt through
  ``numpy.core.multiarray._reconstruct``;
- ``"bytes"``: a Python-3 protocol-2 pickle with ``bytes`` keys (``b'data'``);
- ``"str"``: a Python-3 protocol-2 pickle with ``str`` keys (``'data'``).
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

from pipeline.data.cifar import CIFAR10_META_FILE, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES

LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
KEY_SPELLINGS = ("py2", "bytes", "str")


class _Python2StylePickler(pickle._Pickler):
    """Writes ``bytes`` as Python-2 ``str`` opcodes and names numpy's pre-2.0 module path."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def dump(obj: object, path: Path, key_spelling: str) -> None:
    """Pickle ``obj`` (whose keys are str) to ``path`` in the given key spelling."""
    if key_spelling not in KEY_SPELLINGS:
        raise ValueError(f"key_spelling must be one of {KEY_SPELLINGS}, got {key_spelling!r}")
    if key_spelling in ("py2", "bytes"):
        obj = _to_bytes_keys(obj)
    if key_spelling == "py2":
        buffer = io.BytesIO()
        _Python2StylePickler(buffer, protocol=2).dump(obj)
        Path(path).write_bytes(buffer.getvalue())
    else:
        Path(path).write_bytes(pickle.dumps(obj, protocol=2))


def _to_bytes_keys(obj):
    if isinstance(obj, dict):
        return {k.encode("latin1"): _to_bytes_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_bytes_keys(v) for v in obj]
    if isinstance(obj, str):
        return obj.encode("latin1")
    return obj


def fake_batch(n: int, rng: np.random.Generator, name: str) -> dict:
    """A batch dict with str keys: random RGB rows and labels covering every class."""
    labels = np.arange(n) % len(LABEL_NAMES)
    rng.shuffle(labels)
    return {
        "batch_label": name,
        "labels": [int(v) for v in labels],
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        "filenames": [f"img_{name}_{i}.png" for i in range(n)],
    }


def write_fake_cifar10(root: str | Path, n_per_batch: int = 20, key_spelling: str = "py2", seed: int = 0) -> Path:
    """Create ``root/cifar-10-batches-py`` with 5 train batches and 1 test batch of ``n_per_batch``
    random images each; returns the folder.  The same seed gives the same pixels in every spelling."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
        dump(fake_batch(n_per_batch, rng, name), folder / name, key_spelling)
    dump(
        {"label_names": list(LABEL_NAMES), "num_cases_per_batch": n_per_batch, "num_vis": 3072},
        folder / CIFAR10_META_FILE,
        key_spelling,
    )
    return folder
