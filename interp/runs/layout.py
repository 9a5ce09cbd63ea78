"""The run directory on disk: its layout and its checkpoint files (``run.json`` and ``metrics.csv``
are read and written by :mod:`interp.runs.record`).

A run directory (``docs/architecture.md``, "Run format")::

    RUN/run.json                              task, model config, training options, seed, versions
    RUN/checkpoints/step_000500.safetensors   weights; metadata holds the step and model config
    RUN/optimizer.safetensors                 optimiser state of the newest checkpoint (for --resume)
    RUN/metrics.csv                           one row per evaluation

This module and :mod:`interp.runs.record` are the only places that know these names. This one also
resolves what a user names on the command line (run directories, folders of runs, checkpoint
files, globs, a series of checkpoint files, Hugging Face directories and series of them,
:mod:`interp.runs.series`) into checkpoints, fingerprints them, and reads only regular files
(:func:`checked_file`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from interp.runs.errors import CheckpointError, RunError
from interp.runs.series import is_hf_dir, series_children, series_step, step_number, why_no_checkpoint, \
    unnamed_children, weight_like_files

__all__ = ["CHECKPOINT_DIR", "CHECKPOINT_SUFFIXES", "CheckpointError", "METRICS_FILE", "OPTIMIZER_FILE",
           "RUN_FILE", "CheckpointRef", "RunError", "checkpoint_path", "checkpoint_series", "checked_file",
           "find_checkpoints", "fingerprint", "list_checkpoints", "run_of", "safetensors_extent",
           "scored_checkpoint", "step_of", "unlisted_files"]

RUN_FILE = "run.json"
CHECKPOINT_DIR = "checkpoints"
OPTIMIZER_FILE = "optimizer.safetensors"
METRICS_FILE = "metrics.csv"
#: Files a checkpoint may be: ours (safetensors) and foreign torch files.
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
_STEP_FILE = re.compile(r"^step_(\d+)\.safetensors$")
_STEP = re.compile(r"step_(\d+)")
_GLOB = re.compile(r"[*?\[]")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """``RUN/checkpoints/step_NNNNNN.safetensors``."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:06d}.safetensors"


