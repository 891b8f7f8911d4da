"""``expkit cluster install|check|uninstall``: MinIO, the artifact repository and RBAC in a cluster.

Nothing here executes a run; the Kubernetes connection comes from :mod:`expkit.executors.argo`.
Modules: :mod:`.objects` (every object install applies, pure), :mod:`.api` (the connection:
:class:`ClusterSetup`, its errors), :mod:`.install`, :mod:`.check` and :mod:`.uninstall`.
"""

from expkit.cluster.api import ClusterSetup, InstallRejected, InstallTimeout, ObjectResult, StorageSizeRefused
from expkit.cluster.check import CHECK_NAMES, CheckResult, check, failed, run_checks, self_subject_access_review
from expkit.cluster.install import InstallReport, dry_run_yaml, install, wait_ready
from expkit.cluster.uninstall import uninstall
from expkit.executors.argo.errors import ClusterError

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "ClusterError",
    "ClusterSetup",
    "InstallRejected",
    "InstallReport",
    "InstallTimeout",
    "ObjectResult",
    "StorageSizeRefused",
    "check",
    "dry_run_yaml",
    "failed",
    "install",
    "run_checks",
    "self_subject_access_review",
    "uninstall",
    "wait_ready",
]
