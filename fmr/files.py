"""Writing files so that a crash or a concurrent reader never sees half of one.

`write_atomically(path, write)` lets `write` fill a temporary file beside `path` and renames it
over `path` (atomic on POSIX). The file gets the mode a newly created file gets (0o666 less the
process umask), read from the temporary file as the OS created it: the umask is never changed,
so this is safe in threads (the app serves several visitors at once). Writers that create their
own files with a tighter mode (safetensors: owner only) are brought back to the usual one.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary)` then rename the temporary file over `path`; returns `path`.

    The temporary file keeps `path`'s suffix (numpy's savez insists on .npz) and is removed when
    `write` fails. The folder must exist.
    """
    path = Path(path)
    temporary = path.with_name(
        f".{path.stem}.tmp{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        # Created here first, so its mode is what the umask gives a new file.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        mode = stat.S_IMODE(os.stat(temporary).st_mode)
        write(temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """`write_atomically` for a UTF-8 text file."""
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
