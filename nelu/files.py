"""Safe file handling: loading without code execution, atomic writes, locks, output guards.

Every file the package reads or writes goes through here.

* :func:`load_torch` reads a ``.pt`` file with ``torch.load(weights_only=True)``:
  tensors, numbers, strings, lists, tuples and dicts only, plus the allow-listed
  :data:`SAFE_GLOBALS` (the ``TorchVersion`` string older checkpoints store). A file
  holding any other object, a bare pickle included, is refused before any of its code
  can run.
* :func:`save_torch`, :func:`write_text`, :func:`write_json` and :func:`write_csv` write
  atomically: a uniquely named temporary file beside the target
  (``.NAME.<host>-<pid>.<random>.tmp``), flushed and fsynced, then ``os.replace``.
  Concurrent writers never see or publish a partial file; a failed write leaves the
  old file intact and names the file in its error. Temporary files left by a killed
  writer on this host are removed by the next write of the same file
  (:func:`remove_stale_temps`).
* :func:`check_distinct` refuses an output path that is one of the inputs;
  :func:`lock` is an advisory, non-blocking lock on a file being produced (one
  training run per checkpoint).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_json(d / "r.json", {"psnr": 27.5})
>>> load_json(d / "r.json")
{'psnr': 27.5}
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import pickle
import socket
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch.torch_version import TorchVersion

__all__ = [
    "SAFE_GLOBALS",
    "FileSafetyError",
    "UnsafeFileError",
    "load_torch",
    "load_json",
    "save_torch",
    "write_text",
    "write_json",
    "write_csv",
    "remove_stale_temps",
    "check_distinct",
    "check_writable",
    "lock",
]

#: Classes a ``.pt`` file may name besides plain containers and tensors. ``TorchVersion``
#: is a ``str`` subclass that checkpoints written before 2026-12 store as ``torch_version``.
SAFE_GLOBALS: tuple[type, ...] = (TorchVersion,)


class FileSafetyError(ValueError):
    """An operation would destroy an input or collide with another run; nothing was written."""


class UnsafeFileError(ValueError):
    """A file holds something other than plain data (it could run code when unpickled)."""


# ------------------------------------------------------------------------------ read


def load_torch(path: str | Path) -> object:
    """Read a ``.pt`` file without executing code from it (``weights_only=True``).

    Raises :class:`UnsafeFileError` when the file names a class or function outside
    :data:`SAFE_GLOBALS` (a malicious or foreign pickle), and the usual
    ``OSError``/``RuntimeError`` of :func:`torch.load` for unreadable files.
    """
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln.upper() and "unsupported" in ln.lower()]
        if named:
            raise UnsafeFileError(
                f"{path} names Python code to run, not only weights and plain data ({named[0][:160]}); "
                "it was not loaded, since unpickling it could run arbitrary code"
            ) from None
        raise


def load_json(path: str | Path) -> object:
    """Parse a JSON file (JSON cannot hold code)."""
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------- write


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _owner_tag() -> str:
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its file
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove temporary files of ``path`` left by writers that died on this host.

    Only files named by :func:`_atomic` (``.NAME.<host>-<pid>.<random>.tmp``) whose
    host is this one and whose process no longer exists are removed; a live writer's
    file, or one from another host, is kept. Returns the removed paths.
    """
    path = Path(path)
    host = socket.gethostname().replace(".", "_")
    removed = []
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f"{_temp_prefix(path)}*.tmp"):
            tag = tmp.name[len(_temp_prefix(path)):].rsplit(".", 2)[0]
            owner_host, _, pid = tag.rpartition("-")
            if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # make the rename durable (not supported everywhere)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _atomic(path: str | Path, write) -> None:
    """Call ``write(binary_file)`` on a fresh temporary file, fsync it, and rename it to ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{_owner_tag()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            # Name the target, not the temporary file (e.g. "No space left on device: results/x.pt").
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    _fsync_dir(path.parent)


def save_torch(obj: object, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see the module doc)."""
    _atomic(path, lambda f: torch.save(obj, f))


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode()
    _atomic(path, lambda f: f.write(data))


def write_json(path: str | Path, obj: object) -> None:
    """Write ``obj`` as indented JSON atomically (numpy/torch scalars become floats)."""
    write_text(path, json.dumps(obj, indent=1, default=float) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write ``rows`` (dicts with the same keys, in order) as CSV atomically."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [])
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------- guards


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_distinct(outputs: Iterable[tuple[str, str | Path]], inputs: Iterable[tuple[str, str | Path]]) -> None:
    """Raise :class:`FileSafetyError` if an output is an input or two outputs are one file.

    ``outputs`` and ``inputs`` are ``(role, path)`` pairs; the role names the option in
    the message (e.g. ``("--json", "r.json")``).

    >>> check_distinct([("--json", "a.json")], [("--checkpoint", "a.json")])
    Traceback (most recent call last):
    ...
    nelu.files.FileSafetyError: --json a.json is the same file as --checkpoint a.json; it would be overwritten: choose another output path
    """
    outs = [(role, Path(p)) for role, p in outputs]
    ins = [(role, Path(p)) for role, p in inputs]
    for i, (role, out) in enumerate(outs):
        for other_role, other in ins + outs[:i]:
            if _same(out, other):
                raise FileSafetyError(f"{role} {out} is the same file as {other_role} {other}; it would be "
                                      "overwritten: choose another output path")


def check_writable(path: str | Path, *, folder: bool = False) -> None:
    """Create the folder of ``path`` (``path`` itself when ``folder``) and check a file can be written there.

    Raises :class:`FileSafetyError` (``"cannot write to ..."``) before any long work starts.
    """
    path = Path(path)
    where = path if folder else path.parent
    try:
        if not folder and path.is_dir():
            raise FileSafetyError(f"output path {path} is a directory, expected a file")
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".nelu-write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise FileSafetyError(f"cannot write to {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def lock(path: str | Path, what: str = "run") -> Iterator[None]:
    """Hold an advisory, non-blocking lock on ``path`` (via ``.NAME.lock`` beside it).

    A second process asking for the same lock gets :class:`FileSafetyError` at once.
    The lock file is removed on exit; a lock left by a killed process is released by
    the operating system, so it never blocks a later run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _try_lock(fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
                raise FileSafetyError(f"another {what} is writing {path} right now (lock {lock_path}); "
                                      "wait for it to finish or choose another output path") from None
            raise
        # The holder before us may have removed the file after we opened it: retry on the new one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{_owner_tag()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)  # closing releases the lock


def _try_lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
