"""Every Python and shell example in the README and the documentation runs, and the site builds without a warning.

Each page's ```python, ```bash and ```console blocks run in the page's order, in a fresh folder that looks like the
repository root for reading (its `search_spaces/`, `suites/`, `benchmarks/` and shipped reports linked in), with
`HARNESS_HOME` a folder of the page's own (its MLflow store already migrated) and `KERAS_BACKEND` inherited. The
Python blocks run in one namespace of a fresh interpreter, as a reader would run them. A shell block runs statement
by statement, and the first that fails stops the page: a plain `harness ...` command (with or without
`|| echo "exit status $?"`) in that same interpreter, through `harness.cli.main` (see `Session`), any other statement
with `bash -e -o pipefail`. A block that cannot run in a test follows a line `<!-- not run: the reason -->`, and is
skipped.
"""

import importlib.util
import multiprocessing
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = ("python", "bash", "console")
OPENING = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<language>[\w+-]*)")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<tag>\w+)\1")
# What the examples read as they would from the repository root.
LINKED = ("search_spaces", "suites", "benchmarks", "reports/example", "reports/suite-example")
# The pages that train most, which start first so that the two xdist workers end together.
SLOW_FIRST = [
    "docs/how-to/suite.md",
    "docs/how-to/scaling-out.md",
    "docs/tutorial/first-study.md",
    "docs/reference/python-api.md",
    "docs/how-to/read-a-verdict.md",
    "docs/how-to/search.md",
]
# What each page's interpreter finds imported (see `Session`): Keras on TensorFlow, and the modules of the harness
# that a search and a report use; about 10 s of imports on 2 cores.
PRELOAD = ["keras", "harness.cli", "harness.study.confirm", "harness.reporting"]
BLOCK_TIMEOUT = 600  # seconds; an example should take a few


def blocks(page):
    """(first line number, language, code, reason it is not run or None) of each fenced block of `page`."""
    lines = page.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        opening = OPENING.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        code = textwrap.dedent("\n".join(line.removeprefix(indent) for line in lines[index + 1 : end]))
        before = lines[index - 1] if index else ""
        not_run = NOT_RUN.match(before)
        found.append((index + 2, opening["language"], code, not_run["reason"].strip() if not_run else None))
        index = end + 1
    return found


def runnable(page):
    return [block for block in blocks(page) if block[1] in RUNNABLE and block[3] is None]


def name(page):
    return str(page.relative_to(ROOT))


def slow_first(page):
    return SLOW_FIRST.index(name(page)) if name(page) in SLOW_FIRST else len(SLOW_FIRST)


def console_commands(code):
    """The commands of a console transcript: each `$ ` line, with its continuation lines; output lines are left
    blank, so that line numbers hold."""
    commands, continuing = [], False
    for line in code.splitlines():
        command = line.startswith("$ ") or continuing
        commands.append(line.removeprefix("$ ") if command else "")
        continuing = command and line.endswith("\\")
    return "\n".join(commands)


def statements(line, code):
    """(line number, text) of each statement of a shell block whose code begins at `line`: a line ending in `\\`
    goes on to the next, a heredoc through its closing tag; blank and comment-only lines are left out."""
    found, lines, index = [], code.splitlines(), 0
    while index < len(lines):
        start = index
        while lines[index].endswith("\\") and index + 1 < len(lines):
            index += 1
        if heredoc := HEREDOC.search(lines[index]):
            index = lines.index(heredoc["tag"], index + 1)
        text = "\n".join(lines[start : index + 1])
        if text.strip() and not text.lstrip().startswith("#"):
            found.append((line + start, text))
        index += 1
    return found


