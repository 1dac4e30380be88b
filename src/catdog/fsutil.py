"""Writing files so that a crash or a full disk never leaves a half-written one behind."""

from __future__ import annotations

import errno
import fcntl
import filecmp
import html
import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``; on any failure ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with naming_the_file_written(path):
            try:
                write(tmp)
            except Exception as err:
                if not isinstance(err, OSError) and _disk_full(err, tmp):
                    # torch.save and safetensors report a full disk as their own errors ("unexpected pos ...",
                    # "I/O error: ... (os error 28)"); say what happened, as the OSError the CLI turns into a sentence.
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
                raise
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# What a write is refused for want of room: a full disk, `ulimit -f`, a full quota.
NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@contextmanager
def naming_the_file_written(path: str | os.PathLike) -> Iterator[None]:
    """Around writing ``path``: an OSError that names no file, or that says there is no room, names ``path``.
    A write to a full disk was "error: [Errno 28] No space left on device", naming nothing, and shutil's copy
    names the file it reads ("No space left on device: '~/.cache/catdog/onnx/builtin-….onnx'"), not the one
    that had no room."""
    try:
        yield
    except OSError as err:
        # One with no errno is a library's own sentence (Pillow's "cannot write mode P as JPEG"): kept whole.
        if err.errno is not None and (err.filename is None or err.errno in NO_ROOM):
            raise OSError(err.errno, err.strerror, os.fspath(path)) from err
        raise


def _disk_full(err: Exception, path: Path) -> bool:
    """Whether ``err`` came from a full disk: said in its message, or (almost) no space left at ``path``."""
    if "No space left on device" in str(err) or "os error 28" in str(err):
        return True
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 64 * 1024


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, in every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def copy_into(src: str | os.PathLike, folder: str | os.PathLike) -> tuple[Path, bool]:
    """Copy ``src`` (with its dates) into ``folder`` under its own name, never over another file; return the
    copy and whether it is new. A file of that name with the same bytes is the copy already (a rerun copies
    nothing twice); one with other bytes makes it ``name-2.jpg``, then ``name-3.jpg`` ..."""
    src, folder = Path(src), Path(folder)
    staged: Path | None = None  # the whole copy, made once, then linked under its name
    n = 1
    try:
        while True:
            dest = folder / (src.name if n == 1 else f"{src.stem}-{n}{src.suffix}")
            if not os.path.lexists(dest):  # a dangling link takes the name too
                if staged is None:  # a short name of its own: '.<name>.<pid>' made long names too long
                    folder.mkdir(parents=True, exist_ok=True)
                    fd, name = tempfile.mkstemp(prefix=".catdog-", suffix=".copy", dir=folder)
                    os.close(fd)
                    staged = Path(name)
                    shutil.copy2(src, staged)
                    with open(staged, "rb") as handle:
                        os.fsync(handle.fileno())
                    os.chmod(staged, 0o666 & ~_umask())  # mkstemp makes 0600, as atomic_write says
                try:
                    # A link, not a rename: it fails where a file came since the look above (another run
                    # sorting at once), where a rename, once, replaced that run's photo.
                    os.link(staged, dest)
                    return dest, True
                except FileExistsError:
                    continue  # look again: it may be this very photo, copied by that run
                except OSError as err:
                    if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                        raise
                    os.replace(staged, dest)  # a file system without hard links (FAT, exFAT): a rename, as before
                    return dest, True
            if dest.is_file() and dest.stat().st_size == src.stat().st_size and filecmp.cmp(src, dest, shallow=False):
                return dest, False
            n += 1
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)


def why_unwritable(folder: str | os.PathLike) -> str | None:
    """Why no file can be written into ``folder`` (the missing folders above it made as needed); None if one can.

    Asked before any work: found out when the first file was written, the OS error came after it (an epoch, an
    export) and could name a temporary file the user never gave.
    """
    nearest = Path(folder).absolute()
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        return f"'{nearest}' is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as err:
        return f"'{nearest}' takes no new files ({err.strerror or type(err).__name__})"
    return None


