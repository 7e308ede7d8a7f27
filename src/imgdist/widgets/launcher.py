"""The worker notebook's form: connection info, a label, Start and Stop, the engine's status."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as w

from imgdist.errors import ImgdistError
from imgdist.local_worker import WorkerEngine
from imgdist.widgets.base import Form, message_html


class WorkerLauncher(Form):
    """The worker notebook's form: connection info, a label, Start and Stop, and the engine's status."""

    def __init__(self, *, connection_path: str = "", label: str = "worker1") -> None:
        self.path_box = w.Text(
            value=connection_path,
            description="File",
            placeholder="path to ipcontroller-*-engine.json",
            layout=w.Layout(width="520px"),
        )
        self.paste_box = w.Password(
            description="or paste",
            placeholder="the file's contents (never shown)",
            layout=w.Layout(width="520px"),
        )
        self.label_box = w.Text(value=label, description="Label")
        self.start_button = w.Button(description="Start", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", icon="stop")
        self.name = w.HTML()
        self.status_line = w.HTML()
        self.errors_to = self.status_line
        self.engine: WorkerEngine | None = None
        self.start_button.on_click(lambda _: self._safely(self.start))
        self.stop_button.on_click(lambda _: self._safely(self.stop))
        self.widget = w.VBox(
            [
                self.path_box,
                self.paste_box,
                self.label_box,
                w.HBox([self.start_button, self.stop_button]),
                self.name,
                self.status_line,
            ]
        )
        self.refresh()

    def start(self, *, wait_s: float = 30.0) -> str:
        """Start the engine from the form's values and wait until it registers; the worker's name."""
        if self.engine is not None and self.engine.process.poll() is None:
            self.refresh()
            return self.engine.name
        connection = self.paste_box.value if self.paste_box.value.strip() else self.path_box.value
        # the pasted key goes to a private file and leaves the form, so no saved widget state holds it
        self.paste_box.value = ""
        if not connection.strip():
            msg = "no connection info: give the path of ipcontroller-*-engine.json or paste its contents."
            raise ImgdistError(msg)
        if not connection.lstrip().startswith("{"):
            connection = str(Path(connection).expanduser())
        self.engine = WorkerEngine.start(connection, self.label_box.value)
        self.refresh()
        try:
            self.engine.wait_registered(wait_s)
        finally:
            self.refresh()
        return self.engine.name

    def autostart(self) -> str:
        """Start at once when a connection file was given; otherwise say what to do."""
        if not self.path_box.value.strip():
            return "No connection file given: fill in the form above and press Start."
        return f"Started {self.start()}."

    def stop(self) -> None:
        """Stop the engine started here."""
        if self.engine is not None:
            self.engine.stop()
        self.refresh()

    def status(self) -> str:
        """The engine's status as one line."""
        return str(self.engine.status()) if self.engine is not None else "not started"

    def refresh(self) -> None:
        """Show the worker's name and the engine's current status."""
        if self.engine is None:
            self.name.value = ""
        else:
            self.name.value = (
                f"<b>Worker name</b> (type it into the main notebook): "
                f"<code>{html.escape(self.engine.name)}</code>"
            )
        self.status_line.value = message_html("info", f"Engine: {self.status()}")
