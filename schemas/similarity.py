"""Denoised responses to stimulus images and the representational similarity of image pairs."""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

import datajoint as dj
import numpy as np

from pipeline import similarity as sim
from pipeline.data import sources
from pipeline.device import resolve_device
from pipeline.models import denoise
from pipeline.similarity.settings import IMAGE_METHODS, SimilaritySettings
from schemas.binding import StageSchema
from schemas.configs import ConfigTable, atomic, config_definition
from schemas.models import (
    DatasetConfig,
    Ensemble,
    TrainedModel,
    ensembles_with_every,
    ensembles_with_scan,
    load_scan_tensors,
)
from schemas.readiness import Readiness, require
from schemas.recordings import GroundTruth, Scan, StimulusImage
from schemas.stats import Normalization, Reliability

schema = StageSchema("similarity")


@schema
class ImageSet(dj.Manual):
    definition = """
    # an ordered set of stimulus images (the rows of similarity matrices)
    image_set: varchar(32)
    ---
    description = '': varchar(255)
    n_images: int32
    """

    class Member(dj.Part):
        definition = """
        -> master
        image_index: int32              # row of this image in matrices over the set
        ---
        -> StimulusImage
        """

    @classmethod
    def from_scans(cls, name: str, scans: list[dict], description: str = "") -> dict:
        """The images shown in every one of ``scans`` (ordered by image id in the first scan)."""
        if not scans:
            raise ValueError(f"image set {name!r}: no scans given")
        hashes = None
        for scan in scans:
            rows = (Scan.Image & scan).to_dicts(order_by="image_id")
            if not rows:
                raise LookupError(f"image set {name!r}: scan {scan} has no images")
            ordered = [r["image_hash"] for r in rows]
            hashes = ordered if hashes is None else [h for h in hashes if h in set(ordered)]
        key = dict(image_set=name)
        with dj.conn().transaction:
            cls.insert1(dict(key, description=description, n_images=len(hashes)))
            cls.Member.insert(dict(key, image_index=i, image_hash=h) for i, h in enumerate(hashes))
        return key

    @staticmethod
    def images(key) -> np.ndarray:
        """(n_images, H, W) grey-level images of the set, in row order."""
        rows = (ImageSet.Member * StimulusImage & key).to_dicts(order_by="image_index")
        return np.stack([np.asarray(r["pixels"].load()) for r in rows])


def ensemble_predictions(ensemble, images: np.ndarray):
    """An ensemble's mean predicted responses (N, n_units), original units, to (N, H, W) grey-level images.

    Returns (predictions, the member models, the ensemble's dataset config).
    """
    dataset = DatasetConfig.load((Ensemble & ensemble).fetch1())
    models = [TrainedModel.load_model(m) for m in (Ensemble.Member & ensemble).keys()]
    stats = Normalization.load(dataset.scan_key)
    inputs = denoise.model_inputs(images, stats, dataset.image_shape)
    return denoise.ensemble_predict(models, inputs) * stats.response_std, models, dataset


@schema
class PredictedResponses(Readiness, dj.Computed):
    definition = """
    # an ensemble's denoised responses to an image set (behaviour and eye position at their means)
    -> Ensemble
    -> ImageSet
    ---
    responses: <npy@pipeline>           # (n_images, n_units) float32, original response units
    unit_correlation: <blob>            # (n_units,) the ensemble's test correlation, by unit_index
    device: varchar(32)                 # torch device the make computed on, e.g. cpu, cuda:0
    """

    @property
    def candidates(self):
        # only the ensemble x image-set pairs some similarity task asks for
        return (Ensemble.proj() * ImageSet.proj()) & (SimilarityTask * SimilarityTask.Ensemble).proj("image_set")

    def inputs(self) -> dict:
        return {
            "TrainedModel of every member": ensembles_with_every(TrainedModel),
            "Normalization": ensembles_with_scan(Normalization),
        }

    def make(self, key):
        predictions, models, dataset = ensemble_predictions(key, ImageSet.images(key))
        data = load_scan_tensors(dataset.scan_key, dataset.image_shape)
        correlation = denoise.ensemble_test_correlation(models, data)
        self.insert1(
            dict(
                key,
                responses=predictions.astype(np.float32),
                unit_correlation=correlation,
                device=str(resolve_device()),
            )
        )


@schema
class SimilarityConfig(ConfigTable, dj.Lookup):
    definition = config_definition("similarity_hash", "method: varchar(16)")
    config_class = SimilaritySettings
    config_columns = ("method",)


