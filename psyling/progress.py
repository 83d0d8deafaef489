"""One progress display per command: a single tqdm bar over all the work of a run (the text tokens of every set
to score, counted once they are tokenized), with an ETA, and step bars for the loops of ``check``, ``probe`` and
``analyze``. ``--quiet`` silences them all: the command line enters ``quiet()`` (and sets TQDM_DISABLE for the
libraries' own bars). Bars go to stderr whether or not it is a terminal, as tqdm's (and psyling's) always have."""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Iterable, Iterator, Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_ACTIVE: ContextVar[Optional["RunProgress"]] = ContextVar("psyling_run_progress", default=None)
_SHOWN: ContextVar[bool] = ContextVar("psyling_progress_shown", default=True)


class RunProgress:
    """A bar over the work ``plan``ned for each part (e.g. a set's tokens); ``advance`` as batches finish. The
    bar opens at the first ``advance``, when the whole total is known, so that its rate and ETA are the work's."""

    def __init__(self, desc: str, unit: str = "tok", shown: bool = True) -> None:
        self.desc, self.unit, self.shown = desc, unit, shown and _SHOWN.get()
        self.total = 0
        self.planned: dict[Any, int] = {}
        self.done: dict[Any, int] = {}
        self._bar: Optional[tqdm] = None
        self._part: Any = None

    def plan(self, part: Any, n: int) -> None:
        """``n`` more units of work for ``part`` (counted in the total)."""
        self.planned[part] = self.planned.get(part, 0) + n
        self._set_total(self.total + n)

    def advance(self, n: int, part: Any = None) -> None:
        """``n`` units of ``part`` done (the part is shown after the counts)."""
        self.done[part] = self.done.get(part, 0) + n
        if self._bar is None:
            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, disable=not self.shown)
        if part is not None and part != self._part:
            self._part = part
            self._bar.set_postfix_str(str(part), refresh=False)
        self._bar.update(n)

    def settle(self, part: Any) -> None:
        """``part`` is finished (or failed): work planned for it and not done leaves the total."""
        left = self.planned.get(part, 0) - self.done.get(part, 0)
        if left > 0:
            self.planned[part] -= left
            self._set_total(self.total - left)

    def _set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None and self.shown:
            self._bar.total = total
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def run_progress(desc: str, unit: str = "tok", shown: bool = True) -> Iterator[RunProgress]:
    """The command's progress display while the block runs: scorers advance it (``scoring_bar``) instead of
    showing bars of their own."""
    display = RunProgress(desc, unit, shown)
    token = _ACTIVE.set(display)
    try:
        yield display
    finally:
        _ACTIVE.reset(token)
        display.close()


class _Lent:
    """The command's display lent to one scoring call: it advances it; closing it leaves it open."""

    def __init__(self, display: RunProgress) -> None:
        self.display = display

    def advance(self, n: int, part: Any = None) -> None:
        self.display.advance(n, part)

    def close(self) -> None:
        pass


def scoring_bar(desc: str, total: int, shown: bool, standalone: bool = True) -> RunProgress | _Lent:
    """What a scoring call advances: the command's display when one is open and shown (and ``shown``), else a
    bar of its own over ``total`` units, shown when ``shown`` and ``standalone`` (e.g. more than one batch)."""
    display = _ACTIVE.get()
    if shown and display is not None and display.shown:
        return _Lent(display)
    own = RunProgress(desc, shown=shown and standalone)
    own.plan(desc, total)
    return own


@contextlib.contextmanager
def quiet(silent: bool = True) -> Iterator[None]:
    """With ``silent``, no psyling progress display is shown while the block runs (``--quiet``)."""
    token = _SHOWN.set(not silent and _SHOWN.get())
    try:
        yield
    finally:
        _SHOWN.reset(token)


def steps(items: Iterable[T], desc: str, unit: str = "step", shown: bool = True) -> Iterator[T]:
    """``items`` one by one with a bar of their count (off under ``quiet`` or with ``shown`` False)."""
    items = list(items)
    yield from tqdm(items, desc=desc, unit=unit, total=len(items), disable=not (shown and _SHOWN.get()))
