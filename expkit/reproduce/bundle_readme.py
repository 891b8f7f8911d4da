"""A paper bundle's ``README.md``: what it holds, and the exact commands to re-analyse and reproduce it.

A pure function of the run's manifest and spec, the bundle's entry names and the logs whose credential
values ``expkit export --redact`` replaced (see docs/reproducibility.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from expkit import EXPKIT_URL
from expkit.reproduce.bundle_cite import CITATION_NAME
from expkit.reproduce.bundle_crate import block
from expkit.spec import Experiment

_REDACTED_LISTED = 50


def _reproduce_section(run_id: str, manifest: Mapping[str, Any], has_code: bool) -> list[str]:
    """How to re-run: from the bundle alone when it holds the code, else from a checkout or the image."""
    environment = block(manifest, "environment")
    python = block(environment, "python")
    version = python.get("version")
    lines = ["## Reproduce", ""]
    if has_code:
        lines += [
            "The bundle holds the run code (`code/`: the files of the spec's directory the runs used, whose",
            f"sha256 digest is `{(manifest.get('code') or {}).get('digest')}` in `manifest.json`) and the",
            "environment the runs used (`requirements.txt`: every package with its exact version"
            + (f", under Python {version}" if version else "")
            + f"). On a fresh machine, in an empty directory, with expkit {manifest.get('expkit_version')} "
            f"installed ({EXPKIT_URL}) in a virtual environment:",
            "",
            "```console",
            "$ unzip -p bundle.zip requirements.txt > requirements.txt",
            "$ pip install -r requirements.txt       # exact versions (drop what was only on the author's machine)",
            "$ expkit reproduce bundle.zip --yes      # unpacks, checks and re-runs the code, then compares",
            "$ expkit reproduce bundle.zip --yes --sample 60   # a seeded spot check of about 60 runs",
            "```",
            "",
            f"The code is unpacked into `./expkit-reproduce/{run_id}/` and checked file by file against the",
            "manifest's sha256 before anything runs.",
            "",
            "`--spec-dir DIR` unpacks the code into DIR instead (or, when DIR already holds it, checks that",
            "its files are the bundle's). Without `--yes`, expkit shows the command and asks before it runs it.",
        ]
    else:
        lines += [
            "The bundle does not hold the run code (a cluster run's code is the container image named in",
            "`experiment.yml`). From a checkout of the code (expkit shows the command and asks before it runs it):",
            "",
            "```console",
            "$ expkit reproduce bundle.zip --spec-dir path/to/code   # re-runs the spec, compares with this run",
            "$ expkit reproduce bundle.zip --spec-dir path/to/code --sample 60   # a seeded spot check",
            "```",
        ]
    return lines + [
        "",
        "The comparison (`expkit compare ORIGINAL RERUN` does the same for two existing runs) tests every",
        "algorithm × dataset cell for a difference (Mann–Whitney U, Kolmogorov–Smirnov, Holm) and for",
        "equivalence (TOST on Vargha–Delaney A12), and checks that the statistical conclusions agree.",
        "",
    ]


def readme(
    run_id: str,
    manifest: Mapping[str, Any],
    experiment: Experiment,
    names: Sequence[str],
    license_id: str,
    redacted: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The bundle's ``README.md``: what it holds (``names``: its entries), how to re-analyse and reproduce
    it, and which logs had credential values replaced (``redacted``: entry name -> variable names)."""
    meta = experiment.metadata
    spec = experiment.spec
    has_code = any(n.startswith("code/") for n in names)
    lines = [
        f"# {meta.name} — expkit run {run_id}",
        "",
        meta.description or "",
        "",
        (
            f"{len(spec.algorithms)} algorithms × {len(spec.datasets)} datasets × {spec.replicates} replicates, "
            f"metric `{spec.metric.name}` ({spec.metric.goal}), image `{spec.image}`, spec sha256 "
            f"`{manifest.get('spec_sha256')}`, run with expkit {manifest.get('expkit_version')}. "
            f"License: `{license_id}`."
        ),
        "",
        "## Contents",
        "",
        "- `experiment.yml` — the resolved spec (overrides applied): it re-runs the experiment without flags",
        "- `manifest.json` — provenance: expkit version, spec sha256, code and environment, host, seeds, sessions",
        (
            "- `runs/<algorithm>/<dataset>/<replicate>/` — each run's `result.json`, `run.json` (status, seed, "
            "time and memory), `log.txt` and other outputs"
        ),
    ]
    if has_code:
        lines.append("- `code/` — the run code: the files of the spec's directory, as hashed into the code digest")
    if "requirements.txt" in names:
        lines.append("- `requirements.txt` — the packages the runs' interpreter had, with their exact versions")
    if any(n.startswith("results/") for n in names):
        lines.append("- `results/` — `stats.json` (every test), CSV and LaTeX tables, the report and the plots")
    lines += [
        f"- `{CITATION_NAME}` — how to cite this bundle (Citation File Format)",
        "- `ro-crate-metadata.json` — RO-Crate 1.1 metadata (Process Run Crate 0.5) describing all of the above",
        "",
        "## Re-analyse",
        "",
        "```console",
        "$ expkit import bundle.zip            # puts the run into ./expkit-runs under its run id",
        f"$ expkit results {run_id}",
        "```",
        "",
        *_reproduce_section(run_id, manifest, has_code),
    ]
    if redacted:
        lines += _redaction_note(redacted)
    return "\n".join(lines)


def _redaction_note(redacted: Mapping[str, Sequence[str]]) -> list[str]:
    """The README's section on the logs whose credential values ``expkit export --redact`` replaced."""
    names = sorted(redacted)
    lines = [
        "## Redacted",
        "",
        "`expkit export --redact` found the values of credentials in these logs and replaced each with",
        "`[REDACTED:<VARIABLE>]` (the logs are otherwise as the runs wrote them):",
        "",
    ]
    lines += [f"- `{name}`: {', '.join(sorted(redacted[name]))}" for name in names[:_REDACTED_LISTED]]
    if len(names) > _REDACTED_LISTED:
        lines.append(f"- … and {len(names) - _REDACTED_LISTED} more logs")
    return lines + [""]
