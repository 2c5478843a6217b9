"""Which build failures are the engine's cache race (built again) and which are the job's."""

from __future__ import annotations

import pytest

from proctor import engine, exceptions

IMAGE = "sha256:" + "1b" * 32


@pytest.mark.parametrize(
    ("message", "step", "race"),
    [
        (f'unable to find image "{IMAGE}"', "Step 3/4 : LABEL proctor.job=01a2", True),
        (f"unable to find image {IMAGE}", "Step 3/4 : LABEL proctor.job=01a2", True),
        # A submission's own step failing is the submission's error, whatever it says.
        (f'unable to find image "{IMAGE}"', "Step 2/4 : RUN false", False),
        (
            f"The command '/bin/sh -c echo unable to find image \"{IMAGE}\"' returned 1",
            "Step 3/4 : LABEL proctor.job=01a2",
            False,
        ),
        ('unable to find image "sha256:short"', "Step 3/4 : LABEL proctor.job=01a2", False),
        (f'unable to find image "{IMAGE}"', None, False),
    ],
)
def test_engine_is_cache_race_only_at_proctors_label_step(
    message: str, step: str | None, race: bool
) -> None:
    assert engine.is_cache_race(exceptions.BuildError(message, step=step)) is race
