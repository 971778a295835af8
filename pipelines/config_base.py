"""The base of every pipeline-file section: frozen, unknown keys refused, and `hashed()`, the
cache key's view of a section, with the marks (`EXECUTION`, `ReadWhen`) that keep fields out of it.

Split from `pipelines/config.py` by what each part holds; that module re-exports every name here.
`TrainSection` is here because the autoencoder's and the diffusion models' training sections extend it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Execution:
    """Marks a field that says how a stage runs, not what it computes (worker counts, GPUs,
    logging cadence). Such fields stay out of cache keys and Ray Train run names, so a run
    moved from 8 workers to 16 finds its stage folder and resumes from its checkpoint."""


@dataclass(frozen=True)
class ReadWhen:
    """Marks a field that only some configurations read (a dataset's own option): it is hashed
    only where `applies(section)` holds, so e.g. `ucf101_split` never reshards Sky Time-lapse."""

    applies: Callable[[Any], bool]


EXECUTION = Execution()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def hashed(self) -> dict[str, Any]:
        """The fields that change this section's result, recursively: the cache key's view.

        Everything else (`Execution` fields, `ReadWhen` fields that do not apply) is dropped;
        the full section still goes to the manifest and to MLflow params.
        """
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            marks = field.metadata
            if any(isinstance(m, Execution) for m in marks):
                continue
            if any(isinstance(m, ReadWhen) and not m.applies(self) for m in marks):
                continue
            value = getattr(self, name)
            out[name] = (
                value.hashed()
                if isinstance(value, Section)
                else self.model_dump(mode="json", include={name})[name]
            )
        return out


class TrainSection(Section):
    """What every Ray Train stage shares: the step budget, the optimiser, the workers.

    `Execution` fields are out of the cache key: a stage resumes from its checkpoint after a
    change of cluster size. `batch_size` is per worker and is kept, so the global batch is
    `batch_size * num_workers` and grows with the cluster (as in DDP). `checkpoint_every`
    stays in the key: it fixes which data each checkpoint interval replays.
    """

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(1, ge=1, description="clips per worker per step")
    lr: float = Field(1e-4, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast: auto = bf16 where the GPU or CPU computes it natively, else fp32"
    )
    num_workers: Annotated[int, EXECUTION] = Field(1, ge=1, description="Ray Train workers (one per GPU)")
    use_gpu: Annotated[bool, EXECUTION] = False
    compile: Annotated[bool, EXECUTION] = Field(
        False,
        description="torch.compile the trained network's forward in place (weights files unchanged); "
        "off by default: on CPU the demo UNet's step is ~4x faster but its first compile costs minutes",
    )
    cpus_per_worker: Annotated[int, EXECUTION] = Field(
        1, ge=1, description="CPU cores (and torch threads) per Ray Train worker"
    )
    loader_workers: Annotated[int, EXECUTION] = Field(
        2, ge=0, description="DataLoader processes per Ray Train worker"
    )
    checkpoint_every: int = Field(500, ge=1)
    log_every: Annotated[int, EXECUTION] = Field(10, ge=1)
    preview_every: Annotated[int, EXECUTION] = Field(
        500, ge=1, description="held-out preview mp4 + metrics every N steps"
    )
    heldout_clips: Annotated[int, EXECUTION] = Field(4, ge=1, description="held-out clips in each preview")
    max_failures: Annotated[int, EXECUTION] = Field(
        2, ge=0, description="Ray Train retries from the last checkpoint"
    )
    seed: int = 0


def _library_check(config_class: type, fields: dict[str, Any]) -> None:
    """Build the library's config dataclass from a section's fields: its `__post_init__` is the
    one place each architecture rule lives. Its message names the class; say the key instead."""
    try:
        config_class(**fields)
    except ValueError as err:
        name = config_class.__name__
        raise ValueError(str(err).replace(f"{name}.", "").replace(f"{name}: ", "")) from None
