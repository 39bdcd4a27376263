"""Figures (pure), the notebook API and the HTML report, checked in headless Chromium.

The browser test keeps its screenshot at ``tests/artifacts/report.png``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO

ARTIFACTS = REPO / "tests" / "artifacts"
SCAN = "4-1-1"
SCAN_KEY = dict(animal_id=4, session=1, scan_idx=1)
QUICK_TRAINER = dict(max_iterations=30, eval_every=10, patience=2, batch_size=64)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def make_demo_models(scan: str = SCAN, seed: int = 4) -> dict:
    """A tiny simulated scan with one CNN and one rotation-equivariant model (idempotent)."""
    from populate import ingest
    from populate.work import run
    from schemas.models import TrainingTask

    ingest.simulate("tiny", seed=seed, scan=scan)
    tasks = {}
    for kind in ("cnn", "rotation"):
        core = dict(kind=kind, layers=2, kernel_sizes=(5, 3), features=2 if kind == "rotation" else 16)
        tasks[kind] = TrainingTask.add(
            model=dict(core=core),
            dataset=dict(scan=scan, image_shape=(18, 32)),
            trainer=QUICK_TRAINER,
            seeds=(0,),
            name=f"report-{kind}",
        )[0]
    run.populate_all(
        tables=["Reliability", "Normalization", "TrainedModel", "OracleFraction", "CellTypes"], progress=False
    )
    return tasks


# --------------------------------------------------------------------------------------------------
# Figures, from arrays (no database)
# --------------------------------------------------------------------------------------------------


def test_noise_curves_show_mean_and_sem_over_seeds():
    from matplotlib.collections import PolyCollection

    from pipeline import figures

    rng = np.random.default_rng(0)
    rows = [
        dict(control=c, noise_type="gaussian", strength=s, seed=seed, accuracy=rng.uniform(0.1, 0.9))
        for c in ("neural", "none")
        for s in (0.0, 0.1, 0.2)
        for seed in range(3)
    ]
    levels = pd.DataFrame(rows)
    fig = figures.noise_curves(levels)
    ax = fig.axes[0]
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert set(lines) == {"neural", "none"} and len(bands) == 2
    for (control, line), band in zip(sorted(lines.items()), bands):
        for strength, y in zip(line.get_xdata(), line.get_ydata()):
            values = [r["accuracy"] for r in rows if r["control"] == control and r["strength"] == strength]
            mean = sum(values) / len(values)
            sem = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 / len(values) ** 0.5
            assert y == pytest.approx(mean)
            edge = band.get_paths()[0].vertices
            at = edge[np.isclose(edge[:, 0], strength), 1]
            assert at.min() == pytest.approx(mean - sem) and at.max() == pytest.approx(mean + sem)
    assert "accuracy" in ax.get_ylabel() and "strength" in ax.get_xlabel()


def test_confusion_matrix_counts_units():
    from pipeline import figures

    true = ["simple", "complex", "simple", "texture", "simple", "complex"]
    learned = [0, 1, 0, 2, 1, 1]
    fig = figures.cell_type_confusion(true, learned)
    ax = fig.axes[0]
    shown = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [int(t.get_text()) for t in ax.get_xticklabels()]
    for (i, j), count in shown.items():
        assert count == sum(1 for a, b in zip(true, learned) if a == rows[i] and b == cols[j])
    assert sum(shown.values()) == len(true)


def test_consensus_curve_draws_every_subset_and_the_means():
    from pipeline import figures

    rows = [dict(models=1, ari=[0.5, 0.7, 0.6]), dict(models=2, ari=[0.8, 0.7]), dict(models=3, ari=[0.9])]
    ax = figures.consensus_curve(rows, goal=0.8).axes[0]
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert sorted(points[:, 1]) == sorted(v for r in rows for v in r["ari"])
    assert (np.abs(points[:, 0] - np.repeat([1, 2, 3], [3, 2, 1])) <= 0.15).all()
    mean_line, goal_line = ax.get_lines()
    np.testing.assert_allclose(mean_line.get_ydata(), [0.6, 0.75, 0.9])
    assert list(goal_line.get_ydata()) == [0.8, 0.8]
    with pytest.raises(ValueError, match="no rows"):
        figures.consensus_curve([])


def test_progress_bars_stack_done_pending_error():
    from pipeline import figures

    progress = pd.DataFrame(dict(table=["A", "B"], done=[3, 0], pending=[1, 2], error=[0, 5]))
    ax = figures.populate_progress(progress).axes[0]
    bars = ax.patches
    assert len(bars) == 6  # 3 states x 2 tables, state by state
    for k, state in enumerate(("done", "pending", "error")):
        for row in range(2):
            bar = bars[2 * k + row]
            left = sum(progress.loc[row, s] for s in ("done", "pending", "error")[:k])
            assert bar.get_x() == left and bar.get_width() == progress.loc[row, state]


def test_scatter_figures_plot_the_given_points_with_an_identity_line():
    from pipeline import figures

    rng = np.random.default_rng(1)
    oracle, corr = rng.uniform(0, 1, 20), rng.uniform(-0.2, 0.8, 20)
    ax = figures.oracle_vs_correlation(oracle, corr).axes[0]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), np.c_[oracle, corr])
    identity = [line for line in ax.get_lines() if line.get_label() == "identity"][0]
    np.testing.assert_allclose(identity.get_xdata(), identity.get_ydata())
    fig = figures.similarity_scatter(oracle, 2 * oracle + 1, "S_neural", "S_model")
    assert "r = 1.00" in fig.axes[0].get_title()


def test_oracle_figure_plots_single_trial_correlation_and_gives_each_fraction_of_oracle():
    from pipeline import figures

    rng = np.random.default_rng(3)
    oracle = rng.uniform(0.1, 0.9, 40)
    single = np.r_[0.5 * oracle[:20], 0.8 * oracle[20:]]  # two models at fractions 0.5 and 0.8
    single[0] = np.nan  # a unit silent on the test images: left out of the fraction
    groups = np.repeat(["cnn", "rotation"], 20)
    ax = figures.oracle_vs_correlation(oracle, single, groups).axes[0]
    assert ax.get_xlabel() == "oracle correlation"
    assert ax.get_ylabel() == "single-trial test correlation"
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "cnn (fraction of oracle 0.50)" in legend and "rotation (fraction of oracle 0.80)" in legend
    assert "identity" in legend and not any("ceiling" in t for t in legend + [ax.get_title()])
    identity = [line for line in ax.get_lines() if line.get_label() == "identity"][0]
    np.testing.assert_allclose(identity.get_xdata(), identity.get_ydata())
    slopes = [line.get_ydata()[1] / line.get_xdata()[1] for line in ax.get_lines() if line.get_label() != "identity"]
    np.testing.assert_allclose(sorted(slopes), [0.5, 0.8])


def test_perturbation_boxes_have_the_per_control_medians():
    from pipeline import figures

    rng = np.random.default_rng(2)
    images = pd.DataFrame(dict(control=np.repeat(["neural", "none", "shuffled"], 15), l2=rng.gamma(2, 0.05, 45)))
    images.loc[3, "l2"] = np.nan  # no adversarial found for this image: left out
    ax = figures.perturbation_distributions(images, norm="l2").axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["neural", "none", "shuffled"]
    expected = [np.nanmedian(images.loc[images["control"] == c, "l2"]) for c in labels]
    shown = [float(t.get_text()) for t in ax.texts]
    np.testing.assert_allclose(shown, expected, rtol=1e-2)
    assert "L2" in ax.get_ylabel()


def test_figures_refuse_bad_input_with_a_clear_message():
    from pipeline import figures

    with pytest.raises(ValueError, match="shapes differ"):
        figures.oracle_vs_correlation(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="lacks column"):
        figures.noise_curves(pd.DataFrame(dict(strength=[0.1], accuracy=[0.5])))
    with pytest.raises(ValueError, match="square"):
        figures.similarity_matrix(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="no type"):
        figures.cell_type_gallery(np.zeros((2, 3, 3)), np.zeros(2, int))


# --------------------------------------------------------------------------------------------------
# Report on a database
# --------------------------------------------------------------------------------------------------


class _Sections(HTMLParser):
    """Each <section>'s attributes and the data-URI images inside it."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self._current = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._current = attrs["id"]
            self.sections[self._current] = dict(attrs, images=[])
        elif tag == "img" and self._current:
            self.sections[self._current]["images"].append(attrs)

    def handle_endtag(self, tag):
        if tag == "section":
            self._current = None


