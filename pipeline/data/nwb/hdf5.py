"""Opening an NWB (HDF5) file so that it reads only what is inside it, within the import limits.

HDF5 can make a file read other files: a dataset's raw data can live in external files
(``dataset.external``, e.g. ``/etc/passwd``), a link can point into another file
(``h5py.ExternalLink``), a virtual dataset maps other datasets (``dataset.is_virtual``), and the
family, split and multi file drivers spread one file over several.  :func:`open_hdf5` opens the
file with the default driver and refuses each of these before pynwb reads anything; it also
refuses a file whose datasets declare more data than the expansion limit allows for its size
(unallocated datasets take no bytes on disk).  :func:`read` reads one dataset after charging its
declared size to the import's budget (set for the read by :func:`reading`).
"""

from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.data.extraction import InputError
from pipeline.data.limits import Budget, nbytes_of

DEFAULT_DRIVER = "sec2"


def open_hdf5(path: Path, budget: Budget):
    """``path`` opened read-only with the default driver, once :func:`audit` found nothing outside it.
    Raises :class:`InputError` naming the file and the object."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except Exception as e:  # h5py raises OSError, ValueError... for a file it cannot open
        raise InputError(
            path,
            "file",
            f"not a readable NWB file (HDF5 file with the default driver: {' '.join(str(e).split())[:200]})",
        ) from None
    try:
        if file.driver != DEFAULT_DRIVER:
            raise InputError(path, "file", f"opened with the {file.driver!r} file driver; only {DEFAULT_DRIVER!r}")
        audit(file, path, budget)
    except BaseException:
        file.close()
        raise
    return file


def audit(file, path: Path, budget: Budget) -> None:
    """Refuse external links, external storage and virtual datasets anywhere in ``file``, and declared
    data beyond the expansion limit for the file's size."""
    import h5py

    def external(name: str, target) -> tuple[str, str] | None:  # not None: stop, h5py cannot raise from here
        return (name, f"{target.filename}:{target.path}") if isinstance(target, h5py.ExternalLink) else None

    found = file.visititems_links(external)
    if found is not None:
        raise InputError(path, found[0], f"external link to {found[1]}; refusing to read other files")
    declared = 0

    def outside(name: str, obj) -> tuple[str, str] | None:  # the same: a refusal is returned, not raised
        nonlocal declared
        if not isinstance(obj, h5py.Dataset):
            return None
        if obj.is_virtual:
            return name, "virtual dataset (maps other datasets or files); refusing to read it"
        if obj.external:
            files = sorted({str(entry[0]) for entry in obj.external})
            return name, f"external storage in {files}; refusing to read other files"
        declared += nbytes_of(obj.shape, obj.dtype) if obj.shape is not None else 0  # None: an empty dataspace
        return None

    found = file.visititems(outside)
    if found is not None:
        raise InputError(path, *found)
    budget.check_expansion(declared, path.stat().st_size, lambda problem: InputError(path, "file", problem))


@contextlib.contextmanager
def reading(path: Path, budget: Budget) -> Iterator[None]:
    """Within the block, :func:`read` charges ``budget`` and names ``path`` in its errors."""
    token = _READING.set((path, budget))
    try:
        yield
    finally:
        _READING.reset(token)


def charge(data: Any, field: str) -> None:
    """Charge the declared size (shape x dtype) of ``data`` (an h5py dataset, or an array or wrapper
    pynwb holds) to the budget of :func:`reading`, before it is read."""
    path, budget = _READING.get()
    if getattr(data, "dtype", None) is None:  # an hdmf VectorData column holds its dataset in .data
        data = getattr(data, "data", data)
    shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", None)
    if shape is not None and dtype is not None:
        budget.charge(nbytes_of(tuple(shape), np.dtype(dtype)), lambda problem: InputError(path, field, problem))


def read(data: Any, field: str) -> np.ndarray:
    """All of ``data`` as an array, after :func:`charge`."""
    charge(data, field)
    return np.asarray(data[()] if getattr(data, "shape", None) == () else data[:])


_READING: contextvars.ContextVar[tuple[Path, Budget]] = contextvars.ContextVar("nwb_reading")
