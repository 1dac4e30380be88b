"""The README and the guides in docs/ cannot rot: what they show is checked against the real thing.

- Every ``catdog ...`` command in a ```` ```bash ```` block (also after ``&&``, ``|``, ``python -m`` or
  ``torchrun ... -m``), and every inline code span that starts with ``catdog ``, names a command (and
  subcommand) that exists, and every option it uses is in that command's ``--help``, which must run
  (one ``--help`` per command, cached). An upper-case command word (``catdog COMMAND --help``) is a
  placeholder.
- Every relative link and image path resolves to a file, and a ``#fragment`` to a heading of it.
- Every inline code span that names catdog code (``catdog.models.delta``, ``training.recipe.train``: its first
  word a module or package of catdog) names a module, class or function that exists.
- The quick start's test command is what ``.ci/run`` runs, verbatim.

The checks are plain functions; the last tests feed them broken pages to show that they fail.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import catdog

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SEPARATORS = {"&&", "||", "|", ";", "&", "(", ")"}
FENCE = re.compile(r"^[ \t]*```[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^[ \t]*```[ \t]*$", re.M | re.S)
OPTION = re.compile(r"^\[?(?P<flag>--?[A-Za-z][\w-]*)")
HELP_FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")


# -- reading the pages -----------------------------------------------------------------------


def bash_blocks(text: str) -> list[str]:
    """The bodies of the ```bash (also sh, shell, console) fenced blocks."""
    return [m["body"] for m in FENCE.finditer(text) if m["lang"].lower() in {"bash", "sh", "shell", "console"}]


def catdog_invocations(block: str) -> list[tuple[str, list[str]]]:
    """``(line, arguments after 'catdog')`` for every catdog command of a shell block."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        if "catdog" not in line:
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = [*lexer, ";"]
        except ValueError as err:  # unbalanced quotes: report the line rather than crash
            found.append((line, [f"--unparsable-line ({err})"]))
            continue
        segment: list[str] = []
        for token in tokens:
            if token not in SEPARATORS:
                segment.append(token)
                continue
            while segment and re.match(r"^[A-Za-z_]\w*=", segment[0]):  # VAR=value catdog ...
                segment.pop(0)
            if segment[:1] == ["catdog"]:
                found.append((line, segment[1:]))
            elif "-m" in segment and segment[segment.index("-m") + 1 : segment.index("-m") + 2] == ["catdog"]:
                found.append((line, segment[segment.index("-m") + 2 :]))
            segment = []
    return found


def inline_commands(text: str) -> list[str]:
    """Inline code spans outside fenced blocks that are a catdog command: `catdog predict --json DIR`."""
    return re.findall(r"`(catdog [^`\n]+)`", FENCE.sub("", text))


def without_code(text: str) -> str:
    """The page without fenced blocks and inline code, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def link_targets(text: str) -> list[str]:
    """Targets of inline links and images, reference definitions, and HTML src/href attributes."""
    text = without_code(text)
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", text, flags=re.M)
    targets += re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", text)
    return targets


def heading_slugs(text: str) -> set[str]:
    """GitHub's anchors for the headings of a page (lower case, punctuation dropped, spaces to '-')."""
    slugs: set[str] = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").strip().lower()).replace(" ", "-")
        candidate, n = slug, 1
        while candidate in slugs:
            candidate, n = f"{slug}-{n}", n + 1
        slugs.add(candidate)
    return slugs


def link_problems(page: Path, text: str) -> list[str]:
    problems = []
    for target in link_targets(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I) or target.startswith("//"):
            continue  # http:, https:, mailto: ... are not checked here
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            problems.append(f"{page.name}: link to '{target}': no such file ({resolved})")
        elif fragment and resolved.suffix == ".md" and fragment not in heading_slugs(resolved.read_text("utf-8")):
            problems.append(f"{page.name}: link to '{target}': no heading '#{fragment}' in {resolved.name}")
    return problems


FILE_SUFFIXES = {"md", "py", "html", "json", "jsonl", "png", "onnx", "safetensors", "txt", "toml"}


def code_references(text: str) -> list[str]:
    """Inline code spans outside fenced blocks that name catdog code: `catdog.images.decode`, `data.split`."""
    packages = {module.name for module in pkgutil.iter_modules(catdog.__path__)}
    spans = re.findall(r"`((?:catdog\.)?[a-z_]\w*(?:\.\w+)+)`", FENCE.sub("", text))
    return [
        span
        for span in spans
        if span.removeprefix("catdog.").split(".")[0] in packages and span.rsplit(".", 1)[1] not in FILE_SUFFIXES
    ]


def resolves(reference: str) -> bool:
    """Whether ``catdog.REFERENCE`` is a module, or an attribute (a class, a function, ...) of one."""
    parts = ["catdog", *reference.removeprefix("catdog.").split(".")]
    for end in range(len(parts), 1, -1):  # the longest prefix that is a module, then attributes
        try:
            found = importlib.import_module(".".join(parts[:end]))
        except ModuleNotFoundError:
            continue
        for name in parts[end:]:
            if not hasattr(found, name):
                return False
            found = getattr(found, name)
        return True
    return False


def code_reference_problems(page: Path, text: str) -> list[str]:
    return [
        f"{page.name}: `{ref}` names no catdog module or attribute"
        for ref in code_references(text)
        if not resolves(ref)
    ]


# -- asking the real command line -------------------------------------------------------------


@functools.cache
def cli_help(words: tuple[str, ...]) -> tuple[bool, frozenset[str]]:
    """Whether ``catdog WORDS --help`` runs, and the options its help lists."""
    env = {**os.environ, "COLUMNS": "240", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(
        [sys.executable, "-m", "catdog", *words, "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    ok = done.returncode == 0 and "Usage:" in done.stdout
    return ok, frozenset(HELP_FLAG.findall(done.stdout)) if ok else frozenset()


def command_problems(args: list[str], help_of=cli_help) -> list[str]:
    """What is wrong with ``catdog ARGS``: an unknown command or subcommand, an option its help lacks."""
    _, root_flags = help_of(())
    words: list[str] = []
    problems = []
    rest = list(args)
    while rest:  # options before the command belong to catdog itself
        match = OPTION.match(rest[0])
        if not match:
            break
        if match["flag"] not in root_flags:
            problems.append(f"catdog has no option '{match['flag']}'")
        rest.pop(0)
    if not rest:
        return problems
    if re.fullmatch(r"[A-Z][A-Z_]*", rest[0]):  # catdog COMMAND --help: a placeholder
        return problems
    words.append(rest.pop(0))
    ok, flags = help_of(tuple(words))
    if not ok:
        return [*problems, f"no command 'catdog {' '.join(words)}'"]
    if words == ["data"] and rest and not OPTION.match(rest[0]):
        words.append(rest.pop(0))
        ok, flags = help_of(tuple(words))
        if not ok:
            return [*problems, f"no command 'catdog {' '.join(words)}'"]
    for token in rest:
        match = OPTION.match(token)
        if match and match["flag"] not in flags and match["flag"] != "--help":
            problems.append(f"'catdog {' '.join(words)}' has no option '{match['flag']}'")
    return problems


def page_command_problems(page: Path, text: str, help_of=cli_help) -> list[str]:
    problems = []
    for block in [*bash_blocks(text), *inline_commands(text)]:
        for line, args in catdog_invocations(block):
            problems += [f"{page.name}: `{line}`: {p}" for p in command_problems(args, help_of)]
    return problems


# -- the pages as they are ---------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_catdog_command_shown_exists_with_its_options(page: Path) -> None:
    problems = page_command_problems(page, page.read_text("utf-8"))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_and_image_resolves(page: Path) -> None:
    problems = link_problems(page, page.read_text("utf-8"))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_code_reference_names_real_code(page: Path) -> None:
    problems = code_reference_problems(page, page.read_text("utf-8"))
    assert not problems, "\n".join(problems)


def test_the_pages_are_there_and_show_commands() -> None:
    names = {p.name for p in PAGES}
    assert {"README.md", "predict-and-serve.md", "training.md", "data.md", "benchmarks.md", "design.md"} <= names
    shown = [args[0] for p in PAGES for b in bash_blocks(p.read_text("utf-8")) for _, args in catdog_invocations(b)
             if args]  # fmt: skip
    # The scanner must find the commands (a pattern that matched nothing would pass every page).
    assert {"predict", "serve", "train", "evaluate", "export", "explain", "data"} <= set(shown)
    assert len(shown) >= 30


def test_the_readme_stays_short_and_its_quick_start_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    assert len(readme.encode()) <= 15_000, "README.md is the front door: keep it under 15 KB, move details to docs/"
    ci = (REPO / ".ci" / "run").read_text()
    verbatim = ci.split("verbatim:", 1)[1].strip().splitlines()[0].strip()
    quick_start = bash_blocks(readme.split("## Quick start", 1)[1])[0]
    assert verbatim in quick_start.splitlines()[1], (verbatim, quick_start)
    assert quick_start.splitlines()[0].startswith("pip install . && catdog serve")


def test_the_generated_benchmark_table_lives_in_docs() -> None:
    import benchmarks.__main__ as bench

    text = (REPO / "docs" / "benchmarks.md").read_text("utf-8")
    assert bench.START in text and bench.END in text
    regenerate = "python -c 'import benchmarks.__main__ as b; b.update_table(b.load_results())'"
    assert bench.table(bench.load_results()) in text, f"the table is older than results.json; run {regenerate}"
    assert bench.START not in (REPO / "README.md").read_text("utf-8")


def test_version_and_help_point_at_the_docs() -> None:
    done = subprocess.run([sys.executable, "-m", "catdog", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"catdog {catdog.__version__}"
    ok, flags = cli_help(())
    assert ok and {"--version", "--debug"} <= flags
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}  # a plain terminal
    text = subprocess.run([sys.executable, "-m", "catdog", "--help"], capture_output=True, text=True, env=env).stdout
    # what an installed catdog has (test_cli_errors runs them): README.md and docs/ are in its source alone
    assert "catdog COMMAND --help" in text and "/docs on the server" in " ".join(text.split())
    for command in ("predict", "serve", "evaluate", "explain", "export", "train", "soup", "cache", "data"):
        line = next(line for line in text.splitlines() if re.match(rf"^\W*{command}\s", line))
        # one line each: the next line starts another command (two spaces in) or the list ends
        following = text.splitlines()[text.splitlines().index(line) + 1]
        assert not re.match(r"^\s{4,}\S", following), f"'{command}' takes more than one line in catdog --help"


@pytest.mark.parametrize("words", [("train",), ("predict",), ("serve",), ("export",), ("data", "check")])
def test_every_option_name_is_whole_in_an_80_column_help(words: tuple[str, ...]) -> None:
    """Rich's option tables cut names at 80 columns ("--label-smooth…"): no name may be cut."""
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
    text = subprocess.run([sys.executable, "-m", "catdog", *words, "--help"], capture_output=True, text=True, env=env)
    assert text.returncode == 0 and "…" not in text.stdout
    _, flags = cli_help(words)  # read at 240 columns
    assert flags and flags <= set(HELP_FLAG.findall(text.stdout))


@pytest.mark.parametrize("command", ["predict", "evaluate", "serve"])
def test_the_unsure_threshold_says_it_is_off_unless_given(command: str) -> None:
    """predict's and evaluate's --help gave --threshold no default, so a reader could not tell whether photos were
    already being answered 'unsure'; serve's said "(default: never)". All three say it now."""
    from typer.testing import CliRunner

    from catdog.cli import app

    shown = " ".join(CliRunner().invoke(app, [command, "--help"], terminal_width=240).stdout.split())
    threshold = shown.split("--threshold", 1)[1].split(" --", 1)[0]
    assert "'unsure'" in threshold and "(default: never)" in threshold, threshold


def test_the_split_option_says_what_it_picks() -> None:
    """evaluate's --split help began "all photos, or only those ...", a lowercase fragment among sentences."""
    from typer.testing import CliRunner

    from catdog.cli import app

    shown = " ".join(CliRunner().invoke(app, ["evaluate", "--help"], terminal_width=240).stdout.split())
    split = shown.split("--split", 1)[1].split(" --", 1)[0]
    assert "Which photos to measure: all, or only those" in split, split


def test_the_csv_help_names_every_column_whole(cat_photo: Path) -> None:
    """predict's --csv help listed the columns as one comma-joined word, which an 80-column help cut mid-name
    ("<probabilities: cat,dog,n" / "either>"). It names each column of the real header whole now."""
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env, timeout=300)
    header = run([sys.executable, "-m", "catdog", "predict", "--csv", str(cat_photo)]).stdout.splitlines()[0]
    shown = run([sys.executable, "-m", "catdog", "predict", "--help"]).stdout
    csv_help = shown.split("--csv", 1)[1].split("--threshold", 1)[0]
    assert set(header.split(",")) <= set(re.findall(r"\w+", csv_help)), (header, csv_help)


def test_the_epochs_help_says_a_time_budget_sets_them() -> None:
    """train's --epochs help gave only the defaults without a budget ("40 for a frozen head"), but the README's
    `--time-budget 10` run sets no --epochs and trains as many as the budget allows (a frozen head ran 42 epochs).
    The help says so, as docs/training.md does."""
    from typer.testing import CliRunner

    from catdog.cli import app

    shown = " ".join(CliRunner().invoke(app, ["train", "--help"], terminal_width=240).stdout.split())
    epochs = shown.split("--epochs", 1)[1].split("--time-budget MINUTES", 1)[0]
    assert "with a --time-budget as many as it allows" in epochs, epochs


def test_the_lr_and_weight_decay_help_give_each_default() -> None:
    """train's --lr and --weight-decay help said only "default depends on the model", where every other option
    gives its defaults: a learner reading it could not tell that seed-cnn trains at 1e-3 without weight decay. Each
    default the help names is the one a run resolves to."""
    from typer.testing import CliRunner

    from catdog.cli import app
    from catdog.training.config import TrainConfig

    shown = " ".join(CliRunner().invoke(app, ["train", "--help"], terminal_width=240).stdout.split())
    runs = {
        "from scratch": TrainConfig(data_dir="d", out="o", model="catnet"),
        "seed-cnn": TrainConfig(data_dir="d", out="o", model="seed-cnn"),
        "fine-tuning": TrainConfig(data_dir="d", out="o", model="tf_efficientnet_lite0"),
        "stages:N": TrainConfig(data_dir="d", out="o", model="tf_efficientnet_lite0", freeze="stages:4"),
        "head": TrainConfig(data_dir="d", out="o", model="tf_efficientnet_lite0", freeze="backbone"),
    }
    for option, field, following in (
        ("--lr LR", "lr", "--optimizer"),
        ("--weight-decay DECAY", "weight_decay", "--layer-"),
    ):
        helped = shown.split(option, 1)[1].split(f"{following}", 1)[0]
        for run, config in runs.items():
            said = re.search(rf"\b(\d[\d.e-]*) [^;,(]*{re.escape(run)}", helped)
            assert said and float(said[1]) == getattr(config.resolved(), field), (option, run, helped)


def test_the_warmup_help_says_a_time_budget_shortens_it() -> None:
    """--warmup-epochs 1 under a 1.5-minute seed-cnn budget warmed up for about a twentieth of the budget, not for
    the first epoch (about 10 s there): the log's recipe line and docs/training.md said so, the help did not."""
    from typer.testing import CliRunner

    from catdog.cli import app

    shown = " ".join(CliRunner().invoke(app, ["train", "--help"], terminal_width=240).stdout.split())
    warmup = shown.split("--warmup-epochs", 1)[1].split("--label-smoothing", 1)[0]
    assert "under --time-budget, at most a twentieth of the budget" in warmup, warmup


def test_the_export_help_says_where_each_format_is_written() -> None:
    """export's --out help said "Output file; default MODEL/model.onnx": `catdog export --format web` (the README's
    tour) writes a folder, catdog-app/ for the built-in model, and the built-in model's ONNX file is
    catdog-builtin.onnx here; a reader of the help could not tell where either went. Nor where the built-in model's
    --int8 file goes (catdog-builtin-int8.onnx: the help named only MODEL/model-int8.onnx)."""
    from typer.testing import CliRunner

    from catdog.cli import app

    shown = " ".join(CliRunner().invoke(app, ["export", "--help"], terminal_width=240).stdout.split())
    out = shown.split("--out PATH", 1)[1].split(" --check-data", 1)[0]
    for default in (
        "MODEL/model.onnx",
        "catdog-builtin.onnx",
        "ends -int8.onnx with --int8",
        "MODEL/app",
        "catdog-app",
    ):
        assert default in out, out


def test_data_checks_help_names_the_images_it_leaves_out() -> None:
    """data check counts images no label reaches ("62 image files left out (no label)"), the one finding a folder
    of mixed photos shows most; its help's first line and its line in `catdog data --help` did not name it."""
    from typer.testing import CliRunner

    from catdog.cli import app

    def shown(*args: str) -> str:
        return " ".join(CliRunner().invoke(app, [*args, "--help"], terminal_width=240).stdout.split())

    first = shown("data", "check").split("Usage: ", 1)[1].split(". ", 1)[0]
    assert "images left out (no label)" in first, first
    assert "label conflicts and images left out." in shown("data")


def test_cache_clears_help_names_everything_it_removes() -> None:
    """`cache --clear` removes every entry catdog writes; its help listed five and left out the generated test
    pictures (synthetic-graphics/), which it removes too."""
    from typer.testing import CliRunner

    from catdog.cli import app
    from catdog.data.cache_dir import ENTRIES

    shown = " ".join(CliRunner().invoke(app, ["cache", "--help"], terminal_width=240).stdout.split())
    clear = shown.split("Options:", 1)[1].split("--clear", 1)[1].split(" --", 1)[0]
    assert [holds for holds in ENTRIES.values() if holds not in clear] == [], clear


# -- the checks can fail ---------------------------------------------------------------------


BROKEN = """# A page

```bash
catdog predict photos/ --json --no-such-flag
catdog pradict photos/
catdog data chek DATA
pip install . && catdog serve --port 8000 --max-files 4 --nonsense  # a comment --ignored
CATDOG_BACKEND=torch torchrun --nproc_per_node 2 -m catdog train DATA --out M --modle catnet
catdog --no-global predict x.jpg
```

See [the guide](no-such-page.md), ![a picture](images/missing.png), [a heading](#nowhere) and
[fine](#a-page), `[not a link](ignored.md)`, [the web](https://example.com/x.md).
Inline, `catdog export MODEL --int9` is checked too, `catdog COMMAND --help` is a placeholder.
Code: `training.recipe.train`, `catdog.images.decode`, `serve.state.ServeState.classify` and `cli/train.py` are
there; `training.no_such.train`, `catdog.models.gone` and `data.split.nothing` are not.
"""


def test_the_checks_catch_wrong_commands_options_and_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(BROKEN)
    problems = "\n".join(page_command_problems(page, BROKEN))
    assert "'catdog predict' has no option '--no-such-flag'" in problems
    assert "'--json'" not in problems
    assert "no command 'catdog pradict'" in problems
    assert "no command 'catdog data chek'" in problems
    assert "'catdog serve' has no option '--nonsense'" in problems and "option '--ignored'" not in problems
    assert "'--max-files'" not in problems and "'--port'" not in problems
    assert "'catdog train' has no option '--modle'" in problems
    assert "catdog has no option '--no-global'" in problems
    assert "'catdog export' has no option '--int9'" in problems and "COMMAND" not in problems
    assert len(problems.splitlines()) == 7, problems
    links = "\n".join(link_problems(page, BROKEN))
    assert "'no-such-page.md'" in links and "'images/missing.png'" in links and "'#nowhere'" in links
    assert "ignored.md" not in links and "example.com" not in links and "#a-page" not in links
    assert len(links.splitlines()) == 3, links
    code = "\n".join(code_reference_problems(page, BROKEN))
    assert "`training.no_such.train`" in code and "`catdog.models.gone`" in code and "`data.split.nothing`" in code
    assert len(code.splitlines()) == 3, code
    assert len(code_references(BROKEN)) == 6  # cli/train.py is a path, not code
