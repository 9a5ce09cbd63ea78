"""Real text for induction heads: a byte-level corpus of files, split by file, and a seeded sampler.

The default corpus is the running interpreter's own standard library: every ``.py`` file under
``sysconfig.get_paths()["stdlib"]`` that is UTF-8 without NUL bytes and not empty
(``site-packages`` and ``dist-packages`` left out), so every
machine has it and nobody here wrote it. Code repeats identifiers constantly, which is what
induction heads exploit (Olsson et al. 2022, "In-context learning and induction heads"). Any
folder of text files can be used instead (``interp train text --corpus DIR``): every file under
it, hidden ones aside, that is UTF-8 without NUL bytes.

- **Order**: files sorted by their path relative to the root (POSIX spelling), so the corpus is
  the same sequence of bytes on every machine with the same files.
- **Held-out split by file**: a file is held out when the first 8 bytes of the BLAKE2b hash of its
  relative path, read as a fraction of 2**64, fall below :data:`HELD_OUT_SHARE` (5 %); at least
  one file is held out and at least one trained on. Training and held-out files are concatenated
  into two separate byte streams, so no context crosses the split.
- **Tokens**: token id = byte value (0-255), :data:`BOS` = 256, vocabulary 257: any tool can
  encode a text without the toolkit (``[256, *text.encode()]``).
- **Contexts**: ``[BOS, b_1 .. b_{n-1}]``, ``n - 1`` consecutive bytes of one stream starting at a
  uniformly drawn offset; batches are a pure function of ``(seed, step)``, so a resumed run sees
  exactly the batches an uninterrupted one would.
- **Hash**: BLAKE2b (16 hex digits) over every file's relative path and bytes, in order; recorded
  in ``run.json`` with the Python version, so a run says what it saw.

The training recipe and the evidence for it are in ``docs/training.md``; the in-context learning
score it is measured with in ``docs/scores.md``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from interp.tasks.fast_forward import logits as fast_logits
from interp.tasks.models import TEXT_BOS, TEXT_VOCAB, on_device_of, text_config
from interp.tasks.induction import step_generator

__all__ = ["BOS", "D_VOCAB", "DATA_VERSION", "HELD_OUT_SHARE", "Corpus", "TextTask", "encode", "load_corpus",
           "stdlib_root"]

BOS = TEXT_BOS
D_VOCAB = TEXT_VOCAB
#: Version of the corpus rules and sampler, recorded in run.json: a run resumes only on the data it began with.
DATA_VERSION = "bytes-v1"
#: Share of the files held out (by a hash of their relative path).
HELD_OUT_SHARE = 0.05
#: Folders of the standard library left out of the default corpus (installed packages, caches); a
#: ``--corpus`` folder keeps every file that is not hidden.
_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder (``sysconfig.get_paths()["stdlib"]``)."""
    return Path(sysconfig.get_paths()["stdlib"])


def encode(text: str | bytes) -> torch.Tensor:
    """``[BOS, *bytes]`` as an int64 tensor: UTF-8 bytes are the token ids."""
    if not isinstance(text, (str, bytes, bytearray)):  # bytes(5) would be five NUL bytes
        raise TypeError(f"encode takes text (str) or bytes, got {type(text).__name__}")
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return torch.tensor([BOS, *data], dtype=torch.long)