def unlisted_files(run_dir: str | Path) -> list[Path]:
    """Files in ``RUN/checkpoints/`` that :func:`list_checkpoints` leaves out: checkpoint-like files
    (``.safetensors``, ``.pt``, ``.pth``) not named ``step_N.safetensors``, hidden files aside.

    For a series of Hugging Face directories (:mod:`interp.runs.series`): its children that are
    Hugging Face directories not named by step."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return unnamed_children(run_dir)
    return sorted(p for p in ckpt_dir.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and not p.name.startswith(".")
                  and not _STEP_FILE.match(p.name))


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in a run directory, by step."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return []
    found = []
    for entry in ckpt_dir.iterdir():
        match = _STEP_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def checkpoint_series(source: str | Path | Sequence[str | Path]) -> tuple[list[tuple[int, Path]], Path | None]:
    """(step, path) pairs sorted by step, and the run directory they come from (if one).

    ``source`` is a run directory (its checkpoints), a series of Hugging Face directories (its
    children named by step; the series is the run), one Hugging Face directory, or a list of
    checkpoint files or directories, whose steps come from their names (:func:`step_of`), else
    their list position. Raises ``FileNotFoundError`` for a missing file, :class:`CheckpointError`
    for a run without checkpoints and ``ValueError`` for duplicate steps (two files, or two children
    of a series such as ``step10`` and ``checkpoint-10``).
    """
    if isinstance(source, (str, Path)):
        source = Path(source)
        children = [] if (source / CHECKPOINT_DIR).is_dir() else series_children(source)
        if children:
            return _one_per_step(children), source
        if source.is_dir() and not is_hf_dir(source):
            found = list_checkpoints(source)
            if not found:
                raise CheckpointError(why_no_checkpoint(source) or f"{source}: run directory has no checkpoints/step_*.safetensors")
            return _one_per_step(found), source
        source = [source]
    paths = [Path(s) for s in source]
    if not paths:
        raise ValueError("no checkpoints given")
    pairs = []
    for i, path in enumerate(paths):
        if not path.exists():
            raise FileNotFoundError(f"no such checkpoint: {path}")
        step = step_of(path)
        pairs.append((i if step is None else step, path))
    in_runs = [p.parent.parent for p in paths if p.parent.name == CHECKPOINT_DIR]
    run_dir = in_runs[0] if len(in_runs) == len(paths) and len(set(in_runs)) == 1 else None
    return _one_per_step(sorted(pairs)), run_dir


def _one_per_step(pairs: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
    """``pairs`` (sorted by step) when no two share a step, else a one-line ``ValueError`` naming two that do."""
    for (step, first), (other, second) in zip(pairs, pairs[1:]):
        if step == other:
            raise ValueError(f"{first} and {second} are both step {step}; keep one (or name the files step_<N>)")
    return pairs


def scored_checkpoint(run: str | Path, checkpoint: str) -> Path:
    """The file of a scores-table row: ``RUN/checkpoints/FILE`` when it exists, else ``RUN/FILE`` (a loose
    file, or a Hugging Face directory: a child of a series, or a lone directory whose run is its parent).

    When neither exists (a deleted run), a ``step_N.safetensors`` name is placed inside ``checkpoints/``,
    where the training loop writes it.
    """
    inside = Path(run) / CHECKPOINT_DIR / checkpoint
    loose = Path(run) / checkpoint
    if inside.exists() or (not loose.exists() and _STEP_FILE.match(checkpoint)):  # a deleted run's file was inside
        return inside
    return loose


def step_of(path: str | Path) -> int | None:
    """The step in a checkpoint's name (``step_<N>`` in a file's, or a series child's name such as
    ``step1000``, ``checkpoint-500``, ``global_step2000``), or None."""
    path = Path(path)
    step = series_step(path.name)
    if step is not None:
        return step
    match = _STEP.search(path.stem)
    return step_number(match.group(1)) if match else None


def run_of(path: str | Path) -> Path | None:
    """The run directory of a checkpoint (``RUN/checkpoints/FILE``, or a series child named by step:
    the series), or of a run directory or series itself; else None (a loose file or directory)."""
    path = Path(path)
    if path.is_dir():
        if (path / RUN_FILE).exists() or (path / CHECKPOINT_DIR).is_dir() or series_children(path):
            return path
        if is_hf_dir(path) and series_step(path.name) is not None:
            return path.parent
        return None
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else None


#: Longest safetensors header read (the JSON of names, shapes and offsets; ours are a few kB).
MAX_HEADER_BYTES = 100 * 2**20


def checked_file(path: str | Path) -> Path:
    """``path`` when it names a regular file (a symlink to one counts), so reading it ends.

    Raises ``FileNotFoundError`` when nothing is there and :class:`CheckpointError` naming the
    path for anything else: a FIFO (reading it waits for a writer), a device (``/dev/zero`` never
    ends), a socket or a directory. A safetensors file must also be no longer than its header
    says (:func:`safetensors_extent`), so no checkpoint read is unbounded.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"no such checkpoint: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))
        kind = next((name for test, name in kinds if test(mode)), "not a regular file")
        raise CheckpointError(f"{path}: not a checkpoint file ({kind}); only regular files are read")
    if path.suffix == ".safetensors":
        if any("\ud800" <= c <= "\udfff" for c in str(path)):  # bytes not UTF-8: safetensors cannot open it
            raise CheckpointError(f"{str(path)!r}: a path that is not UTF-8, which safetensors cannot open; rename it")
        safetensors_extent(path)
    return path


def safetensors_extent(path: str | Path) -> int:
    """The size in bytes a safetensors file's header describes; :class:`CheckpointError` when the
    header is unreadable or the file is larger than that (trailing data of unknown length)."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            if size < 8 or length > min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {length} for a file of {size} bytes")
            header = json.loads(fh.read(length))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from exc
    extent = 8 + length + end
    if size > extent:
        raise CheckpointError(f"{path}: {size} bytes, but its header describes {extent}; not a checkpoint this "
                              "toolkit wrote")
    return extent


def fingerprint(path: str | Path) -> str:
    """``SIZE-HASH`` of a checkpoint's content (BLAKE2b, 16 hex digits); "" when it cannot be read.

    For safetensors files the hash covers the metadata with sorted keys and each tensor's name,
    dtype, shape and bytes in name order, not the raw file: the library writes the header's keys
    in an arbitrary order, so two writes of the same weights differ byte for byte. Other files
    are hashed whole. A Hugging Face directory is hashed as its ``config.json`` (parsed, keys
    sorted) and each weight file by name (:func:`interp.runs.series.weight_like_files`), SIZE
    their total (the config counted as that sorted JSON), so rewriting the same weights keeps it.
    Batch scoring stores it beside each checkpoint's rows, so a checkpoint whose content changed
    (a run retrained into the same folder) is scored again.
    """
    digest = hashlib.blake2b(digest_size=8)
    try:
        if Path(path).is_dir():
            files = weight_like_files(path)
            config = json.dumps(json.loads(checked_file(files[0]).read_bytes()), sort_keys=True).encode()
            digest.update(config)
            size = len(config)
            for file in files[1:]:
                digest.update(file.name.encode())
                size += _hash_file(digest, file)
        else:
            size = _hash_file(digest, path)
    except (OSError, ValueError, KeyError, TypeError):  # CheckpointError is a ValueError
        return ""
    return f"{size}-{digest.hexdigest()}"


def _hash_file(digest, path: str | Path) -> int:
    """Feed one checkpoint file's content into ``digest`` (see :func:`fingerprint`); its size."""
    data = checked_file(path).read_bytes()
    if Path(path).suffix == ".safetensors":
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        body = memoryview(data)[8 + size:]
        digest.update(json.dumps(header.pop("__metadata__", {}), sort_keys=True).encode())
        for name in sorted(header):
            entry = header[name]
            begin, stop = entry["data_offsets"]
            digest.update(json.dumps([name, entry["dtype"], entry["shape"]]).encode())
            digest.update(body[begin:stop])
    else:
        digest.update(data)
    return len(data)


