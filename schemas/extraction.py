"""Scans extracted from imaging traces (suite2p folder, NWB file): the extraction config and the ROI of
each unit.

Tables of the ``recordings`` schema (importable from :mod:`schemas.recordings`), kept in a module of their own.
"""

from __future__ import annotations

import datajoint as dj
import numpy as np

from pipeline.data.extraction import ExtractionConfig as ExtractionSettings
from pipeline.data.extraction import Footprints
from schemas.configs import ConfigTable, config_definition
from schemas.recordings import Scan, scan_restriction, schema


@schema
class ExtractionConfig(ConfigTable, dj.Lookup):
    definition = config_definition(
        ("extraction_hash", "canonical hash of the full config"),
        ("signal: varchar(16)", "'spikes' or 'dff'"),
        comment="how trial responses are computed from imaging traces (signal, neuropil, cells, window)",
    )
    config_class = ExtractionSettings
    config_columns = ("signal",)


@schema
class Extraction(dj.Manual):
    definition = """
    # a scan whose responses were extracted from imaging traces (suite2p folder or NWB file)
    -> Scan
    ---
    -> ExtractionConfig
    source_kind: enum('suite2p', 'nwb')
    source_hash: char(32)               # md5 of the source traces and footprints
    n_frames: int32                     # frames (per plane) of the traces
    n_rois: int32                       # ROIs in the source before cell selection
    um_per_pixel: float64               # scale of the unit coordinates
    unique index (source_hash, extraction_hash)
    """

    class Roi(dj.Part):
        definition = """
        # the ROI behind each unit
        -> master
        -> Scan.Unit
        ---
        plane: int32
        roi: int32                      # index of the ROI in its source (suite2p stat.npy row)
        iscell: float32                 # classifier probability of being a cell
        centre_y: float64               # pixels of the plane
        centre_x: float64               # pixels of the plane
        footprint: <blob>               # (n_pixels, 3) float32 rows (y, x, weight)
        """

    @staticmethod
    def inserter(
        footprints: Footprints,
        unit_ids,
        config_key: dict,
        source_kind: str,
        source_hash: str,
        n_frames: int,
        n_rois: int,
        um_per_pixel: float,
    ):
        """The ``then`` callback of :func:`schemas.recordings.insert_recording` that records the extraction and ROIs."""

        def insert(key: dict) -> None:
            Extraction.insert1(
                dict(
                    key,
                    **config_key,
                    source_kind=source_kind,
                    source_hash=source_hash,
                    n_frames=int(n_frames),
                    n_rois=int(n_rois),
                    um_per_pixel=float(um_per_pixel),
                )
            )
            Extraction.Roi.insert(
                dict(
                    key,
                    unit_id=int(u),
                    plane=int(footprints.plane[i]),
                    roi=int(footprints.roi[i]),
                    iscell=float(footprints.iscell[i]),
                    centre_y=float(footprints.centre[i, 0]),
                    centre_x=float(footprints.centre[i, 1]),
                    footprint=np.asarray(footprints.pixels[i], np.float32),
                )
                for i, u in enumerate(unit_ids)
            )

        return insert


def fetch_footprints(key) -> Footprints | None:
    """The ROIs of an extracted scan in unit order, or None for a scan without them."""
    key = scan_restriction(key)
    if not (Extraction & key):
        return None
    rows = (Extraction.Roi * Scan.Unit & key).to_dicts(order_by="unit_index")
    return Footprints(
        plane=np.array([r["plane"] for r in rows], np.int64),
        roi=np.array([r["roi"] for r in rows], np.int64),
        centre=np.array([[r["centre_y"], r["centre_x"]] for r in rows], np.float64).reshape(len(rows), 2),
        pixels=[np.asarray(r["footprint"], np.float32) for r in rows],
        iscell=np.array([r["iscell"] for r in rows], np.float64),
    )
