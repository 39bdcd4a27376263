"""Scans in and out of NWB files (pynwb).

Export (:func:`write_nwb`, :mod:`~pipeline.data.nwb.writer`) writes one scan per file:

- ``stimulus_template/StimulusImages``: an ``Images`` container of ``GrayscaleImage`` s named
  ``image_<id>`` in source dtype; ``stimulus/StimulusPresentation``: an ``IndexSeries`` into it,
  one sample per trial at its onset;
- ``intervals/trials``: one row per trial in time order, with ``image_id``, ``tier``, ``trial_idx``,
  ``file_index`` (the scan's trial-file order), ``withheld`` and every further per-trial array;
- ``processing/ophys``: ``ImageSegmentation/PlaneSegmentation`` with per-unit ``unit_id``,
  ``cortical_x/y/z`` (micrometres), ``area``, ``layer``, ``centre_y/x`` (pixels) and a ``pixel_mask``
  when the footprints are known; ``Fluorescence/TrialResponses``, an ``RoiResponseSeries`` sampled
  once per trial at its onset;
- ``processing/behavior``: running speed, pupil size and its change (``TimeSeries``) and the pupil
  centre (``SpatialSeries``), each sampled once per trial at its onset.

Onset times are ``onset_frame / frame_rate`` when the scan carries both, else one second apart.

Import (:func:`read_nwb`, :mod:`~pipeline.data.nwb.reader`, with the file's parts found by
:mod:`~pipeline.data.nwb.sources`) takes such a file back exactly, and also reads the layouts of public
two-photon datasets: a frame-sampled ``RoiResponseSeries`` (in ``DfOverF`` or ``Fluorescence``;
``Neuropil`` and ``Deconvolved`` series alongside are used when present), a trials table (or
another ``intervals`` table) with start times and image ids, ``TimeSeries`` of running speed and
pupil size and a pupil-position ``SpatialSeries`` (each interpolated to the frame times), and the
images in ``stimulus_template``.  Frame-sampled data goes through the same
window extraction as a suite2p folder (:func:`pipeline.data.extraction.extract`).  A series that
holds exactly one sample per trial, at the trials' start times, is taken as per-trial values.
"""

from pipeline.data.nwb.layout import IMAGE_ID_COLUMNS
from pipeline.data.nwb.reader import read_nwb
from pipeline.data.nwb.writer import write_nwb

__all__ = ["IMAGE_ID_COLUMNS", "read_nwb", "write_nwb"]
