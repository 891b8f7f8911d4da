"""``expkit cluster install | check | uninstall``: set a namespace up for cluster runs, check it, remove it.

Registered on :data:`expkit.cli.app` as the sub-app ``cluster`` when :mod:`expkit.cli` imports this module
(its last line). The work is in :mod:`expkit.cluster` (:mod:`~expkit.cluster.install`,
:mod:`~expkit.cluster.check`, :mod:`~expkit.cluster.uninstall`) and :mod:`expkit.cluster.objects` (the
objects); this module parses, calls and formats. The
connection flags are the same as the other cluster commands': ``--kubeconfig``, ``--context``,
``--namespace`` (default: the context's namespace, else ``default``).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from expkit.cli.common import (
    ContextOpt,
    JsonOpt,
    KubeconfigOpt,
    app,
    err,
    handle_errors,
    out,
    print_json,
)
from expkit.cli.plain_help import ExpkitTyper
from expkit.core.errors import InputError

if TYPE_CHECKING:
    from expkit.cluster.api import ClusterSetup, ObjectResult
    from expkit.cluster.install import InstallReport
    from expkit.cluster.objects import InstallOptions

cluster_app = ExpkitTyper(
    name="cluster",
    help="Set a namespace up for cluster runs (MinIO, Argo's artifact repository, RBAC), check it, remove it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(cluster_app, name="cluster")

REGISTRY_PASSWORD_ENV = "EXPKIT_REGISTRY_PASSWORD"

NamespaceOpt = Annotated[
    Optional[str],
    typer.Option(
        "--namespace",
        "-n",
        envvar="EXPKIT_NAMESPACE",
        show_envvar=True,
        help="Namespace to set up (default: the context's namespace, else 'default'). One per user or team.",
    ),
]

_STYLE = {
    "created": "green",
    "updated": "yellow",
    "replaced": "yellow",
    "unchanged": "dim",
    "kept": "cyan",
    "skipped": "magenta",
    "deleted": "red",
    "absent": "dim",
}


def _namespace(kubeconfig: str | None, context: str | None, namespace: str | None) -> str:
    """The namespace in effect without contacting the cluster (for --dry-run)."""
    if namespace:
        return namespace
    from expkit.executors.argo.kubeconfig import ClusterConfigError, load_target

    try:
        target, _ = load_target(kubeconfig, context, None)
    except ClusterConfigError:
        return "default"
    return target.namespace


def _registry_password(server: str | None, from_stdin: bool) -> str | None:
    """The registry password from stdin or ``$EXPKIT_REGISTRY_PASSWORD`` — never from the command line."""
    if from_stdin and not server:
        raise InputError("--registry-password-stdin needs --registry-server and --registry-username")
    if not server:
        return None
    if from_stdin:
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError(
                "--registry-password-stdin: pipe the password in, e.g. "
                'echo "$TOKEN" | expkit cluster install ... --registry-password-stdin'
            )
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = os.environ.get(REGISTRY_PASSWORD_ENV, "")
    if not password:
        raise InputError(
            f"--registry-server needs the registry password: pipe it to --registry-password-stdin or "
            f"set {REGISTRY_PASSWORD_ENV} (it is never taken from the command line)"
        )
    return password


def _print_result(result: ObjectResult) -> None:
    detail = f"  [dim]{escape(result.detail)}[/]" if result.detail else ""
    style = _STYLE.get(result.action, "bold")
    out.print(f"  [{style}]{result.action:<10}[/] {escape(result.ref)}{detail}")


StorageSizeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--storage-size",
        help="MinIO's volume (each pod's, when distributed), e.g. 20Gi, 1Ti (default: 20Gi, or the existing volume's).",
    ),
]
StorageClassOpt = Annotated[
    Optional[str], typer.Option("--storage-class", help="StorageClass of the volume(s) (default: the cluster's).")
]
BucketOpt = Annotated[str, typer.Option("--bucket", help="The bucket Argo writes outputs and logs to.")]
DistributedOpt = Annotated[
    int,
    typer.Option(
        "--distributed",
        metavar="N",
        help="Deploy MinIO distributed over N "
        "pods (4-16) on distinct nodes, erasure-coded: results survive the "
        "loss of a node. 0: a single pod.",
    ),
]
MinioImageOpt = Annotated[
    Optional[str],
    typer.Option(
        "--minio-image",
        metavar="IMAGE@sha256:...",
        help="Another MinIO image, pinned by digest (e.g. your registry's mirror).",
    ),
]
RegistryServerOpt = Annotated[
    Optional[str],
    typer.Option("--registry-server", help="Private registry host: creates the pull Secret expkit-registry."),
]
RegistryUsernameOpt = Annotated[Optional[str], typer.Option("--registry-username")]
RegistryPasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--registry-password-stdin", help=f"Read the registry password from stdin (else ${REGISTRY_PASSWORD_ENV})."
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print every object as YAML (Secret values redacted); change nothing.")
]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for MinIO and the bucket.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for MinIO and the bucket.")]
ClusterDomainOpt = Annotated[
    str, typer.Option("--cluster-domain", help="The cluster's DNS domain (distributed peers' addresses).")
]


@cluster_app.command("install")
@handle_errors
def install_cmd(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    storage_size: StorageSizeOpt = None,
    storage_class: StorageClassOpt = None,
    bucket: BucketOpt = "expkit",
    distributed: DistributedOpt = 0,
    minio_image: MinioImageOpt = None,
    registry_server: RegistryServerOpt = None,
    registry_username: RegistryUsernameOpt = None,
    registry_password_stdin: RegistryPasswordStdinOpt = False,
    dry_run: DryRunOpt = False,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 600.0,
    cluster_domain: ClusterDomainOpt = "cluster.local",
    as_json: JsonOpt = False,
) -> None:
    """Install MinIO, Argo's artifact repository and least-privilege RBAC into a namespace — idempotent.

    Keys are generated once and kept in the Secret [bold]expkit-s3-credentials[/]; a re-run changes only what differs.

    Example: [bold]expkit cluster install -n expkit --storage-size 50Gi[/]
    """
    from expkit.cluster import objects as co
    from expkit.cluster.api import ClusterSetup

    password = (
        _registry_password(registry_server, registry_password_stdin) if not dry_run or registry_password_stdin else None
    )

    def options(ns: str) -> co.InstallOptions:
        return co.InstallOptions(
            namespace=ns,
            bucket=bucket,
            storage_size=storage_size or co.DEFAULT_STORAGE,
            storage_class=storage_class,
            distributed=distributed,
            minio_image=minio_image or co.MINIO_IMAGE,
            registry_server=registry_server,
            registry_username=registry_username,
            cluster_domain=cluster_domain,
        ).validate()

    if dry_run:
        _print_dry_run(options(_namespace(kubeconfig, context, namespace)), password, registry_server)
        return
    with ClusterSetup(kubeconfig, context, namespace) as setup:
        opts = options(setup.namespace)
        report = _install(
            setup, opts, password, wait=wait, timeout=timeout, as_json=as_json, size_given=storage_size is not None
        )
    if as_json:
        print_json(report.to_dict())
        return
    _print_installed(report, opts)


def _print_dry_run(opts: InstallOptions, password: str | None, registry_server: str | None) -> None:
    from expkit.cluster.install import dry_run_yaml

    placeholder = password if password is not None else ("" if registry_server else None)
    sys.stdout.write(dry_run_yaml(opts, registry_password=placeholder))


def _install(
    setup: ClusterSetup,
    opts: InstallOptions,
    password: str | None,
    *,
    wait: bool,
    timeout: float,
    as_json: bool,
    size_given: bool = True,
) -> InstallReport:
    from expkit.cluster.install import install, wait_ready

    if not as_json:
        out.print(
            f"installing into namespace [bold]{escape(opts.namespace)}[/] on "
            f"{escape(setup.target.describe())} ({escape(opts.endpoint)}, "
            f"{'distributed over ' + str(opts.distributed) + ' pods' if opts.distributed else 'one pod'})"
        )
    report = install(
        setup,
        opts,
        registry_password=password,
        wait=False,
        on_result=None if as_json else _print_result,
        storage_size_given=size_given,
        deletion_timeout=timeout,
    )
    if wait:
        if not as_json:
            err.print("waiting for MinIO and the bucket Job ...")
        report.ready = wait_ready(setup, opts, timeout=timeout)
    return report


def _print_installed(report: InstallReport, opts: InstallOptions) -> None:
    from expkit.cluster import objects as co

    ns = opts.namespace
    state = "ready" if report.ready else "applied (not waited for)"
    out.print(
        f"[green]✓[/] {'changed' if report.changed else 'nothing to change'}; MinIO {state}; bucket "
        f"[bold]{escape(opts.bucket)}[/] at http://{escape(opts.endpoint)}; credentials "
        f"{report.credentials} in Secret {co.CREDENTIALS_SECRET}"
    )
    out.print(
        f"next: [bold]expkit cluster check -n {escape(ns)}[/]; in the spec set "
        f"[bold]spec.kubernetes.serviceAccountName: {co.WORKFLOW_SA}[/]; read results from here with "
        f"[bold]kubectl -n {escape(ns)} port-forward svc/{co.MINIO} 9000:9000[/] and "
        "EXPKIT_S3_ENDPOINT=http://127.0.0.1:9000 (keys: docs/cluster.md)"
    )


@cluster_app.command("check")
@handle_errors
def check_cmd(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    spec: Annotated[
        Optional[str],
        typer.Option("--spec", metavar="FILE", help="Also check what this spec needs (service account, pull secrets)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check everything a cluster run needs; ✓/✗ with a fix for each. Exit 1 if a check fails.

    Checks the API server, Argo, the artifact repository and its Secret, MinIO, the bucket, your rights, pull secrets.

    The bucket is read over S3 when EXPKIT_S3_ENDPOINT is set.

    Example: [bold]expkit cluster check -n expkit --spec experiment.yml[/]
    """
    from expkit.cluster.check import failed, run_checks

    results = run_checks(kubeconfig, context, namespace, spec_path=spec)
    bad = failed(results)
    if as_json:
        print_json({"ok": not bad, "checks": [r.to_dict() for r in results]})
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            mark = "[green]✓[/]" if r.ok else "[red]✗[/]" if r.ok is False else "[yellow]?[/]"
            out.print(f"{mark} {r.name:<{width}}  {escape(r.detail)}")
            if r.hint and r.ok is not True:
                out.print(f"  {' ' * width}  [dim]{'fix' if r.ok is False else 'hint'}: {escape(r.hint)}[/]")
    if bad:
        raise typer.Exit(1)


