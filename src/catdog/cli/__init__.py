"""The ``catdog`` command line: data, train, evaluate, predict, export, serve.

Every user-facing failure is one sentence on stderr and a non-zero exit; ``--debug`` shows
the traceback instead.

The app and its shared options are in :mod:`catdog.cli.app`, failures in :mod:`catdog.cli.errors`,
printing in :mod:`catdog.cli.output`; the commands, each importing its work inside the function (so
``catdog predict`` loads neither torch nor timm), in :mod:`~catdog.cli.predict`, :mod:`~catdog.cli.data`,
:mod:`~catdog.cli.models` and :mod:`~catdog.cli.train`, registered in this order (the order of ``--help``).
"""

from __future__ import annotations

import os
import stat
import sys

# isort: off
# Importing a command's module registers it; `catdog --help` lists the commands in this order.
from catdog.cli import predict, models, train, data  # noqa: F401

# isort: on
from catdog.cli.app import app, data_app
from catdog.cli.errors import (
    DEBUG,
    INTERNAL_ERROR,
    click_kinds,
    err_console,
    fail,
    out_of_memory,
    output_lost,
    stdout_to_null,
    unexpected,
    user_errors,
)

__all__ = [
    "DEBUG",
    "INTERNAL_ERROR",
    "app",
    "data_app",
    "err_console",
    "fail",
    "main",
    "out_of_memory",
    "unexpected",
    "user_errors",
]


def main(args: list[str] | None = None, prog_name: str | None = None) -> None:
    """Console-script entry point. ``args`` and ``prog_name`` (else from ``sys.argv``): for the tests that run the
    command line in their own process, through this handling of click's errors as a user's ``catdog`` would."""
    # Quiet, predictable CPU threading unless the user chose otherwise.
    os.environ.setdefault("KMP_WARNINGS", "0")
    words = sys.argv[1:] if args is None else args
    if _empty_path(words):
        fail(
            "An argument is empty (''), as an unset shell variable leaves it, and a path so given is the current "
            "folder: give the path or value, or leave the argument out."
        )
        raise SystemExit(2)
    try:
        code = app(args=args, prog_name=prog_name, standalone_mode=False)
        if sys.stdout is not None:  # what a command printed last may be in the buffer still: written now or said
            sys.stdout.flush()
    except BrokenPipeError:  # `catdog predict ... | head`: the reader has gone; quiet, as Unix tools are
        stdout_to_null()
        raise SystemExit(1) from None
    except OSError as err:  # the last flush, or click's own --help and --version: a command's are user_errors'
        if DEBUG["on"]:  # where user_errors lets a command's own through, as the traceback asked for
            raise
        raise SystemExit(output_lost(err).exit_code) from None
    except click_kinds("NoArgsIsHelpError") as err:  # `catdog`, `catdog data`: the help, as click shows it
        err.show()
        raise SystemExit(err.exit_code) from None
    except click_kinds("UsageError") as err:  # one sentence, like every other refusal, not click's usage block
        command = err.ctx.command_path if err.ctx else "catdog"
        message = err.format_message().rstrip(".") + _piped_photo_hint(err, words)
        # fail(): text, not markup, where click quotes the user's words ('--x[/]' was a rich traceback)
        fail(f"{message} (see '{command} --help').")
        raise SystemExit(2) from None
    except click_kinds("ClickException") as err:
        err.show()
        raise SystemExit(err.exit_code) from None
    except click_kinds("Abort"):  # Ctrl-C outside a command's own handling
        fail("Interrupted.", 130)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def _empty_path(words: list[str]) -> bool:
    """Whether a word is empty, as `"$OUT"` is with OUT unset: every path of catdog's is read so as the current
    folder, and `evaluate photos --out ''` wrote its report among the user's files, `predict --sort-into ''` sorted
    the photos into it. ``--out="$OUT"`` is the same empty value, in one word. ``--root-path ''`` alone means
    something: no path, its default."""
    for before, word in zip(["", *words], words):
        option, equals, value = word.partition("=")
        if option == "--root-path" or (not word and before == "--root-path"):
            continue
        if not word or (option.startswith("--") and equals and not value):
            return True
    return False


def _piped_photo_hint(err: Exception, words: list[str]) -> str:
    """How to read a photo piped in when PATHS is left out (`catdog predict < cat.jpg`): said only "Missing
    argument 'PATHS'", as if a photo had not been given."""
    from catdog.fsutil import catdog_command

    param = getattr(err, "param", None)
    if not isinstance(err, click_kinds("MissingParameter")) or param is None or param.name != "paths":
        return ""
    if not _something_piped_in():  # the missing photos are the whole story
        return ""
    if any(word.partition("=")[0] == "--sort-into" for word in words):  # which copies files: '-' is refused
        return ""
    command = catdog_command(*words, "-")
    return f"; to classify the photo on standard input, give '-' for it{': ' + command if command else ''}"


def _something_piped_in() -> bool:
    """Whether standard input is a pipe, or a file with bytes in it: not a terminal, nor the /dev/null or empty
    file that cron, CI, nohup and `ssh -n` give a command (the hint sent the user after a photo never piped in)."""
    if sys.stdin is None:
        return False
    try:
        status = os.fstat(sys.stdin.fileno())
    except (OSError, ValueError):  # no file behind it (bytes a test gives): what isatty says
        return not sys.stdin.isatty()
    if stat.S_ISREG(status.st_mode):
        return status.st_size > 0
    return stat.S_ISFIFO(status.st_mode) or stat.S_ISSOCK(status.st_mode)


if __name__ == "__main__":  # pragma: no cover
    main()