def counted(n: int, noun: str) -> str:
    """ "1 photo", "2 photos": a count as a person reads it ("answered 'neither' 1 times" once)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def percent(p: float) -> str:
    """``p`` as a percentage with one decimal, or as many more (up to 4) as keep it off 0.0 % and 100.0 %: "unsure
    (100.0%)" once hid 99.977 % < 99.999 %, and "accuracy 100.0% (4999 of 5000 ...)" read as a contradiction."""
    for decimals in range(1, 5):
        text = f"{p:.{decimals}%}"
        if not (0 < p < 1) or text not in (f"{0:.{decimals}%}", f"{1:.{decimals}%}"):
            return text
    return text


def links_or_folders(n: int) -> str:
    """ "1 link or folder", "2 links or folders": counted() would pluralise the last noun alone."""
    return f"{n} link or folder" if n == 1 else f"{n} links or folders"


def listed(names: list[str] | tuple[str, ...], conjunction: str = "and") -> str:
    """Names as a person lists them: "cat, dog and rabbit" ("cat and dog and rabbit" once), "cat, dog or neither"."""
    *rest, last = names
    return f"{', '.join(rest)} {conjunction} {last}" if rest else last


def catdog_command(*words: str | os.PathLike) -> str | None:
    """A catdog command for the user to paste, each word quoted for a POSIX shell where it needs it: a path with a
    space or a quote ('my cats') pasted unquoted ran on other folders, or on none. A word given as a path object
    (``Path``) is a path: one that starts with '-' is written ``./-x.jpg``, else the command reads it as an option.
    Made to be printed through :func:`printable`, as every command's sentences are.

    None where a word holds a control character or a byte that is not UTF-8: printed, such a name is escaped
    (:func:`printable`), and the command pasted would name another file; the caller says it in words instead."""
    shell_words = [_shell_word(word) for word in words]
    if not all(word.isprintable() for word in shell_words):
        return None
    return " ".join(["catdog", *(quoted_for_shell(word) for word in shell_words)])


def _shell_word(word: str | os.PathLike) -> str:
    text = os.fspath(word)
    if not isinstance(word, str) and text.startswith("-"):
        return os.path.join(os.curdir, text)
    return text


def quoted_for_shell(word: str) -> str:
    r"""``word`` quoted so that, printed through :func:`printable`, it pastes whole: a backslash that printable()
    doubles (the name c\new printed as c\\new) reads back as one inside double quotes; in single quotes, as
    shlex.quote puts it, the command pasted named another folder. Also for a word beside a catdog command: the
    file its output is redirected to."""
    doubled = printable(word) != word
    if doubled and not word.endswith("\\") and not any(c in word for c in '"$`!'):
        return f'"{word}"'
    return shlex.quote(word)


def first_few(names: list[str], shown: int) -> list[str]:
    """The first ``shown`` names and "N more" for the rest, so 300 copies or 20 year folders fit in a sentence;
    one left over is named, not counted as "1 more"."""
    if len(names) <= shown + 1:
        return list(names)
    return [*names[:shown], f"{len(names) - shown:,} more"]


