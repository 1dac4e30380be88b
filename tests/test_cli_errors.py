"""The command line's two kinds of failure: a bad input (status 2) and catdog's own bug (status 70).

Both are one sentence on stderr, never a traceback; only catdog's own error types (and the
operating system's) count as bad input, so a library's ValueError deep inside a command is
reported as the bug it is, not dressed up as the user's mistake.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import typer

from catdog import cli
from catdog.errors import DatasetError
from catdog.images import ImageError

from conftest import run_catdog, run_catdog_in_process


def _exit(func, capsys) -> tuple[int, list[str]]:
    with pytest.raises(typer.Exit) as exited:
        cli.user_errors(func)()
    lines = capsys.readouterr().err.strip().splitlines()
    return exited.value.exit_code, lines


def _raises(err: BaseException):
    def command():
        raise err

    return command


@pytest.mark.parametrize(
    "err",
    [DatasetError("'x' has no images."), ImageError("'a.jpg' is not an image."), FileNotFoundError(2, "No such file")],
)
def test_a_bad_input_is_one_sentence_and_status_2(err: BaseException, capsys) -> None:
    code, lines = _exit(_raises(err), capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in lines[0]


@pytest.mark.parametrize("err", [ValueError("operands could not be broadcast"), KeyError("rows"), RuntimeError("x\ny")])
def test_anything_else_is_reported_as_catdogs_bug_with_status_70(err: BaseException, capsys) -> None:
    code, lines = _exit(_raises(err), capsys)
    assert code == cli.INTERNAL_ERROR == 70
    assert len(lines) == 1, lines  # a multi-line message is cut to its first line
    assert f"unexpected {type(err).__name__}" in lines[0] and "--debug" in lines[0]


def test_the_debug_run_a_bug_suggests_is_one_catdog_takes(tmp_path: Path, capsys, monkeypatch) -> None:
    """A bug's sentence said "Run the command again with --debug", and `catdog cache --debug`, the flag added as
    it said, was refused ("No such option: --debug"): --debug is catdog's option and goes before the command."""
    _, [said] = _exit(_raises(KeyError("rows")), capsys)
    suggested = said.split("(")[-1].split(")")[0]
    assert suggested == "catdog --debug COMMAND ...", said
    monkeypatch.setitem(cli.DEBUG, "on", False)  # the run below turns it on; put back after
    assert run_catdog_in_process("--debug", "cache", "--json", "--cache-dir", str(tmp_path)).returncode == 0


def test_running_out_of_memory_is_the_input_s_size_not_a_bug(capsys) -> None:
    err = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: 99 GB")
    code, lines = _exit(_raises(err), capsys)
    assert code == 2 and "--batch-size" in lines[0]


def test_debug_shows_the_traceback_instead(monkeypatch) -> None:
    monkeypatch.setitem(cli.DEBUG, "on", True)
    with pytest.raises(RuntimeError, match="boom"):
        cli.user_errors(_raises(RuntimeError("boom")))()
    with pytest.raises(DatasetError):
        cli.user_errors(_raises(DatasetError("no images")))()


def test_typer_s_own_exits_pass_through() -> None:
    with pytest.raises(typer.Exit) as exited:
        cli.user_errors(_raises(typer.Exit(1)))()
    assert exited.value.exit_code == 1  # data check's "problems found", not turned into an error


@pytest.mark.parametrize("output", [[], ["--json"], ["--csv"]])
def test_a_reader_that_goes_away_is_no_error(output: list[str], samples_dir) -> None:
    """``catdog predict ... | head``: the pipe closes under the output, and catdog stops without a word.

    As a shell runs it, its output buffered (no PYTHONUNBUFFERED): --json and --csv, whose last answers were still
    buffered at the end, ended with "Exception ignored ... BrokenPipeError: [Errno 32] Broken pipe", status 120."""
    command = [sys.executable, "-m", "catdog", "predict", *output, str(samples_dir)]
    buffered = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=buffered)
    process.stdout.close()  # the reader is gone before the first answer is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 1  # as click exits on a broken pipe
    assert stderr == "", stderr


# The commands that write an --out: the kind of path that would be wrong, and a name each could write.
WRITERS = [
    (["data", "audit", "{samples}"], "file", "audit"),
    (["evaluate", "{samples}"], "file", "report"),
    (["export", "--format", "web"], "file", "app"),
    (["export"], "folder", "model.onnx"),
    (["explain", "{samples}/cat/cat.1.jpg"], "folder", "heat.png"),
]


