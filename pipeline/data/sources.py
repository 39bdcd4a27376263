"""Where images come from, so that a classifier's test images and the neural stimuli it is regularized
with never share a source.

A regularized classifier sees the neural stimuli during training.  If those stimuli were cut from the
photographs its test images come from, the regularized arms would have seen test content that the
baseline never saw (Li et al. 2019 keep ImageNet stimuli apart from CIFAR).  Sources are known by name:
the simulator cuts its stimuli from every bundled photograph (:mod:`pipeline.data.images`), and the
photograph classification set names its photographs in its ``source`` (:mod:`pipeline.data.photo_classes`).
Procedural sets (``shapes:``) and imported sets (``cifar10:``) share no bundled photograph.
"""

from __future__ import annotations

PHOTO_SET_PREFIX = "photos:"


def simulated_stimulus_photographs() -> frozenset[str]:
    """Names of the bundled photographs a simulated scan's stimuli are cut from: all of them."""
    from pipeline.data.images import source_photographs

    return frozenset(photo.name for photo in source_photographs())


def classification_photographs(source: str) -> frozenset[str]:
    """Names of the bundled photographs a classification set's images are cut from, read from its
    ``source`` (``photos:<name>,<name>,...:seed=<n>``); empty for any other source."""
    if not source.startswith(PHOTO_SET_PREFIX):
        return frozenset()
    names = source[len(PHOTO_SET_PREFIX) :].split(":", 1)[0]
    return frozenset(name for name in names.split(",") if name)


def shared_photographs(classification_source: str, stimulus_photographs: frozenset[str]) -> list[str]:
    """Sorted names of the photographs both the classification set and the stimuli come from."""
    return sorted(classification_photographs(classification_source) & stimulus_photographs)
