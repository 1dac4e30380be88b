"""``catdog predict`` and ``catdog serve``: a model's answers, on the command line and over HTTP."""

from __future__ import annotations

import errno
import math
import os
import signal
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from catdog.cli.app import NeitherThreshold, PlainHelp, app, as_typed, probability
from catdog.cli.errors import (
    err_console,
    fail,
    other_rank,
    refuse_unwritable,
    stop_held,
    stopping_on_signals,
    user_errors,
)
from catdog.cli.output import Printed, print_predictions, refuse_lost_output
from catdog.fsutil import counted, first_few, quoted_for_shell, shown
from catdog.models.files import refuse_a_missing_model

if TYPE_CHECKING:
    from catdog.inference.predictor import LeftOut, Prediction, Predictor


@app.command(cls=PlainHelp)
@user_errors
def predict(
    ctx: typer.Context,
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATHS",
            help="Image files, folders (searched recursively), glob patterns, or - for a photo on standard input.",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model directory, .onnx file or builtin-large; the built-in model if omitted."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list of predictions.")] = False,
    as_csv: Annotated[
        bool,
        typer.Option(
            "--csv",
            help="Print CSV, its columns: path, label, confidence, one per answer (cat, dog, neither), error, "
            "looks_like, looks_like_means.",
        ),
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            metavar="P",
            help="Answer 'unsure' when the confidence is below this, 0 to 1 (default: never).",
            callback=probability,
        ),
    ] = None,
    neither_threshold: NeitherThreshold = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average the predictions of the photo and its mirror image.")
    ] = False,
    batch_size: Annotated[int, typer.Option(metavar="N", help="Images per forward pass.", min=1)] = 32,
    sort_into: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="Copy each photo into the folder of DIR named by its answer (DIR/cat, DIR/dog, DIR/neither; a model "
            "of other classes, its own), never over another file.",
        ),
    ] = None,
) -> None:
    """Classify photos as cat, dog or neither."""
    if as_json and as_csv:
        raise fail("Choose one of --json and --csv.")
    from catdog.inference.predictor import STDIN, LeftOut, Predictor, expand_inputs

    _check_no_output_file(ctx, paths, as_json=as_json, as_csv=as_csv)
    _check_stdin(paths, sort_into)
    refuse_lost_output("the answers", "answers.txt", also_in_files=sort_into is not None and not (as_json or as_csv))
    if sort_into is not None:
        _check_sort_folder(sort_into, paths)
    left_out = LeftOut()
    entries = expand_inputs(paths, left_out)
    predictor = Predictor.load(
        model, threshold=threshold, neither_threshold=neither_threshold, tta=tta, throughput=True
    )
    if sort_into is not None:
        unsure = ["unsure"] if threshold is not None else []
        _check_answer_folders(sort_into, [*predictor.answers, *unsure])
    # After the model's checks: a refusal of the model is the one sentence said, not the second line under a note.
    if left_out and not other_rank():  # under torchrun each process found them; rank 0 prints the answers
        _note_left_out(left_out)
    from catdog.inference.sharding import predict_sharded

    # Under torchrun, files are sharded over the ranks and rank 0 prints them all in input order.
    files = [e for e in entries if isinstance(e, str) and e != STDIN]
    predictions = predict_sharded(predictor, files, batch_size=batch_size)
    if predictions is None:
        return
    piped = _predict_stdin(predictor) if STDIN in entries else None
    predicted = iter(predictions)
    results = (piped if e == STDIN else next(predicted) if isinstance(e, str) else e for e in entries)  # in order
    sorted_photos = SortedPhotos()
    if sort_into is not None:
        results = _copied_into(results, Path(sort_into), sorted_photos)
    stops: list[int] = []  # SIGINT or SIGTERM, once one has come
    printed = Printed()
    try:
        with stopping_on_signals(stops):
            print_predictions(results, predictor.answers, printed, as_json=as_json, as_csv=as_csv)
    except KeyboardInterrupt:
        raise _stopped(
            stops, sort_into, sorted_photos, f"{printed.answers} of {counted(len(entries), 'photo')}"
        ) from None
    if sort_into is not None:
        err_console.print(_sorted_summary(shown(sort_into), sorted_photos), soft_wrap=True)
    raise typer.Exit(1 if printed.failed else 0)


