"""File safety shared by every writer of the package: temporary files that never outlive a signal, commits that never
replace an existing file without ``force``, and never an input file, whatever the path says.

A file is written to a hidden temporary file beside its target, then renamed over it (or hard-linked where it must
not replace anything). While a temporary file exists, SIGTERM and SIGHUP (whose default action ends the process
without unwinding Python) first delete it, then end the process as the signal would have; SIGINT unwinds
(KeyboardInterrupt) and the writers delete their temporary file on the way out.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from pathlib import Path

#: characters of the target's name that begin its temporary file's name (at most 4 bytes each in UTF-8: the
#: temporary name stays well below the 255 bytes that file systems allow)
TEMP_PREFIX = 32
#: temporary files being written now, deleted by the signal handler
_LIVE: set[str] = set()
_LOCK = threading.Lock()
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
#: the handlers replaced while temporary files exist (only default ones are replaced)
_REPLACED: dict[int, object] = {}


def identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names, symlinks followed; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def refuse_inputs(path: str | os.PathLike, inputs) -> None:
    """ValueError when ``path`` is one of the files ``inputs`` (the same file: through symlinks or hard links too)."""
    target = identity(path)
    if target is None:
        return
    for inp in inputs:
        if inp is not None and identity(inp) == target:
            raise ValueError(
                f"refusing to write {path}: it is the input file {inp} (also through links); "
                "write the result to another file (--force does not allow this)"
            )


def _on_signal(signum, frame) -> None:  # noqa: ARG001
    for tmp in list(_LIVE):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # end the process as the signal would have


def _register(tmp: str) -> None:
    with _LOCK:
        _LIVE.add(tmp)
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be installed from the main thread; one installed there covers every file
        for sig in _SIGNALS:
            if sig not in _REPLACED and signal.getsignal(sig) == signal.SIG_DFL:
                _REPLACED[sig] = signal.signal(sig, _on_signal)


def _unregister(tmp: str) -> None:
    with _LOCK:
        _LIVE.discard(tmp)
        if _LIVE or threading.current_thread() is not threading.main_thread():
            return
        for sig, old in list(_REPLACED.items()):
            if signal.getsignal(sig) is _on_signal:
                signal.signal(sig, old)
            del _REPLACED[sig]


def require_file(path: Path, what: str = "file") -> None:
    """FileNotFoundError when nothing is at ``path``, IsADirectoryError when it is a folder: an input's first check,
    in the same words for every reader (``what``: the kind of file wanted, "file" or "palette file")."""
    if not path.exists():
        raise FileNotFoundError(f"no such {what}: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a {what}")


def not_regular(path: Path) -> str | None:
    """Why ``path`` cannot be an output file (a folder, a device, a pipe), or None."""
    if path.is_dir():
        return "it is a folder"
    if path.exists() and not path.is_file():
        return "it is not a regular file (a device, a pipe or a socket)"
    return None


class TempFile:
    """A temporary file beside ``path``, committed to ``path`` by :meth:`commit` and deleted otherwise.

    ``with TempFile(path, force=..., inputs=...) as t: write to t.path (or t.file); t.commit()``. The checks run
    before anything is written: the folder exists, ``path`` is no folder or device, it does not exist unless
    ``force``, and it is none of ``inputs``; the commit checks again (a file that appeared meanwhile is kept).
    """

    def __init__(self, path: str | os.PathLike, *, force: bool = False, inputs=()) -> None:
        self.target = Path(path)
        self.force = force
        self.inputs = tuple(inputs)
        folder = self.target.parent
        if not folder.is_dir():
            raise FileNotFoundError(f"cannot write {self.target}: folder {folder} does not exist")
        why = not_regular(self.target)
        if why:
            raise FileExistsError(f"cannot write {self.target}: {why}")
        refuse_inputs(self.target, self.inputs)
        if os.path.lexists(self.target) and not force:  # (a dangling symlink too: the commit would refuse it late)
            raise FileExistsError(f"{self.target} exists; pass force=True (command line: --force) to overwrite it")
        # a short name (unique in the folder: a random token), so that any target name the file system allows works
        self.path = folder / f".{self.target.name[:TEMP_PREFIX]}.{secrets.token_hex(4)}.tmp"
        _register(str(self.path))
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except BaseException:
            _unregister(str(self.path))
            raise
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> Path:
        """Flush, sync and move the temporary file to its target; when that fails (a file that appeared meanwhile,
        a full disk) the temporary file is deleted before the error goes on."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            refuse_inputs(self.target, self.inputs)
            if self.force:
                os.replace(self.path, self.target)
            else:
                _link_without_overwrite(self.path, self.target)
        except BaseException:
            self.discard()
            raise
        _unregister(str(self.path))
        return self.target

    def discard(self) -> None:
        """Delete the temporary file (nothing happens to the target)."""
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        _unregister(str(self.path))

    def __enter__(self) -> TempFile:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if str(self.path) in _LIVE:  # not committed: a failure (or no commit call)
            self.discard()
        # an error of the write itself (a full disk, a file size limit) names the file it was writing
        if isinstance(exc, OSError) and exc.errno is not None and str(self.target) not in str(exc):
            raise OSError(exc.errno, f"cannot write {self.target}: {exc.strerror or exc}") from exc


def _link_without_overwrite(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (atomically where the file system has hard links)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; pass force=True (command line: --force) to overwrite it") from None
    except OSError:  # no hard links here (some network and FAT file systems): check, then rename
        if path.exists():
            raise FileExistsError(f"{path} exists; pass force=True (command line: --force) to overwrite it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)
