"""The run's report: one HTML file with its pictures inside, written into the site folder.

Owns `report.html` (matplotlib, Agg backend; every figure a base64 PNG in the page, so
the file can be mailed or opened anywhere) and the "try next" commands printed after a
run. The figures: tap-to-decision per terminal, throughput per minute, refusals by
reason with the texts the students saw, one account's balance over the run (the ledger's
rows, opening balance and top-ups included), and a timeline with each terminal's taps,
power cuts, time without power and the site's offline periods (broker or backend down).
"""
import base64
import html
import io
import os
import sqlite3
import sys

from simulator.run import shown

COLORS = {"approved": "#2e7d32", "refused": "#c62828", "other": "#757575"}


def _axis(run, elapsed):
    """A terminal's clock.elapsed() on the timeline's axis (seconds since its `at` 0)."""
    return elapsed - (run.t_play or 0.0)


def _ledger_path(run):
    if run.site is None:
        return None
    path = run.site.ledger.path
    return path if os.path.exists(path) else None


def featured_account(run):
    """(account, card number) worth a statement: most ledger rows, a top-up first; or None."""
    path = _ledger_path(run)
    if path is None:
        return None
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        rows = db.execute(
            "SELECT l.account, count(*), sum(CASE WHEN l.type = 'deposited' AND l.text != 'Opening balance' "
            "THEN 1 ELSE 0 END) AS topups FROM ledger l JOIN cards c ON c.account = l.account "
            "AND c.status = 'active' GROUP BY l.account ORDER BY topups DESC, count(*) DESC, l.account").fetchall()
        for account, _, _ in rows:
            card = db.execute("SELECT number FROM cards WHERE account = ? AND status = 'active' ORDER BY rowid",
                              (account,)).fetchone()
            if card:
                return account, card[0]
        return None
    finally:
        db.close()


