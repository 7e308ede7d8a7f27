"""What the forms share: shown by a cell, errors as one sentence in the form."""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as w

from imgdist.errors import ImgdistError


def message_html(kind: str, text: str) -> str:
    colour = {"error": "#b00020", "ok": "#1b5e20", "info": "#333"}[kind]
    return f'<div class="imgdist-{kind}" style="color:{colour}">{html.escape(text)}</div>'


class Shown:
    """Anything with a `widget`: a cell shows it."""

    widget: w.Widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class Form(Shown):
    """A form whose buttons report what goes wrong in `errors_to` as one sentence."""

    errors_to: w.HTML

    def _safely(self, action: Callable[[], object]) -> None:
        try:
            action()
        except ImgdistError as exc:
            self.errors_to.value = message_html("error", str(exc))


def show(thing: object) -> None:
    from IPython import get_ipython
    from IPython.display import display

    if get_ipython() is not None:
        display(thing)
