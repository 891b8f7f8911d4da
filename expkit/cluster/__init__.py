"""``expkit cluster install|check|uninstall``: MinIO, the artifact repository and RBAC in a cluster.

Nothing here executes a run; the Kubernetes connection comes from :mod:`expkit.executors.argo`.
"""
