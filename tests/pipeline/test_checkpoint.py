"""Checkpoints of long trainings: an interrupted run resumed from its latest checkpoint ends exactly where an
uninterrupted run ends (on the CPU), for the encoder and for the classifier."""

from __future__ import annotations

import io
import logging
import pickle

import numpy as np
import pytest
import torch

from pipeline.checkpoint import Checkpointer, CheckpointSchedule, pack, unpack
from pipeline.classifier import ClassifierConfig, build_classifier, fit_classifier
from pipeline.config import ConfigError
from pipeline.models.training import TrainerConfig, fit
from pipeline.training_log import ProgressLog
from tests.pipeline.test_classifier import toy_data
from tests.pipeline.test_training import data, new_model, recording  # noqa: F401 (fixtures)

torch.set_num_threads(1)


class Interrupted(Exception):
    """Stands for the worker's StopRequested: raised in the middle of training."""


class MemoryStore:
    """A checkpoint store in memory: the latest bytes and the step of every save."""

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.steps: list[int] = []

    def load(self) -> bytes | None:
        return self.data

    def save(self, blob: bytes, step: int) -> None:
        self.data = blob
        self.steps.append(step)


def interrupt_at(step: int, total: int) -> ProgressLog:
    """A progress log (one line per step) that raises :class:`Interrupted` after ``step`` steps."""

    def report(line: str) -> None:
        if f"step {step}/" in line:
            raise Interrupted(line)

    return ProgressLog("train", total, every_steps=1, report=report)


def test_encoder_resumed_from_a_checkpoint_equals_an_uninterrupted_run(data, caplog):  # noqa: F811
    # 10 batches per epoch; the learning rate drops once; saved every 4 steps, cut at step 15 (mid-epoch,
    # between evaluations): the resumed run restarts at step 12, batch 2 of the second epoch.
    config = TrainerConfig(
        lr=0.01, batch_size=64, eval_every=5, patience=1, lr_decay_steps=3, max_iterations=30, min_improvement=0.04
    )
    core = dict(kind="cnn", layers=1, features=8, kernel_sizes=[7])  # with batch norm: running statistics
    whole = fit(new_model(data, core), data, config, device="cpu", progress=False)

    store, schedule = MemoryStore(), CheckpointSchedule(minutes=None, steps=4)
    with pytest.raises(Interrupted, match="step 15/30"):
        fit(new_model(data, core), data, config, "cpu", False, Checkpointer(store, schedule), interrupt_at(15, 30))
    assert store.steps == [4, 8, 12]
    with caplog.at_level(logging.INFO, logger="pipeline.checkpoint"):
        resumed = fit(new_model(data, core), data, config, "cpu", False, Checkpointer(store, schedule))
    assert "resuming from the checkpoint at step 12" in caplog.text
    assert store.steps == [4, 8, 12, 16, 20, 24, 28]  # none after the last step

    assert any(h["lr"] < config.lr for h in whole.history), "the schedule should drop the learning rate"
    assert resumed.history == whole.history
    assert (resumed.iterations, resumed.best_iteration, resumed.stop_reason) == (
        whole.iterations,
        whole.best_iteration,
        whole.stop_reason,
    )
    assert resumed.state_dict.keys() == whole.state_dict.keys()
    for name, value in whole.state_dict.items():
        assert torch.equal(resumed.state_dict[name], value), name


