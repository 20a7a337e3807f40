"""Progress that stays readable: a live bar where someone watches it, a few summary lines everywhere else.

Every progress bar of the workspace comes from :func:`progress_bar`. It returns a tqdm bar (``tqdm.auto``: a widget
in a notebook, ipywidgets being a dependency; text otherwise) when :func:`progress_mode` says ``"bar"``, and otherwise a
:class:`LogProgress` with the same interface that prints at most four lines: when a quarter, half and three
quarters of the total are done, and when it closes (count, elapsed time, rate). A bar redrawn with carriage
returns is one line on a terminal but one line *per update* in a log file, in CI, and in the output papermill
captures into an executed notebook (extracting 160 clips left 160 lines there).

The decision (``FFDV_PROGRESS`` overrides it: ``bar``, ``log``, ``off``, or ``auto``, the default):

* a live Jupyter notebook (an IPython kernel) gets the bar; the pipeline runner sets ``FFDV_PROGRESS=log`` for the
  kernels papermill starts, since nobody watches those, and a Kaggle batch run (``KAGGLE_KERNEL_RUN_TYPE=Batch``,
  "Save & Run All") gets lines too;
* otherwise the bar only when the stream it writes to (stderr) is a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

__all__ = ["ENV_VAR", "progress_mode", "progress_bar", "LogProgress"]

ENV_VAR = "FFDV_PROGRESS"
_MODES = ("bar", "log", "off")


def _in_ipython_kernel() -> bool:
    """True inside a Jupyter kernel (the test tqdm.auto uses to pick its notebook bar)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # an odd IPython: behave as outside a notebook
        return False


def progress_mode(stream: TextIO | None = None) -> str:
    """How progress is shown here: ``"bar"`` (tqdm), ``"log"`` (a few lines) or ``"off"``.

    Args:
        stream: Where the bar would write (default: ``sys.stderr``, tqdm's default).
    """
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced in _MODES:
        return forced
    if _in_ipython_kernel():
        return "log" if os.environ.get("KAGGLE_KERNEL_RUN_TYPE", "").lower() == "batch" else "bar"
    stream = sys.stderr if stream is None else stream
    try:
        return "bar" if stream.isatty() else "log"
    except (AttributeError, ValueError, OSError):  # closed or replaced by something without isatty
        return "log"


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
                 unit: str = "it", disable: bool = False, leave: bool | None = True, file: TextIO | None = None,
                 **tqdm_kwargs: Any) -> Any:
    """A progress bar as tqdm's constructor makes one, or its few-lines stand-in (see the module docstring).

    Args:
        iterable: What to iterate over (optional, as for tqdm).
        total: Expected number of updates (default: ``len(iterable)`` when it has one).
        desc: Label at the start of the bar and of each line.
        unit: Name of one update ("clip", "batch").
        disable: No output at all (the caller's ``progress=False``).
        leave: tqdm's ``leave``; a transient bar (False) prints only its closing line in log mode.
        file: Stream to write to (default stderr).
        **tqdm_kwargs: Passed to tqdm in bar mode (``smoothing``, ...), ignored otherwise.

    Returns:
        A tqdm bar, or a :class:`LogProgress`; both support iteration, ``update``, ``set_postfix``,
        ``set_description``, ``write``, ``close`` and use as a context manager.
    """
    mode = "off" if disable else progress_mode(file)
    if mode == "log":
        return LogProgress(iterable, total=total, desc=desc, unit=unit, leave=leave, file=file)
    from tqdm.auto import tqdm

    known = total if total is not None else _length(iterable)
    if known == 0:
        mode = "off"  # nothing to do (all cached): no '0clip [00:00, ?clip/s]' bar
    if known and "bar_format" not in tqdm_kwargs:
        tqdm_kwargs["bar_format"] = BAR_FORMAT  # the rate always as units per second, never flipped to s/unit
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=mode == "off", leave=leave, file=file,
                **tqdm_kwargs)


# tqdm's default layout with ``rate_noinv_fmt``: its default turns "0.5 clip/s" into "2.00s/clip" mid-run
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


def _length(iterable: Iterable | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except (TypeError, AttributeError):
        return None


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _number(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 0.01 else f"{x:.1e}"


class LogProgress:
    """The part of tqdm's interface the workspace uses, printing a few whole lines instead of a redrawn bar.

    With a known total (and ``leave``): one line when 25 %, 50 % and 75 % are done, one when it closes; without a
    total, or for a transient bar (``leave=False``), only the closing line. Nothing is printed for a bar that had
    nothing to do (total 0, no update).
    """

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str | None = None,
                 unit: str = "it", leave: bool | None = True, file: TextIO | None = None) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc or ""
        self.unit = unit
        self.leave = leave is not False
        self.file = file
        self.n = 0
        self.postfix = ""
        self.start_t = time.monotonic()
        self.closed = False
        self._quarters = 0  # quarter lines printed so far (0-3)

    # tqdm's interface -------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LogProgress has no iterable to iterate over")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if not (self.total and self.leave) or self._quarters >= 3:
            return
        reached = min(3, int(4 * self.n // self.total))
        if reached > self._quarters and self.n < self.total:  # several quarters at once: one line
            self._quarters = reached
            self._print(self._line(done=False))

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, s: str, file: TextIO | None = None, end: str = "\n") -> None:
        print(s, end=end, file=file or self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.n or self.total:
            self._print(self._line(done=True))

    # lines ------------------------------------------------------------------------------------------------------
    def _line(self, done: bool) -> str:
        elapsed = time.monotonic() - self.start_t
        n = int(self.n) if float(self.n).is_integer() else self.n
        head = (f"{self.desc}: " if self.desc else "") + (f"{n}/{int(self.total)}" if self.total else f"{n}")
        head += f" {self.unit}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total and not done else "")
        parts = [f"{head} {'in' if done else 'after'} {_duration(elapsed)}"]
        if elapsed > 0 and self.n:
            rate = self.n / elapsed
            parts.append(f"{_number(rate)} {self.unit}/s")  # one unit throughout, however slow
            if not done and self.total:
                parts.append(f"about {_duration((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        if done and self.total and self.n < self.total:
            parts.append("stopped early")
        return ", ".join(parts)

    def _print(self, line: str) -> None:
        print(line, file=self.file or sys.stderr, flush=True)
