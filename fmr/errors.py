"""The one exception type for errors a user can cause.

Every message says what went wrong, with which file, and what to do about it. The CLI prints
the message (one line, no traceback) and the app shows it in the page.
"""


class FmrError(Exception):
    """A problem with the user's input, files or settings (not a bug in fmr)."""


class FaceError(FmrError):
    """An image could not be read, or holds no usable face."""


class CheckpointError(FmrError):
    """A checkpoint file is missing, unreadable, or not a model fmr can load."""


class DataError(FmrError):
    """A dataset path is missing, empty, or not in a format fmr reads."""