@schema
class SimilarityTask(dj.Manual):
    definition = """
    # a similarity matrix to compute: method, image set and the scans (ensembles) it averages over
    similarity_name: varchar(64)
    ---
    -> SimilarityConfig
    -> ImageSet
    """

    class Ensemble(dj.Part):
        definition = """
        -> master
        -> Ensemble
        """

    @classmethod
    def add(cls, name: str, config: dict, image_set: str, ensembles: list[str] = ()) -> dict:
        settings = SimilarityConfig.validated(config)
        if settings.method == "teacher":
            raise ValueError(
                f"similarity {name!r}: a teacher similarity names its teacher classifier: "
                "add it with schemas.classifiers.SimilarityTeacher.add"
            )
        if settings.method not in IMAGE_METHODS and not ensembles:
            raise ValueError(f"similarity {name!r}: method {settings.method!r} needs at least one ensemble")
        key = dict(similarity_name=name)
        if cls & key:
            return key
        with atomic(cls().connection):
            cls.insert1(dict(key, **SimilarityConfig.add(settings), image_set=image_set))
            cls.Ensemble.insert(dict(key, ensemble_name=e) for e in ensembles)
        return key


def teacher_tables():
    """:mod:`schemas.teacher`, imported on first use: a "teacher" similarity is a classifier's (a table of
    the downstream classifiers stage), whose module imports this one, so this one cannot import it
    when it loads."""
    return importlib.import_module("schemas.teacher")


def task_images(similarity_name: str) -> np.ndarray:
    """(n_images, H, W) grey-level images of a similarity task's image set, in row order."""
    task = (SimilarityTask & dict(similarity_name=similarity_name)).fetch1()
    return ImageSet.images(dict(image_set=task["image_set"]))


def stimulus_photographs(similarity_name: str) -> frozenset[str]:
    """Names of the bundled photographs a similarity task's stimulus images were cut from: the
    simulator's when any of its images was shown in a simulated scan (one with ``GroundTruth``), none
    known otherwise (recorded scans show images from elsewhere)."""
    task = (SimilarityTask & dict(similarity_name=similarity_name)).fetch1()
    images = (ImageSet.Member & dict(image_set=task["image_set"])).proj("image_hash")
    if GroundTruth & (Scan.Image & images).proj():
        return sources.simulated_stimulus_photographs()
    return frozenset()


def _ensemble_scan(ensemble_key) -> dict:
    return DatasetConfig.load((Ensemble & ensemble_key).fetch1()).scan_key


def _predictions(ensemble, task):
    """The PredictedResponses row of one ensemble for a similarity task's image set."""
    return require(PredictedResponses(), dict(ensemble_name=ensemble["ensemble_name"], image_set=task["image_set"]))


def _unit_scales(task_key, ensembles) -> list[np.ndarray]:
    scales = []
    for ensemble in ensembles:
        scan = _ensemble_scan(ensemble)
        require(Reliability(), scan)
        snr = (Reliability.Unit * Scan.Unit & scan).to_arrays("snr", order_by="unit_index")
        correlation = _predictions(ensemble, task_key).fetch1("unit_correlation")
        scales.append(denoise.unit_scale(snr, correlation))
    return scales


def target_vectors(similarity_name: str, images: np.ndarray) -> list[np.ndarray]:
    """Per scan, (N, d) unit-norm population vectors of a target for arbitrary (N, H, W) grey-level images.

    What :class:`Similarity` computes for its image set, for other images (e.g. noisy copies): the
    ensembles' predicted responses weighted like the stored similarity ("model"), the (low-pass
    filtered) pixels ("pixel", "lowpass") or the teacher's layers, one entry per layer ("teacher").
    Single-trial targets are recorded responses, which have no value for new images: that is an error.
    """
    task = (SimilarityTask & dict(similarity_name=similarity_name)).fetch1()
    settings = SimilarityConfig.load(task)
    if settings.method in IMAGE_METHODS:
        return [sim.pixel_vectors(images, settings.pixel_sigma)]
    if settings.method == "teacher":
        return teacher_tables().teacher_vectors(similarity_name, images, settings)
    if settings.method != "model":
        raise ValueError(f"similarity {similarity_name!r}: method {settings.method!r} has no values for new images")
    ensembles = (SimilarityTask.Ensemble & task).keys()
    scales = _unit_scales(task, ensembles) if settings.scale_units else [None] * len(ensembles)
    return [sim.population_vectors(ensemble_predictions(e, images)[0], scale) for e, scale in zip(ensembles, scales)]