def sections(document: str) -> dict[str, dict]:
    parser = _Sections()
    parser.feed(document)
    return parser.sections


_EMPTY_SCRIPT = """
import json, sys
import schemas
from populate.report.page import write_report, SECTION_IDS
out = {}
out["undeclared"] = write_report(sys.argv[1]).read_text()
try:
    schemas.declare_all()
    out["declared"] = write_report(sys.argv[2]).read_text()
finally:
    schemas.drop_all()
print(json.dumps(out))
"""


def test_report_on_an_empty_database_shows_not_computed_panels(db, tmp_path):
    """A fresh prefix, first with no schema at all, then declared but empty; dropped afterwards."""
    from populate.report.page import SECTION_IDS
    from schemas import db as settings

    env = dict(
        os.environ,
        PIPELINE_PREFIX=f"{settings.prefix()}_empty",
        PYTHONPATH=str(REPO),
        PIPELINE_STORE_DIR=str(tmp_path / "store"),
    )
    out = subprocess.run(
        [sys.executable, "-c", _EMPTY_SCRIPT, str(tmp_path / "a.html"), str(tmp_path / "b.html")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    documents = json.loads(out.stdout.strip().splitlines()[-1])
    for state, document in documents.items():
        found = sections(document)
        assert list(found) == list(SECTION_IDS), state
        for section_id, section in found.items():
            assert section["data-status"] == "not-computed", (state, section_id)
            assert section["data-figures"] == "0" and not section["images"]
        assert document.count("Not computed yet.") == len(SECTION_IDS)
    assert "populate setup" in documents["undeclared"]


@pytest.fixture(scope="module")
def report_file(db, tmp_path_factory):
    from populate.report.page import write_report
    from populate.work import run
    from schemas.models import Ensemble

    tasks = make_demo_models()
    if not Ensemble & dict(ensemble_name="report-rotation"):
        Ensemble.create("report-rotation", [tasks["rotation"]], n_types=2)
    run.populate_all(tables=["EnsembleCellTypes"], progress=False)
    return write_report(tmp_path_factory.mktemp("report") / "report.html")


def test_report_with_models_has_figures_for_every_computed_stage(report_file):
    from populate import api

    found = sections(report_file.read_text())
    assert {s["data-status"] for s in found.values()} <= {"computed", "not-computed"}
    for section_id in ("recordings", "predictive-models", "cell-types", "progress"):
        section = found[section_id]
        assert section["data-status"] == "computed", section_id
        assert int(section["data-figures"]) == len(section["images"]) >= 1
    # training curves, one oracle-vs-correlation, one FEVE histogram and one rotation-vs-CNN scatter
    # per scan with both kinds
    models = api.models()
    both = sum(set(rows["core_kind"]) >= {"cnn", "rotation"} for _, rows in models.groupby("scan"))
    assert int(found["predictive-models"]["data-figures"]) == 3 + both
    # a gallery and (simulated scans) two agreement matrices (types, clusters) per rotation model,
    # up to the shown maximum
    from populate.report.sections import MAX_CELLTYPE_MODELS

    rotation = min(len(models[models["core_kind"] == "rotation"]), MAX_CELLTYPE_MODELS)
    # and per ensemble consensus (simulated scan, k fixed): one agreement matrix, no k curve
    ensembles = min(len(api.ensembles()), MAX_CELLTYPE_MODELS)
    assert ensembles >= 1
    assert rotation + ensembles <= int(found["cell-types"]["data-figures"]) <= 3 * rotation + 2 * ensembles
    html = report_file.read_text()
    assert "Consensus cell types per ensemble (EnsembleCellTypes)" in html
    # each model's fraction of oracle beside the oracle, which is called by its name, not a ceiling
    assert "fraction_oracle" in html and "<th>oracle</th>" in html and "oracle_ceiling" not in html
    assert "Ensemble report-rotation: simulated type against consensus type" in html


class _Tables(HTMLParser):
    """Each table of the page: its caption (the <h3> before it), header and rows of cell texts."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._caption, self._cell, self._row = "", None, None

    def handle_starttag(self, tag, attrs):
        if tag == "h3":
            self._caption, self._cell = "", "caption"
        elif tag == "table":
            self.tables.append(dict(caption=self._caption, header=[], rows=[]))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell == "caption":
            self._caption += data
        elif self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "h3":
            self._cell = None
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            table = self.tables[-1]
            if table["header"]:
                table["rows"].append(self._row)
            else:
                table["header"] = self._row
            self._row = None


def tables(document: str) -> dict[str, pd.DataFrame]:
    """The page's tables by caption, as frames of cell texts."""
    parser = _Tables()
    parser.feed(document)
    return {t["caption"].strip(): pd.DataFrame(t["rows"], columns=t["header"]) for t in parser.tables}


def _table(document: str, caption_start: str) -> pd.DataFrame:
    found = [frame for caption, frame in tables(document).items() if caption.startswith(caption_start)]
    assert len(found) == 1, (caption_start, list(tables(document)))
    return found[0]


def test_tables_show_config_names_and_short_hashes(report_file):
    from populate import api

    html = report_file.read_text()
    assert not re.search(r"[0-9a-f]{32}", html), "a 32-digit hash reached the page"
    models = api.models()
    shown = _table(html, "Trained models")
    # the run's other tests may have trained models too (and named the same configs first): the
    # report shows every model, each with its config's name
    assert set(shown["model_hash"]) == {h[:8] for h in models["model_hash"]}
    mine = models[models["scan"] == SCAN]
    assert len(mine) == 2 and mine["config_name"].str.len().gt(0).all()
    assert set(shown.loc[shown["scan"] == SCAN, "config_name"]) == set(mine["config_name"])
    types = _table(html, "Cell types per rotation-equivariant model")
    rotation, name = mine.loc[mine["core_kind"] == "rotation", ["model_hash", "config_name"]].iloc[0]
    # one row per model: the same config may be trained on other scans of the run
    assert set(types.loc[types["model_hash"] == rotation[:8], "config_name"]) == {name}
    assert f"{name} (seed 0, {rotation[:8]})" in html  # the figures' captions


def test_toy_sized_results_are_marked_by_one_rule(report_file):
    from populate.report import provenance

    html = report_file.read_text()
    # the report's models: the tiny preset (500 trials, 40 units), 30 training steps
    models = _table(html, "Trained models")
    assert models.loc[models["scan"] == SCAN, provenance.TOY].tolist() == ["yes", "yes"]
    types = _table(html, "Cell types per rotation-equivariant model")
    assert provenance.TOY in types and set(types[provenance.TOY]) == {"yes"}  # every model here is toy-sized
    text = unescape(html)
    toy = int((models[provenance.TOY] == "yes").sum())
    assert f"{toy} of {len(models)} models are toy-sized" in text and provenance.RULE in text
    scans = pd.DataFrame(
        dict(scan=["a", "b", "c", "d"], n_trials=[1000, 999, 5000, 5000], n_units=[100, 8000, 99, 200])
    )
    assert provenance.toy_scans(scans) == {"b", "c"}


def test_each_result_shows_the_code_version_that_made_it(report_file):
    import pipeline
    from schemas.models import TrainedModel

    html = report_file.read_text()
    assert f'<code class="code-version">{pipeline.code_version()}</code>' in html
    models = _table(html, "Trained models")
    stored = {h[:8]: v for h, v in zip(*TrainedModel.to_arrays("model_hash", "code_version"))}
    assert models["code_version"].tolist() == [stored[h] for h in models["model_hash"]]
    assert _table(html, "Cell types per rotation-equivariant model")["code_version"].iloc[0] in stored.values()
    assert "The other tables record no code version" in html


def _unseen_class_set():
    """Two separable classes to train on (dark, bright) and test images all of a third class the
    networks never see: every classifier misclassifies every test image, so a comparison's common
    set is empty, as in the quick demo, where chance-level classifiers shared no correct image."""
    from pipeline.data.cifar import ClassificationSet as Images

    rng = np.random.default_rng(0)
    labels = np.arange(48) % 2
    train = np.clip(rng.normal((60 + 136 * labels)[:, None, None], 10, (48, 32, 32)), 0, 255).astype(np.uint8)
    test = rng.integers(0, 256, (12, 32, 32), dtype=np.uint8)
    return Images(
        train_images=train,
        train_labels=labels.astype(np.int64),
        test_images=test,
        test_labels=np.full(12, 2, np.int64),
        class_names=("dark", "bright", "unseen"),
        source="test: a test class absent from training",
    )


@pytest.fixture(scope="module")
def evaluated_report(report_file, tmp_path_factory):
    """The report after classifiers were trained and evaluated on a set whose common images are none."""
    from populate.report.page import write_report
    from populate.work import run
    from schemas.classifiers import ClassificationSet, ClassifierTask, ComparisonGroup, EvaluationConfig
    from schemas.similarity import ImageSet, SimilarityTask

    ImageSet.from_scans("report", [SCAN_KEY])
    SimilarityTask.add("report-neural", dict(method="model"), image_set="report", ensembles=["report-rotation"])
    ClassificationSet.add("report-unseen", _unseen_class_set())
    config = dict(width=4, epochs=2, max_steps_per_epoch=6, batch_size=16, pair_batch=4, n_classes=3, augment=False)
    tasks = ClassifierTask.add(dict(config, control="none", alpha=0.0), "report-unseen", neural="report-neural")
    ComparisonGroup.create("report-unseen", tasks)
    evaluation = dict(noise_images=12, gaussian=(0.0, 0.1), salt_pepper=(0.0,), attack_images=4, attack_schedule=(2, 5))
    EvaluationConfig.add(evaluation, name="rep")
    tables = ["PredictedResponses", "Similarity", "TrainedClassifier", "NoiseEvaluation", "CommonImages"]
    run.populate_all(tables=[*tables, "AdversarialEvaluation"], progress=False)
    return write_report(tmp_path_factory.mktemp("evaluated") / "report.html")


def test_report_states_match_status(evaluated_report):
    """Acceptance: a table that `status` counts as done is never reported as not evaluated; the
    adversarial evaluations of an empty common set say so (the quick demo's case)."""
    from populate import api
    from schemas.classifiers import AdversarialEvaluation

    attacked_images = (AdversarialEvaluation & dict(comparison="report-unseen")).to_arrays("n_images")
    assert len(attacked_images) >= 1 and set(attacked_images.tolist()) == {0}
    html = evaluated_report.read_text()
    done = api.progress().set_index("table")["done"]
    assert done["AdversarialEvaluation"] >= 1 and done["NoiseEvaluation"] >= 1
    assert "not evaluated yet" not in html
    assert sections(html)["classifiers"]["data-status"] == "computed"
    attacked = _table(html, "Adversarial evaluations")
    mine = attacked[attacked["comparison"] == "report-unseen"]
    assert len(mine) >= 1 and set(mine["n_images"]) == {"0"} and "rep" in mine["evaluation"].tolist()
    assert set(mine["l2_failed"]) == set(mine["linf_failed"]) == {"–"}  # no image attacked, none failed
    total = len(AdversarialEvaluation())
    assert f"Adversarial evaluations ({total} of {total} done)" in html
    assert "are done but attacked no image: their comparison's common set" in unescape(html)
    assert _table(html, "Trained classifiers")["config_name"].notna().all()


def test_api_tables_agree_with_the_stored_scores(report_file):
    """unit_scores joins per-unit scores with reliability: means reproduce TrainedModel's columns."""
    from populate import api
    from schemas.stats import Reliability

    models = api.models(SCAN_KEY)
    assert set(models["core_kind"]) == {"cnn", "rotation"}
    for _, model in models.iterrows():
        units = api.unit_scores(model)
        assert len(units) == model["n_units"] and units["scan"].eq(SCAN).all()
        assert units["test_correlation"].mean() == pytest.approx(model["test_correlation"])
        oracle = (Reliability & SCAN_KEY).fetch1("mean_oracle")
        assert units["oracle"].mean() == pytest.approx(oracle)
    types = api.cell_types(models[models["core_kind"] == "rotation"].iloc[0])
    assert len(types) == models["n_units"].iloc[0] and types["true_type"].notna().all()
    filters, orientation, counts = api.cell_type_filters(types.iloc[0])
    assert counts.sum() == len(types) and filters.shape[1:] == (5, 5)
    assert np.isin(orientation, np.arange(4) * 45.0).all()  # the 8 rotations' orientations in [0, 180)
    with pytest.raises(LookupError, match="exactly one"):
        api.load_predictor(dict(seed=0))


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium (`make test` installs it: populate/deploy/ensure_program.sh)."""
    path = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
    if not path:
        message = "chromium is not installed; `make test` installs it (populate/deploy/ensure_program.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


_MEASURE = """<script>
window.addEventListener("load", () => {
  for (const img of document.querySelectorAll("img")) {
    img.setAttribute("data-natural-width", img.naturalWidth);
    img.setAttribute("data-natural-height", img.naturalHeight);
  }
  document.body.setAttribute("data-loaded", "yes");
});
</script>"""


def test_report_renders_in_headless_chromium(report_file, chromium, tmp_path):
    """Chromium decodes every embedded figure (natural size > 0) and the page screenshot is not blank."""
    from PIL import Image

    # a copy with a measuring script: the report itself carries no script
    probe = tmp_path / "probe.html"
    probe.write_text(report_file.read_text().replace("</body>", _MEASURE + "</body>"))
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-loaded="yes"' in dom.stdout
    rendered = sections(dom.stdout)
    written = sections(report_file.read_text())
    assert list(rendered) == list(written)
    for section_id, section in rendered.items():
        if section["data-status"] != "computed":
            continue
        assert int(section["data-figures"]) == len(section["images"])
        for image in section["images"]:
            match = re.fullmatch(r"data:image/png;base64,(.+)", image["src"])
            assert match, section_id
            png = base64.b64decode(match.group(1))
            assert png.startswith(b"\x89PNG") and len(png) > 5000, section_id
            assert int(image["data-natural-width"]) > 200 and int(image["data-natural-height"]) > 150, section_id

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    shot = subprocess.run(
        [chromium, *flags, "--window-size=1200,6000", f"--screenshot={screenshot}", report_file.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape == (6000, 1200)
    assert pixels[:2000].std() > 20  # text, tables and figures, not a blank page


def test_every_value_reaches_the_page_escaped(monkeypatch):
    """Host, backend, captions, notes, table cells and error messages are escaped by the template."""
    import pandas as pd

    from populate import api
    from populate.report import page as report

    monkeypatch.setattr(
        api, "connect", lambda: dict(backend="<b>pg</b>", host="evil<script>:1", user="u", prefix="p", store="s")
    )

    def shown(panel):
        panel.note("a < b & <script>note</script>")
        panel.table(pd.DataFrame({"<hx>": ["<td>cell</td>"]}), "caption <i>")

    def broken(panel):
        raise ValueError("<img src=x onerror=alert(1)>")

    monkeypatch.setattr(
        report, "SECTIONS", (report.Section("shown", "Shown <u>", shown), report.Section("broken", "Broken", broken))
    )
    page = report.render_report()
    for raw in ("<script>", "<b>", "<u>", "<i>", "<td>cell", "<hx>", "<img src=x"):
        assert raw not in page, raw
    for escaped in (
        "evil&lt;script&gt;:1",
        "&lt;b&gt;pg&lt;/b&gt;",
        "a &lt; b &amp; &lt;script&gt;note",
        "caption &lt;i&gt;",
        "&lt;td&gt;cell&lt;/td&gt;",
        "&lt;hx&gt;",
        "ValueError: &lt;img src=x",
    ):
        assert escaped in page, escaped
    sections = re.findall(r'<section id="(\w+)" data-status="([\w-]+)" data-figures="(\d+)"', page)
    assert sections == [("shown", "computed", "0"), ("broken", "error", "0")]
