"""Random hyper-parameter searches over model configs, and each search's best model per core kind.

Tables of the ``models`` schema (importable from :mod:`schemas.models`), kept in a module of their own.
"""

from __future__ import annotations

import datajoint as dj
import numpy as np

from pipeline.models import search
from schemas.models import DatasetConfig, TrainedModel, TrainerConfig, TrainingTask, schema
from schemas.readiness import Readiness


@schema
class Search(dj.Manual):
    definition = """
    # a random hyper-parameter search over model configs: the same draws for every core kind
    search_name: varchar(64)
    ---
    description = '': varchar(255)
    -> DatasetConfig
    -> TrainerConfig
    budget: int32                       # models drawn per core kind
    search_seed: int32                  # seeds the draws
    model_seed: int32                   # the training seed of every candidate
    space: json                         # dotted model-config path -> [distribution, low, high] or ['choice', ...]
    """

    class Candidate(dj.Part):
        definition = """
        -> master
        core_kind: varchar(16)          # the base config's name, e.g. 'rotation' or 'cnn'
        draw: int32                     # which draw of the space
        ---
        -> TrainingTask
        """

    @classmethod
    def create(
        cls,
        name: str,
        bases: dict,
        dataset: dict,
        space: dict | None = None,
        budget: int = 32,
        trainer: dict | None = None,
        search_seed: int = 0,
        model_seed: int = 0,
        description: str = "",
    ) -> dict:
        """Draw ``budget`` configs per base model config (``{kind: model dict}``) and declare one training
        task each; :class:`SearchBest` picks each kind's best once they are trained."""
        space = search.check_space(search.DEFAULT_SPACE if space is None else space)
        drawn = search.draw_configs(bases, space, budget, search_seed)
        key = dict(search_name=name)
        with dj.conn().transaction:
            dataset_key, trainer_key = DatasetConfig.add(dataset), TrainerConfig.add(trainer or {})
            cls.insert1(
                dict(
                    key,
                    description=description,
                    **dataset_key,
                    **trainer_key,
                    budget=int(budget),
                    search_seed=int(search_seed),
                    model_seed=int(model_seed),
                    space=space,
                )
            )
            for kind, configs in drawn.items():
                for draw, config in enumerate(configs):
                    task = TrainingTask.add(
                        config.to_dict(), dataset, trainer, seeds=(model_seed,), name=f"{name}-{kind}-{draw}"[:64]
                    )[0]
                    cls.Candidate.insert1(dict(key, core_kind=kind, draw=draw, **task))
        return key


@schema
class SearchBest(Readiness, dj.Computed):
    definition = """
    # the best candidate of a search per core kind, chosen on the validation tier only
    -> Search
    ---
    criterion: varchar(32)              # TrainedModel attribute that chose (validation tier)
    """

    class Kind(dj.Part):
        definition = """
        -> master
        core_kind: varchar(16)
        ---
        best_draw: int32                # Search.Candidate draw of the chosen model
        n_candidates: int32
        val_correlation: float64        # of the chosen model: the criterion
        test_correlation: float64       # of the chosen model: reported, never used to choose
        val_correlation_sd: float64     # spread of the criterion over the kind's candidates
        """

    def inputs(self) -> dict:
        untrained = Search.Candidate.proj(*TrainingTask.primary_key) - TrainedModel.proj()
        return {"TrainedModel of every candidate": Search.proj() - untrained}

    def make(self, key):
        self.insert1(dict(key, criterion="val_correlation"))
        for kind in sorted(set((Search.Candidate & key).to_arrays("core_kind"))):
            rows = (Search.Candidate & key & dict(core_kind=kind)) * TrainedModel
            draws, val, test = rows.to_arrays("draw", "val_correlation", "test_correlation", order_by="draw")
            best = search.best_candidate(val)
            self.Kind.insert1(
                dict(
                    key,
                    core_kind=kind,
                    best_draw=int(draws[best]),
                    n_candidates=len(draws),
                    val_correlation=float(val[best]),
                    test_correlation=float(test[best]),
                    val_correlation_sd=float(np.std(val)),
                )
            )

    @classmethod
    def best_tasks(cls, key) -> dict[str, dict]:
        """``{core kind: training-task key}`` of the chosen models of one search."""
        out = {}
        for row in (cls.Kind & key).to_dicts():
            candidate = (
                Search.Candidate
                & dict(search_name=row["search_name"], core_kind=row["core_kind"], draw=row["best_draw"])
            ).fetch1()
            out[row["core_kind"]] = {k: candidate[k] for k in TrainingTask.primary_key}
        return out