def _note_left_out(left_out: LeftOut) -> None:
    """Say what the folders given hold that was not read, a line for each kind: a folder of 135 files got 131
    answers without a word about a photo saved with no extension, and a linked folder or a named pipe was passed
    over without a word too."""
    notes = [
        (left_out.not_named_like_photos, "file", "without an image extension left out",
         "name a file to classify it whatever its extension"),
        (left_out.linked_folders, "linked folder", "not entered",
         "give a linked folder by its own name to classify its photos"),
        (left_out.matched_folders, "folder", "a pattern matched not searched",
         "give a folder itself, or a pattern with '**', to classify its photos"),
        (left_out.not_files, "special file", "(a named pipe, a socket or a device) left out",
         "only photo files are read from a folder or a pattern"),
    ]  # fmt: skip
    for named, noun, what, remedy in notes:
        names = list(dict.fromkeys(named))  # a folder given twice ('photos photos/sub') named its files twice
        if names:
            shown_names = ", ".join(first_few([f"'{name}'" for name in names], 3))
            said = f"note: {counted(len(names), noun)} {what}: {shown_names}; {remedy}."
            err_console.print(shown(said), soft_wrap=True)


SUGGESTED_PHOTOS = 3  # the most photos a command suggested names; more are PHOTOS


def _check_no_output_file(ctx: typer.Context, paths: list[str], *, as_json: bool, as_csv: bool) -> None:
    """Refuse ``--csv out.csv``: it read 'out.csv' as a photo to classify ("'out.csv' does not exist.", exit
    status 1) and printed the CSV on the terminal; --csv and --json print to standard output. A folder so named
    holds photos: it is read. The command suggested is the one typed, its photos and options kept."""
    option = "--csv" if as_csv else "--json" if as_json else None
    for path in paths:
        if option and path.lower().endswith(f".{option[2:]}") and not os.path.isdir(path):
            others = [other for other in paths if other != path]
            if not 0 < len(others) <= SUGGESTED_PHOTOS:  # a shell's *.jpg of 2,000 photos filled the terminal
                others = ["PHOTOS"]
            # A photo named -x.jpg (given after --) is written ./-x.jpg, else the command pasted reads an option.
            photos = [Path(other) if other.startswith("-") and other != "-" else other for other in others]
            command = as_typed(ctx, *photos) or f"catdog predict PHOTOS {option}"
            raise fail(
                f"'{path}' is not a photo: {option} prints to standard output and takes no file name; "
                f"to keep the answers in '{path}', write: {command} > {quoted_for_shell(path)}"
            )


def _check_stdin(paths: list[str], sort_into: str | None) -> None:
    """Refuse what ``-`` (standard input) cannot do: be read twice, be copied by --sort-into, or wait on a
    terminal for a photo nobody pipes in."""
    import sys

    from catdog.inference.predictor import STDIN

    if STDIN not in paths:
        return
    if paths.count(STDIN) > 1:
        raise fail("'-' (standard input) is given more than once; it holds one photo, so give it once.")
    if sort_into is not None:
        raise fail("--sort-into copies photo files; the photo on standard input ('-') has no file to copy.")
    if sys.stdin is not None and sys.stdin.isatty():  # closed (`<&-`, None): '-' gets its line, as _predict_stdin says
        raise fail("'-' reads a photo from standard input, and none is piped in: cat photo.jpg | catdog predict -")


def _predict_stdin(predictor: Predictor) -> Prediction:
    """The answer for the photo on standard input, named '-': its bytes go through the one bytes -> tensor path,
    read no further than the size limit for one image, as a file's are."""
    import sys

    from catdog.images import ImageTooLargeError, read_within_limit
    from catdog.inference.predictor import STDIN, Prediction

    # `catdog predict - a.jpg <&-`: Python finds no file descriptor 0; a.jpg still gets its answer.
    if sys.stdin is None:
        return Prediction(source=STDIN, error="'-' cannot be read from standard input: it is closed.")
    try:
        data = read_within_limit(sys.stdin.buffer, STDIN)
    except ImageTooLargeError as err:  # a line in its place, as a file over the limit gets
        return Prediction(source=STDIN, error=str(err))
    except OSError as err:  # `catdog predict - 0>file`: open for writing only; the other photos still get answers
        return Prediction(source=STDIN, error=f"'-' cannot be read from standard input ({err.strerror or err}).")
    (answer,) = predictor.predict_batch([(STDIN, data)])
    return answer


