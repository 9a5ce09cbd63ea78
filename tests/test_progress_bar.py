"""interp.progress_bar: tqdm's redraws on a terminal, at most one every few seconds into a file or log."""

from __future__ import annotations

import io

from tqdm import tqdm

from interp.base.progress_bar import LOG_INTERVAL, on_terminal, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drive(bar) -> None:
    for i in range(2000):
        bar.update(1)
        if i % 10 == 0:
            bar.set_postfix({"loss": f"{1 / (i + 1):.3g}"})
            bar.set_description(f"step {i}")
    bar.close()


def test_a_log_gets_the_first_and_last_state_not_every_update():
    log = io.StringIO()
    bar = progress_bar(total=2000, file=log, desc="train")
    assert bar.mininterval == LOG_INTERVAL >= 2
    _drive(bar)
    redraws = log.getvalue().count("\r")
    assert 1 <= redraws <= 3, log.getvalue()  # opening line, closing line (the loop takes well under 5 s)
    assert "2000/2000" in log.getvalue()
    # plain tqdm into the same kind of file: a redraw for every postfix, hundreds of lines
    plain = io.StringIO()
    _drive(tqdm(total=2000, file=plain))
    assert plain.getvalue().count("\r") > 100


def test_a_terminal_keeps_tqdm_defaults_and_quiet_writes_nothing():
    screen = _Terminal()
    bar = progress_bar(total=10, file=screen)
    assert on_terminal(screen) and bar.mininterval == 0.1
    bar.close()
    silent = io.StringIO()
    _drive(progress_bar(total=2000, file=silent, quiet=True))
    assert silent.getvalue() == ""
    assert not on_terminal(None) and not on_terminal(io.StringIO())
    chosen = progress_bar(total=10, file=io.StringIO(), mininterval=1.0)
    assert chosen.mininterval == 1.0  # a caller's own interval wins
    chosen.close()



def test_a_job_with_nothing_to_do_draws_no_bar():
    stream = io.StringIO()
    for bar in (progress_bar(total=0, file=stream, desc="score"), progress_bar([], file=stream, desc="score")):
        bar.close()
    assert stream.getvalue() == ""  # "score: 0ckpt" used to precede a one-line error
    with progress_bar(range(2), file=stream, desc="score") as bar:
        list(bar)
    assert "score" in stream.getvalue()
