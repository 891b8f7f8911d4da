"""Static checks of every Dockerfile in the repository (no Docker needed).

Build contexts, as documented in docker/README.md: a Dockerfile under ``docker/`` is built with the
repository root as its context (``docker build -f docker/Dockerfile .``); any other Dockerfile (the
examples') with its own directory as context (``docker build examples/automl-smac``).

Every Dockerfile must: pin every ``FROM`` by ``@sha256:<64 hex>``; pin every ``pip install``
(``name==version``, ``-r``/``-c`` files whose requirements are all ``==``, or a local artifact
installed with ``--no-deps``); end with a non-root ``USER`` and a ``WORKDIR``; copy only sources
that exist in its context and that its ``.dockerignore`` lets through; and have a ``.dockerignore``
(``<Dockerfile>.dockerignore`` beside it, or ``.dockerignore`` in the context).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parent.parent
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
PIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
ROOT_USERS = {"root", "0"}
# pip install options that take a value (the value is not a requirement)
PIP_VALUE_OPTIONS = {
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "-t",
    "--target",
    "--prefix",
    "--root",
    "--platform",
    "--python-version",
    "--implementation",
    "--abi",
    "--progress-bar",
    "--src",
    "--cache-dir",
    "--log",
    "--timeout",
    "--retries",
    "--trusted-host",
    "--upgrade-strategy",
    "--only-binary",
    "--no-binary",
    "--config-settings",
    "-C",
    "--global-option",
    "--report",
}


def dockerfiles() -> list[Path]:
    found: list[Path] = []
    for top in ("docker", "examples"):
        for path in sorted((REPO / top).rglob("*")):
            rel = path.relative_to(REPO)
            if any(
                part.startswith(".") or part in ("__pycache__", "expkit-runs", "expkit-results")
                for part in rel.parts[:-1]
            ):
                continue
            if path.is_file() and (path.name == "Dockerfile" or path.name.endswith(".Dockerfile")):
                found.append(path)
    return found


def context_of(dockerfile: Path) -> Path:
    return REPO if dockerfile.parent == REPO / "docker" else dockerfile.parent


# ------------------------------------------------------------------------------------------ parsing


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped (as Docker does)."""
    out: list[Instruction] = []
    buf, start = "", 0
    for no, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            start = no
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = ""
    if buf.strip():
        keyword, _, args = buf.strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def stages(instructions: list[Instruction]) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (before the first FROM) and the build stages."""
    args: dict[str, str] = {}
    result: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            result.append(Stage(words[0], name, ins.line))
        elif not result:
            if ins.keyword == "ARG":
                key, _, value = ins.args.partition("=")
                args[key.strip()] = value.strip().strip('"')
        else:
            result[-1].instructions.append(ins)
    return args, result


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def copy_sources(ins: Instruction) -> tuple[list[str], str, bool]:
    """(sources, destination, from another stage or image) of a COPY/ADD."""
    if ins.args.startswith("["):
        words = json.loads(ins.args)
    else:
        words = shlex.split(ins.args)
    flags = [w for w in words if w.startswith("--")]
    rest = [w for w in words if not w.startswith("--")]
    from_stage = any(f.startswith("--from=") for f in flags)
    return rest[:-1], rest[-1], from_stage


# ------------------------------------------------------------------------------------ .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern syntax (Go filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out += re.escape(c)
            else:
                body = pattern[i + 1 : end]
                out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


@dataclass
class DockerIgnore:
    rules: list[tuple[re.Pattern[str], bool]]  # (pattern, is an exception "!")

    @classmethod
    def load(cls, path: Path) -> DockerIgnore:
        rules: list[tuple[re.Pattern[str], bool]] = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:].strip()
            line = str(PurePosixPath(line.lstrip("/"))) if line.strip("/") else line
            rules.append((_pattern_regex(line), negate))
        return cls(rules)

    def excluded(self, rel: str) -> bool:
        """Whether the context path ``rel`` (posix, relative) is left out of the build context: the
        last pattern matching the path or one of its parent directories decides."""
        parts = rel.split("/")
        candidates = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        verdict = False
        for regex, negate in self.rules:
            if any(regex.match(c) for c in candidates):
                verdict = not negate
        return verdict


def dockerignore_of(dockerfile: Path) -> Path | None:
    for candidate in (
        dockerfile.with_name(dockerfile.name + ".dockerignore"),
        context_of(dockerfile) / ".dockerignore",
    ):
        if candidate.is_file():
            return candidate
    return None


# ------------------------------------------------------------------------------------------ pip


def requirement_lines(path: Path) -> list[tuple[int, str]]:
    lines = []
    for no, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append((no, line))
    return lines


def unpinned_requirements(path: Path) -> list[str]:
    """The lines of a requirements/constraints file that are not ``name==version`` (after markers
    and hashes are removed); nested ``-r``/``-c`` files are followed."""
    bad: list[str] = []
    for no, line in requirement_lines(path):
        if line.startswith(("-r ", "-c ", "--requirement ", "--constraint ")):
            nested = path.parent / line.split(None, 1)[1]
            bad += unpinned_requirements(nested) if nested.is_file() else [f"{path.name}:{no}: {nested} is missing"]
            continue
        requirement = line.split(";", 1)[0].split(" --hash", 1)[0].strip().replace(" ", "")
        if not PIN_RE.match(requirement):
            bad.append(f"{path.name}:{no}: {line!r}")
    return bad


def pip_install_commands(run: str) -> list[list[str]]:
    """The argument lists after ``pip install`` in a RUN command (shell form)."""
    commands = []
    for part in re.split(r"&&|\|\||;|\|", run):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        for i, w in enumerate(words[:-1]):
            if re.fullmatch(r"pip(3(\.\d+)?)?", w) and words[i + 1] == "install":
                commands.append(words[i + 2 :])
                break
    return commands


class ImageFiles:
    """Where files copied from the build context land in one stage of the image."""

    def __init__(self, context: Path) -> None:
        self.context = context
        self.workdir = PurePosixPath("/")
        self.copies: list[tuple[PurePosixPath, Path]] = []  # image path -> context path (file or dir)

    def workdir_to(self, arg: str) -> None:
        path = PurePosixPath(arg)
        self.workdir = path if path.is_absolute() else self.workdir / path

    def copy(self, sources: list[str], dest: str) -> None:
        d = PurePosixPath(dest)
        d = d if d.is_absolute() else self.workdir / d
        many = len(sources) > 1 or dest.endswith("/") or dest in (".", "./")
        for src in sources:
            for ctx in sorted(self.context.glob(src)) or [self.context / src]:
                self.copies.append((d / ctx.name if many else d, ctx))

    def resolve(self, image_path: str) -> Path | None:
        p = PurePosixPath(image_path)
        p = p if p.is_absolute() else self.workdir / p
        for dest, ctx in reversed(self.copies):
            if p == dest:
                return ctx
            if ctx.is_dir() and dest in p.parents:
                return ctx / p.relative_to(dest)
        return None


def pip_problems(words: list[str], files: ImageFiles) -> list[str]:
    problems: list[str] = []
    no_deps = "--no-deps" in words
    i = 0
    positional: list[str] = []
    while i < len(words):
        w = words[i]
        if w in ("-r", "--requirement", "-c", "--constraint") or w.startswith(("--requirement=", "--constraint=")):
            target = w.split("=", 1)[1] if "=" in w else (words[i + 1] if i + 1 < len(words) else "")
            i += 1 if "=" in w else 2
            ctx = files.resolve(target)
            if ctx is None or not ctx.is_file():
                problems.append(f"requirements file {target!r} is not a file copied from the build context")
            else:
                problems += [f"unpinned requirement {b}" for b in unpinned_requirements(ctx)]
            continue
        if w in PIP_VALUE_OPTIONS:
            i += 2
            continue
        if w.startswith("-"):
            i += 1
            continue
        positional.append(w)
        i += 1
    for req in positional:
        local = req.startswith(("/", "./", "../")) or req == "." or req.endswith((".whl", ".tar.gz"))
        if local:
            if not no_deps:
                problems.append(
                    f"{req!r} is a local project installed without --no-deps: its dependencies "
                    "would be resolved unpinned; pin them in a requirements file and add --no-deps"
                )
        elif not PIN_RE.match(req):
            problems.append(f"{req!r} is not pinned as name==version")
    return problems


# ------------------------------------------------------------------------------------------ tests

DOCKERFILES = dockerfiles()
IDS = [str(p.relative_to(REPO)) for p in DOCKERFILES]


def test_the_known_dockerfiles_are_checked() -> None:
    assert "docker/Dockerfile" in IDS
    assert "examples/automl-smac/Dockerfile" in IDS


@pytest.fixture(params=DOCKERFILES, ids=IDS)
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_every_from_is_pinned_by_digest(dockerfile: Path) -> None:
    args, built = stages(parse(dockerfile.read_text()))
    assert built, f"{dockerfile}: no FROM"
    names: set[str] = set()
    for stage in built:
        image = substitute(stage.image, args)
        if image in names:  # FROM an earlier stage of this file
            continue
        assert DIGEST_RE.search(image), (
            f"{dockerfile.relative_to(REPO)}:{stage.line}: FROM {stage.image} is not pinned by "
            "'@sha256:<64 hex>'; pin the base image by its digest"
        )
        if stage.name:
            names.add(stage.name)


def test_pip_installs_are_pinned(dockerfile: Path) -> None:
    context = context_of(dockerfile)
    args, built = stages(parse(dockerfile.read_text()))
    problems: list[str] = []
    for stage in built:
        files = ImageFiles(context)
        for ins in stage.instructions:
            if ins.keyword == "WORKDIR":
                files.workdir_to(substitute(ins.args, args))
            elif ins.keyword in ("COPY", "ADD"):
                sources, dest, from_stage = copy_sources(ins)
                if not from_stage:
                    files.copy(sources, dest)
            elif ins.keyword == "RUN":
                for words in pip_install_commands(ins.args):
                    problems += [f"line {ins.line}: {p}" for p in pip_problems(words, files)]
    assert not problems, f"{dockerfile.relative_to(REPO)}: " + "; ".join(problems)


def test_runs_as_non_root_with_a_workdir(dockerfile: Path) -> None:
    _, built = stages(parse(dockerfile.read_text()))
    final = built[-1].instructions
    users = [i.args.split(":")[0].strip() for i in final if i.keyword == "USER"]
    assert users, f"{dockerfile.relative_to(REPO)}: the final stage sets no USER; add a non-root user"
    assert users[-1] not in ROOT_USERS, f"{dockerfile.relative_to(REPO)}: the image runs as {users[-1]!r}"
    assert any(i.keyword == "WORKDIR" for i in final), f"{dockerfile.relative_to(REPO)}: no WORKDIR in the final stage"


def test_copy_sources_exist_and_pass_the_dockerignore(dockerfile: Path) -> None:
    context = context_of(dockerfile)
    ignore_file = dockerignore_of(dockerfile)
    assert ignore_file is not None, (
        f"{dockerfile.relative_to(REPO)}: no .dockerignore; add {dockerfile.name}.dockerignore beside it "
        f"or .dockerignore in its build context {context.relative_to(REPO) or '.'}"
    )
    ignore = DockerIgnore.load(ignore_file)
    args, built = stages(parse(dockerfile.read_text()))
    copies = 0
    for stage in built:
        for ins in stage.instructions:
            if ins.keyword not in ("COPY", "ADD"):
                continue
            sources, _, from_stage = copy_sources(ins)
            if from_stage:
                continue
            for src in sources:
                src = substitute(src, args)
                where = f"{dockerfile.relative_to(REPO)}:{ins.line}: {ins.keyword} {src}"
                assert "://" not in src, f"{where}: a download at build time is not reproducible"
                matches = sorted(context.glob(src))
                assert matches, f"{where}: no such file in the build context {context}"
                for m in matches:
                    files = [m] if m.is_file() else [f for f in m.rglob("*") if f.is_file()]
                    shipped = [f for f in files if not ignore.excluded(f.relative_to(context).as_posix())]
                    assert shipped, f"{where}: excluded from the build context by {ignore_file.relative_to(REPO)}"
                    copies += 1
    assert copies, f"{dockerfile.relative_to(REPO)}: copies nothing from its context"


def test_expkit_image_entrypoint() -> None:
    instructions = parse((REPO / "docker" / "Dockerfile").read_text())
    entry = [i.args for i in instructions if i.keyword == "ENTRYPOINT"]
    assert entry and entry[-1].replace(" ", "") == '["expkit"]'


def test_expkit_image_pins_cover_the_runtime_dependencies() -> None:
    """docker/requirements.txt names every runtime dependency of pyproject.toml, at a version inside
    the declared range (the image installs it with --no-deps, so a new dependency must be added)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for _, line in requirement_lines(REPO / "docker" / "requirements.txt"):
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version
    for dep in project["dependencies"]:
        req = Requirement(dep)
        if req.marker is not None and not req.marker.evaluate({"python_version": "3.11", "extra": ""}):
            continue
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"docker/requirements.txt lacks {req.name} (a dependency in pyproject.toml)"
        assert req.specifier.contains(version, prereleases=True), (
            f"docker/requirements.txt pins {req.name}=={version}, outside pyproject.toml's {req.specifier}"
        )


