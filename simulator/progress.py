"""Live progress of a simulator run: per terminal, as the taps happen.

Owns what `python -m simulator run` shows while the timeline plays. On a terminal,
`RichProgress` draws one bar per terminal with rich (taps done of those scheduled,
approvals, refusals, the text the last student saw) and prints power cuts, boots and
site outages above the bars. When stdout is not a terminal (CI, a pipe),
`PlainProgress` prints the same as plain lines: the events as they happen and, every
`every` seconds of the scenario, one status line for all terminals.

An observer has `say(text)` (set-up messages), `start(run)`, `event(at, terminal, text)`
(terminal None: the site), `tap(tap)` and `stop()`.
"""
import sys

from simulator import run as _run


def _totals(run):
    totals = {tid: 0 for tid in run.terminals}
    for ev in run.scenario.events:
        if ev["kind"] == "tap":
            totals[ev["terminal"]] += 1
    return totals


def _last_text(tap):
    if tap.decision == "approved":
        return "%.2f kr approved" % (tap.amount / 100.0)
    if tap.decision == "refused":
        da, en = _run.shown(tap.reason)
        return "%s / %s" % (da, en)
    if tap.decision == "balance":
        return "balance shown"
    return tap.decision.replace("_", " ")


class _Counts:
    def __init__(self, total):
        self.total, self.done, self.ok, self.refused, self.other, self.revenue = total, 0, 0, 0, 0, 0

    def add(self, tap):
        self.done += 1
        if tap.decision == "approved":
            self.ok += 1
            self.revenue += tap.amount
        elif tap.decision == "refused":
            self.refused += 1
        else:
            self.other += 1


class PlainProgress:
    def __init__(self, out=None, every=5.0):
        self.out = out or sys.stdout
        self.every = every
        self.counts = {}
        self._next = every

    def _print(self, text):
        print(text, file=self.out, flush=True)

    def say(self, text):
        self._print(text)

    def start(self, run):
        self.counts = {tid: _Counts(n) for tid, n in _totals(run).items()}
        self._next = self.every

    def event(self, at, terminal, text):
        self._print("%+7.1f s  %s: %s" % (at, terminal or "site", text))

    def tap(self, tap):
        c = self.counts.get(tap.terminal)
        if c is None:
            return
        c.add(tap)
        if tap.at is not None and tap.at >= self._next:
            while self._next <= tap.at:
                self._next += self.every
            self._status(tap.at)

    def _status(self, at):
        self._print("%+7.1f s  %s" % (at, "   ".join(
            "%s %d/%d taps: %d approved, %d refused%s" % (
                tid, c.done, c.total, c.ok, c.refused, ", %d other" % c.other if c.other else "")
            for tid, c in self.counts.items())))

    def stop(self):
        if self.counts:
            revenue = sum(c.revenue for c in self.counts.values())
            self._print("timeline done: %d taps, %.2f kr approved" % (
                sum(c.done for c in self.counts.values()), revenue / 100.0))


class RichProgress:
    """One rich progress bar per terminal, and a site total (needs rich and a terminal)."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console()
        self.progress = None
        self.tasks = {}
        self.counts = {}

    def say(self, text):
        self.console.print(text, highlight=False, markup=False)

    def start(self, run):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.table import Column

        # The figures keep their width; the last student's text takes what is left of the line.
        fixed = lambda n: Column(min_width=n, no_wrap=True)  # noqa: E731
        self.progress = Progress(
            TextColumn("[bold]{task.description}", table_column=fixed(6)), BarColumn(bar_width=16),
            MofNCompleteColumn(table_column=fixed(7)),
            TextColumn("[green]{task.fields[ok]:>3} ok[/] [red]{task.fields[refused]:>3} refused[/]"
                       " {task.fields[kr]:>8} kr", table_column=fixed(29)),
            TextColumn("{task.fields[last]}", markup=False,
                       table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
            console=self.console, transient=False, refresh_per_second=8, expand=True)
        totals = _totals(run)
        for tid, n in totals.items():
            self.counts[tid] = _Counts(n)
            self.tasks[tid] = self.progress.add_task(tid, total=n, ok=0, refused=0, kr="0.00", last="")
        self.counts[None] = _Counts(sum(totals.values()))
        self.tasks[None] = self.progress.add_task("site", total=sum(totals.values()), ok=0, refused=0,
                                                  kr="0.00", last="")
        self.progress.start()

    def event(self, at, terminal, text):
        self.console.print("[dim]%+7.1f s[/]  [bold]%s[/]: [yellow]%s[/]" % (at, terminal or "site", text),
                           highlight=False)

    def tap(self, tap):
        if self.progress is None or tap.terminal not in self.tasks:
            return
        for key in (tap.terminal, None):
            c = self.counts[key]
            c.add(tap)
            self.progress.update(self.tasks[key], completed=c.done, ok=c.ok, refused=c.refused,
                                 kr="%.2f" % (c.revenue / 100.0),
                                 last=_last_text(tap) if key is not None else "")

    def stop(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def for_stdout():
    """Bars when stdout is a terminal and rich is installed; plain lines otherwise."""
    if sys.stdout.isatty():
        try:
            return RichProgress()
        except ImportError:
            pass
    return PlainProgress()