# ---------------------------------------------------------------------------------------------
# what the user names -> checkpoints


@dataclass(frozen=True, order=True)
class CheckpointRef:
    """One checkpoint file: its run (run directory, absolute), file name, path, step if known, content hash.

    ``step`` comes from ``step_<N>`` in the file name; the file's metadata overrides it once loaded.
    ``fingerprint`` (:func:`fingerprint`) is "" until someone takes it: finding files does not read
    them; batch scoring hashes each file in the worker that scores it.
    """

    run: str
    sort_step: int
    checkpoint: str
    path: str = field(compare=False)
    step: int | None = field(compare=False, default=None)
    fingerprint: str = field(compare=False, default="")


def _ref(path: Path) -> CheckpointRef:
    path = Path(os.path.abspath(path))  # absolute, symlinks kept: a linked file is its own checkpoint
    run = path.parent.parent if path.parent.name == CHECKPOINT_DIR and not path.is_dir() else path.parent
    step = step_of(path)
    return CheckpointRef(str(run), -1 if step is None else step, path.name, str(path), step)


def _refs_in_dir(directory: Path) -> list[CheckpointRef]:
    if (directory / CHECKPOINT_DIR).is_dir():
        return [_ref(p) for _, p in list_checkpoints(directory)]
    children = series_children(directory)
    if children:  # a series of Hugging Face directories: one run (before a model of its own, as Trainer writes)
        return [_ref(p) for _, p in children]
    if is_hf_dir(directory):  # one Hugging Face directory: a checkpoint whose run is its parent
        return [_ref(directory)]
    if directory.name == CHECKPOINT_DIR and (directory.parent / RUN_FILE).exists():
        return [_ref(p) for _, p in list_checkpoints(directory.parent)]
    # a folder of checkpoint files, and of runs, series or Hugging Face directories one level down
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    below = [r for child in sorted(directory.iterdir()) if child.is_dir()
             and ((child / CHECKPOINT_DIR).is_dir() or series_children(child) or is_hf_dir(child))
             for r in _refs_in_dir(child)]
    return [*(_ref(p) for p in files), *below]


def _holdable(text: str) -> bool:
    """UTF-8 (a name of undecodable bytes is held as surrogates, which is not) without control
    characters (a newline would split a CSV row); any other character, a no-break space too, is fine."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(unicodedata.category(c) == "Cc" for c in text)


def find_checkpoints(paths: str | Path | Iterable[str | Path]) -> list[CheckpointRef]:
    """Checkpoints named by ``paths``, each once, sorted by (run, step, file name).

    Each path may be a run directory (all its ``checkpoints/step_*.safetensors``), one checkpoint
    file, a Hugging Face directory (one checkpoint; its run is its parent), a series of them (one
    run: the children named by step, :mod:`interp.runs.series`), a folder of any of these (its
    checkpoint files ``.safetensors``, ``.pt``, ``.pth`` and the runs, series and Hugging Face
    directories one level down, all of them), or a glob of any of these
    (``runs/*/checkpoints/step_00*``; ``**`` recurses; of the files it matches, those with a
    checkpoint's suffix). Raises ``FileNotFoundError`` for a path or glob that matches nothing.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: dict[str, CheckpointRef] = {}
    for raw in paths:
        text = str(raw)
        if Path(text).exists():
            matches = [Path(text)]
        elif _GLOB.search(text):
            matched = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            matches = [m for m in matched if m.is_dir() or m.suffix in CHECKPOINT_SUFFIXES]  # not a table, a note
            if not matches:
                raise FileNotFoundError(f"no {'checkpoints' if matched else 'files'} match {text}")
        else:
            raise FileNotFoundError(f"no such run directory or checkpoint: {text}")
        for match in matches:
            refs = _refs_in_dir(match) if match.is_dir() else [_ref(match)]
            for ref in refs:
                if not _holdable(ref.path):
                    raise ValueError(f"{ref.path!r}: a path the scores table cannot hold (bytes that are not UTF-8, "
                                     "or a control character); rename it")
                found.setdefault(ref.path, ref)
    return sorted(found.values())
