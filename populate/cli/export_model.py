"""``python -m populate export model KEY OUT``: one trained model as a bundle a collaborator loads
without the database (:mod:`pipeline.models.bundle`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

KEY_HELP = (
    "the trained model: MODEL or MODEL:SEED, MODEL a model config's name or the first 6+ hex digits of "
    'its hash; or a JSON key such as \'{"model_hash": "...", "dataset_hash": "...", "seed": 0}\''
)


def model_restriction(text: str) -> dict | str:
    """The restriction of ``TrainedModel`` that KEY names: a dict (JSON key) or an SQL condition on
    ``ModelConfig``'s name or hash with an optional seed.  Refuses anything else with the form named."""
    if text.lstrip().startswith("{"):
        try:
            key = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"model key {text!r}: not JSON ({err.msg})") from None
        if not isinstance(key, dict):
            raise ValueError(f"model key {text!r}: expected a JSON object")
        return key
    match = re.fullmatch(r"([\w.+-]+?)(?::(\d+))?", text.strip())
    if not match:
        raise ValueError(f"model key {text!r}: expected MODEL, MODEL:SEED or a JSON key")
    model, seed = match.groups()
    # safe to quote as it is: the pattern admits no quote or backslash.  A hex prefix of at least 6
    # digits may also name a hash.
    by_hash = f" OR model_hash LIKE '{model}%'" if re.fullmatch(r"[0-9a-f]{6,32}", model) else ""
    condition = f"(config_name = '{model}'{by_hash})"
    return condition + (f" AND seed = {int(seed)}" if seed is not None else "")


def export_model(key_text: str, out: str | Path) -> Path:
    """Write the one trained model that ``key_text`` names (see :data:`KEY_HELP`) as a bundle in ``out``."""
    from pipeline.models.bundle import write_bundle
    from populate.api import frames
    from schemas import models, stats
    from schemas.recordings import Scan

    restriction = model_restriction(key_text)
    query = models.TrainedModel & (models.TrainingTask * models.ModelConfig.proj("config_name") & restriction)
    keys = query.keys(order_by="model_hash, dataset_hash, trainer_hash, seed")
    if len(keys) != 1:
        hint = "" if not keys else " (add :SEED, or give a JSON key with dataset_hash and trainer_hash)"
        raise LookupError(f"model key {key_text!r}: {len(keys)} trained models match, exactly one is needed{hint}")
    key = keys[0]
    row = (models.TrainedModel & key).fetch1()
    scan = models.DatasetConfig.load(key).scan_key
    unit_ids = (Scan.Unit & scan).to_arrays("unit_id", order_by="unit_index")
    source = dict(
        key={k: frames.plain(v) for k, v in key.items()},
        model_name=(models.ModelConfig & key).fetch1("config_name"),
        scan="{animal_id}-{session}-{scan_idx}".format(**scan),
        code_version=row["code_version"],
        test_correlation=row["test_correlation"],
    )
    return write_bundle(
        out,
        models.ModelConfig.load(key),
        row["weights"],
        unit_ids,
        (row["image_height"], row["image_width"]),
        stats.Normalization.load(scan),
        source,
    )


def _cmd_export_model(args) -> None:
    out = export_model(args.key, args.out)
    print(f"exported model {args.key} to {out}/ (load it with: python {Path(out) / 'load.py'})")


def add_export_kind(kinds) -> None:
    """``export model`` on the ``export`` command's sub-parsers."""
    model = kinds.add_parser("model", help="write a trained model as a bundle loadable without the database")
    model.add_argument("key", metavar="KEY", help=KEY_HELP)
    model.add_argument("out", metavar="OUT", help="output folder (must not exist or be empty)")
    model.set_defaults(handler=_cmd_export_model)
