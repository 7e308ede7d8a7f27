"""The notebooks' forms (ipywidgets): worker boxes with Connect/Disconnect, and the worker launcher.

Every button calls a method that cells and tests can call too, so a headless run does what a
person's clicks would.
"""

from imgdist.widgets.form import ProgressBar, WorkerForm
from imgdist.widgets.launcher import WorkerLauncher

__all__ = ["ProgressBar", "WorkerForm", "WorkerLauncher"]