# ------------------------------------------------------------------- the checker's own behaviour


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    rules = DockerIgnore(
        [
            (_pattern_regex("*"), False),
            (_pattern_regex("x"), True),
            (_pattern_regex("**/__pycache__"), False),
            (_pattern_regex("docker/req.txt"), True),
        ]
    )
    assert rules.excluded("README.md")
    assert not rules.excluded("x")
    assert not rules.excluded("x/sub/file.py")
    assert rules.excluded("x/sub/__pycache__/file.pyc")
    assert not rules.excluded("docker/req.txt")
    assert rules.excluded("docker/other.txt")


def test_pip_checker_rejects_unpinned_installs(tmp_path: Path) -> None:
    (tmp_path / "loose.txt").write_text("numpy>=1.24\n")
    (tmp_path / "tight.txt").write_text("# comment\nnumpy==2.4.6\nsmac[extra]==2.4.1 ; python_version >= '3.8'\n")
    files = ImageFiles(tmp_path)
    files.copy(["loose.txt", "tight.txt"], "/tmp/")
    assert pip_problems(["-r", "/tmp/tight.txt"], files) == []
    assert pip_problems(["--no-cache-dir", "numpy==2.4.6"], files) == []
    assert pip_problems(["--no-deps", "/wheels/expkit-0.1.0-py3-none-any.whl"], files) == []
    assert pip_problems(["-r", "/tmp/loose.txt"], files)
    assert pip_problems(["numpy"], files)
    assert pip_problems(["."], files)  # a local project without --no-deps
    assert pip_problems(["-r", "/tmp/missing.txt"], files)


def test_parser_joins_continuations_and_finds_stages() -> None:
    text = (
        "ARG BASE=python:3.11-slim\n# a comment\nFROM ${BASE} AS build\nRUN pip install \\\n"
        "    # a comment inside a continuation\n    numpy==2.4.6\nFROM build\nUSER 0\n"
    )
    args, built = stages(parse(text))
    assert [s.name for s in built] == ["build", None]
    assert not DIGEST_RE.search(substitute(built[0].image, args))  # unpinned: would fail the check
    assert pip_install_commands(built[0].instructions[0].args) == [["numpy==2.4.6"]]
    assert built[1].instructions[0].args in ROOT_USERS