def test_classifier_resumed_from_a_checkpoint_equals_an_uninterrupted_run(caplog):
    x, y, stimuli, vectors = toy_data()
    s_neural = vectors @ vectors.T
    # 3 epochs of 6 steps, early stopping on; saved every 4 steps, cut at step 9: resumed at step 8,
    # in the middle of the second epoch.
    config = ClassifierConfig(
        width=8, batch_size=16, pair_batch=16, epochs=3, max_steps_per_epoch=6, lr=0.05, decay_every=1
    ).replace(holdout_fraction=0.05, patience=2)

    def train(checkpoint=None, log=None):
        model = build_classifier(config)
        return fit_classifier(model, x, y, stimuli, s_neural, config, "cpu", False, checkpoint, log)

    whole = train()
    store, schedule = MemoryStore(), CheckpointSchedule(minutes=None, steps=4)
    with pytest.raises(Interrupted):
        train(Checkpointer(store, schedule), interrupt_at(9, 18))
    assert store.steps == [4, 8]
    with caplog.at_level(logging.INFO, logger="pipeline.checkpoint"):
        resumed = train(Checkpointer(store, schedule))
    assert "resuming from the checkpoint at step 8" in caplog.text
    assert store.steps == [4, 8, 12, 16]

    def timeless(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert len(whole.history) == 3 and whole.history[0]["lr"] != whole.history[1]["lr"]
    assert timeless(resumed.history) == timeless(whole.history)
    assert (resumed.validation_accuracy, resumed.layer_weights, resumed.n_steps) == (
        whole.validation_accuracy,
        whole.layer_weights,
        whole.n_steps,
    )
    for mine, theirs in ((resumed.state_dict, whole.state_dict), (resumed.regularizer_state, whole.regularizer_state)):
        assert mine.keys() == theirs.keys()
        for name, value in theirs.items():
            assert torch.equal(mine[name], value), name


def test_a_state_round_trips_and_only_tensors_and_plain_values_are_read_back():
    generator = np.random.default_rng(3)
    state = dict(
        weights={"w": torch.arange(6.0).reshape(2, 3)},
        order=generator.bit_generator.state,
        history=[dict(loss=0.5, accuracy=None, layers={"conv1": 0.25})],
        permutation=np.arange(5),
    )
    back = unpack(pack(state))
    assert torch.equal(back["weights"]["w"], state["weights"]["w"])
    assert back["order"] == state["order"] and back["history"] == state["history"]
    assert torch.equal(back["permutation"], torch.arange(5))

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    buffer = io.BytesIO()
    torch.save({"evil": Payload()}, buffer)
    with pytest.raises(pickle.UnpicklingError):
        unpack(buffer.getvalue())


def test_the_schedule_saves_every_n_minutes_or_steps_and_is_validated():
    now = [0.0]
    store = MemoryStore()
    every_minute = Checkpointer(store, CheckpointSchedule(minutes=1.0), clock=lambda: now[0])
    assert not every_minute.maybe_save(5, dict)
    now[0] = 61.0
    assert every_minute.maybe_save(6, dict) and store.steps == [6]
    assert not every_minute.maybe_save(7, dict)
    assert not Checkpointer(None).maybe_save(100, dict), "no store: never saved"

    assert CheckpointSchedule.from_env({}) == CheckpointSchedule(minutes=10.0)
    assert CheckpointSchedule.from_env({"PIPELINE_CHECKPOINT_MINUTES": "2.5"}).minutes == 2.5
    assert CheckpointSchedule.from_env({"PIPELINE_CHECKPOINT_MINUTES": "0"}) == CheckpointSchedule(minutes=None)
    assert CheckpointSchedule.from_env({"PIPELINE_CHECKPOINT_STEPS": "3"}) == CheckpointSchedule(None, 3)
    for name, value in [("PIPELINE_CHECKPOINT_MINUTES", "soon"), ("PIPELINE_CHECKPOINT_MINUTES", "-1")]:
        with pytest.raises(ConfigError, match=name):
            CheckpointSchedule.from_env({name: value})
    with pytest.raises(ConfigError, match="PIPELINE_CHECKPOINT_STEPS"):
        CheckpointSchedule.from_env({"PIPELINE_CHECKPOINT_STEPS": "0"})


def test_progress_lines_give_step_values_and_rate():
    now, lines = [0.0], []
    log = ProgressLog("fit", 100, every_seconds=10, report=lines.append, clock=lambda: now[0])
    now[0] = 5.0
    assert log.update(10, loss=0.5) is None
    now[0] = 10.0
    line = log.update(20, loss=0.25, val_correlation=None)
    assert line == "fit: step 20/100, loss 0.25, val_correlation -, 2 it/s" and lines == [line]
    with pytest.raises(ConfigError, match="PIPELINE_PROGRESS_SECONDS"):
        ProgressLog.from_env("fit", 10, {"PIPELINE_PROGRESS_SECONDS": "0"})
    assert ProgressLog.from_env("fit", 10, {"PIPELINE_PROGRESS_STEPS": "7"}).every_steps == 7