@dataclass
class SortedPhotos:
    """What --sort-into has done so far: the photos per answer, how many of them were there already (from an
    earlier run), and how many were duplicates of a photo this run copied (same name and bytes, in another
    subfolder)."""

    per_answer: Counter[str] = field(default_factory=Counter)
    there_already: int = 0
    duplicates: int = 0
    copied_now: set[Path] = field(default_factory=set)


def _sorted_summary(folder: str, sorted_photos: SortedPhotos) -> str:
    """What --sort-into did: the photos per answer, and how many were copied now. A rerun once read "Sorted 312
    photos ...; 312 were there already" when it had copied nothing, and a first run "2 were there already" for a
    photo kept twice in the folder sorted."""
    there, duplicates, answers = sorted_photos.there_already, sorted_photos.duplicates, sorted_photos.per_answer
    total = answers.total()
    each = f" ({', '.join(f'{label} {n}' for label, n in sorted(answers.items()))})" if answers else ""
    if total and there == total:
        which = "the photo" if total == 1 else f"all {total} photos"
        return f"Nothing new was copied into '{folder}': {which}{each} {_were(there)} there already."
    parts = [f"{total - there - duplicates} copied"] if there or duplicates else []
    if there:
        parts.append(f"{there} {_were(there)} there already")
    if duplicates:
        kind = "a duplicate of another photo" if duplicates == 1 else "duplicates of other photos"
        parts.append(f"{duplicates} {_were(duplicates)} {kind} (same name and bytes)")
    details = f": {', '.join(parts)}" if parts else ""
    return f"Sorted {counted(total, 'photo')} into '{folder}'{each}{details}."


def _were(n: int) -> str:
    return "was" if n == 1 else "were"  # not "1 were"


def _stopped(stops: list[int], sort_into: str | None, sorted_photos: SortedPhotos, answered: str) -> typer.Exit:
    """The sentence for a batch stopped by Ctrl-C or SIGTERM: how many photos were answered ("3 of 300 photos"), or
    what --sort-into had copied, and how to go on. A bare "Interrupted." left the user counting the answers or the
    copies; SIGTERM ended the run without a word, and could leave a half-made copy (a hidden '.catdog-*.copy') that
    its cleanup never removed."""
    sigterm = bool(stops) and stops[0] == signal.SIGTERM
    how, code = ("Stopped by SIGTERM", 128 + signal.SIGTERM) if sigterm else ("Interrupted", 130)
    if sort_into is None:
        return fail(f"{how} after answering {answered}; run the same command again for all of them.", code)
    done = _sorted_summary(sort_into, sorted_photos)
    return fail(f"{how}. {done} Run the same command again to sort the rest: no photo is copied twice.", code)


def _copy_failed(source: str, place: Path, err: OSError, sorted_photos: SortedPhotos) -> typer.Exit:
    """The sentence for a copy that failed (a full disk, a file size limit): which photo and where, what was
    sorted before it, and how to go on. The OS's own words named the photo, "File too large: 'cat.jpg'.", as if
    the photo were at fault, and said nothing of the copies made."""
    done = _sorted_summary(str(place.parent), sorted_photos)
    return fail(
        f"'{source}' could not be copied into '{place}' ({err.strerror or err}). {done} Run the same command again "
        "once that is fixed, to sort the rest: no photo is copied twice."
    )


# A copy that fails for this photo alone: its name, once made unique ('name-2.jpg'), too long for the folder, or
# the photo gone since it was read. It gets an error line, as a photo that cannot be read does; the batch goes on.
_ONE_PHOTOS_COPY_ERRORS = {errno.ENAMETOOLONG, errno.ENOENT}


def _not_copied(result: Prediction, place: Path, err: OSError) -> Prediction:
    """``result`` as an error naming its answer: the photo was answered but could not be copied."""
    from catdog.inference.predictor import Prediction

    why = (
        f"'{result.source}' ({result.label}) could not be copied into '{place}' ({err.strerror}); it stays where it is."
    )
    return Prediction(source=result.source, error=why)


