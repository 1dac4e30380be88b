"""How a command fails: one sentence on stderr and an exit status (2 for bad input, 70 for catdog's own bug)."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

err_console = Console(stderr=True, emoji=False)


DEBUG = {"on": False}


def fail(message: str, code: int = 2, *, every_rank: bool = False) -> typer.Exit:
    """Print one clear sentence and return the Exit to raise.

    The sentence is text, not rich markup: it may name a path or a folder such as '[/a]', which rich read as a
    closing tag (a traceback instead of the sentence) or '[red]', which it dropped.

    Under torchrun the first process of each machine prints it: the same command, data and model give the
    processes of a machine the same refusal, and 8 processes printed it 8 times; another machine's data may differ
    (a folder its filesystem lacks), and a refusal met there alone was printed by nobody. ``every_rank``: a
    failure of this process alone (an OSError, a bug), which every process prints. Any but rank 0 says its rank.
    """
    from rich.text import Text

    from catdog.fsutil import printable

    rank = other_rank()
    if not (every_rank or first_on_its_machine()):
        return typer.Exit(code)
    said = f"rank {rank}: {message}" if rank else message
    err_console.print(Text.assemble(("error:", "bold red"), " ", printable(said)), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def first_on_its_machine() -> bool:
    """Whether this process is the first torchrun started on its machine (LOCAL_RANK 0), or a plain run."""
    import os

    return os.environ.get("LOCAL_RANK", "0") == "0"


def other_rank() -> int:
    """This process's rank when torchrun started it as one of several and it is not rank 0; 0 otherwise."""
    from catdog.inference.cores import world

    rank, size = world()
    return rank if size > 1 else 0


# What rank 0 says when a collective fails because another process of the run has gone.
LOST_PEER = (
    "Another process of this torchrun run stopped, so this one cannot go on; its own message, if it left one, is "
    "above, and torchrun's report below names its rank and how it ended"
)


