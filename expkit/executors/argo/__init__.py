"""The Argo executor: an experiment as one Argo ``Workflow`` on Kubernetes.

Rendering and validation are pure and offline (:mod:`.render`, :mod:`.validate`); submission and
status collection live in :mod:`.client`, the only module that talks to a cluster. See docs/argo.md.
"""

from expkit.executors.argo.render import RenderError, render_workflow, render_yaml
from expkit.executors.argo.validate import WorkflowValidationError, validate_workflow

__all__ = ["RenderError", "WorkflowValidationError", "render_workflow", "render_yaml", "validate_workflow"]
