"""Names of Hugging Face checkpoint directories and of series of them (no weights are read here;
only a shard index, for the files a fingerprint covers).

A Hugging Face causal-LM directory (what ``save_pretrained`` writes)::

    DIR/config.json                          the model's config (``architectures``, sizes)
    DIR/model.safetensors                    the weights, or
    DIR/model.safetensors.index.json + DIR/model-0000N-of-0000M.safetensors   sharded, or
    DIR/pytorch_model.bin (or its .index.json + shards)                     read weights-only

A series is a directory whose children are such directories named by their training step
(``step1000``, ``step_1000``, ``checkpoint-500``, ``global_step2000``); it is scored as one run,
the child's name being the checkpoint. :mod:`interp.runs.layout` resolves both;
:mod:`interp.runs.huggingface` reads them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = [
    "BIN_FILE",
    "ADAPTER_FILES",
    "BIN_INDEX",
    "CONFIG_FILE",
    "MAX_JSON_BYTES",
    "SAFETENSORS_FILE",
    "SAFETENSORS_INDEX",
    "WEIGHT_MARKERS",
    "index_shards",
    "is_hf_dir",
    "is_series",
    "missing_config",
    "missing_in_series",
    "weights_without_config",
    "why_no_checkpoint",
    "series_children",
    "series_step",
    "step_number",
    "unnamed_children",
    "weight_like_files",
]

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
#: Any of these beside ``config.json`` makes a directory a Hugging Face checkpoint, in the order
#: ``transformers`` reads them: a single file before an index of shards, safetensors before ``.bin``.
WEIGHT_MARKERS = (SAFETENSORS_FILE, SAFETENSORS_INDEX, BIN_FILE, BIN_INDEX)
#: What a PEFT (LoRA) checkpoint holds instead: the adapter alone, no base weights.
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_CHILD_STEP = re.compile(r"^(?:global_step|step|checkpoint)[-_]?(\d+)$")
#: Longest ``config.json`` or shard index read (they are a few kB).
MAX_JSON_BYTES = 16 * 2**20


def is_hf_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory with ``config.json`` and a weights file (or an index of shards)."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and bool(_weight_markers(path))


def _weight_markers(path: Path) -> list[str]:
    """The names of :data:`WEIGHT_MARKERS` that are files in ``path``."""
    return [name for name in WEIGHT_MARKERS if (path / name).is_file()]


def missing_config(directory: str | Path) -> str | None:
    """Why ``directory`` is not a Hugging Face directory though it holds one's weights (no
    ``config.json`` beside them) or a LoRA adapter of one (no base weights), or None."""
    directory = Path(directory)
    adapter = next((name for name in ADAPTER_FILES if (directory / name).is_file()), None)
    if adapter and not _weight_markers(directory):
        return (f"{directory}: a LoRA adapter ({adapter}) without the base model's weights, which this toolkit does not "
                "read; merge it into the model (peft: merge_and_unload, then save_pretrained)")
    if (directory / CONFIG_FILE).is_file():
        return None
    weights = _weight_markers(directory)
    return f"{directory}: {weights[0]} without the {CONFIG_FILE} a Hugging Face directory has beside it" if weights else None


def missing_in_series(directory: str | Path) -> str | None:
    """Why ``directory``'s children named by step are no series though they hold parts of
    checkpoints (:func:`missing_config` of the first, a LoRA adapter alone say), or None."""
    directory = Path(directory)
    if not directory.is_dir() or series_children(directory):
        return None
    steps = sorted((step, child) for child in directory.iterdir() if (step := series_step(child.name)) is not None)
    return next((why for _, child in steps if child.is_dir() and (why := missing_config(child))), None)


def weights_without_config(path: str | Path) -> str | None:
    """:func:`missing_config` of the folder of ``path`` when ``path`` is the weights file of a
    Hugging Face directory or of a LoRA adapter (a file without our config), else None."""
    path = Path(path)
    return missing_config(path.parent) if path.name in (SAFETENSORS_FILE, *ADAPTER_FILES) else None


def why_no_checkpoint(directory: str | Path) -> str | None:
    """Why ``directory`` holds parts of checkpoints but no checkpoint (:func:`missing_config`,
    :func:`missing_in_series`), or None."""
    return missing_config(directory) or missing_in_series(directory)


def series_step(name: str) -> int | None:
    """The step of a series child's name (``step1000``, ``step_1000``, ``checkpoint-500``,
    ``global_step2000``), or None when the name carries none (or one past 64 bits)."""
    match = _CHILD_STEP.match(name)
    return step_number(match.group(1)) if match else None


def step_number(digits: str) -> int | None:
    """The step a name's digits give, or None past 64 bits (a table's step is an int64)."""
    return int(digits) if int(digits) < 2 ** 63 else None


def series_children(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, child) of every child of a series named by step, by step (numerically: ``step100``
    before ``step1000``); [] when ``directory`` holds no Hugging Face directory named by step.

    A child named by step with a ``config.json`` or a weights file but not both, or a LoRA adapter
    alone, is listed too: it is a checkpoint that lost part of itself (or holds only a part), and
    loading it names what is missing (an error row when scored), rather than a step that silently
    is not there."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(step, child) for child in directory.iterdir()
             if (step := series_step(child.name)) is not None and _has_checkpoint_part(child)]
    if not any(is_hf_dir(child) for _, child in found):
        return []
    return sorted(found, key=lambda pair: (pair[0], pair[1].name))


def _has_checkpoint_part(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or bool(_weight_markers(path)) or \
        any((path / name).is_file() for name in ADAPTER_FILES)


def is_series(directory: str | Path) -> bool:
    """Whether ``directory`` holds at least one Hugging Face directory named by step."""
    return bool(series_children(directory))


def unnamed_children(directory: str | Path) -> list[Path]:
    """Checkpoints a series leaves out: its children that are Hugging Face directories not named by
    step (hidden ones aside), and the series itself when it is one too (a Trainer's output folder
    holds its final model beside its ``checkpoint-N`` folders; that model has no step). [] for
    anything but a series."""
    if not is_series(directory):
        return []
    directory = Path(directory)
    children = sorted(child for child in directory.iterdir() if not child.name.startswith(".")
                      and series_step(child.name) is None and is_hf_dir(child))
    return [directory, *children] if is_hf_dir(directory) else children


def weight_like_files(directory: str | Path) -> list[Path]:
    """``config.json``, then the weight files of a Hugging Face directory that a loader may read,
    by name: the single files and shard indexes of :data:`WEIGHT_MARKERS` present, and the shards
    each index's ``weight_map`` names, whatever their names (the index is read: a few kB). What its
    content fingerprint covers; a Trainer's ``optimizer.bin`` or ``training_args.bin`` is not in it."""
    directory = Path(directory)
    files = {directory / name for name in _weight_markers(directory)}
    for index in (SAFETENSORS_INDEX, BIN_INDEX):
        try:
            if (directory / index).is_file():
                files |= {directory / s for s in index_shards(directory / index) if isinstance(s, str)
                          and Path(s).name == s}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # an unreadable index: the loader names it
    return [directory / CONFIG_FILE, *sorted(f for f in files if f.is_file())]


def index_shards(index: Path) -> list:
    """The shard names a shard index's ``weight_map`` gives, each once, sorted (as written: the
    caller checks they are file names). ``ValueError`` for an index over :data:`MAX_JSON_BYTES`;
    ``OSError``, ``ValueError``, ``KeyError``, ``TypeError`` or ``AttributeError`` for one that is
    unreadable or not an index."""
    if index.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{index.name} is larger than {MAX_JSON_BYTES} bytes")
    return sorted(set(json.loads(index.read_bytes())["weight_map"].values()))