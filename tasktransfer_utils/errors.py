"""The one kind of error a user's input can cause: a file, field, option or task name that cannot be used.

Every exception the package raises for bad *input* (a data file, a study config, a task name, an option)
derives from :class:`UserInputError`, beside the built-in type callers already catch (``ValueError``,
``KeyError``, ``FileNotFoundError``). The ``tasktransfer`` command prints such an error as one line on stderr
and exits with status 2; any other exception is a bug and keeps its traceback. The message names what is at
fault (file and line, field, flag or task) and what was expected.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable


class UserInputError(Exception):
    """Bad user input (not a bug): the message names the file/line, field, flag or task at fault and what was
    expected."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise print the message quoted
        return str(self.args[0]) if self.args else ""


class UsageError(UserInputError, ValueError):
    """A command-line option (or the Python argument behind it) has a value that cannot be used."""


class MissingFileError(UserInputError, FileNotFoundError):
    """A file or folder the user named (or that a task needs in the data directory) does not exist."""


def suggest(name: str, known: Iterable[str], n: int = 3) -> str:
    """" (did you mean A, B?)" for the close matches of ``name`` among ``known``; "" when none is close."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    if not close:
        lower = {k.lower(): k for k in known}
        close = [lower[c] for c in difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.6)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def decode_text(raw: bytes, where: str, encoding: str = "utf-8", *, empty_ok: bool = False) -> str:
    """``raw`` decoded, or a :class:`UserInputError` naming ``where``: an empty file, a binary file (NUL bytes
    in its first 8 KiB) or bytes that are not valid ``encoding`` text (with the line and byte offset of the
    first bad byte). A UTF-8 byte-order mark is dropped."""
    if not empty_ok and not raw.strip():
        raise UserInputError(f"{where}: the file is empty; expected data lines")
    nul = raw.find(b"\x00", 0, 8192)
    if nul >= 0 and not encoding.lower().replace("-", "").startswith("utf16"):
        raise UserInputError(f"{where}: a binary file (a NUL byte at byte {nul}), not text; "
                             f"expected a {encoding} text file")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise UserInputError(f"{where} line {line}: byte {err.start} (0x{raw[err.start]:02x}) is not valid {encoding} "
                             f"text; expected a {encoding} file (convert it, e.g. iconv -f latin1 -t utf-8)") from None
    return text[1:] if text.startswith("\ufeff") else text


def progress(message: str) -> None:
    """One progress line on stderr (stdout is kept for results)."""
    print(message, file=sys.stderr, flush=True)
