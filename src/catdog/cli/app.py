"""The Typer app and its ``data`` group, the global options, and option types shared by commands."""

from __future__ import annotations

import os
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand

from catdog.cli.errors import DEBUG

app = typer.Typer(
    name="catdog",
    help="Recognise cats and dogs in photos: check data, train, evaluate, predict, export, serve.",
    # What an installed catdog holds: its guides (README.md, docs/) are in its source, not in the package.
    epilog="Options of one command: catdog COMMAND --help, e.g. catdog predict --help. The JSON API's reference: "
    "/docs on the server that catdog serve starts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help, wrapped to the terminal: rich's option tables cut long option names at 80 columns
    # ("--label-smooth…", "--test-image-s…"), so they could not be read or typed from the help.
    rich_markup_mode=None,
)


class PlainHelp(TyperCommand):
    """A command whose help names values as git's and pip's do (``PATHS...``, ``--port PORT``, ``--batch-size N``):
    Typer printed its type names beside them (``PATHS <list[str]>``, ``--port <int range>``, ``--out <str>``).
    An option without a metavar of its own is shown as argparse shows it, its name in capitals."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:  # Typer's own copy of click: its classes are not click's, told apart by name
            if param.param_type_name == "option" and param.metavar is None and not param.is_flag:
                param.metavar = param.opts[0].lstrip("-").upper().replace("-", "_")

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        # Typer braces a required argument ("predict [OPTIONS] {PATHS}..."), which reads as a choice of words;
        # bare, as in git's, pip's and click's own usage lines, it is required, and [MODEL] optional.
        return [piece.replace("{", "").replace("}", "") for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":  # Typer adds the type to an argument's metavar too
                many = "..." if param.nargs != 1 else ""
                arguments.append((param.display_name_raw + many, record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


class PhotosRequired(PlainHelp):
    """A command whose model may be left out but whose photos may not (``evaluate [MODEL] DATA_DIR``): Typer
    brackets every argument with a default, so the usage line called the photos optional, which they are not."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        *pieces, photos = super().collect_usage_pieces(ctx)
        return [*pieces, photos.strip("[]")]


data_app = typer.Typer(help="Inspect and clean datasets: check, audit.", no_args_is_help=True, rich_markup_mode=None)


app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        from catdog import __version__

        typer.echo(f"catdog {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print catdog's version and exit."),
    ] = False,
) -> None:
    DEBUG["on"] = debug


def as_typed(ctx: typer.Context, *arguments: str | os.PathLike) -> str | None:
    """The command refused, for the user to paste: ``arguments`` for its own, then the options the user typed, as
    typed (:func:`~catdog.fsutil.catdog_command`; None where a word cannot be pasted). A bare "catdog explain [MODEL]
    IMAGE --out heat.png" had brackets no shell takes, an --out nobody gave, and none of the options given."""
    from catdog.fsutil import catdog_command

    words: list[str | os.PathLike] = [ctx.info_name or "", *arguments]
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.param_type_name != "option" or source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            words += [param.opts[0]] if value else param.secondary_opts[:1]
        else:
            words += [word for item in (value if param.multiple else [value]) for word in (param.opts[0], str(item))]
    return catdog_command(*words)


def probability(value: float | None) -> float | None:
    """An option's probability, 0 to 1; NaN too is refused as what it is (a range check called it above 1)."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"{value} is not a probability from 0 to 1.")
    return value


NeitherThreshold = Annotated[
    float | None,
    typer.Option(
        metavar="P",
        help="Answer 'neither' when P(cat or dog) is below this, 0 to 1 (default: the model's own, set to turn "
        "away at most 0.5% of pets; higher is stricter).",
        callback=probability,
    ),
]