def _check_sort_folder(folder: str, paths: list[str]) -> None:
    """Refuse a --sort-into folder that is a file, cannot be written, or is inside a folder being classified (a
    rerun would classify the copies too)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise fail(f"--sort-into '{folder}' is a file; give a folder to copy the photos into.")
    refuse_unwritable(folder, "folder", "--sort-into")  # found at the first copy, after the model and a batch
    import glob
    from itertools import takewhile

    target = Path(folder).resolve()
    for path in paths:
        if "**" in path and not os.path.exists(path):  # 'photos/**/*.jpg' reaches as deep as 'photos' does
            within = Path(*takewhile(lambda part: not glob.has_magic(part), Path(path).parts))
        else:
            within = Path(path)
        if within.is_dir() and (target == within.resolve() or within.resolve() in target.parents):
            raise fail(f"--sort-into '{folder}' is inside '{path}', which is being classified; "
                       "choose a folder outside it.")  # fmt: skip


def _check_answer_folders(folder: str, answers: list[str]) -> None:
    """Refuse, before any copy, an answer that cannot name one folder inside --sort-into's: a hand-made
    config.json's class '../x' copied the photos beside that folder, and 'a/b' into a folder under another; a
    file 'sorted/dog' stopped the batch at the first dog, "File exists: 'sorted/dog'."."""
    for answer in answers:
        if "/" in answer or answer in (".", ".."):
            raise fail(
                f"--sort-into copies each photo into a folder named by its answer, and this model's answer "
                f"'{answer}' is not a folder name (it is '.' or '..', or holds a '/'); rename that class."
            )
        place = os.path.join(folder, answer)
        if os.path.lexists(place) and not os.path.isdir(place):
            raise fail(
                f"--sort-into copies the photos answered {answer} into the folder '{place}', and that is a file; "
                "move it away, or choose another --sort-into folder."
            )


def _copied_into(results: Iterable, folder: Path, sorted_photos: SortedPhotos) -> Iterator:
    """Each result, once its photo is copied into ``folder``/its answer (photos that failed stay where they are)."""
    from catdog.fsutil import copy_into

    for result in results:
        if result.ok:
            place = folder / result.label
            with stop_held():  # a stop between the copy and its count left the summary one photo short
                try:
                    copy, new = copy_into(result.source, place)
                except OSError as err:
                    if err.errno not in _ONE_PHOTOS_COPY_ERRORS:  # a full disk: every copy after it would fail too
                        raise _copy_failed(result.source, place, err, sorted_photos) from None
                    result = _not_copied(result, place, err)
                else:
                    _count_copy(sorted_photos, result.label, copy, new)
        yield result


def _count_copy(sorted_photos: SortedPhotos, label: str, copy: Path, new: bool) -> None:
    sorted_photos.per_answer[label] += 1
    if new:
        sorted_photos.copied_now.add(copy)
    elif copy in sorted_photos.copied_now:
        sorted_photos.duplicates += 1
    else:
        sorted_photos.there_already += 1


@app.command(cls=PlainHelp)
@user_errors
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model directory, .onnx file or builtin-large; the built-in model if omitted."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 opens the server to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option(metavar="N", help="Server processes, each with its own copy of the model.", min=1)
    ] = 1,
    max_file_mb: Annotated[
        float, typer.Option(metavar="MB", help="Largest photo accepted, in MB (413 above).", min=0.01)
    ] = 10.0,
    max_megapixels: Annotated[
        float, typer.Option(metavar="N", help="Most pixels in one photo, in millions (413 above).", min=0.01)
    ] = 40.0,
    max_files: Annotated[
        int, typer.Option(metavar="N", help="Most photos in one batch request (413 above).", min=1)
    ] = 32,
    max_concurrent: Annotated[
        int,
        typer.Option(metavar="N", help="API requests being worked on at once, uploads complete (503 above).", min=1),
    ] = 64,
    max_uploads: Annotated[
        int,
        typer.Option(
            metavar="N", help="API requests still uploading at once (503 above); memory: this x --max-file-mb.", min=1
        ),
    ] = 128,
    max_connections: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Connections open at once, idle ones included, and requests in flight (503 above; default: 2 x "
            "(max uploads + max concurrent)).",
            min=1,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds one API request may take (503 after).", min=0.1)
    ] = 30.0,
    batch_size: Annotated[
        int, typer.Option(metavar="N", help="Most images in one forward pass (micro-batching).", min=1)
    ] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(metavar="MS", help="How long a forward pass waits for more images, in ms.", min=0)
    ] = 5.0,
    threshold: Annotated[
        float | None,
        typer.Option(
            metavar="P", help="Answer 'unsure' below this confidence, 0 to 1 (default: never).", callback=probability
        ),
    ] = None,
    neither_threshold: NeitherThreshold = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request (default: off).")] = False,
    root_path: Annotated[
        str,
        typer.Option(
            metavar="PATH",
            help="The path a reverse proxy serves catdog under, e.g. /catdog (the proxy strips it; default: none).",
        ),
    ] = "",
    ssl_certfile: Annotated[
        str | None,
        typer.Option(
            metavar="FILE", help="Serve https with this certificate (PEM): what a phone needs for the app's camera."
        ),
    ] = None,
    ssl_keyfile: Annotated[
        str | None, typer.Option(metavar="FILE", help="The private key of --ssl-certfile (PEM).")
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ORIGIN",
            help="Let pages of this site call the API from the browser (CORS), e.g. https://example.com; repeat "
            "for more, * for any site (default: none, only this server's own pages).",
        ),
    ] = None,
) -> None:
    """Serve the web page and the JSON API (OpenAPI docs at /docs)."""
    import uvicorn

    from catdog.serve.app import SETTINGS_ENV, ServeSettings, create_app
    from catdog.serve.protocol import HandshakeDeadlineLoop, HeadTimeoutProtocol

    refuse_a_missing_model(model, remedy=", or omit --model")  # before the server starts
    if neither_threshold is not None and model is not None and os.path.isdir(model):  # said now, not as a 503
        from catdog.inference.predictor import no_gate
        from catdog.models import read_config

        config = read_config(model)
        if not config.get("gate"):
            raise fail(no_gate(config["classes"]))
    settings = ServeSettings(
        model=model,
        max_file_bytes=int(max_file_mb * 1e6),
        max_pixels=int(max_megapixels * 1e6),
        max_files=max_files,
        max_concurrent=max_concurrent,
        max_uploads=max_uploads,
        timeout=timeout,
        max_batch=batch_size,
        max_wait_ms=batch_wait_ms,
        threshold=threshold,
        neither_threshold=neither_threshold,
        cors_origins=tuple(_origin(value) for value in cors_origin or ()),
    )
    root_path = _root_path(root_path)
    _check_certificate(ssl_certfile, ssl_keyfile)
    port = _port_to_serve_on(host, port)
    if max_connections is None:
        max_connections = _default_max_connections(max_uploads, max_concurrent)
    _file_descriptors_for(max_connections)
    scheme = "https" if ssl_certfile else "http"
    banner = f"catdog: serving on {scheme}://{host}:{port} (the model loads in the background; /readyz)"
    if root_path:
        banner += f"; a proxy serves it under {root_path}/"
    err_console.print(banner, soft_wrap=True)  # one line in a log too, not wrapped at 80 columns
    options = dict(
        host=host, port=port, access_log=access_log, server_header=False, timeout_graceful_shutdown=timeout + 5,
        root_path=root_path, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
        ssl_ciphers=None,  # Python's modern defaults; uvicorn before 0.48 set 'TLSv1', every TLS 1.0 cipher
        http=HeadTimeoutProtocol,  # h11 with deadlines for request heads and late bodies: uvicorn has none
        # A request is answered 503 while this many connections are open, its own included (N + 1 serves N), or
        # this many requests are in flight: uvicorn's check, made by HeadTimeoutProtocol, which lets the app answer.
        limit_concurrency=max_connections + 1,
    )  # fmt: skip
    if ssl_certfile:  # TLS handshakes within the head deadline (asyncio's loop then, even where uvloop is installed)
        options["loop"] = HandshakeDeadlineLoop
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
    else:  # worker processes import the app themselves, so the settings travel in the environment
        os.environ[SETTINGS_ENV] = settings.to_json()
        uvicorn.run("catdog.serve.app:app_from_env", factory=True, workers=workers, **options)


def _check_certificate(certfile: str | None, keyfile: str | None) -> None:
    """Both or neither, and a certificate with its key: said now, not as uvicorn's traceback after the banner."""
    if (certfile is None) != (keyfile is None):
        raise fail("Give --ssl-certfile and --ssl-keyfile together: the certificate and its private key.")
    if certfile is None:
        return
    import ssl

    for path in (certfile, keyfile):
        if not os.path.isfile(path):
            raise fail(f"'{path}' does not exist or is not a file.")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as err:
        reason = getattr(err, "reason", None) or err.__class__.__name__
        raise fail(f"'{certfile}' and '{keyfile}' are not a PEM certificate and its private key ({reason}).") from None