@cluster_app.command("uninstall")
@handle_errors
def uninstall_cmd(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    purge: Annotated[
        bool,
        typer.Option("--purge", help="Also delete the volume(s) — every stored result — and the credentials Secret."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --purge deletes data.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove what [bold]expkit cluster install[/] created; the volume(s) and their keys stay unless [bold]--purge[/].

    The namespace itself always stays.

    Example: [bold]expkit cluster uninstall -n expkit[/]
    """
    from expkit.cluster.api import ClusterSetup
    from expkit.cluster.uninstall import uninstall

    with ClusterSetup(kubeconfig, context, namespace) as setup:
        ns = setup.namespace
        if purge and not yes:
            if not sys.stdin.isatty():
                raise InputError(
                    f"--purge deletes MinIO's volume(s) in namespace {ns!r} and every result in them: "
                    "add --yes to confirm"
                )
            typer.confirm(
                f"Delete MinIO's volume(s) in namespace {ns!r} on {setup.target.describe()} and every result in them?",
                abort=True,
            )
        results = uninstall(setup, ns, purge=purge, on_result=None if as_json else _print_result)
    if as_json:
        print_json({"namespace": ns, "purge": purge, "results": [r.to_dict() for r in results]})
        return
    kept = [r for r in results if r.action == "kept"]
    out.print(
        f"[green]✓[/] uninstalled from namespace {escape(ns)}"
        + (f"; kept {len(kept)} object(s) holding the data (--purge deletes them)" if kept else "")
        + f"; the namespace itself stays (kubectl delete namespace {escape(ns)})"
    )


__all__ = ["cluster_app"]
