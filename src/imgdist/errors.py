"""The errors imgdist raises: each message says what was given, what was expected, what to do."""

from __future__ import annotations


class ImgdistError(Exception):
    """Base of every error imgdist reports to a person as a sentence, not a traceback."""


class ParameterError(ImgdistError, ValueError):
    """A parameter (copies, transport, schedule, folder, ...) is out of range or malformed."""


class DownloadError(ImgdistError):
    """The portrait could not be fetched from its URL."""


class ImageError(ImgdistError):
    """A file is not an image imgdist can process."""


class WorkerNameError(ImgdistError, LookupError):
    """A worker name typed by a person matches no engine, or is malformed."""


class NoEnginesError(ImgdistError, TimeoutError):
    """Fewer engines than needed registered within the timeout."""


class VersionMismatchError(ImgdistError):
    """A worker runs another Python, ipyparallel or imgdist than the main, or lacks imgdist."""


class ConnectionFileError(ImgdistError):
    """A connection file is missing, unreadable, or for a cluster that is gone."""


class FolderBusyError(ImgdistError):
    """Another run is writing into the output folder."""


class WorkerLostError(ImgdistError):
    """An engine died or stopped answering while it held work."""


class RunError(ImgdistError):
    """A run could not finish; `result` holds what was done before it stopped."""

    def __init__(self, msg: str, result: object = None) -> None:
        super().__init__(msg)
        self.result = result
