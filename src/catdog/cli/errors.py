"""How a command fails: one sentence on stderr and an exit status (2 for bad input, 70 for catdog's own bug)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer
from rich.console import Console

err_console = Console(stderr=True)


DEBUG = {"on": False}


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear sentence and return the Exit to raise.

    The sentence is text, not rich markup: it may name a path or a folder such as '[/a]', which rich read as a
    closing tag (a traceback instead of the sentence) or '[red]', which it dropped.
    """
    from rich.text import Text

    from catdog.fsutil import printable

    err_console.print(Text.assemble(("error:", "bold red"), " ", printable(message)), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def refuse_unwritable(path: str | None, kind: str, option: str = "--out") -> None:
    """Refuse, before any work, an output ``path`` of the wrong ``kind`` ("file" or "folder") already there."""
    from pathlib import Path

    if path is None:
        return
    if kind == "file" and Path(path).is_dir():
        raise fail(f"{option} '{path}' is a folder; give the file to write.")
    if kind == "folder" and Path(path).exists() and not Path(path).is_dir():
        raise fail(f"{option} '{path}' is a file; give a folder to write into.")


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
            raise fail(message) from None
        except KeyboardInterrupt:
            raise fail("Interrupted.", 130) from None
        except typer_exits():
            raise
        except Exception as err:
            if DEBUG["on"]:
                raise
            raise fail(unexpected(err), 2 if out_of_memory(err) else INTERNAL_ERROR) from None

    return wrapper


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
        f"catdog stopped on an unexpected {type(err).__name__}{detail}. Run the command again with --debug to see "
        "where; if the input looks right, please report it."
    )
