"""The command line's imaging commands: ``import suite2p``, ``import nwb``, ``export nwb`` and
``simulate --movie`` (kept apart from :mod:`populate.cli.main`, which only registers them)."""

from __future__ import annotations

import argparse


def _extraction(args) -> dict:
    """The extraction config given on the command line (unset options keep the defaults)."""
    values = dict(
        signal=args.signal, neuropil_coefficient=args.neuropil, iscell_threshold=args.iscell, window_s=args.window
    )
    return {k: v for k, v in values.items() if v is not None}


def _report_import(key, inserted: bool, path) -> None:
    from populate import ingest

    state = "imported" if inserted else "already in the database; nothing inserted"
    print(f"scan {ingest.scan_name(key)} from {path}: {state}")


def _cmd_import_suite2p(args) -> None:
    from populate import ingest

    key, inserted = ingest.import_suite2p(
        args.folder,
        args.stimuli,
        args.images,
        args.scan,
        behavior=args.behavior,
        extraction=_extraction(args),
        um_per_pixel=args.um_per_pixel,
        depth_um=args.depth,
        area=args.area,
        layer=args.layer,
    )
    _report_import(key, inserted, args.folder)


def _cmd_import_nwb(args) -> None:
    from populate import ingest

    key, inserted = ingest.import_nwb(args.path, scan=args.scan, extraction=_extraction(args))
    _report_import(key, inserted, args.path)


def _cmd_export_nwb(args) -> None:
    from populate import ingest

    out = ingest.export_nwb(
        args.scan,
        args.out,
        session_start=args.session_start,
        experimenter=args.experimenter,
        age=args.age,
        sex=args.sex,
        institution=args.institution,
    )
    print(f"exported scan {args.scan} to {out}")


def simulate_movie(args) -> bool:
    """``simulate --movie OUT``: write the movie files; False when ``--movie`` was not given."""
    if not args.movie:
        return False
    from populate import ingest

    paths = ingest.simulate_movie(args.movie, args.seed, run_suite2p=args.suite2p)
    print(f"simulated movie written to {args.movie}: {', '.join(p.name for p in paths.values())}")
    return True


def add_simulate_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--movie",
        metavar="OUT",
        help="instead: write a simulated two-photon movie, its stimulus "
        "table, images, behaviour and ground truth to the folder OUT (inserts nothing)",
    )
    sub.add_argument("--suite2p", action="store_true", help="with --movie: also run suite2p on it (OUT/suite2p)")


def _extraction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--signal", choices=("spikes", "dff"), help="response signal (default spikes)")
    parser.add_argument("--neuropil", type=float, help="neuropil coefficient (default 0.7)")
    parser.add_argument("--iscell", type=float, help="least cell probability (default 0.5)")
    parser.add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("START", "END"),
        help="response window, seconds after onset (default 0 0.5)",
    )


def add_import_kinds(kinds) -> None:
    """``import suite2p`` and ``import nwb`` on the ``import`` command's sub-parsers."""
    suite2p = kinds.add_parser("suite2p", help="suite2p output folder with its stimulus table")
    suite2p.add_argument("folder", metavar="FOLDER", help="suite2p output (holding plane0/, ...)")
    suite2p.add_argument(
        "--stimuli",
        required=True,
        metavar="TABLE",
        help="CSV: onset_frame, image_id, tier[, trial_idx], one row per trial",
    )
    suite2p.add_argument("--images", required=True, help=".npz with images (n, H, W) and image_ids (n,)")
    suite2p.add_argument("--behavior", help=".npz of per-frame pupil_size, running_speed, pupil_x, pupil_y")
    suite2p.add_argument("--scan", required=True, help="scan key of the new scan, animal-session-scan")
    suite2p.add_argument("--um-per-pixel", type=float, default=1.0, help="pixel size in micrometres (default 1)")
    suite2p.add_argument("--depth", type=float, default=0.0, help="imaging depth in micrometres (default 0)")
    suite2p.add_argument("--area", default="unknown", help="brain area of the units, e.g. V1")
    suite2p.add_argument("--layer", default="unknown", help="cortical layer of the units, e.g. L2/3")
    _extraction_options(suite2p)
    suite2p.set_defaults(handler=_cmd_import_suite2p)
    nwb = kinds.add_parser("nwb", help="NWB file: an exported scan, or two-photon traces with a trials table")
    nwb.add_argument("path", metavar="FILE")
    nwb.add_argument("--scan", help="scan key animal-session-scan (default: the file's session_id)")
    _extraction_options(nwb)
    nwb.set_defaults(handler=_cmd_import_nwb)


def add_export_kinds(kinds) -> None:
    """``export nwb`` on the ``export`` command's sub-parsers."""
    nwb = kinds.add_parser("nwb", help="write a scan to an NWB file")
    nwb.add_argument("scan", metavar="SCAN", help="animal-session-scan, e.g. 11521-7-2")
    nwb.add_argument("out", metavar="OUT", help="output .nwb file (must not exist)")
    # what an archive needs and a scan does not record: required, so that no file carries a placeholder
    nwb.add_argument(
        "--session-start", required=True, metavar="TIME", help="ISO 8601 with UTC offset, e.g. 2024-03-01T09:30+01:00"
    )
    nwb.add_argument(
        "--experimenter", required=True, action="append", metavar="NAME", help="'Last, First'; repeat for several"
    )
    nwb.add_argument("--age", required=True, help="the animal's age, ISO 8601 duration, e.g. P90D (or range P8W/P12W)")
    nwb.add_argument("--sex", required=True, help="the animal's sex: M, F, U (unknown) or O (other)")
    nwb.add_argument("--institution", default="", help="where the scan was recorded")
    nwb.set_defaults(handler=_cmd_export_nwb)
