"""The Kubernetes names the Argo executor reads and writes: the Workflow resource, expkit's labels and
annotations, and where Argo's controller usually runs — shared by the client, the run operations and
``expkit cluster``."""

from __future__ import annotations

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "workflows"
RESOURCE = f"{PLURAL}.{GROUP}"
LABEL_RUN_ID = "expkit.io/run-id"
LABEL_EXPERIMENT = "expkit.io/experiment"
#: The label Argo puts on every pod of a workflow (its value: the workflow's name).
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
CELL_ANNOTATION = "expkit.io/cell"
#: The annotation of a batch pod (``kubernetes.cellsPerPod`` > 1): ``<algorithm>/<dataset>/[<replicates>]``.
BATCH_ANNOTATION = "expkit.io/cells"
#: The container of a cell's pod that runs the spec's command (Argo's ``main``).
MAIN_CONTAINER = "main"
#: Where Argo's workflow controller usually runs, and its Deployment names (install manifests, Helm chart).
CONTROLLER_LOCATIONS = (("argo", "workflow-controller"), ("argo", "argo-workflows-workflow-controller"))

__all__ = [
    "BATCH_ANNOTATION",
    "CELL_ANNOTATION",
    "CONTROLLER_LOCATIONS",
    "GROUP",
    "LABEL_EXPERIMENT",
    "LABEL_RUN_ID",
    "MAIN_CONTAINER",
    "PLURAL",
    "RESOURCE",
    "VERSION",
    "WORKFLOW_LABEL",
]
