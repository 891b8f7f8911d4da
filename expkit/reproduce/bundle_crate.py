"""A paper bundle's ``ro-crate-metadata.json``: RO-Crate 1.1, Process Run Crate 0.5.

The crate describes the bundle (the root dataset: name, description, license, authors, publisher,
date, parts), its files, the run code (the program, a ``SoftwareApplication`` with a version and, with
``metadata.repository``, a URL), expkit (the ``SoftwareApplication`` that organised the runs), and one
``CreateAction`` per algorithm — its runs: instrument the program, object the spec, result
``runs/<algorithm>/``, start and end times in ISO 8601, ``actionStatus`` completed or failed, agent the
authors — all tied together by an ``OrganizeAction`` of expkit. A cluster run's image is a
``ContainerImage`` (Workflow Run terms). :func:`crate_gaps` says which recommended property the spec
could not fill, naming the ``metadata`` field that would (``expkit export`` prints it).

Everything is a pure function of the manifest, the spec, the bundle's entry names, the size and sha256
of the files the crate lists one by one, and a summary of each algorithm's runs (see
docs/reproducibility.md, "RO-Crate contents"). The crate passes ``rocrate-validator`` for the
``ro-crate-1.1`` and ``process-run-crate-0.5`` profiles (tests/test_crate.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from expkit import EXPKIT_URL, __version__
from expkit.reproduce.bundle_cite import CITATION_NAME, display_name
from expkit.spec import Author, Experiment, Paper
from expkit.stores.base import MANIFEST_KEY, PREPARE_LOG_KEY, RUNS_DIR, SPEC_KEY

README_NAME = "README.md"
CRATE_NAME = "ro-crate-metadata.json"
REQUIREMENTS_NAME = "requirements.txt"
RESULTS_DIR = "results"
CODE_DIR = "code"
#: Entries at a bundle's root that are not part of the run's store layout.
BUNDLE_ONLY = (README_NAME, CRATE_NAME, CITATION_NAME, REQUIREMENTS_NAME)
#: Directories of a bundle that are not part of the run's store layout.
BUNDLE_ONLY_DIRS = (RESULTS_DIR, CODE_DIR)
#: ``(size in bytes, sha256 hex)`` of a file the crate describes.
Facts = tuple[int, str]

RO_CRATE_CONTEXT = "https://w3id.org/ro/crate/1.1/context"
PROCESS_RUN_CRATE = "https://w3id.org/ro/wfrun/process/0.5"
_WFRUN = "https://w3id.org/ro/terms/workflow-run#"
_CRATE_CONTEXT = [
    RO_CRATE_CONTEXT,
    {t: _WFRUN + t for t in ("sha256", "ContainerImage", "containerImage", "registry", "tag")},
]
_CRATE_CONFORMS = "https://w3id.org/ro/crate/1.1"
_COMPLETED = "http://schema.org/CompletedActionStatus"
_FAILED = "http://schema.org/FailedActionStatus"
#: Descriptions of the files at the bundle's root.
_DESCRIPTIONS = {
    SPEC_KEY: "The resolved experiment spec (defaults written out, parameter overrides applied).",
    MANIFEST_KEY: "Provenance of the run: expkit version, spec sha256, code and environment, host, seeds, sessions.",
    PREPARE_LOG_KEY: "Log of the spec's prepare step.",
    README_NAME: "How to reproduce and re-analyse this run.",
    CITATION_NAME: "How to cite this bundle (Citation File Format 1.2.0).",
    REQUIREMENTS_NAME: "The packages the runs' interpreter had, with their exact versions (pip requirements).",
}
_FORMATS = {
    ".json": "application/json",
    ".yml": "application/yaml",
    ".yaml": "application/yaml",
    ".cff": "application/yaml",
    ".csv": "text/csv",
    ".tex": "application/x-tex",
    ".md": "text/markdown",
    ".html": "text/html",
    ".png": "image/png",
    ".pdf": "application/pdf",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
    ".log": "text/plain",
}


@dataclass(frozen=True)
class AlgorithmRuns:
    """What a bundle holds of one algorithm's runs: how many, how many failed, the first start and last end."""

    cells: int
    failed: int
    started: str | None
    ended: str | None


@dataclass(frozen=True)
class CrateInput:
    """Everything the crate is made from (see :func:`crate_json`)."""

    run_id: str
    manifest: Mapping[str, Any]
    experiment: Experiment
    names: Sequence[str]  # every entry of the bundle
    facts: Mapping[str, Facts]  # size and sha256 of each top-level and results file
    runs: Mapping[str, AlgorithmRuns]  # per algorithm with cells in the bundle, in spec order
    license_id: str  # SPDX identifier or expression