def lost_peer(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another process of the run has gone.

    gloo says so in a RuntimeError from its transport ("Connection closed by peer", "... reset by peer"), which
    catdog once called an unexpected error of its own and asked to be reported.
    """
    import sys

    from catdog.inference.cores import world

    dist = sys.modules.get("torch.distributed")  # a collective ran only if torch.distributed was imported
    if dist is None or world()[1] == 1:
        return False
    return isinstance(err, getattr(dist, "DistError", ())) or (
        isinstance(err, RuntimeError) and "gloo/transport" in str(err)
    )


def refuse_unwritable(path: str | None, kind: str, option: str = "--out") -> None:
    """Refuse, before any work, an output ``path`` of the wrong ``kind`` ("file" or "folder") already there, or
    one that cannot be written (under a file, or in a folder that takes no new files)."""
    from pathlib import Path

    from catdog.fsutil import why_unwritable

    if path is None:
        return
    if path == "-":  # standard output to most tools; a file or folder named '-' was written
        raise fail(f"{option} '-': catdog writes a {kind}, not standard output; give a {kind} name.")
    if kind == "file" and Path(path).is_dir():
        raise fail(f"{option} '{path}' is a folder; give the file to write.")
    if kind == "folder" and Path(path).exists() and not Path(path).is_dir():
        raise fail(f"{option} '{path}' is a file; give a folder to write into.")
    why = why_unwritable(Path(path) if kind == "folder" else Path(path).absolute().parent)
    if why:
        raise fail(f"{option} '{path}' cannot be written: {why}.")


# The exit status of a failure that is catdog's fault, not the input's: EX_SOFTWARE of sysexits.h.
INTERNAL_ERROR = 70


def user_errors(func: Callable) -> Callable:
    """Turn catdog's own error types into one sentence and exit status 2.

    Anything else but running out of memory is a bug, not a bad input: it gets one sentence too, that
    says so, and status 70.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from catdog.errors import CatdogError

        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            raise  # `catdog predict ... | head`: the reader has gone; the CLI exits quietly, as Unix tools do
        except (CatdogError, OSError) as err:
            if DEBUG["on"]:
                raise
            message = str(err) or type(err).__name__
            if isinstance(err, OSError) and err.filename:
                message = f"{err.strerror or 'cannot use'}: '{err.filename}'."
            # Under torchrun every rank meets a refusal of the input alike; an OSError may be one machine's own.
            raise fail(message, every_rank=isinstance(err, OSError)) from None
        except KeyboardInterrupt:
            raise fail("Interrupted.", 130) from None
        except typer_exits():
            raise
        except Exception as err:
            if DEBUG["on"]:
                raise
            if lost_peer(err):  # the other process's own sentence, or torchrun's report, says why
                raise fail(f"{LOST_PEER}.", 1) from None
            code = 2 if out_of_memory(err) else INTERNAL_ERROR
            raise fail(unexpected(err), code, every_rank=True) from None

    return wrapper


def output_lost(err: OSError) -> typer.Exit:
    """Say that standard output refused what was printed (a full disk, ``ulimit -f``), and return the Exit to raise."""
    stdout_to_null()
    return fail(f"Standard output cannot be written ({err.strerror or err}), so what was printed there is incomplete.")


def stdout_to_null() -> None:
    """Point standard output at the null device, once it has failed: what it still buffers would fail again at
    Python's flush at exit, as "Exception ignored ... BrokenPipeError" (or "[Errno 28] ...") and exit status 120.
    Python's documented way for a reader that has gone (the note on SIGPIPE in the signal module)."""
    import os
    import sys

    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no descriptor to point (a caller's own stream)
        pass


@contextmanager
def printing() -> Iterator[None]:
    """Around writes to standard output: one that fails is one sentence (:func:`output_lost`), not "[Errno 27] File
    too large" read as if a file of the input were at fault. Around the writes alone: an OSError of the work (a
    copy that fails) names its own file."""
    try:
        yield
    except BrokenPipeError:
        raise  # `| head`: the reader has gone, which is no error (main)
    except OSError as err:
        raise output_lost(err) from None


def typer_exits() -> tuple[type[BaseException], ...]:
    """typer's own ways out: an exit status, an abort, a usage error (typer 0.29 vendors click's)."""
    return (typer.Exit, typer.Abort, *click_kinds("Exit"), *click_kinds("Abort"), *click_kinds("ClickException"))


def click_kinds(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception class ``name``: click's own and typer's vendored copy (typer 0.29 raises that one)."""
    import click

    vendored = getattr(getattr(getattr(typer, "_click", None), "exceptions", None), name, None)
    return tuple(kind for kind in (getattr(click.exceptions, name, None), vendored) if kind is not None)


def out_of_memory(err: BaseException) -> bool:
    """A MemoryError, or torch's CPU or GPU allocator giving up (RuntimeError subclasses)."""
    text = str(err).lower()
    return isinstance(err, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def unexpected(err: BaseException) -> str:
    """One sentence for an exception catdog did not expect (its first line, shortened)."""
    if out_of_memory(err):
        return "Ran out of memory; try a smaller --batch-size or --image-size, or fewer --workers."
    lines = str(err).strip().splitlines()
    detail = f": {lines[0][:200]}" if lines else ""
    return (
        # --debug is catdog's option, not the command's: `catdog predict x.jpg --debug` is refused as unknown.
        f"catdog stopped on an unexpected {type(err).__name__}{detail}. Run it again with --debug before the "
        "command (catdog --debug COMMAND ...) to see where; if the input looks right, please report it."
    )


class _Held:
    """How many :func:`stop_held` blocks are open, and whether a stop came during them."""

    depth = 0
    pending = False


_held = _Held()


@contextmanager
def stop_held() -> Iterator[None]:
    """Hold a Ctrl-C or SIGTERM of :func:`stopping_on_signals` until the block ends, then stop: a step and its
    record (a photo copied and counted) are done both or not at all. A stop between the two said "Sorted 3 photos"
    with 4 in the folder. A second stop during the block stops at once."""
    _held.depth += 1
    try:
        yield
    finally:
        _held.depth -= 1
        if not _held.depth and _held.pending:
            _held.pending = False
            raise KeyboardInterrupt


@contextmanager
def stopping_on_signals(stops: list[int]) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt, and are noted in ``stops``.

    SIGTERM is how a scheduler stops a job, and how torchrun stops every process when one fails or when it is
    stopped itself: the run ended without a word of the checkpoint it keeps. Under torchrun a Ctrl-C reaches
    every rank; rank 0, waiting in a collective, met the others leaving it (a network error) before its own
    KeyboardInterrupt, and said another process had stopped. A signal ignored (SIGINT in a background job) or
    handled by the caller is left so.
    """

    def stop(signum: int, frame: object) -> None:
        stops.append(signum)
        if _held.depth and not _held.pending:  # a second Ctrl-C does not wait for the held step
            _held.pending = True
            return
        raise KeyboardInterrupt

    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    ours = [signum for signum, default in defaults.items() if signal.getsignal(signum) is default]
    for signum in ours:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum in ours:
            signal.signal(signum, defaults[signum])
