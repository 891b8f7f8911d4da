"""Where cluster requests go: kubeconfig files, their contexts, in-cluster configuration — apart from the client.

:func:`load_target` resolves the kubeconfig (``--kubeconfig``, else ``$KUBECONFIG``, else
``~/.kube/config``), the context (else the current one) and the namespace (else the context's, else
``default``); with no kubeconfig at all, inside a pod, the pod's service account. It returns the
:class:`ClusterTarget` that every message names and the client configuration the
:class:`~expkit.executors.argo.client.ArgoClient` connects with. A missing or broken kubeconfig, or an
unknown context, is a :class:`~expkit.executors.argo.errors.ClusterConfigError` (exit code 2).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from expkit.executors.argo.errors import ClusterConfigError, one_line

DEFAULT_KUBECONFIG = "~/.kube/config"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class ClusterTarget:
    """Where requests go: the kubeconfig context (or ``in-cluster``), its server and the namespace."""

    context: str
    server: str
    namespace: str
    kubeconfig: str | None = None  # None: the pod's service account (in-cluster)

    def describe(self) -> str:
        """``context 'NAME' (SERVER)``, as every cluster message names it."""
        return f"context {self.context!r} ({self.server})"


def _kubeconfig_files(kubeconfig: str | os.PathLike[str] | None) -> tuple[list[str], bool]:
    """The kubeconfig files to read and whether they were asked for explicitly."""
    if kubeconfig:
        paths = [os.path.expanduser(str(kubeconfig))]
        return [p for p in paths if os.path.isfile(p)] or paths, True
    env = os.environ.get("KUBECONFIG", "")
    paths = [os.path.expanduser(p) for p in env.split(os.pathsep) if p] or [os.path.expanduser(DEFAULT_KUBECONFIG)]
    return [p for p in paths if os.path.isfile(p)], bool(env)


def _read_contexts(files: Sequence[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Contexts by name (the first file that names one wins, as kubectl merges) and the current context."""
    contexts: dict[str, dict[str, Any]] = {}
    current = None
    for path in files:
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ClusterConfigError(
                f"kubeconfig {path} cannot be read ({err.__class__.__name__}): fix it or pass another with --kubeconfig"
            ) from err
        if not isinstance(doc, dict):
            raise ClusterConfigError(
                f"kubeconfig {path} is not a kubeconfig (a YAML mapping): pass another with --kubeconfig"
            )
        for item in doc.get("contexts") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                contexts.setdefault(item["name"], item.get("context") or {})
        if current is None and doc.get("current-context"):
            current = str(doc["current-context"])
    return contexts, current


def load_target(
    kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None, namespace: str | None = None
) -> tuple[ClusterTarget, k8s.Configuration]:
    """Resolve the connection: ``kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``), the
    context (else the current one) and the namespace (else the context's, else ``default``). With no
    kubeconfig at all, inside a pod, the pod's service account is used (in-cluster config)."""
    files, explicit = _kubeconfig_files(kubeconfig)
    cfg = k8s.Configuration()
    if any(os.path.isfile(f) for f in files):
        return _from_files(files, context, namespace, cfg), cfg
    if explicit:
        raise ClusterConfigError(
            f"kubeconfig {', '.join(files) or os.environ.get('KUBECONFIG')} does not exist: "
            "check --kubeconfig / $KUBECONFIG"
        )
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster(namespace, cfg), cfg
    raise ClusterConfigError(
        f"no kubeconfig found ({DEFAULT_KUBECONFIG}, $KUBECONFIG unset) and not running "
        "inside a cluster: pass --kubeconfig FILE or set KUBECONFIG"
    )


def _in_cluster(namespace: str | None, cfg: k8s.Configuration) -> ClusterTarget:
    """The pod's service account; the namespace defaults to the pod's own."""
    try:
        # kubernetes' config loaders carry no annotations
        k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except ConfigException as err:
        raise ClusterConfigError(
            f"in-cluster configuration failed ({err}): mount the service account token or pass --kubeconfig"
        ) from err
    ns = namespace
    if ns is None:
        try:
            ns = Path(SA_NAMESPACE_FILE).read_text(encoding="utf-8").strip() or None
        except OSError:
            ns = None
    return ClusterTarget("in-cluster", str(cfg.host), ns or "default", None)


def _from_files(files: list[str], context: str | None, namespace: str | None, cfg: k8s.Configuration) -> ClusterTarget:
    """The context ``context`` (else the current one) of the kubeconfig ``files``, loaded into ``cfg``."""
    contexts, current = _read_contexts(files)
    name = context or current
    joined = os.pathsep.join(files)
    if name is None:
        raise ClusterConfigError(
            f"kubeconfig {joined} has no current-context: pass --context "
            f"(it has: {', '.join(sorted(contexts)) or 'no contexts'})"
        )
    if name not in contexts:
        raise ClusterConfigError(
            f"context {name!r} is not in kubeconfig {joined}: it has {', '.join(sorted(contexts)) or 'no contexts'}"
        )
    try:
        # kubernetes' config loaders carry no annotations
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=joined, context=name, client_configuration=cfg, persist_config=False
        )
    except (ConfigException, OSError, ValueError, TypeError) as err:
        raise ClusterConfigError(
            f"kubeconfig {joined}, context {name!r}: {one_line(str(err))}; fix the kubeconfig or pick another --context"
        ) from err
    ns = namespace or contexts[name].get("namespace") or "default"
    return ClusterTarget(name, str(cfg.host), str(ns), joined)


__all__ = ["DEFAULT_KUBECONFIG", "SA_NAMESPACE_FILE", "ClusterConfigError", "ClusterTarget", "load_target"]