def block(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``doc[key]`` when it is a mapping (a manifest block such as ``code`` or ``environment``), else empty."""
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def _format_of(name: str) -> str:
    return _FORMATS.get(Path(name).suffix.lower(), "application/octet-stream")


def _one(items: Sequence[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """One reference as a single value, several as a list (RO-Crate: no singleton arrays)."""
    return items[0] if len(items) == 1 else list(items)


def iso8601(value: Any) -> str | None:
    """A timestamp as Process Run Crate wants it: UTC, milliseconds, ``+00:00`` (never ``Z``); None if unparseable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def repository_url(experiment: Experiment, manifest: Mapping[str, Any]) -> str | None:
    """The run code's URL: ``metadata.repository``, else an https ``origin`` recorded from git."""
    if experiment.metadata.repository:
        return experiment.metadata.repository
    code = block(manifest, "code")
    git = block(code, "git")
    remote = git.get("remote")
    return remote if isinstance(remote, str) and re.match(r"^https?://\S+$", remote) else None


def crate_gaps(experiment: Experiment, manifest: Mapping[str, Any]) -> list[str]:
    """Recommended RO-Crate / Process Run Crate properties the spec left empty, each with the field that fills it."""
    meta = experiment.metadata
    gaps = []
    if not meta.authors:
        gaps.append(
            f"{CRATE_NAME} and {CITATION_NAME} name no author (RO-Crate recommends one, and an agent for each run): "
            "add metadata.authors to the spec, e.g. authors: [{name: 'Doe, Jane', orcid: 0000-0002-1825-0097, "
            "affiliation: Example University}]"
        )
    elif not any(a.affiliation for a in meta.authors):
        gaps.append(
            f"{CRATE_NAME} has no publisher (RO-Crate recommends an Organization): add metadata.authors[].affiliation"
        )
    elif not all(a.affiliation.url for a in meta.authors if a.affiliation):
        gaps.append(
            f"{CRATE_NAME}: an affiliation has no URL (RO-Crate recommends one for an Organization): write "
            "metadata.authors[].affiliation as {name: ..., url: https://ror.org/...} (its ROR id, or a homepage)"
        )
    if repository_url(experiment, manifest) is None:
        gaps.append(
            f"{CRATE_NAME}: the run code has no URL (Process Run Crate recommends a URL and an absolute id for "
            "the program): add metadata.repository, e.g. repository: https://github.com/org/repo"
        )
    return gaps


def crate_json(crate: CrateInput) -> str:
    """``ro-crate-metadata.json`` (see the module docstring)."""
    graph = _graph(crate)
    return json.dumps({"@context": _CRATE_CONTEXT, "@graph": graph}, indent=2, ensure_ascii=False) + "\n"


def _graph(c: CrateInput) -> list[dict[str, Any]]:
    """The crate's entities: descriptor, root, profile, license, people, files, software, actions, paper."""
    meta = c.experiment.metadata
    results = sorted(k for k in c.names if k.startswith(f"{RESULTS_DIR}/"))
    top_files = sorted(k for k in c.names if "/" not in k and k != CRATE_NAME)
    has_code = any(k.startswith(f"{CODE_DIR}/") for k in c.names)
    people, agents, publishers = _people(meta.authors or [])
    paper = _paper_entity(meta.paper)
    graph: list[dict[str, Any]] = [
        {"@id": CRATE_NAME, "@type": "CreativeWork", "conformsTo": {"@id": _CRATE_CONFORMS}, "about": {"@id": "./"}},
        _root(c, top_files, bool(results), has_code, agents, publishers, paper),
        {"@id": PROCESS_RUN_CRATE, "@type": "CreativeWork", "name": "Process Run Crate", "version": "0.5"},
        _license_entity(c.license_id),
        *people,
    ]
    graph.extend(_top_file_entity(name, c.facts, c.experiment) for name in top_files)
    graph.append(_runs_dataset(c))
    graph.extend(_algorithm_dataset(alg, r) for alg, r in c.runs.items())
    if results:
        graph.append(_results_dataset(results))
        graph.extend(_file_entity(name, c.facts) for name in results)
    if has_code:
        graph.append(_code_dataset(c))
    graph.append(_program(c))
    graph.append(_expkit_entity(c.manifest))
    on_cluster = c.manifest.get("executor") == "argo"
    if on_cluster:
        graph.append(_image_entity(c.experiment.spec.image))
    graph.append(_organize_action(c, agents))
    graph.extend(_create_action(c, alg, r, agents, on_cluster) for alg, r in c.runs.items())
    if paper is not None:
        graph.append(paper)
    return graph


def _root(
    c: CrateInput,
    top_files: list[str],
    has_results: bool,
    has_code: bool,
    agents: list[dict[str, Any]],
    publishers: list[dict[str, Any]],
    paper: dict[str, Any] | None,
) -> dict[str, Any]:
    """The crate's root dataset: the bundle, its parts, its license and authors, and the runs it describes."""
    meta = c.experiment.metadata
    parts = [{"@id": n} for n in top_files] + [{"@id": f"{RUNS_DIR}/"}]
    parts += [{"@id": f"{d}/"} for d, present in ((RESULTS_DIR, has_results), (CODE_DIR, has_code)) if present]
    n_cells = sum(r.cells for r in c.runs.values())
    root: dict[str, Any] = {
        "@id": "./",
        "@type": "Dataset",
        "conformsTo": {"@id": PROCESS_RUN_CRATE},
        "name": f"{meta.name}: expkit run {c.run_id}",
        "description": (meta.description or f"Experiment {meta.name}").strip()
        + f" (expkit run {c.run_id}, {n_cells} completed runs; see README.md to reproduce it).",
        "identifier": c.run_id,
        "license": {"@id": _license_id(c.license_id)},
        "hasPart": parts,
        "mainEntity": {"@id": SPEC_KEY},
        "mentions": _one([{"@id": f"#run-{c.run_id}"}] + [{"@id": _action_id(c.run_id, a)} for a in c.runs]),
    }
    if agents:
        root["author"] = _one(agents)
    if publishers:
        root["publisher"] = _one(publishers)
    date = str(c.manifest.get("ended_at") or c.manifest.get("started_at") or "")[:10]
    if date:
        root["datePublished"] = date
    if paper is not None:
        root["citation"] = {"@id": paper["@id"]}
    return root


def _license_id(expression: str) -> str:
    """The license's @id: its SPDX page for one identifier, a local id for an expression."""
    return f"https://spdx.org/licenses/{expression}" if re.fullmatch(r"[A-Za-z0-9.\-+]+", expression) else "#license"


def _license_entity(expression: str) -> dict[str, Any]:
    return {
        "@id": _license_id(expression),
        "@type": "CreativeWork",
        "name": expression,
        "identifier": expression,
        "description": f"The SPDX license {expression} (metadata.license) covers the contents of this bundle.",
    }


def _people(authors: Sequence[Author]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Person and Organization entities of ``metadata.authors``; references to the people, and to the
    publisher (the first affiliation: RO-Crate wants one Organization)."""
    entities: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    orgs: dict[tuple[str, str | None], dict[str, Any]] = {}
    for i, author in enumerate(authors):
        person: dict[str, Any] = {
            "@id": author.orcid or f"#author-{i + 1}",
            "@type": "Person",
            "name": display_name(author),
        }
        if author.affiliation:
            aff = author.affiliation
            org = orgs.setdefault(
                (aff.name, aff.url),
                {"@id": aff.url or f"#organization-{len(orgs) + 1}", "@type": "Organization", "name": aff.name},
            )
            if aff.url:
                org["url"] = aff.url
            person["affiliation"] = {"@id": org["@id"]}
        entities.append(person)
        people.append({"@id": person["@id"]})
    unique = {org["@id"]: org for org in orgs.values()}  # two names with one URL are one organization
    entities += list(unique.values())
    publisher = [{"@id": next(iter(unique))}] if unique else []
    return entities, people, publisher


def _file_entity(name: str, facts: Mapping[str, Facts], description: str | None = None) -> dict[str, Any]:
    """A File entity: format, size and sha256 of the entry ``name``."""
    size, digest = facts[name]
    entity: dict[str, Any] = {
        "@id": name,
        "@type": "File",
        "name": name,
        "encodingFormat": _format_of(name),
        "contentSize": str(size),
        "sha256": digest,
    }
    if description:
        entity["description"] = description
    return entity


def _top_file_entity(name: str, facts: Mapping[str, Facts], experiment: Experiment) -> dict[str, Any]:
    """A file at the bundle's root; the spec is also source code (YAML) of the experiment."""
    entity = _file_entity(name, facts, _DESCRIPTIONS.get(name))
    if name == SPEC_KEY:
        entity["conformsTo"] = {"@id": f"{EXPKIT_URL}#{experiment.apiVersion}"}
    return entity


def _runs_dataset(c: CrateInput) -> dict[str, Any]:
    n_cells = sum(r.cells for r in c.runs.values())
    entity: dict[str, Any] = {
        "@id": f"{RUNS_DIR}/",
        "@type": "Dataset",
        "name": "Per-run outputs",
        "description": f"{n_cells} completed runs, one directory each at "
        f"{RUNS_DIR}/<algorithm>/<dataset>/<replicate>/: result.json (metrics, trajectory), run.json (status, "
        "seed, attempts, wall time, CPU time, peak memory), log.txt and any other output.",
    }
    if c.runs:
        entity["hasPart"] = _one([{"@id": f"{RUNS_DIR}/{alg}/"} for alg in c.runs])
    return entity


def _algorithm_dataset(alg: str, runs: AlgorithmRuns) -> dict[str, Any]:
    return {
        "@id": f"{RUNS_DIR}/{alg}/",
        "@type": "Dataset",
        "name": f"Runs of {alg}",
        "description": f"{runs.cells} completed runs of the algorithm {alg} ({runs.failed} failed).",
    }


def _results_dataset(results: list[str]) -> dict[str, Any]:
    return {
        "@id": f"{RESULTS_DIR}/",
        "@type": "Dataset",
        "name": "Statistics, tables and plots",
        "description": "Written by 'expkit results': stats.json (every test), results.csv, summary.csv, "
        "resources.csv (time and memory per algorithm), table.tex, report.md/html and plots.",
        "hasPart": _one([{"@id": name} for name in results]),
    }


def _code_dataset(c: CrateInput) -> dict[str, Any]:
    code = block(c.manifest, "code")
    n = sum(1 for k in c.names if k.startswith(f"{CODE_DIR}/"))
    return {
        "@id": f"{CODE_DIR}/",
        "@type": "Dataset",
        "name": "Run code",
        "description": f"The {n} files of the spec file's directory the runs used (code digest {code.get('digest')}, "
        "listed with their sha256 in manifest.json); 'expkit reproduce' unpacks, checks and runs them.",
    }


def _code_version(manifest: Mapping[str, Any], image: str) -> str:
    """The program's version: the git commit (``+dirty`` with local changes), else the code digest, else the image."""
    code = block(manifest, "code")
    git = block(code, "git")
    if code.get("source") == "files":
        if git.get("commit"):
            return str(git["commit"]) + ("+dirty" if git.get("dirty") else "")
        return str(code.get("digest"))
    return str(code.get("digest") or image)


def _program(c: CrateInput) -> dict[str, Any]:
    """The run code, as the SoftwareApplication every CreateAction ran."""
    spec = c.experiment.spec
    url = repository_url(c.experiment, c.manifest)
    entity: dict[str, Any] = {
        "@id": url or "#program",
        "@type": "SoftwareApplication",
        "name": f"{c.experiment.metadata.name}: {' '.join(spec.command)}",
        "description": "The experiment's code: one run per algorithm x dataset x replicate runs "
        f"`{' '.join([*spec.command, *spec.args])}` in the spec file's directory (locally) or in the image "
        "(on a cluster).",
        "version": _code_version(c.manifest, spec.image),
    }
    if url:
        entity["url"] = url
    return entity


def _expkit_entity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "@id": EXPKIT_URL,
        "@type": "SoftwareApplication",
        "name": "expkit",
        "description": "Ran the experiment's cells, recorded their provenance and wrote this bundle.",
        "version": str(manifest.get("expkit_version") or __version__),
        "url": EXPKIT_URL,
    }


def _image_entity(image: str) -> dict[str, Any]:
    """A cluster run's container image (Workflow Run terms)."""
    ref, _, digest = image.partition("@")
    first, _, rest = ref.partition("/")
    has_registry = bool(rest) and ("." in first or ":" in first or first == "localhost")
    registry, path = (first, rest) if has_registry else ("docker.io", ref)
    name, _, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    entity: dict[str, Any] = {
        "@id": "#image",
        "@type": "ContainerImage",
        "additionalType": {"@id": f"{_WFRUN}DockerImage"},
        "name": name,
        "registry": registry,
        "identifier": image,
        "description": "Container image every run executed in (spec.image).",
    }
    if tag:
        entity["tag"] = tag
    if digest.startswith("sha256:"):
        entity["sha256"] = digest.removeprefix("sha256:")
    return entity


def _action_id(run_id: str, alg: str) -> str:
    return f"#run-{run_id}-{alg}"


def _times(action: dict[str, Any], started: Any, ended: Any) -> dict[str, Any]:
    for key, value in (("startTime", iso8601(started)), ("endTime", iso8601(ended))):
        if value:
            action[key] = value
    return action


def _organize_action(c: CrateInput, agents: list[dict[str, Any]]) -> dict[str, Any]:
    """expkit organising the run: its instrument, the spec its object, the per-algorithm CreateActions its result."""
    total = int(c.manifest.get("cells") or 0)
    done = sum(r.cells for r in c.runs.values())
    failed = sum(r.failed for r in c.runs.values())
    action: dict[str, Any] = {
        "@id": f"#run-{c.run_id}",
        "@type": "OrganizeAction",
        "name": f"expkit run {c.run_id}",
        "description": f"{total} runs ({len(c.experiment.spec.algorithms)} algorithms x "
        f"{len(c.experiment.spec.datasets)} datasets x {c.experiment.spec.replicates} replicates) on the "
        f"{c.manifest.get('executor', 'unknown')} executor; {done} finished, {failed} failed.",
        "instrument": {"@id": EXPKIT_URL},
        "object": {"@id": SPEC_KEY},
        "actionStatus": _COMPLETED if done == total and not failed else _FAILED,
    }
    if c.runs:
        action["result"] = _one([{"@id": _action_id(c.run_id, a)} for a in c.runs])
    if agents:
        action["agent"] = _one(agents)
    return _times(action, c.manifest.get("started_at"), c.manifest.get("ended_at"))


def _create_action(
    c: CrateInput, alg: str, runs: AlgorithmRuns, agents: list[dict[str, Any]], on_cluster: bool
) -> dict[str, Any]:
    """One algorithm's runs as a CreateAction: the program on the spec, ``runs/<alg>/`` its result."""
    spec = c.experiment.spec
    expected = len(spec.datasets) * spec.replicates
    action: dict[str, Any] = {
        "@id": _action_id(c.run_id, alg),
        "@type": "CreateAction",
        "name": f"{alg}: {runs.cells} runs",
        "description": f"The runs of the algorithm {alg}: {len(spec.datasets)} datasets x {spec.replicates} "
        f"replicates, {runs.cells} finished, {runs.failed} failed.",
        "instrument": {"@id": repository_url(c.experiment, c.manifest) or "#program"},
        "object": {"@id": SPEC_KEY},
        "result": {"@id": f"{RUNS_DIR}/{alg}/"},
    }
    if runs.failed or runs.cells < expected:
        action["actionStatus"] = _FAILED
        action["error"] = f"{runs.failed} of {expected} runs failed, {expected - runs.cells} did not finish"
    else:
        action["actionStatus"] = _COMPLETED
    if agents:
        action["agent"] = _one(agents)
    if on_cluster:
        action["containerImage"] = {"@id": "#image"}
    return _times(action, runs.started, runs.ended)


def _paper_entity(paper: Paper | None) -> dict[str, Any] | None:
    """The paper the run belongs to, when the spec names its DOI or URL."""
    if paper is None or not (paper.doi or paper.url):
        return None
    paper_id = f"https://doi.org/{paper.doi}" if paper.doi else str(paper.url)
    entity: dict[str, Any] = {"@id": paper_id, "@type": "ScholarlyArticle"}
    if paper.title:
        entity["name"] = paper.title
    if paper.doi:
        entity["identifier"] = paper_id
    return entity


def algorithm_runs(
    records: Iterable[tuple[str, Mapping[str, Any]]], algorithms: Sequence[str]
) -> dict[str, AlgorithmRuns]:
    """Summarise ``(algorithm, run.json record)`` pairs per algorithm, in ``algorithms`` order (those with runs)."""
    seen: dict[str, list[Mapping[str, Any]]] = {}
    for alg, record in records:
        seen.setdefault(alg, []).append(record)
    out: dict[str, AlgorithmRuns] = {}
    for alg in algorithms:
        mine = seen.get(alg)
        if not mine:
            continue
        starts = [t for t in (iso8601(r.get("started_at")) for r in mine) if t]
        ends = [t for t in (iso8601(r.get("ended_at")) for r in mine) if t]
        failed = sum(1 for r in mine if r.get("status") != "succeeded")
        out[alg] = AlgorithmRuns(len(mine), failed, min(starts) if starts else None, max(ends) if ends else None)
    return out
