"""The main notebook's form: worker boxes with Connect, Disconnect and Start, the connected
list and the worker panel; and a run's progress bar."""

from __future__ import annotations

import html
import shlex
import time
from collections.abc import Callable, Sequence

import ipywidgets as w

from imgdist.cluster import Cluster, Worker
from imgdist.connections import Connections, resolve
from imgdist.names import name_of, non_ascii_note, numbered_label
from imgdist.results import Progress
from imgdist.widgets.base import Form, Shown, message_html, show


class WorkerForm(Form):
    """One text box per worker, Connect and Disconnect, and the live list of connected workers."""

    def __init__(
        self,
        cluster: Cluster,
        names: Sequence[str],
        *,
        boxes: int = 4,
        known: Sequence[Worker] = (),
        ssh_args: str = "",
        remote_python: str = "",
    ) -> None:
        self.cluster = cluster
        self.ssh_args = shlex.split(ssh_args)
        self.remote_python = remote_python
        self.connections = Connections(cluster)
        self.known = list(known)
        self.processed: dict[str, int] = {}
        padded = [*names, *[""] * boxes][:boxes]
        self.boxes = [
            w.Text(
                value=name,
                description=f"Worker {i}",
                placeholder=name_of(numbered_label(i), "host"),
                layout=w.Layout(width="420px"),
            )
            for i, name in enumerate(padded, start=1)
        ]
        self.connect_button = w.Button(description="Connect", button_style="primary", icon="plug")
        self.disconnect_button = w.Button(description="Disconnect", icon="unlink")
        self.start_button = w.Button(
            description="Start",
            icon="play",
            tooltip="start an engine over SSH on each [user@]host typed in a box",
        )
        self.connected = w.HTML()
        self.panel = w.HTML()
        self.message = w.HTML()
        self.errors_to = self.message
        self.connect_button.on_click(lambda _: self._safely(self.connect))
        self.disconnect_button.on_click(lambda _: self._safely(self.disconnect))
        self.start_button.on_click(lambda _: self._safely(self.start))
        self.widget = w.VBox(
            [
                *self.boxes,
                w.HBox([self.connect_button, self.disconnect_button, self.start_button]),
                self.connected,
                self.message,
                self.panel,
            ]
        )
        self._refresh()

    def typed(self, count: int | None = None) -> list[str]:
        """What the first `count` boxes hold (all boxes by default), as typed."""
        return [box.value for box in self.boxes[:count]]

    def workers(self, count: int | None = None) -> list[Worker]:
        """The workers named in the first `count` boxes; a WorkerNameError names any unknown one."""
        return resolve(self.cluster, self.typed(count))

    def connect(self, count: int | None = None) -> list[str]:
        """Connect the workers in the first `count` non-empty boxes; the connected names."""
        typed = [t for t in self.typed(count) if t.strip()]
        self.connections.connect(typed)
        notes = [n for n in (non_ascii_note(name.strip()) for name in typed) if n]
        self._refresh(" ".join(notes))
        return self.connections.names()

    def disconnect(self, count: int | None = None) -> list[str]:
        """Disconnect the workers in the first `count` non-empty boxes; the connected names."""
        self.connections.disconnect([t for t in self.typed(count) if t.strip()])
        self._refresh()
        return self.connections.names()

    def start(self, count: int | None = None) -> list[str]:
        """Start an engine over SSH for every box (of the first `count`) holding a `[user@]host`
        rather than a worker's name; each such box then holds its new worker's name."""
        names = {worker.name for worker in self.cluster.workers()}
        targets = {
            position: text.strip()
            for position, text in enumerate(self.typed(count), start=1)
            if text.strip() and text.strip() not in names
        }
        if targets:
            self.message.value = message_html(
                "info", f"Starting engines over SSH on {', '.join(targets.values())} ..."
            )
            labels = {position: numbered_label(position) for position in targets}
            started = self.cluster.start_ssh_engines(
                list(targets.values()),
                list(labels.values()),
                ssh_args=self.ssh_args,
                remote_python=self.remote_python,
            )
            for position, label in labels.items():
                worker = next(w for w in started if w.name.startswith(name_of(label, "")))
                self.boxes[position - 1].value = worker.name
                self.known.append(worker)
        self._refresh()
        return self.typed(count)

    def progress(self, total: int | None) -> ProgressBar:
        """A progress bar for one run, shown in the current cell (pass it as `on_progress`);
        when the run ends, the worker panel counts its work."""
        bar = ProgressBar(total, on_done=self._count)
        show(bar)
        return bar

    def _count(self, progress: Progress) -> None:
        for name, count in progress.per_worker.items():
            self.processed[name] = self.processed.get(name, 0) + count
        self._refresh()

    def refresh(self) -> None:
        """Show the connected list and the worker panel as they are now."""
        self._refresh()

    def _refresh(self, note: str = "") -> None:
        names = self.connections.names()
        shown = ", ".join(names) if names else "(none: only this notebook)"
        self.connected.value = f"<b>Connected workers:</b> <code>{html.escape(shown)}</code>"
        self.message.value = message_html("info", note) if note else ""
        cell = f'style="{PANEL_CELL}"'
        rows = "".join(
            f"<tr><td {cell}><code>{html.escape(s.name)}</code></td><td {cell}>{html.escape(s.host)}</td>"
            f'<td {cell} class="imgdist-state-{s.state.replace(" ", "-")}">{s.state}</td>'
            f'<td style="{PANEL_CELL};text-align:right">{s.processed}</td></tr>'
            for s in self.connections.states(self.known, self.processed)
        )
        heads = "".join(
            f'<th style="{PANEL_HEAD}">{head}</th>'
            for head in ("worker", "host", "state", "images processed")
        )
        self.panel.value = (
            f'<table class="imgdist-workers" style="{PANEL_TABLE}"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )


# The worker panel's look: inline, so it is the same in JupyterLab, Notebook 7 and exported HTML.
PANEL_TABLE = "border-collapse:collapse;margin-top:6px;font-size:13px"

PANEL_CELL = "padding:3px 14px 3px 4px;border-bottom:1px solid #ddd"

PANEL_HEAD = "padding:3px 14px 3px 4px;border-bottom:2px solid #888;text-align:left;font-weight:600"


class ProgressBar(Shown):
    """Images done of total and per-worker counts, as a widget; a plain line at the end.

    Updates are throttled (10 a second), so thousands of images do not flood the front end.
    """

    def __init__(
        self, total: int | None, *, on_done: Callable[[Progress], None] | None = None
    ) -> None:
        self.total = total
        self.on_done = on_done
        self.bar = w.IntProgress(
            value=0,
            min=0,
            max=total or 1,
            description="Images",
            bar_style="info",
            layout=w.Layout(width="420px"),
        )
        self.label = w.HTML()
        self.widget = w.HBox([self.bar, self.label])
        self.last_update = 0.0
        self.finished = False

    def __call__(self, progress: Progress) -> None:
        complete = self.total is not None and progress.done >= self.total
        now = time.monotonic()
        if not complete and now - self.last_update < 0.1:
            return
        self.last_update = now
        self.bar.value = min(progress.done, self.bar.max)
        self.label.value = html.escape(self.describe(progress))
        if complete and not self.finished:
            self.finished = True
            self.bar.bar_style = "danger" if progress.failed else "success"
            print(self.describe(progress))
            if self.on_done is not None:
                self.on_done(progress)

    def describe(self, progress: Progress) -> str:
        """'32/32 images (0 failed) — worker1@h: 8, ...'."""
        of = f"/{self.total}" if self.total is not None else ""
        counts = ", ".join(f"{name}: {n}" for name, n in sorted(progress.per_worker.items()))
        return f"{progress.done}{of} images ({progress.failed} failed) — {counts}"