def _balance_series(run, account):
    db = sqlite3.connect("file:%s?mode=ro" % _ledger_path(run), uri=True)
    try:
        rows = db.execute("SELECT t, type, amount, text FROM ledger WHERE account = ? ORDER BY t, id",
                          (account,)).fetchall()
    finally:
        db.close()
    t0 = run.clock.start + (run.t_play or 0.0)
    bal, xs, ys, marks = 0, [], [], []
    for t, ty, amount, text in rows:
        bal += amount if ty == "deposited" else -amount
        xs.append(t - t0)
        ys.append(bal / 100.0)
        if ty == "deposited" and text != "Opening balance":
            marks.append((t - t0, bal / 100.0, text))
    return xs, ys, marks


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figures(run):
    """[(title, caption, base64 PNG)] for the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taps, tids = run.taps, list(run.terminals)
    decided = [t for t in taps if t.decision in ("approved", "refused")]
    out = []
    end = max([t.at or 0 for t in taps] + [at for at, _, _ in run.site_events] + [1.0]) + 1.0

    # 1. tap to decision, per terminal
    fig, axes = plt.subplots(1, len(tids), figsize=(4 * len(tids), 3), squeeze=False, sharey=True)
    lat = [t.latency_ms for t in decided if t.latency_ms is not None]
    top = sorted(lat)[int(0.99 * (len(lat) - 1))] * 1.3 if lat else 100
    for ax, tid in zip(axes[0], tids):
        mine = [t.latency_ms for t in decided if t.terminal == tid and t.latency_ms is not None]
        ax.hist([min(v, top) for v in mine], bins=30, range=(0, top), color="#1565c0")
        ax.set_title("%s (%d decisions)" % (tid, len(mine)))
        ax.set_xlabel("tap to decision, ms")
    axes[0][0].set_ylabel("taps")
    out.append(("Tap to decision", "From the card entering the field to the till hearing the answer "
                "(PN532 polling and wire time included); values above %.0f ms are drawn at the edge." % top,
                _png(fig)))

    # 2. throughput per minute
    fig, ax = plt.subplots(figsize=(10, 3))
    width = 5.0
    n = int(end // width) + 1
    for tid in tids:
        counts = [0] * n
        for t in decided:
            if t.terminal == tid and t.at is not None:
                counts[min(n - 1, int(t.at // width))] += 1
        ax.step([i * width for i in range(n)], [c * 60.0 / width for c in counts], where="post", label=tid)
    ax.set_xlabel("seconds into the scenario")
    ax.set_ylabel("decisions per minute")
    ax.legend(loc="upper right")
    out.append(("Throughput", "Decisions per minute, per terminal, counted in %g-second bins." % width, _png(fig)))

    # 3. refusals by reason, with the texts the students saw
    by = {}
    for t in decided:
        if t.decision == "refused":
            by.setdefault(t.reason, {}).setdefault(t.terminal, 0)
            by[t.reason][t.terminal] += 1
    fig, ax = plt.subplots(figsize=(10, 0.6 * max(1, len(by)) + 1))
    order = sorted(by, key=lambda r: sum(by[r].values()))
    labels = ["%s\n%s" % shown(r) for r in order]
    left = [0] * len(order)
    for tid in tids:
        vals = [by[r].get(tid, 0) for r in order]
        ax.barh(labels, vals, left=left, label=tid)
        left = [a + b for a, b in zip(left, vals)]
    for y, total in enumerate(left):
        ax.text(total + 0.3, y, str(total), va="center")
    ax.set_xlabel("refusals")
    if order:
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no refusals", transform=ax.transAxes, ha="center")
    out.append(("Refusals by reason", "The text on the terminal's display (Danish above English), and how "
                "often each terminal showed it.", _png(fig)))

    # 4. one account's balance over time
    acc = featured_account(run)
    if acc is not None:
        xs, ys, marks = _balance_series(run, acc[0])
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.step(xs, ys, where="post", color="#1565c0")
        for x, y, text in marks:
            ax.plot([x], [y], "o", color=COLORS["approved"])
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
        ax.axhline(0, color="#999", lw=0.8)
        ax.set_xlim(min(xs + [0]) - 1, end)
        ax.set_xlabel("seconds into the scenario (opening balance at the scenario's start)")
        ax.set_ylabel("balance, kr")
        out.append(("Balance of account %d (card %s)" % acc, "The backend ledger's rows for the account in "
                    "time order: opening balance, purchases at every terminal, automatic top-ups (dots).",
                    _png(fig)))

    # 5. the timeline: taps, power, offline periods
    rows = tids + (["site"] if run.site is not None else [])
    fig, ax = plt.subplots(figsize=(10, 0.7 * len(rows) + 1.2))
    for y, tid in enumerate(tids):
        for kind, color in (("approved", COLORS["approved"]), ("refused", COLORS["refused"])):
            xs = [t.at for t in taps if t.terminal == tid and t.decision == kind]
            ax.plot(xs, [y] * len(xs), "|", color=color, ms=12, label=kind if y == 0 else None)
        xs = [t.at for t in taps if t.terminal == tid and t.decision not in ("approved", "refused")]
        ax.plot(xs, [y] * len(xs), "x", color=COLORS["other"], label="other (off, no reply, balance)" if y == 0 else None)
        off, cut_label = None, "power cut"
        for at, what in run.terminals[tid].history:
            x = _axis(run, at)
            if what == "power_cut":
                off = x
                ax.plot([x], [y], "v", color="black", ms=9, label=cut_label)
                cut_label = None
            elif what == "boot" and off is not None:
                ax.axvspan(off, x, ymin=(y + 0.1) / len(rows), ymax=(y + 0.9) / len(rows), color="#000", alpha=0.15)
                off = None
            elif what in ("watchdog", "reset"):
                ax.plot([x], [y], "D", color="orange", ms=7)
        if off is not None:
            ax.axvspan(off, end, ymin=(y + 0.1) / len(rows), ymax=(y + 0.9) / len(rows), color="#000", alpha=0.15)
    if run.site is not None:
        y = len(tids)
        down = {}
        for at, what, state in run.site_events:
            if state == "down":
                down.setdefault(what, at)
            elif what in down:
                ax.axvspan(down.pop(what), at, ymin=(y + 0.1) / len(rows), ymax=(y + 0.9) / len(rows),
                           color="#ef6c00", alpha=0.35)
                ax.text(at, y + 0.25, " %s back" % what, fontsize=8)
        for what, at in down.items():
            ax.axvspan(at, end, ymin=(y + 0.1) / len(rows), ymax=(y + 0.9) / len(rows), color="#ef6c00", alpha=0.35)
        if not run.site_events:
            ax.text(0.5, y, "broker and backend up throughout", fontsize=8, va="center")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.set_xlim(0, end)
    ax.set_xlabel("seconds into the scenario; grey: terminal without power; orange: site offline "
                  "(broker or backend down, terminals decide offline)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4, fontsize=8)
    out.append(("Timeline", "Every tap per terminal, power cuts and time without power, and the site's "
                "offline periods.", _png(fig)))
    return out


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>CPOS simulator: %(name)s</title>
<style>
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
pre { background: #f5f5f5; padding: 1em; overflow-x: auto; font-size: 12px; }
figure { margin: 2em 0; } figcaption { color: #555; font-size: 14px; }
img { max-width: 100%%; border: 1px solid #ddd; }
.ok { color: #2e7d32; } .bad { color: #c62828; }
</style></head>
<body>
<h1>Scenario %(name)s</h1>
<p class="%(cls)s"><b>%(verdict)s</b></p>
%(figures)s
<h2>Summary</h2>
<pre>%(summary)s</pre>
<h2>Try next</h2>
<pre>%(next)s</pre>
</body></html>
"""