def default_cache_dir() -> Path:
    """``$CATDOG_CACHE_DIR``, else ``$XDG_CACHE_HOME/catdog``, else ``~/.cache/catdog``."""
    if os.environ.get("CATDOG_CACHE_DIR"):
        return Path(os.environ["CATDOG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "catdog"


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed): one writer at a time across processes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shown(text: str) -> str:
    """A file name (or a sentence naming one) for one line of rich output: control characters escaped (a
    name may hold a newline, which split a line in two) and square brackets kept as text, not rich markup. Rich
    has no escape for emoji codes ('x:dog:.jpg' printed 'x🐶.jpg'): catdog's consoles are made with emoji=False."""
    from rich.markup import escape

    return escape(printable(text))


def html_text(text: str) -> str:
    """A file name (or a sentence naming one) for an HTML page, as :func:`shown` is for the terminal: control
    characters escaped, so a right-to-left override (U+202E) in a name reads ``\\u202e`` instead of reversing the
    rest of the caption, then HTML-escaped."""
    return html.escape(printable(text))


def printable(text: str) -> str:
    r"""``text`` with its control characters (and the bytes of a name that is not UTF-8) escaped, for one line.

    A backslash that would read as one of these escapes (``\xe9``, ``\n``, ``\u200b``, or ``\\``) is written
    doubled: a name holding the four characters '\xe9' read as the name holding the byte 0xE9. Any other stays as
    it is, so 'from a zip\cat.jpg' reads as its name (doubling every one was tried and reverted, 2026-12-07).
    Apply it once, where the text is printed: applied again, those backslashes double again."""
    visible = [_visible(c) for c in text]
    for at, c in enumerate(text):
        # What follows as printed, not as given: a backslash before a line break or a byte that is not UTF-8
        # (printed '\n', '\xe9') read as one before the text '\n' or '\xe9'.
        if c == "\\" and _READS_AS_ESCAPE.match("".join(visible[at + 1 : at + 10])):
            visible[at] = "\\\\"
    return "".join(visible)


# What, printed right after a backslash, makes printable() double it: the start of one of its escapes, or another
# backslash (a literal one, or the start of an escaped character).
_READS_AS_ESCAPE = re.compile(r"\\|[ntr]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}")


def _visible(c: str) -> str:
    if _UNDECODABLE_BYTE.match(c):
        return utf8_safe(c)
    return c if c.isprintable() else c.encode("unicode_escape").decode()


# The bytes of a name that is not UTF-8, as os.fsdecode keeps them: lone surrogates U+DC80 to U+DCFF.
_UNDECODABLE_BYTE = re.compile("[\udc80-\udcff]")


def utf8_name(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name is UTF-8, the only kind ONNX Runtime and safetensors open by name (a Latin-1
    'caf\\xe9.onnx' is not: they refused it, so catdog gives them such a file's bytes instead)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utf8_safe(text: str) -> str:
    """``text`` with each byte of a name that is not UTF-8 written as ``\\xe9``: valid UTF-8 for JSON, CSV or a
    terminal. Left as the surrogate ``\\udce9`` it made JSON that strict parsers refuse, and raw bytes in CSV."""
    return _UNDECODABLE_BYTE.sub(lambda byte: f"\\x{ord(byte[0]) - 0xDC00:02x}", text)


def utf8_safe_json(value: object) -> object:
    """A JSON-able ``value`` (dicts, lists, strings, numbers) with :func:`utf8_safe` applied to every string in it,
    keys included: the file names a --json document carries, at whatever depth."""
    if isinstance(value, str):
        return utf8_safe(value)
    if isinstance(value, dict):
        return {utf8_safe_json(key): utf8_safe_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [utf8_safe_json(item) for item in value]
    return value


def json_text(document: object) -> str:
    """``document`` as indented JSON with every string :func:`utf8_safe`: how catdog writes the JSON it gives users
    (a command's --json output, metrics.json, suspects.json; a model's config.json and model.json too, through
    :func:`utf8_safe_json`). By itself json.dumps writes the byte of a name that is not UTF-8 as the escaped lone
    surrogate ``\\udce9``, which strict JSON parsers refuse."""
    return json.dumps(utf8_safe_json(document), indent=2)


# A byte that utf8_safe wrote as text: '\\xe9' (only 0x80 to 0xff are ever written so).
_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def recorded_path(text: str) -> str:
    """A path that catdog recorded with :func:`utf8_safe` (a model's training folder in its config.json), as the
    file system names it: where ``text`` names nothing, each ``\\xe9`` as the byte again, if that names something."""
    if os.path.lexists(text):
        return text
    restored = _ESCAPED_BYTE.sub(lambda escaped: chr(0xDC00 + int(escaped[1], 16)), text)
    return restored if os.path.lexists(restored) else text