def harness_command(statement):
    """(argv, whether `|| echo "exit status $?"` follows) of a plain `harness ...` command, or None for any other
    statement (a pipe, a redirection, a variable: what needs bash)."""
    lexer = shlex.shlex(statement.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # and `#` starts a comment
    words = list(lexer)
    fallback = words[-3:] == ["||", "echo", "exit status $?"]
    words = words[:-3] if fallback else words
    shell = [word for word in words if set(word) <= set(lexer.punctuation_chars) or set(word) & set("$`*?~")]
    return (words[1:], fallback) if words[:1] == ["harness"] and not shell else None


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """An empty MLflow store, migrated once: each page's interpreter would otherwise run MLflow's schema migrations
    (about 5 s on 2 cores) when its first command opens the store."""
    import sqlalchemy
    from mlflow.store.db import utils

    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{store}")
    utils._initialize_tables(engine)
    engine.dispose()
    return store


def page_folder(tmp_path, mlflow_store):
    """A fresh working folder that reads like the repository root, and a HARNESS_HOME of its own whose MLflow store
    is a copy of `mlflow_store`: what the page's first command would make there."""
    work, home = tmp_path / "work", tmp_path / "harness-home"
    home.mkdir()
    shutil.copy(mlflow_store, home / "mlflow.db")
    for linked in LINKED:
        (work / linked).parent.mkdir(parents=True, exist_ok=True)
        (work / linked).symlink_to(ROOT / linked)
    return work, home


def session(connection, work, environment):
    """A page's interpreter, in the page's folder with its environment: runs each Python block it is sent in one
    namespace and answers None or the traceback; runs each `harness` command it is sent through `harness.cli.main`
    and answers its exit code."""
    os.chdir(work)
    os.environ.clear()
    os.environ.update(environment)
    namespace = {"__name__": "__main__"}
    while (message := connection.recv()) is not None:
        page, line, code = message
        try:
            if isinstance(code, list):  # a harness command's argv
                from harness.cli import main

                try:
                    answer = main(code) or 0
                except SystemExit as stop:  # --help, or a usage error
                    answer = stop.code or 0
            else:  # padded so that a traceback names the page's own line numbers
                exec(compile("\n" * (line - 1) + code, page, "exec"), namespace)
                answer = None
        except BaseException:
            answer = traceback.format_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        connection.send(answer)


class Session:
    """A fresh interpreter for one page, which runs its Python blocks and its `harness ...` commands.

    The commands run in it through `harness.cli.main`, exactly what the `harness` console script calls, with the
    same argv, rather than each in a process of its own: TensorFlow then starts once per page, not once per command
    (10 to 25 s each on 2 cores). Nor does the page wait for it: the interpreter is forked from multiprocessing's
    fork server, a process of its own that imported `PRELOAD` and nothing of the tests, so a page sees no module
    that the tests or another page imported, only those modules as imported (a page that chose its Keras backend in
    Python before importing Keras would need a spawned interpreter)."""

    def __init__(self, work, environment):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=session, args=(theirs, work, environment), daemon=True)
        self.process.start()

    def ask(self, page, line, code, what):
        self.connection.send((str(page), line, code))
        assert self.connection.poll(BLOCK_TIMEOUT), f"{name(page)}: {what} at line {line} ran too long"
        answer = self.connection.recv()
        assert not isinstance(answer, str), f"{name(page)}, {what} at line {line}:\n{answer}"
        return answer

    def run_python(self, page, line, code):
        self.ask(page, line, code, "the Python block")

    def run_harness(self, page, line, argv, fallback):
        code = self.ask(page, line, argv, "the command")
        if fallback and code:
            print(f"exit status {code}", flush=True)
        assert fallback or code == 0, f"{name(page)}, the command at line {line} exited {code} (see its output)"

    def close(self):
        self.connection.send(None)
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


def run_shell(page, line, code, work, environment):
    run = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", code],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    print(run.stdout, run.stderr, sep="", end="")
    assert run.returncode == 0, (
        f"{name(page)}, the shell command at line {line} exited {run.returncode}:\n"
        f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )


@pytest.mark.parametrize("page", sorted((p for p in PAGES if runnable(p)), key=slow_first), ids=name)
def test_every_example_of_the_page_runs(page, tmp_path, monkeypatch, mlflow_store):
    work, home = page_folder(tmp_path, mlflow_store)
    monkeypatch.setenv("HARNESS_HOME", str(home))
    monkeypatch.chdir(work)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    session = None
    try:
        for line, language, code, _ in runnable(page):
            if language == "python":
                session = session or Session(work, environment)
                session.run_python(page, line, code)
                continue
            for number, statement in statements(line, console_commands(code) if language == "console" else code):
                if command := harness_command(statement):
                    session = session or Session(work, environment)
                    session.run_harness(page, number, *command)
                else:
                    run_shell(page, number, statement, work, environment)
    finally:
        if session is not None:
            session.close()


def test_every_example_that_is_not_run_says_why():
    skipped = [(name(page), line, reason) for page in PAGES for line, language, _, reason in blocks(page) if reason]
    assert skipped, "no block is marked <!-- not run: ... -->, yet the install commands cannot run in a test"
    assert [(page, line) for page, line, reason in skipped if not reason] == []
    for page in PAGES:  # a mark that precedes no runnable block is a mistake: it skips nothing
        text = page.read_text().splitlines()
        marks = [index for index, line in enumerate(text) if NOT_RUN.match(line)]
        for index in marks:
            following = OPENING.match(text[index + 1]) if index + 1 < len(text) else None
            assert following and following["language"] in RUNNABLE, f"{name(page)}:{index + 1}: a mark before no block"


def test_the_readme_stays_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), f"README links to {link}, which is not there"


def test_the_site_builds_without_a_warning(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        unavailable("mkdocs is not installed (pip install -e '.[docs]')")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
