"""A paper bundle's ``CITATION.cff`` (Citation File Format 1.2.0), from the spec's ``metadata``.

``title`` names the experiment and the run, ``authors`` are ``metadata.authors`` (a name written
``Family, Given`` splits there; otherwise the last word is the family name; a one-word name is an
entity), ``license`` is ``metadata.license`` (a list for an ``OR`` of identifiers; left out for an
expression CFF cannot hold, such as ``A AND B``), ``repository-code`` is ``metadata.repository``,
``version`` the run id and ``date-released`` the day the run ended. With ``metadata.paper`` the paper
is the ``preferred-citation``. A spec without authors gets one entity naming the experiment's authors,
since CFF requires an author (``expkit export`` says to add ``metadata.authors``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import yaml

from expkit.spec import Author, Experiment

CITATION_NAME = "CITATION.cff"
CFF_VERSION = "1.2.0"


def cff_person(author: Author) -> dict[str, Any]:
    """One ``authors`` entry: a person (family and given names) or, for a one-word name, an entity."""
    name = author.name.strip()
    if "," in name:
        family, _, given = (part.strip() for part in name.partition(","))
    else:
        words = name.split()
        family, given = (words[-1], " ".join(words[:-1])) if len(words) > 1 else (name, "")
    entry: dict[str, Any] = {"family-names": family, "given-names": given} if given else {"name": name}
    if author.orcid:
        entry["orcid"] = author.orcid
    if author.affiliation and given:  # an entity has no affiliation in CFF
        entry["affiliation"] = author.affiliation.name
    return entry


def display_name(author: Author) -> str:
    """The name as read aloud: ``Family, Given`` becomes ``Given Family``."""
    family, comma, given = (part.strip() for part in author.name.partition(","))
    return f"{given} {family}" if comma and given else author.name.strip()


def cff_licenses(expression: str) -> str | list[str] | None:
    """``metadata.license`` as CFF's ``license``: one identifier, a list for ``A OR B``, None otherwise."""
    parts = [p.strip() for p in re.split(r"\s+OR\s+", expression.strip().strip("()"))]
    if all(re.fullmatch(r"[A-Za-z0-9.\-+]+", p) for p in parts):
        return parts[0] if len(parts) == 1 else parts
    return None


def citation_cff(run_id: str, manifest: Mapping[str, Any], experiment: Experiment, license_id: str) -> str:
    """The bundle's ``CITATION.cff`` (see the module docstring)."""
    meta = experiment.metadata
    authors = [cff_person(a) for a in meta.authors or ()] or [{"name": f"The authors of the experiment {meta.name}"}]
    paper = meta.paper
    doc: dict[str, Any] = {
        "cff-version": CFF_VERSION,
        "message": (
            "If you use these results, please cite the paper below (preferred-citation) and this bundle."
            if paper is not None and paper.title
            else "If you use these results, please cite this bundle as below."
        ),
        "type": "dataset",
        "title": f"{meta.name}: expkit run {run_id}",
        "authors": authors,
        "version": run_id,
    }
    if meta.description:
        doc["abstract"] = meta.description.strip()
    ended = str(manifest.get("ended_at") or manifest.get("started_at") or "")[:10]
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", ended):
        doc["date-released"] = ended
    licenses = cff_licenses(license_id)
    if licenses is not None:
        doc["license"] = licenses
    if meta.repository:
        doc["repository-code"] = meta.repository
    if paper is not None and paper.title:
        cite: dict[str, Any] = {"type": "article", "title": paper.title, "authors": copy.deepcopy(authors)}
        if paper.doi:
            cite["doi"] = paper.doi
        if paper.url and re.match(r"^(https?|s?ftp)://.+", str(paper.url)):
            cite["url"] = str(paper.url)
        doc["preferred-citation"] = cite
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    return "# Written by 'expkit export' from the experiment's metadata.\n" + text
