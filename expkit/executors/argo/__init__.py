"""The Argo executor: an experiment as one Argo ``Workflow`` on Kubernetes.

Rendering and validation are pure and offline (:mod:`.render`, :mod:`.validate`, :mod:`.status` reads
workflow objects back into cells). Talking to a cluster: :mod:`.kubeconfig` (where to connect),
:mod:`.errors` (one-line errors), :mod:`.client` (the transport), :mod:`.executor` (the
:class:`~expkit.executors.base.Executor` contract), :mod:`.runs` (submit, retry, stop, pods, listing)
and :mod:`.sync` (status, sync, watch). This package is the only code that imports ``kubernetes``; it is
imported only by the modules that talk to a cluster, so rendering needs none of it. See docs/argo.md.
"""

from expkit.executors.argo.render import RenderError, render_workflow, render_yaml
from expkit.executors.argo.validate import WorkflowValidationError, validate_workflow

__all__ = ["RenderError", "WorkflowValidationError", "render_workflow", "render_yaml", "validate_workflow"]
