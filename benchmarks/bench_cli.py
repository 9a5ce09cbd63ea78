"""Time ``interp --help`` in fresh interpreters; write the `cli` section of BENCHMARKS.md.

    python benchmarks/bench_cli.py [--repeats 10] [--no-write]

Each run is a new ``python -m interp --help`` process (this checkout first on ``PYTHONPATH``),
wall clock from start to exit, after one warm-up run; the figure is the median of ``--repeats``
runs. A bare interpreter (``python -c pass``) is timed the same way, interleaved, as the floor
no command can go under. Target: ``interp --help`` in at most 0.5 s.

The load average is recorded before and after; when the 1-minute load before the run exceeds
half the cores the figure is marked as taken on a busy machine and the target is not marked met.
The section between ``<!-- cli:start -->`` and ``<!-- cli:end -->`` is replaced (or appended);
every other section of BENCHMARKS.md is left as it is. Exit status 1 if the target is missed or
could not be judged.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import is_busy, load_average, load_note, verdict, write_section  # noqa: E402

TARGET_S = 0.5
COMMANDS = {
    "interp --help": [sys.executable, "-m", "interp", "--help"],
    "python -c pass": [sys.executable, "-c", "pass"],
}


def time_once(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before = load_average()
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for cmd in COMMANDS.values():
        time_once(cmd, env)  # warm-up: the files in the page cache
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            seconds[name].append(time_once(cmd, env))
    after = load_average()
    busy = is_busy(before)
    median = {name: statistics.median(times) for name, times in seconds.items()}
    ok = median["interp --help"] <= TARGET_S
    rows = "\n".join(f"| `{name}` | {median[name]:.3f} s | {min(t):.3f}-{max(t):.3f} s |"
                     + (f" <= {TARGET_S} s: {verdict(ok, busy)} |" if name == "interp --help" else " |")
                     for name, t in seconds.items())
    bytecode = ("PYTHONDONTWRITEBYTECODE is set, so modules without a cached .pyc are compiled on every run"
                if os.environ.get("PYTHONDONTWRITEBYTECODE") else "bytecode cached as usual")
    text = f"""## CLI start-up (`interp --help`)

`python benchmarks/bench_cli.py` -- {args.repeats} fresh interpreters each (after one warm-up), the two commands
interleaved, wall clock from start to exit; Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores;
{bytecode}.
{load_note(before, after)}

| command | median | range | target |
|---|---|---|---|
{rows}

The parser is built from light modules (the presets, the detector folders and their help read
from source, the capacity figures), so neither torch nor transformer_lens nor numpy is imported
for help, `--version` or a usage error (`tests/test_cli.py` checks `sys.modules`); a command
imports what it runs.
"""
    print(text)
    if not args.no_write:
        write_section("cli", text)
    return 0 if ok and not busy else 1


if __name__ == "__main__":
    raise SystemExit(main())