def _held_out(relative: str) -> bool:
    digest = hashlib.blake2b(os.fsencode(relative), digest_size=8).digest()  # a name's bytes, UTF-8 or not
    return int.from_bytes(digest, "big") / 2**64 < HELD_OUT_SHARE


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class Corpus:
    """The files of a corpus, in order, as two byte streams (uint8 tensors) that share no file.

    Attributes:
        root: the folder read; ``source``: ``"stdlib"`` or the folder as given.
        files, held_out_files: relative paths of the training and held-out files, in order.
        train, held_out: the concatenated bytes of each split.
        digest: BLAKE2b over every file's relative path and bytes, in order.
    """

    root: Path
    source: str
    files: tuple[str, ...]
    held_out_files: tuple[str, ...]
    train: torch.Tensor
    held_out: torch.Tensor
    digest: str

    def describe(self) -> dict:
        """What goes into ``run.json``: where the corpus came from, its size and its hash."""
        return {"corpus": self.source, "corpus_hash": self.digest, "python": platform.python_version(),
                "files": len(self.files), "held_out_files": len(self.held_out_files),
                "train_bytes": int(self.train.numel()), "held_out_bytes": int(self.held_out.numel()),
                "held_out_share": HELD_OUT_SHARE}

    def stream(self, split: str) -> torch.Tensor:
        if split not in ("train", "held_out"):
            raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
        return self.train if split == "train" else self.held_out

    def sample(self, split: str, batch_size: int, n_ctx: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch_size, n_ctx)`` int64 contexts ``[BOS, n_ctx - 1 consecutive bytes of split]``."""
        stream = self.stream(split)
        length = n_ctx - 1
        if stream.numel() < length:
            raise ValueError(f"the {split} split of the corpus {self.source} has {stream.numel()} bytes, fewer "
                             f"than a context of {length}; use a larger corpus")
        offsets = torch.randint(0, stream.numel() - length + 1, (batch_size, 1), generator=generator)
        body = stream[offsets + torch.arange(length)].long()
        return torch.cat([torch.full((batch_size, 1), BOS, dtype=torch.long), body], dim=1)

    def chained_contexts(self, split: str = "held_out", n_chains: int = 8, per_chain: int = 32,
                         early: int = 50, late: int = 500) -> torch.Tensor:
        """``(n_chains * per_chain, late + 1)`` contexts for the in-context learning score, no randomness.

        Each chain is ``per_chain`` contexts whose starts are ``late - early`` bytes apart, the
        chains' first starts spread evenly over the split. So the token at index ``late`` of one
        context is the token at index ``early`` of the next: the score compares the same bytes
        predicted with ``late - 1`` and ``early - 1`` bytes before them (only the two ends of a
        chain are unpaired). Its expectation is that of independent contexts, its variance
        smaller (docs/scores.md, "Text detector").
        """
        stream, stride = self.stream(split), late - early
        span = (per_chain - 1) * stride + late
        if not 1 <= early < late or stream.numel() < span:
            raise ValueError(f"the {split} split of the corpus {self.source} has {stream.numel()} bytes; chains of "
                             f"{per_chain} contexts need {span} (with 1 <= early < late, got {early}, {late})")
        firsts = torch.arange(n_chains) * ((stream.numel() - span) // max(1, n_chains - 1) if n_chains > 1 else 0)
        starts = (firsts[:, None] + torch.arange(per_chain) * stride).flatten()
        body = stream[starts[:, None] + torch.arange(late)].long()
        return torch.cat([torch.full((starts.numel(), 1), BOS, dtype=torch.long), body], dim=1)


def load_corpus(folder: str | Path | None = None) -> Corpus:
    """The standard-library corpus (``folder=None``) or every text file under ``folder``.

    Raises ``FileNotFoundError`` / ``NotADirectoryError`` for a missing folder and ``ValueError``
    when it holds fewer than two text files (one is needed on each side of the split).
    """
    if folder is None:
        root, source = stdlib_root(), "stdlib"
    else:
        root, source = Path(folder).expanduser(), str(folder)
        if not root.exists():
            raise FileNotFoundError(f"corpus folder {folder} does not exist")
        if not root.is_dir():
            raise NotADirectoryError(f"corpus {folder} is not a folder")
    return _load(str(root.resolve()), source, _listing(root, source == "stdlib"))


def _listing(base: Path, stdlib: bool) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime) of every candidate file: the key of the in-process cache."""
    found = []
    for path in base.rglob("*.py") if stdlib else base.rglob("*"):
        rel = path.relative_to(base)
        if any(part.startswith(".") or stdlib and part in _SKIPPED_DIRS for part in rel.parts):
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file():
            found.append((rel.as_posix(), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


@lru_cache(maxsize=4)
def _load(root: str, source: str, listing: tuple[tuple[str, int, int], ...]) -> Corpus:
    base = Path(root)
    found: list[tuple[str, bytes]] = []
    for rel, _, _ in listing:
        try:
            data = (base / rel).read_bytes()
        except OSError:
            continue
        if data and _is_text(data):
            found.append((rel, data))
    found.sort()
    if len(found) < 2:
        raise ValueError(f"corpus {source} holds {len(found)} non-empty text file(s) (UTF-8, no NUL bytes); "
                         "need at least 2, one on each side of the held-out split")
    held = [_held_out(rel) for rel, _ in found]
    if not any(held):  # small corpora: hold out the last file
        held[-1] = True
    if all(held):
        held[0] = False
    digest = hashlib.blake2b(digest_size=8)
    for rel, data in found:
        digest.update(os.fsencode(rel) + b"\x00" + len(data).to_bytes(8, "big"))
        digest.update(data)

    def stream(keep: bool) -> torch.Tensor:
        joined = b"".join(data for (_, data), h in zip(found, held) if h == keep)
        return torch.frombuffer(bytearray(joined), dtype=torch.uint8)

    return Corpus(root=base, source=source,
                  files=tuple(rel for (rel, _), h in zip(found, held) if not h),
                  held_out_files=tuple(rel for (rel, _), h in zip(found, held) if h),
                  train=stream(False), held_out=stream(True), digest=digest.hexdigest())


#: Bytes the heads detector's repeated random-token probe draws from for a text run (run.json
#: ``task.probe``): tab, newline and printable ASCII, the bytes of ordinary source text. The other
#: byte ids (control characters, the bytes of multi-byte UTF-8) are rare or absent in the corpus, so
#: their embeddings stay near their random start; probes drawn from all 256 bytes measured the
#: same heads at about half the prefix matching (docs/training.md).
PROBE_BYTES = ((9, 10), (32, 126))
#: How the positions start (recorded in run.json): :func:`sinusoidal_positions`.
POSITION_INIT = "sinusoidal-1.0"


def sinusoidal_positions(n_ctx: int, d_model: int, amplitude: float = 1.0, base: float = 10_000.0) -> torch.Tensor:
    """``(n_ctx, d_model)``: ``sin(p w_i)`` in the first half of the dimensions, ``cos(p w_i)`` in the
    second, ``w_i = base ** (-2 i / d_model)``, times ``amplitude`` (Vaswani et al. 2017).

    The text model's learned positions start here instead of at random: the previous position is
    then a fixed rotation of the current one for every position, so previous-token heads (and the
    induction heads built on them) can form within minutes over a 512-token context; from random
    positions none formed in 1,000 steps (docs/training.md).
    """
    pos = torch.arange(n_ctx, dtype=torch.float32)[:, None]
    freq = base ** (-2 * torch.arange(d_model // 2, dtype=torch.float32) / d_model)
    table = torch.zeros(n_ctx, d_model)
    half = d_model // 2
    table[:, :half], table[:, half : 2 * half] = torch.sin(pos * freq), torch.cos(pos * freq)
    return amplitude * table


#: Model shape of each preset (``interp.models.text_config`` keywords); presets not listed use the defaults.
PRESET_MODELS = {"mlp": {"d_mlp": 256}}
#: Evaluation contexts: chains x contexts per chain of :meth:`Corpus.chained_contexts`.
EVAL_CHAINS, EVAL_PER_CHAIN = 8, 32


class TextTask:
    """Next-byte prediction on a real corpus (the standard library by default), contexts of ``n_ctx``."""

    name = "text"
    #: The task-specific fields of ``TrainOptions`` it reads (``interp sweep`` checks grid keys against them).
    option_names = ("batch_size", "corpus")

    def __init__(self, options) -> None:  # options: interp.presets.TrainOptions
        self.options = options
        self.corpus = load_corpus(options.corpus)
        self.cfg = text_config(**PRESET_MODELS.get(options.preset, {}))
        self.eval_tokens = self.corpus.chained_contexts("held_out", EVAL_CHAINS, EVAL_PER_CHAIN)
        # the training split holds a context: checked here, before the run is written, not at the first batch
        self.corpus.sample("train", 1, int(self.cfg.n_ctx), torch.Generator())

    def model_config(self):
        return self.cfg

    def check_out_dir(self, out: Path) -> None:
        """``ValueError`` when the run directory ``out`` lies inside the corpus: its own files would
        join the corpus, which would no longer be the one the run recorded (nor split the same)."""
        if Path(out).resolve().is_relative_to(self.corpus.root.resolve()):
            raise ValueError(f"--out-dir {out} lies inside the corpus {self.corpus.root}: the run's own files would "
                             "join the corpus, and the run could be neither scored nor resumed; write it elsewhere")

    def init_model(self, model) -> None:
        """Start the learned positions as sinusoids (:func:`sinusoidal_positions`); the rest as built."""
        with torch.no_grad():
            model.pos_embed.W_pos.copy_(sinusoidal_positions(self.cfg.n_ctx, self.cfg.d_model))

    def describe(self) -> dict:
        return {"name": self.name, "data": DATA_VERSION, "init": POSITION_INIT, **self.corpus.describe(),
                "n_ctx": self.cfg.n_ctx, "d_vocab": D_VOCAB, "bos": BOS,
                "probe": {"bos": BOS, "ids": [list(r) for r in PROBE_BYTES]}}

    def train_batch(self, step: int) -> torch.Tensor:
        """The byte sequences that training step ``step`` uses (the same for a seed and step)."""
        generator = step_generator(self.options.seed, step)
        return self.corpus.sample("train", self.options.batch_size, self.cfg.n_ctx, generator)

    def batch_loss(self, model, tokens: torch.Tensor) -> torch.Tensor:
        """Mean next-byte loss of ``model`` on a batch of :meth:`train_batch`."""
        return _losses(model, tokens).mean()

    def train_loss(self, model, step: int) -> torch.Tensor:
        return self.batch_loss(model, self.train_batch(step))

    def evaluate(self, model, step: int) -> dict[str, float]:
        """Loss of the batch the next step trains on; held-out loss and in-context learning score."""
        from circuits import icl_score_from_losses

        losses = torch.cat([_losses(model, chunk) for chunk in self.eval_tokens.split(64)])
        return {"train_loss": self.train_loss(model, step).item(), "test_loss": losses.mean().item(),
                "icl_score": icl_score_from_losses(losses)}


def _losses(model, tokens: torch.Tensor) -> torch.Tensor:
    """Per-position loss (batch, n - 1) of predicting token j+1 at position j (fused forward)."""
    (tokens,) = on_device_of(model, tokens)
    logits = fast_logits(model, tokens)[:, :-1]
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
