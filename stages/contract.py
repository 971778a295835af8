"""The stage contract: what a stage declares and what the runner hands it.

A stage is a name, its upstream stages, the config sections it reads and a `run` function.
Its cache key hashes exactly those three things, so changing one section reruns the stages
that read it and their dependents, nothing else. Of a section it hashes only what changes the
result (`Section.hashed()`: execution settings such as worker counts and GPUs, and options of
datasets other than the chosen one, stay out), so a run resized from 8 workers to 16 finds
its stage folders and Ray Train run names unchanged and resumes from its checkpoints.

The runner owns the output folder's lifecycle (`manifest.json` written last, atomically);
a stage writes its files inside the folder with temporary names and renames them when
whole, so a killed stage leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from data_prep import storage

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Tracking:
    """Where this stage's MLflow child run lives; workers reattach with these two strings."""

    tracking_uri: str
    run_id: str


@dataclass(frozen=True)
class StageContext:
    name: str
    key: str
    config: Any  # pipelines.config.PipelineConfig; typed there, read-only here
    out_dir: str  # a location (data_prep.storage): a local path or an object-store URI
    inputs: Mapping[str, dict]  # upstream stage name -> its manifest (with "out_dir")
    tracking: Tracking
    run_name: str  # deterministic (stage-key): Ray Train resumes by RunConfig name


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageContext], dict]
    sections: tuple[str, ...]
    inputs: tuple[str, ...] = field(default=())
    description: str = ""
    # Groups of alternative inputs: the stage takes the one of each group that the pipeline
    # lists (train_t2v: SD's latents from cache_t2v_latents, or the pipeline's own from
    # cache_latents). The runner's plan resolves them into `inputs`.
    one_of: tuple[tuple[str, ...], ...] = field(default=())
    # Inputs taken where the pipeline lists them (train_pred starts from train_uncond's weights
    # if it is there; sample takes a shared network's roles from train_pred where it is not).
    optional_inputs: tuple[str, ...] = field(default=())


def cache_key(stage: Stage, config: Any, input_keys: Mapping[str, str]) -> str:
    """12 hex digits of the stage's name, the result-changing part of its sections, its inputs' keys."""
    payload = {
        "stage": stage.name,
        "config": {s: config.section(s).hashed() for s in stage.sections},
        "inputs": dict(sorted(input_keys.items())),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def read_manifest(out_dir: storage.Location) -> dict | None:
    path = storage.join(out_dir, MANIFEST)
    if not storage.is_file(path):
        return None
    manifest = storage.read_json(path)
    manifest["out_dir"] = str(out_dir)
    return manifest