def _scan_trials(scan, image_hashes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-withheld responses of a scan, each trial's image row in the set, and the set's rows shown."""
    rows, image_ids = (Scan.Trial & scan & dict(withheld=False)).to_arrays("response_row", "image_id", order_by="trial")
    to_hash = dict(zip(*(Scan.Image & scan).to_arrays("image_id", "image_hash")))
    index = {h: i for i, h in enumerate(image_hashes)}
    trial_rows = np.array([index.get(to_hash[i], -1) for i in image_ids])
    matrix = (Scan.Responses & scan).fetch1("matrix").load(mmap_mode="r")
    keep = trial_rows >= 0
    return np.asarray(matrix[rows[keep].astype(np.int64)]), trial_rows[keep], image_ids[keep]


@schema
class Similarity(Readiness, dj.Computed):
    definition = """
    # representational similarity of every pair of images in a set, averaged over scans
    -> SimilarityTask
    ---
    n_images: int32
    n_scans: int32
    matrix: <object@pipeline>           # row-block store, read with pipeline.similarity.SimilarityStore
    oracle_agreement = null: float64    # r with repeat-averaged similarity on repeated test images
    single_trial_agreement = null: float64  # the same r for single-trial similarity (the paper's 0.39)
    device: varchar(32)                 # torch device the make computed on, e.g. cpu, cuda:0
    """

    @property
    def candidates(self):
        return SimilarityTask.proj()

    def inputs(self) -> dict:
        # Every ensemble of a task needs its predictions of the task's images and its scan's
        # reliability (unit weights); a pixel task has no ensembles and is ready at once.
        # A teacher task needs its teacher trained (a database made before teachers existed has none).
        tasks = SimilarityTask.proj()
        inputs = {
            "PredictedResponses of every ensemble": tasks
            - (SimilarityTask.Ensemble - (PredictedResponses * SimilarityTask.proj("image_set"))).proj(),
            "Reliability of every ensemble's scan": tasks
            - (SimilarityTask.Ensemble - ensembles_with_scan(Reliability)).proj(),
        }
        untrained = teacher_tables().untrained_teachers()
        if untrained is not None:
            inputs["TrainedClassifier (teacher)"] = tasks - untrained
        return inputs

    def make(self, key):
        task = (SimilarityTask & key).fetch1()
        settings = SimilarityConfig.load(task)
        ensembles = (SimilarityTask.Ensemble & key).keys()
        image_hashes = (ImageSet.Member & task).to_arrays("image_hash", order_by="image_index")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "similarity"
            write = dict(block_rows=settings.block_rows, dtype=np.dtype(settings.dtype), progress=True)
            agreement = dict(oracle_agreement=None, single_trial_agreement=None)
            if settings.method in IMAGE_METHODS:
                store = sim.pixel_similarity(
                    ImageSet.images(task).astype(np.float32), out, lowpass_sigma=settings.pixel_sigma, **write
                )
            elif settings.method == "teacher":
                store = teacher_tables().teacher_similarity(key, ImageSet.images(task), settings, out, **write)
            else:
                scales = _unit_scales(task, ensembles) if settings.scale_units else [None] * len(ensembles)
                if settings.method == "model":
                    vectors = [
                        sim.population_vectors(_predictions(e, task).fetch1("responses").load(), s)
                        for e, s in zip(ensembles, scales)
                    ]
                    store = sim.write_similarity(vectors, out, **write)
                    agreement = self._oracle_agreement(task, ensembles, scales, image_hashes)
                else:
                    scans = [_scan_trials(_ensemble_scan(e), image_hashes)[:2] for e in ensembles]
                    store = sim.single_trial_similarity(
                        scans, np.arange(len(image_hashes)), out, unit_scales=scales, seed=settings.seed, **write
                    )
            self.insert1(
                dict(
                    key,
                    n_images=store.n,
                    n_scans=len(ensembles) or 1,
                    matrix=str(out),
                    device=str(resolve_device()),
                    **agreement,
                )
            )

    @staticmethod
    def _oracle_agreement(task, ensembles, scales, image_hashes) -> dict:
        """Model vs single-trial similarity against repeat-averaged similarity on the repeated images."""
        candidates, singles, references, used_scales = [], [], [], []
        for ensemble, scale in zip(ensembles, scales):
            responses, rows, _ = _scan_trials(_ensemble_scan(ensemble), image_hashes)
            split = sim.repeat_split(responses, rows, len(image_hashes))
            if split is None:
                return dict(oracle_agreement=None, single_trial_agreement=None)
            repeated, single, reference = split
            candidates.append(_predictions(ensemble, task).fetch1("responses").load()[repeated])
            singles.append(single)
            references.append(reference)
            used_scales.append(scale)
        return dict(
            oracle_agreement=sim.oracle_similarity_agreement(candidates, references, used_scales),
            single_trial_agreement=sim.oracle_similarity_agreement(singles, references, used_scales),
        )

    @classmethod
    def open(cls, key) -> sim.SimilarityStore:
        """The stored matrix, memory-mapped from the object store (downloaded first if remote)."""
        ref = (cls & key).fetch1("matrix")
        path = Path(ref.full_path)
        if not path.exists():
            cache = Path(tempfile.gettempdir()) / "pipeline-similarity" / ref.path
            if not (cache / "manifest.json").exists():
                ref.download(cache)
            path = cache
        return sim.SimilarityStore(path)
