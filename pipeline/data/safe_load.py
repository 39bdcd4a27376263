"""Loading files from strangers: ``.npy``, ``.npz`` and pickles, with no code run and sizes checked first.

- :class:`ArrayOnlyUnpickler` rebuilds dicts, lists, tuples, strings, numbers, dates and times, and
  numpy arrays and dtypes, and refuses every other global a pickle names (``os.system``, ``builtins.eval``, ...), so
  unpickling a collaborator's file runs no code.
- :func:`read_npy`, :func:`read_pickled_npy` and :func:`read_npz` read the array header first
  (numpy's own ``read_magic`` / ``read_array_header_*``), charge the declared size to the import's
  :class:`~pipeline.data.limits.Budget`, and only then read the bytes, into one buffer of that size.
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from pipeline.data.limits import Budget, ErrorFactory, nbytes_of

PICKLE_AMPLIFICATION = 40
"""Most bytes of Python objects a pickle can build per byte of file (an empty dict, 64 bytes, from
two opcode bytes): a pickled file may be at most the largest array over this."""


def _numpy_attr(module_path: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module_path), name)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled numpy array may name, under numpy.core (numpy<2) and numpy._core (numpy>=2)."""
    import codecs
    import datetime

    core = "numpy._core" if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else "numpy.core"
    reconstruct = _numpy_attr(f"{core}.multiarray", "_reconstruct")
    scalar = _numpy_attr(f"{core}.multiarray", "scalar")
    frombuffer = _numpy_attr(f"{core}.numeric", "_frombuffer")
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # suite2p 0.14 stores when it ran (ops["date_proc"], a timezone-aware datetime) and durations
        ("datetime", "datetime"): datetime.datetime,
        ("datetime", "date"): datetime.date,
        ("datetime", "timedelta"): datetime.timedelta,
        ("datetime", "timezone"): datetime.timezone,
        # protocol-2 pickles written by Python 3 spell bytes objects as _codecs.encode(str, 'latin1')
        ("_codecs", "encode"): codecs.encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = frombuffer
    return allowed


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild dicts, lists, strings, numbers and numpy arrays, and nothing else."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if ArrayOnlyUnpickler._allowed is None:
            ArrayOnlyUnpickler._allowed = _allowed_globals()
        try:
            return ArrayOnlyUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def npy_header(stream: IO[bytes], error: ErrorFactory) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from the ``.npy`` header at the stream's position (numpy's parser)."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, SyntaxError, UnicodeDecodeError, EOFError, OverflowError) as e:
        raise error(f"not a readable .npy header ({' '.join(str(e).split())[:160]})") from None
    return tuple(int(n) for n in shape), bool(fortran), dtype


def _check_numeric_header(stream: IO[bytes], error: ErrorFactory) -> int:
    """Decoded bytes declared by the header at the stream's position; refuses pickled objects."""
    shape, _, dtype = npy_header(stream, error)
    if dtype.hasobject:
        raise error(f"holds Python objects (dtype {dtype}) where a numeric array is expected (wrong dtype)")
    return nbytes_of(shape, dtype)


def read_npy(path: Path, budget: Budget, error: ErrorFactory) -> np.ndarray:
    """A numeric ``.npy`` file, its declared size charged to ``budget`` before it is read.

    A header that declares more data than the file holds is refused (numpy would fail later, after
    allocating the declared size)."""
    with open(path, "rb") as f:
        nbytes = _check_numeric_header(f, error)
        held = path.stat().st_size - f.tell()
        if held < nbytes:
            raise error(f"the header declares {nbytes} bytes of data but the file holds {held} (truncated?)")
    budget.charge(nbytes, error)
    return np.load(path, allow_pickle=False)


def charge_pickle(path: Path, budget: Budget, error: ErrorFactory) -> None:
    """Charge a pickled file before it is unpickled: its size to the import's total, and
    :data:`PICKLE_AMPLIFICATION` times its size (what its objects may take at most) to the per-array limit."""
    stored = path.stat().st_size
    budget.charge(PICKLE_AMPLIFICATION * stored, error, total=stored)


def read_pickled_npy(path: Path, budget: Budget, error: ErrorFactory) -> Any:
    """The object array of a pickled ``.npy`` (suite2p's ``ops.npy``, ``stat.npy``), unpickled by
    :class:`ArrayOnlyUnpickler` after :func:`charge_pickle`."""
    charge_pickle(path, budget, error)
    with open(path, "rb") as f:
        _, _, dtype = npy_header(f, error)
        if not dtype.hasobject:
            raise error(f"dtype {dtype} holds no pickled objects")
        try:
            return ArrayOnlyUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise error(f"refused: {e}") from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            raise error(f"not a readable pickle ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None


def read_npz(path: Path, budget: Budget, error: ErrorFactory) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``: each member's header is read and the declared sizes are checked
    (against the budget, and all together against the file's size) before any array is inflated;
    arrays are then read in chunks into buffers of their declared size."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
            declared = {}
            for info in members:
                with archive.open(info) as member:
                    declared[info.filename] = _check_numeric_header(member, _in(error, info.filename))
            budget.check_expansion(sum(declared.values()), path.stat().st_size, error)
            for name, nbytes in declared.items():
                budget.charge(nbytes, _in(error, name))
            arrays = {}
            for info in members:
                with archive.open(info) as member:
                    arrays[info.filename[: -len(".npy")]] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise error(f"not a readable .npz ({' '.join(str(e).split())[:160]})") from None


def _in(error: ErrorFactory, member: str) -> ErrorFactory:
    """``error`` with the member's name in front of the problem."""
    return lambda problem: error(f"{member}: {problem}")