@pytest.mark.parametrize(("command", "wrong"), [(command, wrong) for command, wrong, _ in WRITERS])
def test_an_output_of_the_wrong_kind_is_refused_before_any_work(
    command: list[str], wrong: str, samples_dir, tmp_path
) -> None:
    """An --out that is a file where a folder is written (or the reverse) once failed after minutes of work."""
    out = tmp_path / "out.png"
    out.mkdir() if wrong == "folder" else out.write_bytes(b"mine")
    args = [part.replace("{samples}", str(samples_dir)) for part in command]
    proc = run_catdog_in_process(*args, "--out", str(out))  # in this process: a refusal, no process needed
    # The check before the work, not the OS error after it ("File exists", "Is a directory" on a temp name).
    assert proc.returncode == 2 and f"--out '{out}' is a {wrong}" in proc.stderr, proc.stderr
    assert out.is_dir() if wrong == "folder" else out.read_bytes() == b"mine"


@pytest.mark.parametrize(("command", "name"), [(command, name) for command, _, name in WRITERS])
@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(
    command: list[str], name: str, where: str, samples_dir, tmp_path
) -> None:
    """An --out under a file, or in a folder that takes no new files (/proc, where even root cannot add one), failed
    after the work (45 s for an export) with the OS's words about a temporary file: "No such file or directory:
    '/proc/.export-f223u01r'"."""
    if where == "in /proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc here")
        out, nearest, why = Path("/proc") / "catdog-out" / name, "/proc", "takes no new files ("
    else:
        (tmp_path / "a-file").write_bytes(b"mine")
        out, nearest, why = tmp_path / "a-file" / name, str(tmp_path / "a-file"), "is a file, not a folder"
    args = [part.replace("{samples}", str(samples_dir)) for part in command]
    proc = run_catdog_in_process(*args, "--out", str(out))
    said = f"error: --out '{out}' cannot be written: '{nearest}' {why}"
    assert proc.returncode == 2 and proc.stderr.startswith(said), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("option", "value"), [("--neither-threshold", "nan"), ("--neither-threshold", "2"), ("--threshold", "nan")]
)
def test_a_threshold_that_is_no_probability_says_so(option: str, value: str, cat_photo) -> None:
    """NaN was refused as "less than or equal to 1" by the range check. In one line, as catdog's entry point words
    click's usage errors: run in process through the typer app alone, it was click's usage block, which no user sees.
    """
    proc = run_catdog_in_process("predict", option, value, str(cat_photo))
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "is not a probability from 0 to 1 (see 'catdog predict --help')."
    ), proc.stderr
    assert proc.stderr.startswith(f"error: Invalid value for '{option}': ") and proc.stderr.count("\n") == 1


def test_a_backbone_to_download_with_no_hub_in_reach_is_one_sentence(samples_dir: Path, tmp_path: Path) -> None:
    """A timm backbone catdog does not bundle, with the hub out of reach: the hub's client retried for about a
    minute, printing a line per retry, before catdog's message. Now the message comes first, and alone."""
    unreachable = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}  # port 9: nothing listens
    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    no_proxies = {name: "" for name in proxies} | {"no_proxy": "localhost"}  # no_proxy alone is no proxy
    args = ("train", str(samples_dir), "--out", str(tmp_path / "model"), "--model", "resnet18", "--freeze", "backbone")
    done = run_catdog(*args, env=unreachable | no_proxies)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "'resnet18'" in done.stderr and "127.0.0.1:9 cannot be reached" in done.stderr


@pytest.mark.parametrize(
    ("architecture", "classes", "said", "not_said"),
    [
        # It was a 503 "could not be loaded" on every request after startup; now one sentence before serving.
        ("seed-cnn", ["cat", "dog"], "has no `neither` gate", "serving on"),
        # A frozen-Lite0 horse/cow model was told it was "a from-scratch net trained without a neither/ folder".
        ("tf_efficientnet_lite0", ["cow", "horse"], "a model of cow, horse answers its classes only", "from-scratch"),
    ],
)
def test_serve_refuses_a_neither_threshold_for_a_model_with_no_gate(
    tmp_path: Path, architecture: str, classes: list[str], said: str, not_said: str
) -> None:
    import json

    model = tmp_path / "model"
    model.mkdir()
    config = {"architecture": architecture, "classes": classes, "preprocess": {}, "gate": None}
    (model / "config.json").write_text(json.dumps(config))
    done = run_catdog_in_process("serve", "--model", str(model), "--neither-threshold", "0.5", "--port", "0")
    assert done.returncode == 2 and "has no `neither` gate" in done.stderr, done.stderr
    assert said in done.stderr and not_said not in done.stderr, done.stderr


