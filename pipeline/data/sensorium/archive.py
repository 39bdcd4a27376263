"""A dataset's files, in a folder or a zip, read under the import limits (:mod:`pipeline.data.limits`):
:func:`open_tree` finds the dataset root and returns a :class:`DatasetTree` that reads files by
relative path.

A zip member's declared size is checked before it is inflated (and all members' together against
the zip's own size) and its inflated bytes are capped at that size, so a zip bomb is refused at its
header; a folder's files are checked by their sizes; a .npy header's shape is checked against the
file's bytes (see :class:`~pipeline.data.sensorium.npy.NpyParser`), so arrays are bounded by files.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

from pipeline.data.limits import Budget, ImportLimits, size
from pipeline.data.sensorium.layout import SensoriumFormatError


class DatasetTree:
    """Read-only access to the files of one dataset, by path relative to its root."""

    label: str  # the folder or zip, for messages
    name: str  # name of the dataset folder (carries the scan identity)
    budget: Budget

    def charge(self, rel: str, nbytes: int) -> None:
        """Count ``nbytes`` about to be read from ``rel`` against the limits; refuse past them."""
        self.budget.charge(nbytes, lambda problem: self.error(rel, problem))

    def listdir(self, folder: str) -> list[str] | None:
        """File names directly inside ``folder``, or None when the folder does not exist."""
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def error(self, rel: str, problem: str) -> SensoriumFormatError:
        return SensoriumFormatError(rel, problem, self.label)


class FolderTree(DatasetTree):
    """A dataset in a folder on disk."""

    def __init__(self, root: Path, label: str, limits: ImportLimits | None = None):
        self.root, self.label, self.name, self.budget = root, label, root.name, Budget(limits)

    def listdir(self, folder: str) -> list[str] | None:
        path = self.root / folder
        if not path.is_dir():
            return None
        return [entry.name for entry in os.scandir(path) if entry.is_file()]

    def read(self, rel: str) -> bytes:
        try:
            self.charge(rel, (self.root / rel).stat().st_size)
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            raise self.error(rel, "missing file") from None
        except OSError as e:
            raise self.error(rel, f"cannot read file ({e})") from None

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()


class ZipTree(DatasetTree):
    """A dataset inside a zip archive (under ``prefix``), read in memory."""

    def __init__(
        self, archive: zipfile.ZipFile, prefix: str, label: str, name: str, limits: ImportLimits | None = None
    ):
        self.archive, self.prefix, self.label, self.name = archive, prefix, label, name
        self.budget = Budget(limits)
        self.members = {
            info.filename[len(prefix) :]: info
            for info in archive.infolist()
            if info.filename.startswith(prefix) and not info.is_dir()
        }
        self.folders: dict[str, list[str]] = {}
        for rel in self.members:
            folder, _, file = rel.rpartition("/")
            self.folders.setdefault(folder, []).append(file)
            # register every ancestor so that listdir tells empty from missing folders
            while folder:
                folder = folder.rpartition("/")[0]
                self.folders.setdefault(folder, [])

    def check_declared(self, stored: int) -> None:
        """Refuse a zip of ``stored`` bytes whose members declare more than the limits, before inflating any."""
        limits = self.budget.limits
        declared = sum(info.file_size for info in self.members.values())
        self.budget.check_expansion(declared, stored, lambda problem: self.error(".", f"the zip {problem}"))
        if declared > limits.max_total_bytes:
            raise self.error(
                ".",
                f"the zip declares {size(declared)} decompressed, over the import limit of "
                f"{size(limits.max_total_bytes)} in all",
            )
        for rel, info in self.members.items():
            if info.file_size > limits.max_array_bytes:
                self.charge(rel, info.file_size)  # raises, naming the member

    def listdir(self, folder: str) -> list[str] | None:
        return self.folders.get(folder.rstrip("/"))

    def read(self, rel: str) -> bytes:
        info = self.members.get(rel)
        if info is None:
            raise self.error(rel, "missing file")
        self.charge(rel, info.file_size)
        try:
            with self.archive.open(info) as member:
                # Never inflate past the declared size, whatever the compressed stream holds.
                data = member.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise self.error(
                    rel, f"zip member inflates to another size than the {info.file_size} bytes it declares"
                )
            return data
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError) as e:
            raise self.error(rel, f"cannot read zip member ({e})") from None

    def exists(self, rel: str) -> bool:
        return rel in self.members

    def close(self) -> None:
        self.archive.close()


def open_tree(path: Path, limits: ImportLimits | None = None) -> DatasetTree:
    """Find the dataset root in a folder or zip (the root itself or one level down)."""
    label = str(path)
    if not path.exists():
        raise SensoriumFormatError(path.name, "no such file or folder", label)
    if path.is_dir():
        for root in [path] + sorted(p for p in path.iterdir() if p.is_dir()):
            if (root / "data").is_dir() and (root / "meta").is_dir():
                return FolderTree(root, label, limits)
        raise SensoriumFormatError(
            ".", "missing folder data/ or meta/ (looked in the folder and one level down)", label
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise SensoriumFormatError(path.name, f"not a readable zip archive ({e})", label) from None
    names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names if "/" in name}
    for prefix in [""] + [top + "/" for top in sorted(tops) if not top.startswith("__MACOSX")]:
        if any(n.startswith(prefix + "data/") for n in names) and any(n.startswith(prefix + "meta/") for n in names):
            zipped = ZipTree(archive, prefix, label, prefix.rstrip("/") or path.stem, limits)
            try:
                zipped.check_declared(path.stat().st_size)
            except SensoriumFormatError:
                archive.close()
                raise
            return zipped
    archive.close()
    raise SensoriumFormatError(
        ".", "missing folder data/ or meta/ (looked at the top of the zip and one level down)", label
    )