def write(run, site_dir, summary):
    """Write `report.html` into `site_dir`; returns its path. Needs matplotlib."""
    import matplotlib  # noqa: F401  (ImportError: the caller says the report was skipped)

    figs = "\n".join(
        '<figure><h2>%s</h2><img alt="%s" src="data:image/png;base64,%s"><figcaption>%s</figcaption></figure>'
        % (html.escape(title), html.escape(title), png, html.escape(caption)) for title, caption, png in figures(run))
    verdict = [ln for ln in summary.splitlines() if ln.startswith("invariants:")]
    page = PAGE % {"name": html.escape(run.scenario.name), "figures": figs, "summary": html.escape(summary),
                   "verdict": html.escape(verdict[0] if verdict else ""),
                   "cls": "ok" if verdict and "all hold" in verdict[0] else "bad",
                   "next": html.escape(try_next(run, site_dir))}
    path = os.path.join(site_dir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def _tool(name):
    """How to call this environment's `python` or `cpos` from the current folder."""
    exe = sys.executable if name == "python" else os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(exe):
        return name
    rel = os.path.relpath(exe)
    return rel if not rel.startswith("..") else exe


def try_next(run, site_dir):
    """The commands to try on the kept site folder, exactly as they can be typed."""
    d = os.path.relpath(site_dir)
    if d.startswith(".."):
        d = os.path.abspath(site_dir)
    lines = ["site folder %s/ kept: report.html, taps.jsonl, summary.txt, site/ledger.db, and per terminal "
             "config.json, journal.bin, cards.bin, console.log. Try:" % d]
    py = _tool("python")
    if run.site is not None:
        db = os.path.join(d, "site", "ledger.db")
        acc = featured_account(run)
        if acc is not None:
            lines.append("  %s -m backend statement --ledger %s --card %s" % (py, db, acc[1]))
            lines.append("  %s -m backend account --ledger %s --account %d" % (py, db, acc[0]))
        lines.append("  %s -m backend conflicts --ledger %s" % (py, db))
        tid, term = next(iter(run.terminals.items()))
        lines.append("  %s rescue --dump %s --site %s --terminal %d --ledger %s" % (
            _tool("cpos"), os.path.join(d, tid, "journal.bin"), run.scenario.site, term.spec["no"], db))
    tid = next(iter(run.terminals))
    lines.append("  less %s" % os.path.join(d, tid, "console.log"))
    lines.append("  xdg-open %s" % os.path.join(d, "report.html"))
    return "\n".join(lines)
