"""The learning rate at each optimiser step: constant (the release's) or a cosine decay to 0.

A pure function of the step, not a torch scheduler object: a run resumed at step k sets the
rate `lr_factor(..., k)` like the uninterrupted run did, with no scheduler state to checkpoint
or to get out of step with the optimiser's.

Why a decay at all: a short run at a constant high rate ends where the noise of its last
steps leaves it, and the EMA weights average over only the last ~1/(1 − decay) of them.
Decaying the rate to 0 lets the last steps settle instead. On issue 21's reference run it did
not help (README, "What limits the missed goals"), so the default stays constant.
"""

from __future__ import annotations

import math

SCHEDULES: tuple[str, ...] = ("constant", "cosine")


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """The multiple of the base learning rate for 0-based optimiser step `step` of `total_steps`.

    `warmup_steps` > 0 ramps the rate linearly from 1/warmup_steps of it to all of it over the
    first steps; after them, "constant" keeps it and "cosine" follows half a cosine from it to 0
    at `total_steps` (0 from then on, if a run is resized past its schedule's end).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"lr schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"lr schedule over {total_steps} steps with {warmup_steps} warmup steps: "
            "need total_steps >= 1 and 0 <= warmup_steps < total_steps"
        )
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
