"""Progress bars draw on a terminal only: worker logs (files, pipes) get no control codes."""

from __future__ import annotations

import io

from pipeline.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_draws_on_a_terminal_and_stays_silent_in_a_log_file():
    terminal, log = _Terminal(), io.StringIO()
    assert list(progress_bar(range(5), desc="fit", file=terminal)) == list(range(5))
    assert list(progress_bar(range(5), desc="fit", file=log)) == list(range(5))
    assert "fit" in terminal.getvalue() and "\r" in terminal.getvalue()
    assert log.getvalue() == ""


def test_a_bar_switched_off_stays_silent_even_on_a_terminal():
    terminal = _Terminal()
    bar = progress_bar(total=3, enabled=False, file=terminal)
    bar.update(3)
    bar.close()
    assert terminal.getvalue() == ""