# Room for the files a server opens besides its connections: the listening socket, the runtime's files, logs (12 in
# all after a few photos; 2026-12-06, 2-core AMD EPYC) and a batch's photos spooled to temporary files.
OTHER_FILES = 128


def _open_file_limits() -> tuple[float, float] | None:
    """This process's soft and hard limits of open files (``ulimit -Sn``, ``ulimit -Hn``), ``math.inf`` where one is
    unlimited; None where the system has no such limits (Windows has no ``resource`` module)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    return (math.inf if soft == unlimited else soft, math.inf if hard == unlimited else hard)


def _default_max_connections(max_uploads: int, max_concurrent: int) -> int:
    """Room for every API request the other limits let in at once (beyond those the API answers its own 503, which
    says which limit), and as many again for the page's files, health checks and idle keep-alive connections.

    Within what the system's hard limit of open files holds: a default nobody chose must not stop the server, as
    "--max-connections 4128 needs 4256 open files" did for --max-uploads 2000 under a hard limit of 4096.
    """
    wanted = 2 * (max_uploads + max_concurrent)
    limits = _open_file_limits()
    if limits is None or limits[1] == math.inf:
        return wanted
    return max(1, min(wanted, limits[1] - OTHER_FILES))


def _file_descriptors_for(connections: int) -> None:
    """Let this process open a file per connection, raising its soft limit (``ulimit -n``) up to the hard one.

    Otherwise sockets run out before ``--max-connections``: Linux's usual soft limit is 1024, and a server at it
    stops accepting connections (asyncio logs an error and tries again a second later).
    """
    limits = _open_file_limits()
    needed = connections + OTHER_FILES
    if limits is None or limits[0] >= needed:  # no such limit (Windows), or room enough (an unlimited soft one)
        return
    hard = limits[1]
    if hard < needed:
        raise fail(
            f"--max-connections {connections} needs {needed} open files, over this system's limit of {hard} "
            f"(ulimit -Hn); lower --max-connections or raise the limit."
        )
    import resource  # there: the limits were read from it

    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, resource.RLIM_INFINITY if hard == math.inf else hard))
    except (ValueError, OSError) as err:  # macOS caps the soft limit (kern.maxfilesperproc) below an unlimited hard one
        raise fail(
            f"--max-connections {connections} needs {needed} open files, and this system refused that many ({err}); "
            "lower --max-connections or raise the limit."
        ) from None


def _root_path(value: str) -> str:
    """``--root-path`` as uvicorn wants it: one leading slash, none at the end ('' for none), percent-encoded."""
    from urllib.parse import quote

    path = value.strip().rstrip("/")
    if path and (not path.startswith("/") or "//" in path or any(c in path for c in "?#% ")):
        raise fail(f"--root-path '{value}' is not a URL path; give one like /catdog.")
    # uvicorn puts it in front of each request's raw path as ASCII: '/kätze' made every request fail (the
    # connection closed, a UnicodeEncodeError in the log). Encoded, it is the address a browser sends anyway.
    return quote(path, safe="/")


def _origin(value: str) -> str:
    """``--cors-origin`` as a browser sends it in ``Origin``: scheme://host[:port], lower case, no path or slash."""
    from urllib.parse import urlsplit

    if value == "*":
        return value
    parts = urlsplit(value.strip())
    bad = parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/")
    if bad or parts.query or parts.fragment or "@" in parts.netloc:  # a page's origin has none of these
        raise fail(f"--cors-origin '{value}' is not an origin; give one like https://example.com (no path).")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _port_to_serve_on(host: str, port: int) -> int:
    """``port``, or a free one for 0, once a socket could bind there; else one sentence that says why not.

    Checked before the banner: uvicorn only logs a failed bind after it, with its own traceback-like lines.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
            return probe.getsockname()[1]
    except socket.gaierror:
        hint = "use 127.0.0.1, or 0.0.0.0 for every network"
        raise fail(f"--host '{host}' is not an address or a name this machine can resolve; {hint}.") from None
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise fail(f"Port {port} on {host} is in use; choose another --port or stop what listens there.") from None
        if err.errno == errno.EADDRNOTAVAIL:
            raise fail(f"--host '{host}' is not an address of this machine; use 127.0.0.1 or 0.0.0.0.") from None
        if err.errno == errno.EACCES:
            raise fail(f"Port {port} needs administrator rights; choose one above 1023.") from None
        raise fail(f"Cannot listen on {host}:{port}: {err.strerror}.") from None
