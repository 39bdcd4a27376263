"""Simulated mouse-V1 scan with ground truth: the pipeline's embedded default dataset.

:func:`simulate` turns a :class:`SimulationConfig` (or the name of one of :data:`PRESETS`) and a seed
into a :class:`~pipeline.data.recording.Recording` laid out like a Sensorium static scan:

Stimuli
    Natural-image patches (:mod:`pipeline.data.images`), uint8 grey levels 0-255.  Train and
    validation images are shown once, test images ``test_repeats`` times; trials are shown in a
    random order and stored in another random (file) order, ``trial_idx`` being the time order.
Neurons
    Every unit belongs to one functional type of :data:`CELL_TYPES`.  A type is a *template*: a set
    of oriented subunits (Gabor filters or a difference of Gaussians) laid out in the unit's own frame
    and a rule combining their outputs.  Each unit rotates, scales and places its type's template
    (random orientation, size and receptive-field position; receptive fields follow a retinotopic map
    of the units' cortical positions), so a type is one feature seen at many orientations.  The drive
    ``d`` (>= 0, linear in image contrast) becomes a rate ``A * (baseline + (d / q) ** exponent)``
    with ``q`` and ``A`` calibrated per unit on separate natural patches so that the mean rate over
    natural images is the unit's ``mean_rate``.
Behaviour
    Slowly varying arousal and locomotion (AR(1) processes over trials) give pupil size, its change
    and running speed.  Rates are multiplied by a unit-specific gain
    ``exp(running_gain * tanh(speed / running_scale) + pupil_gain * (pupil - pupil_reference) / pupil_scale)``
    (1 for a resting animal with the reference pupil).  The eye position (``pupil_center``, in
    eye-camera pixels) moves every receptive field by ``eye_to_stimulus * (pupil_center - eye_center)``
    stimulus pixels (x right, y down), implemented by shifting the image the other way.
Noise
    Single-trial response = Gamma(shape = mu * h / phi, scale = phi): mean ``mu * h``, variance
    ``phi * mu * h``, where ``mu`` is rate times gain and ``h`` is log-normal multiplicative noise
    (mean 1, log-s.d. ``overdispersion``; a fraction ``shared_noise_fraction`` of its variance is
    shared by all units on a trial).  Each unit's ``phi`` is chosen so that its expected oracle
    correlation equals a target drawn from a scaled Beta distribution (clipped at a floor of phi).

Ground truth (``Recording.ground_truth``)
    ``rates`` are the noise-free rates per unique image, eye at ``eye_center``, gain 1.
    ``reliability`` is the expected oracle correlation over the (non-withheld) test trials, computed
    analytically: with ``S`` the variance across test images of the trial-averaged response and
    ``N`` the mean within-image trial-to-trial variance (noise, overdispersion, behavioural gain and
    eye-position jitter; the last two estimated by Monte-Carlo over ``reliability_samples`` behaviour
    states per test image), ``rho = S / sqrt((S + N) (S + N / (repeats - 1)))``, the large-sample
    value of the correlation between a trial and the mean of the other repeats.
    ``orientation`` is the template rotation modulo pi (radians, [0, pi)) and NaN for the
    orientation-free centre-surround units.

Harder variants (:data:`VARIANTS`, presets ``demo-<name>`` and ``tiny-<name>``)
    Each breaks one assumption of the rotation-equivariant model: more types than a core has
    features, types that differ only in scale (type names ``"name@factor"``), graded mixtures of two
    types (``mixture_types``), a cardinal bias of orientations (``orientation_bias``) and a type seen
    at one orientation only (``unrotated_types``).  Their ground truth records what changed
    (``extra["variant"]`` and per-unit arrays).  Their settings are drawn after all others and
    stay out of a config's hash while at their defaults, so that a config leaving them at their
    defaults draws the same units and keeps the same hash as the model without variants.

Orientation convention: a unit of orientation ``theta`` prefers bars running along the direction
``(cos theta, -sin theta)`` in (column, row) coordinates, i.e. ``theta`` counter-clockwise from
horizontal as seen on screen (rows grow downwards); its preferred grating is
``cos(2 pi (x sin theta + y cos theta) / wavelength + phase)`` with x the column and y the row.

Modules: :mod:`~pipeline.data.simulate.templates` (the types), :mod:`~pipeline.data.simulate.population`
(drives, rates, calibration, gain), :mod:`~pipeline.data.simulate.config` (settings),
:mod:`~pipeline.data.simulate.presets` (named configs), :mod:`~pipeline.data.simulate.sampling` (the
units and behaviour drawn), :mod:`~pipeline.data.simulate.noise` (reliability and trial noise) and
:mod:`~pipeline.data.simulate.scan` (:func:`simulate`, step by step).
"""

from pipeline.data.simulate.config import SimulationConfig
from pipeline.data.simulate.noise import UnitNoise, expected_oracle_correlation, noise_for_oracle_correlation
from pipeline.data.simulate.population import SimulatedPopulation, shift_images
from pipeline.data.simulate.presets import CONTROLS, PRESETS, VARIANTS, resolve_config, variant_changes
from pipeline.data.simulate.sampling import make_population, random_streams, sample_population, simulate_behavior
from pipeline.data.simulate.scan import TrialDesign, simulate
from pipeline.data.simulate.templates import CELL_TYPES, TYPE_NAMES, CellType, Subunit, cell_type_of, subunit_filters

__all__ = [
    "CELL_TYPES",
    "CONTROLS",
    "PRESETS",
    "TYPE_NAMES",
    "VARIANTS",
    "CellType",
    "SimulatedPopulation",
    "SimulationConfig",
    "Subunit",
    "TrialDesign",
    "UnitNoise",
    "cell_type_of",
    "expected_oracle_correlation",
    "make_population",
    "noise_for_oracle_correlation",
    "random_streams",
    "resolve_config",
    "sample_population",
    "shift_images",
    "simulate",
    "simulate_behavior",
    "subunit_filters",
    "variant_changes",
]