def test_serve_takes_a_neither_threshold_for_the_built_in_model() -> None:
    """With no --model, the gate check crashed on the missing path ("unexpected TypeError ... please report it")."""
    import socket

    with socket.socket() as taken:  # a port in use: serve stops there, after its checks of the options
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run_catdog_in_process("serve", "--neither-threshold", "0.9", "--port", port)
    assert done.returncode == 2 and f"Port {port} on 127.0.0.1 is in use" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["train", ".", "--out", "m", "--epochs", "0"], "Invalid value for '--epochs': Input should be greater than"),
        (["predict", "--no-such-option", "x.jpg"], "No such option: --no-such-option"),
        (["predict"], "Missing argument 'PATHS'"),
        (["predict", "--x[/]", "x.jpg"], "No such option: --x[/]"),  # text, not rich markup: was a traceback
    ],
)
def test_a_usage_error_is_one_sentence(
    args: list[str], said: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Click's usage errors were a four-line block (Usage, Try, a blank line, Error); one sentence now, as every
    other refusal, naming where the options are listed. (The console script's own entry point, in process.)"""
    code, out, err = _main(args, capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and not out, err
    assert lines[0].startswith(f"error: {said}") and lines[0].endswith(" --help').")


def _main(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """``catdog ARGS`` through :func:`catdog.cli.main`: its exit status, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["catdog", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_no_command_shows_the_help_as_before(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """`catdog` and `catdog data` alone show their help (click's no-args help is a usage error too)."""
    for args in ([], ["data"]):
        code, _, err = _main(args, capsys, monkeypatch)
        assert code == 2 and "Usage: " in err and "Commands:" in err and not err.startswith("error:"), err


def test_the_usage_lines_of_evaluate_and_explain_say_the_photos_are_required() -> None:
    """`evaluate --help` read "evaluate [OPTIONS] [MODEL] [DATA_DIR]" (explain's "[MODEL] [IMAGE]"), as if the
    photos could be left out, where the command refuses to run without them: the model is what may be."""
    for command, photos in (("evaluate", "DATA_DIR"), ("explain", "IMAGE")):
        helped = run_catdog_in_process(command, "--help")
        usage = helped.stdout.splitlines()[0]
        assert helped.returncode == 0 and usage.endswith(f"{command} [OPTIONS] [MODEL] {photos}"), usage
        alone = run_catdog_in_process(command)
        assert alone.returncode == 2 and alone.stderr.startswith("error: Give the "), alone.stderr
    check_images = " ".join(run_catdog_in_process("export", "--help").stdout.split())
    assert "How many photos the export is checked on: 300 by default, and 2,000 for --int8's check" in check_images


def test_the_help_points_to_what_an_installed_catdog_has() -> None:
    """`catdog --help` sent users to "README.md and docs/ in catdog's source", which pip does not install. It
    names what an installed catdog has: each command's --help, and the API reference its server serves."""
    said = " ".join(run_catdog_in_process("--help").stdout.split())
    assert "README" not in said and "docs/" not in said, said
    named = set(re.findall(r"catdog (\w+) --help", said)) - {"COMMAND"}
    assert named and all(run_catdog_in_process(command, "--help").returncode == 0 for command in named), named
    assert "/docs on the server that catdog serve starts" in said, said
    assert (resources.files("catdog") / "serve" / "static" / "docs" / "swagger-ui-bundle.js").is_file()


def test_serve_refuses_a_certificate_without_its_key_or_a_key_for_a_certificate(tmp_path: Path) -> None:
    """Said before the banner, in one sentence; uvicorn would print its traceback after it."""

    lone = run_catdog_in_process("serve", "--ssl-certfile", str(tmp_path / "cert.pem"), "--port", "0")
    assert lone.returncode == 2 and lone.stderr.strip() == (
        "error: Give --ssl-certfile and --ssl-keyfile together: the certificate and its private key."
    )
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    pair = ["--ssl-certfile", str(tmp_path / "cert.pem"), "--ssl-keyfile", str(tmp_path / "key.pem")]
    wrong = run_catdog_in_process("serve", *pair, "--port", "0")
    assert wrong.returncode == 2 and "are not a PEM certificate and its private key" in wrong.stderr, wrong.stderr
    assert "serving on" not in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


def test_a_model_given_alone_to_evaluate_or_explain_is_named_a_model(
    trained_model_dir: Path, onnx_model_file: Path, tmp_path: Path
) -> None:
    """`catdog evaluate MODEL` without its photos took the model for the photos ("The images in 'my-model' carry no
    label", "Dataset folder 'builtin-large' does not exist"); `catdog explain MODEL` took it for the photo ("is a
    folder, not an image file"). Each now says the model needs the photos beside it, as the command is typed."""
    for model in (str(trained_model_dir), str(onnx_model_file), "builtin-large"):
        measured = run_catdog_in_process("evaluate", model)
        assert measured.returncode == 2, measured.stderr
        assert f"'{model}' is a model; give the labelled photos" in measured.stderr
        assert f"catdog evaluate {model} DATA_DIR" in measured.stderr
        explained = run_catdog_in_process("explain", model)
        assert explained.returncode == 2 and f"'{model}' is " in explained.stderr, explained.stderr
        assert "give the photo to explain" in explained.stderr or "and the photo to explain" in explained.stderr
    assert "catdog explain MODEL_DIR IMAGE" in run_catdog_in_process("explain", str(onnx_model_file)).stderr
    alone = run_catdog_in_process("explain")  # the model is optional: the photo is what is missing
    assert alone.returncode == 2 and "Give the photo to explain" in alone.stderr, alone.stderr
    # The command it suggests can be pasted into a shell as it is, a path with a space included.
    spaced = tmp_path / "my model"
    spaced.symlink_to(trained_model_dir, target_is_directory=True)
    assert f"catdog evaluate '{spaced}' DATA_DIR." in run_catdog_in_process("evaluate", str(spaced)).stderr
    assert f"catdog explain '{spaced}' IMAGE." in run_catdog_in_process("explain", str(spaced)).stderr


def test_a_suggested_command_is_safe_to_paste_or_not_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model named '-m' was suggested as `catdog evaluate -m DATA_DIR`, which reads it as the --model option; a
    name with a newline or a byte that is not UTF-8 was suggested escaped ('a\\nb'), a command that named another
    folder. Now the first is written ./-m, and the others get a sentence with no command in it."""
    monkeypatch.chdir(tmp_path)
    for name in ("-m", "a\nb", os.fsdecode(b"caf\xe9")):
        (tmp_path / name).mkdir()
        for part in ("model.safetensors", "config.json"):  # what makes a folder a model directory to the command line
            (tmp_path / name / part).write_bytes(b"")
    for command, then in (("evaluate", "DATA_DIR"), ("explain", "IMAGE")):
        dashed = run_catdog_in_process(command, "--", "-m")  # as a user types a name that starts with "-"
        assert dashed.returncode == 2 and dashed.stderr.endswith(f": catdog {command} ./-m {then}.\n"), dashed.stderr
        for name in ("a\nb", os.fsdecode(b"caf\xe9")):
            refused = run_catdog_in_process(command, name)
            assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
            assert f"catdog {command}" not in refused.stderr and "the model, then the" in refused.stderr


def test_a_refusal_for_missing_photos_suggests_the_command_as_typed(tmp_path: Path) -> None:
    """`catdog explain --class dog` was told "catdog explain [MODEL] IMAGE --out heat.png": brackets no shell takes,
    an --out nobody gave, and the --class given gone. The suggestion now keeps the user's own options, quoted."""
    alone = run_catdog_in_process("explain", "--out", "my heat.png", "--class", "dog")
    assert (alone.returncode, alone.stderr) == (
        2,
        "error: Give the photo to explain, as in catdog explain IMAGE --out 'my heat.png' --class dog; a model of "
        "yours goes first.\n",
    )
    measured = run_catdog_in_process("evaluate", "--json", "-o", "report", "--threshold", "0.5")
    assert (measured.returncode, measured.stderr) == (
        2,
        "error: Give the folder of labelled photos to evaluate on, as in catdog evaluate DATA_DIR --out report "
        "--json --threshold 0.5; a model of yours goes first.\n",
    )
    model = tmp_path / "model"
    model.mkdir()
    for part in ("model.safetensors", "config.json"):  # what makes a folder a model directory to the command line
        (model / part).write_bytes(b"")
    given = run_catdog_in_process("evaluate", "--tta", str(model))
    assert given.stderr.endswith(f"too: catdog evaluate {model} DATA_DIR --tta.\n"), given.stderr


def test_a_model_directory_named_like_an_onnx_file_is_a_model_directory_to_explain(tmp_path: Path) -> None:
    """explain told an ONNX file by its name alone: `catdog explain cats.onnx`, a model directory so named, was
    refused as an ONNX model Grad-CAM cannot use, where predict and explain read it as the directory it is."""
    model = tmp_path / "cats.onnx"
    model.mkdir()
    for name in ("model.safetensors", "config.json"):  # what makes a folder a model directory to the command line
        (model / name).write_bytes(b"")
    explained = run_catdog_in_process("explain", str(model))
    assert explained.returncode == 2, explained.stderr
    assert f"'{model}' is a model; give the photo to explain too: catdog explain {model} IMAGE." in explained.stderr


def test_photos_named_like_a_shipped_model_are_photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of photos called builtin-large is evaluated as photos, not refused as the model of that name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "builtin-large").mkdir()
    said = run_catdog_in_process("evaluate", "builtin-large")
    assert said.returncode == 2 and "is a model" not in said.stderr and "builtin-large" in said.stderr, said.stderr


def test_a_folder_of_photos_with_a_stray_config_json_is_still_photos(samples_dir: Path, tmp_path: Path) -> None:
    """A model directory was told from photos by its config.json alone, so a folder of photos holding some other
    program's config.json (a camera's, an editor's) was refused as "a model". A model directory holds its
    weights (model.safetensors) beside its record; without them the folder is measured as photos."""
    photos = tmp_path / "holiday"
    for label in ("cat", "dog"):
        (photos / label).mkdir(parents=True)
        for i, source in enumerate(sorted((samples_dir / label).glob("*.jpg"))[:2]):
            shutil.copy(source, photos / label / f"IMG_{i}.jpg")
    (photos / "config.json").write_text('{"camera": "X100V", "film_simulation": "classic chrome"}')
    measured = run_catdog_in_process("evaluate", str(photos), "--json")
    assert measured.returncode == 0, measured.stderr
    assert json.loads(measured.stdout)["n"] == 4


def test_json_for_a_closed_standard_output_is_one_sentence(cat_photo: Path, tmp_path: Path) -> None:
    """``catdog data check --json DIR >&-`` (and evaluate's, export's --json) wrote to a stream Python does not have:
    "unexpected AttributeError ... please report it", exit status 70, as if it were catdog's bug."""
    (tmp_path / "cat").mkdir()
    shutil.copy(cat_photo, tmp_path / "cat")
    command = [sys.executable, "-m", "catdog", "data", "check", "--json", str(tmp_path)]
    done = subprocess.run(["bash", "-c", '"$@" >&-', "bash", *command], capture_output=True, text=True, timeout=300)
    lost = "Standard output is closed, so the findings would be lost: print them somewhere (> report.json)."
    assert (done.returncode, done.stderr) == (2, f"error: {lost}\n"), done


def test_every_printing_command_refuses_a_closed_or_full_standard_output(cat_photo: Path, tmp_path: Path) -> None:
    """``catdog data check DIR >&-`` and ``catdog evaluate DIR >&-`` printed their text to nowhere with exit status 0;
    ``> /dev/full`` ended them with "[Errno 28] No space left on device". Each is now refused before its work, in
    one sentence, as ``catdog predict`` is (whose --json, --csv and text are checked here too)."""
    (tmp_path / "cat").mkdir()
    shutil.copy(cat_photo, tmp_path / "cat")
    catdog = [sys.executable, "-m", "catdog"]
    closed = {"data check": ["data", "check", str(tmp_path)], "evaluate": ["evaluate", str(tmp_path)]}
    for name, args in closed.items():
        done = subprocess.run(
            ["bash", "-c", '"$@" >&-', "bash", *catdog, *args], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2, (name, done)
        assert done.stderr.startswith("error: Standard output is closed, so the "), (name, done)
    full = {**closed, "predict": ["predict", str(cat_photo)]}
    full |= {f"predict {option}": ["predict", option, str(cat_photo)] for option in ("--json", "--csv")}
    for name, args in full.items():
        with open("/dev/full", "w") as no_space:
            done = subprocess.run([*catdog, *args], stdout=no_space, stderr=subprocess.PIPE, text=True, timeout=300)
        assert done.returncode == 2, (name, done)
        assert done.stderr.startswith("error: Standard output cannot be written (No space left on device), so"), (
            name,
            done,
        )
        assert done.stderr.count("\n") == 1, (name, done)


@pytest.mark.parametrize(
    ("command", "written"),
    [
        # explain loads the backbone for its gradients: 20-30 s on a busy 2-core machine.
        pytest.param(["explain", "{photo}", "--out", "{out}"], "heat.png", marks=pytest.mark.slow),
        (["export", "--format", "web", "--out", "{out}"], "app"),
    ],
)
def test_a_file_that_outgrows_the_disk_is_named(
    command: list[str], written: str, cat_photo: Path, tmp_path: Path
) -> None:
    """Written where there is no room (a full disk; here `ulimit -f`, which refuses the same way), explain's heat
    map was "error: [Errno 27] File too large", naming nothing, and export --format web named the file it copied
    from, in catdog's cache ("... '~/.cache/catdog/onnx/builtin-….onnx'"). Each names what it writes; nothing is
    left half-written."""

    def little_room() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = tmp_path / written
    args = [arg.format(photo=cat_photo, out=out) for arg in command]
    done = subprocess.run(
        [sys.executable, "-m", "catdog", *args], capture_output=True, text=True, timeout=300, preexec_fn=little_room
    )
    assert (done.returncode, done.stderr) == (2, f"error: File too large: '{out}'.\n"), done
    assert list(tmp_path.iterdir()) == []


def test_an_error_of_a_write_without_an_errno_keeps_its_words() -> None:
    """naming_the_file_written renamed every OSError naming no file, and one a library raises with words alone
    (Pillow's "cannot write mode P as JPEG") has no errno either: it read "cannot use: 'heat.jpg'.", its words
    lost. Such an error is left as it is; one with an errno still names the file."""
    from catdog.fsutil import naming_the_file_written

    with pytest.raises(OSError, match="^cannot write mode P as JPEG$"), naming_the_file_written("heat.jpg"):
        raise OSError("cannot write mode P as JPEG")
    with pytest.raises(OSError, match="No space left on device") as no_room, naming_the_file_written("heat.jpg"):
        raise OSError(28, "No space left on device")
    assert no_room.value.filename == "heat.jpg"


def test_export_soup_and_explain_refuse_a_lost_standard_output_before_their_work(
    cat_photo: Path, samples_dir: Path, tmp_path: Path
) -> None:
    """export --json and soup --json with standard output closed did all their work, then lost the report they
    print; into ``/dev/full`` export and explain wrote their files, then failed. Each is refused first, in the
    sentence of the other commands, and writes nothing. (Closed, their text is only a copy of what their files
    hold: explain still runs, as predict --sort-into does.)"""
    catdog = [sys.executable, "-m", "catdog"]
    closed = {
        "the export's checks": (["export", "--json"], "report.json"),
        "the validation figures": (
            ["soup", "a", "b", "--data", str(samples_dir), "--out", "soup", "--json"],
            "soup.json",
        ),
    }
    for results, (args, example) in closed.items():
        done = subprocess.run(
            ["bash", "-c", '"$@" >&-', "bash", *catdog, *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        lost = f"Standard output is closed, so {results} would be lost: print them somewhere (> {example})."
        assert (done.returncode, done.stderr) == (2, f"error: {lost}\n"), (args, done)
    full = {
        "the export's checks": (["export"], "export.txt"),
        "the answer and its probabilities": (["explain", str(cat_photo)], "explain.txt"),
    }
    for results, (args, example) in full.items():
        with open("/dev/full", "w") as no_space:
            done = subprocess.run(
                [*catdog, *args], stdout=no_space, stderr=subprocess.PIPE, text=True, timeout=300, cwd=tmp_path
            )
        lost = f"Standard output cannot be written (No space left on device), so {results} would be lost"
        assert (done.returncode, done.stderr) == (2, f"error: {lost}: print them somewhere (> {example}).\n"), done
    assert list(tmp_path.iterdir()) == []


def test_every_command_s_text_into_a_full_standard_output_is_one_sentence(tmp_path: Path) -> None:
    """``catdog --help`` and ``--version`` (click's own printing) ended with a traceback into ``/dev/full``, and
    ``catdog cache`` (as ``explain``, ``export`` and ``soup``), whose text rich writes at once, with "error: [Errno 28]
    No space left on device". ``catdog cache`` is now refused before its work, as the other commands are."""
    lost = "Standard output cannot be written (No space left on device), so"
    expected = {
        "--help": f"{lost} what was printed there is incomplete.",
        "--version": f"{lost} what was printed there is incomplete.",
        "cache": f"{lost} the cache's contents would be lost: print them somewhere (> cache.txt).",
    }
    for args in (["--help"], ["--version"], ["cache", "--cache-dir", str(tmp_path)]):
        with open("/dev/full", "w") as no_space:
            done = subprocess.run(
                [sys.executable, "-m", "catdog", *args], stdout=no_space, stderr=subprocess.PIPE, text=True, timeout=300
            )
        assert (done.returncode, done.stderr) == (2, f"error: {expected[args[0]]}\n"), (args, done)
    # With --debug a command's own OSError (a name over 255 bytes) is its traceback, not standard output's.
    debug = [sys.executable, "-m", "catdog", "--debug", "cache", "--cache-dir", "x" * 300]
    done = subprocess.run(debug, capture_output=True, text=True, timeout=300)
    assert "Traceback" in done.stderr and "Standard output" not in done.stderr, done


def _ctrl_c_while_importing(module: str, *train_args: str) -> tuple[int, list[str]]:
    """A real SIGINT to `catdog train ARGS` as ``python -v`` says ``module``'s modules load; its status and errors."""
    args = [sys.executable, "-v", "-m", "catdog", "train", *train_args]
    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith(f"import '{module}"):
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("module", ["torch", "numpy"])
def test_ctrl_c_while_torch_imports_says_nothing_is_kept(module: str, tmp_path: Path) -> None:
    """Ctrl-C in the first seconds of `catdog train`, while torch was importing (7-10 s of a busy 2-core machine
    under torchrun), printed a bare "Interrupted.": the imports came before the command's own handling of Ctrl-C.
    numpy: torch's C extension imported it and swallowed the KeyboardInterrupt, so the run went on (or stopped on
    a RecursionError, called a bug)."""
    said = _ctrl_c_while_importing(module, str(tmp_path / "data"), "--out", str(tmp_path / "model"))
    assert said == (
        130,
        [
            "error: Interrupted; no checkpoint had been written yet, so nothing of this run is kept: "
            "run the same command again to start over."
        ],
    )


def test_ctrl_c_of_a_resumed_run_says_to_run_it_again(tmp_path: Path) -> None:
    """A resumed run stopped by Ctrl-C said "add --resume to the same command to go on", to a command that had it."""
    out = tmp_path / "model"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")  # never read: the signal comes while torch imports
    said = _ctrl_c_while_importing("torch", str(tmp_path / "data"), "--out", str(out), "--resume")
    assert said == (130, [f"error: Interrupted; '{out}' keeps the run: run the same command again to go on."])


def test_an_empty_argument_is_refused_not_read_as_the_current_folder(tmp_path, cat_photo, samples_dir, monkeypatch):
    """`catdog predict photos --sort-into "$OUT"` with OUT unset copied the photos into cat/ and dog/ of the
    current folder, and `catdog data check "$DATA"` checked it: an empty word is a path to the current folder.
    Each empty argument is now refused before any work, `--out=""` in one word too (it sorted into the current
    folder); `--root-path ''` (no path, its default) is still taken."""
    monkeypatch.chdir(tmp_path)
    for args in (
        ("predict", str(cat_photo), "--sort-into", ""),
        ("predict", str(cat_photo), "--sort-into="),
        ("data", "check", ""),
        ("explain", ""),
        ("explain", str(cat_photo), "--out", ""),
        ("evaluate", str(samples_dir), "--out="),
        ("data", "audit", str(samples_dir), "--out", ""),
        ("export", "--out", ""),
        ("export", "--format", "web", "--out", ""),
        ("soup", "model-a", "model-b", "--data", str(samples_dir), "--out", ""),
        ("train", str(samples_dir), "--out", ""),
        ("data", "check", str(samples_dir), "--quarantine", ""),
    ):
        done = run_catdog_in_process(*args)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == (
            "error: An argument is empty (''), as an unset shell variable leaves it, and a path so given is the "
            "current folder: give the path or value, or leave the argument out.\n"
        ), args
    assert list(tmp_path.iterdir()) == []
    for root_path in (["--root-path", ""], ["--root-path="]):
        served = run_catdog_in_process("serve", *root_path, "--port", "-1")
        assert "empty" not in served.stderr and "--port" in served.stderr, served.stderr


def test_a_stop_during_a_held_step_waits_for_its_end_and_a_second_does_not() -> None:
    """A SIGTERM between a --sort-into copy and its count said "Sorted 3 photos" with 4 in the folder (seen once in
    a loaded run of test_a_sort_stopped_midway_says_what_it_copied): the copy and its count are now one held step.
    The stop comes when the step ends; a second one during it stops at once, so a stuck step can still be left."""
    import os
    import signal

    from catdog.cli.errors import stop_held, stopping_on_signals

    stops: list[int] = []
    done = []
    with pytest.raises(KeyboardInterrupt), stopping_on_signals(stops):
        with stop_held():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("the step's end")  # reached: the stop waited
        done.append("after the step")  # not reached: the stop came as the step ended
    assert (stops, done) == ([signal.SIGTERM], ["the step's end"])

    stops.clear()
    with pytest.raises(KeyboardInterrupt), stopping_on_signals(stops), stop_held():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        done.append("after a second stop")  # not reached
    assert (stops, done[-1]) == ([signal.SIGINT, signal.SIGINT], "the step's end")
    with stopping_on_signals(stops), stop_held():
        pass  # nothing held over from the runs above


def _command_paths(
    command: typer.core.TyperGroup | typer.core.TyperCommand, path: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every command's words, ``()`` for catdog itself and ``("data", "check")`` for a group's."""
    below = getattr(command, "commands", {})
    return [path, *(words for name, sub in below.items() for words in _command_paths(sub, (*path, name)))]


def test_every_help_names_values_not_python_types() -> None:
    """`catdog predict --help` showed Typer's type names, "PATHS <list[str]>", "--batch-size <int range>",
    "--model <str>"; `serve --help` "--cors-origin <list[str]>". Each value is named as git's and pip's are:
    "PATHS...", "--batch-size N", "--port PORT", "--sort-into DIR"."""
    commands = _command_paths(typer.main.get_command(cli.app))
    assert ("predict",) in commands and ("data", "check") in commands, commands
    for words in commands:
        helped = run_catdog(*words, "--help", env={"COLUMNS": "120"})
        assert helped.returncode == 0, helped.stderr
        assert not re.findall(r"<[a-z][\w\[\], |]*>", helped.stdout), helped.stdout
    predict = run_catdog("predict", "--help", env={"COLUMNS": "120"}).stdout
    for shown in ("  PATHS...  ", "--batch-size N ", "--sort-into DIR ", "--model MODEL ", "--threshold P "):
        assert shown in predict, predict
    served = run_catdog("serve", "--help", env={"COLUMNS": "120"}).stdout
    assert "--port PORT " in served and "--cors-origin ORIGIN " in served, served


def test_a_usage_line_marks_an_optional_argument_alone() -> None:
    """A newcomer read "predict [OPTIONS] {PATHS}...", "evaluate [OPTIONS] [MODEL] {DATA_DIR}": Typer's braces of a
    required argument, which read as a choice of words, where git's, pip's and click's own usage lines give it
    bare. And `train --help` said "-m, --model MODEL", as if a model directory went there, as it does in every
    other command: train's is the architecture to train, "--model ARCH"."""
    usages = {
        ("predict",): "predict [OPTIONS] PATHS...",
        ("evaluate",): "evaluate [OPTIONS] [MODEL] DATA_DIR",
        ("soup",): "soup [OPTIONS] MODELS...",
        ("data", "check"): "data check [OPTIONS] FOLDER",
    }
    for words, usage in usages.items():
        helped = run_catdog(*words, "--help")
        assert helped.stdout.splitlines()[0].endswith(usage), helped.stdout
    trained = " ".join(run_catdog("train", "--help", env={"COLUMNS": "120"}).stdout.split())
    assert "train [OPTIONS] DATA_DIR " in trained and "-m, --model ARCH Architecture to train: " in trained, trained


def test_explain_refusing_an_onnx_model_suggests_the_command_as_typed(tmp_path: Path) -> None:
    """`catdog explain cats.onnx --class dog` was told to run "catdog explain MODEL_DIR IMAGE": the --class given
    gone, where explain's other refusals keep the user's options."""
    onnx_file = tmp_path / "cats.onnx"
    onnx_file.write_bytes(b"")  # its name makes it an ONNX model to the command line
    refused = run_catdog("explain", str(onnx_file), "--out", "my heat.png", "--class", "dog")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.endswith(
        "give the model directory it was exported from and the photo to explain: catdog explain MODEL_DIR IMAGE "
        "--out 'my heat.png' --class dog.\n"
    ), refused.stderr


def test_explain_given_an_onnx_model_and_a_photo_says_the_command_that_works(
    trained_model_dir: Path, cat_photo: Path, tmp_path: Path
) -> None:
    """`catdog explain model.onnx photo.jpg` said only "give the model directory (or the built-in model), not an
    .onnx file", with no command, where the lone-argument refusal gives one; and `catdog export` writes the file
    into the model directory, which is the one to give."""
    loose = tmp_path / "cats.onnx"
    loose.write_bytes(b"")  # its name makes it an ONNX model to the command line
    refused = run_catdog_in_process("explain", str(loose), str(cat_photo), "--class", "dog")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.endswith(
        "give the model directory it was exported from and the photo to explain: "
        f"catdog explain MODEL_DIR {cat_photo} --class dog.\n"
    ), refused.stderr
    model = tmp_path / "my model"
    shutil.copytree(trained_model_dir, model)
    (model / "model.onnx").write_bytes(b"")
    inside = run_catdog_in_process("explain", str(model / "model.onnx"), str(cat_photo))
    assert inside.returncode == 2, inside.stderr
    said = f"give its model directory '{model}' and the photo to explain: catdog explain '{model}' {cat_photo}.\n"
    assert inside.stderr.endswith(said), inside.stderr


def test_explain_given_a_shipped_models_export_suggests_that_model(cat_photo: Path, tmp_path: Path) -> None:
    """`catdog export` writes the built-in model to catdog-builtin.onnx (builtin-large to catdog-builtin-large.onnx),
    and explain told the user of that file to "give the model directory it was exported from": there is none."""
    for name, model_words in (("catdog-builtin-int8.onnx", ""), ("catdog-builtin-large.onnx", "builtin-large ")):
        exported = tmp_path / name
        exported.write_bytes(b"")  # its name makes it an ONNX model to the command line
        refused = run_catdog_in_process("explain", str(exported), str(cat_photo), "--class", "dog")
        assert refused.returncode == 2 and "MODEL_DIR" not in refused.stderr, refused.stderr
        assert refused.stderr.endswith(f": catdog explain {model_words}{cat_photo} --class dog.\n"), refused.stderr
