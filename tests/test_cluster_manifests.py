"""The cluster objects, offline: static manifests == builders, strict schema validation against every
Kubernetes version managed clusters offer (1.30 and newer, kubernetes-validate's schemas), Go-YAML-safe
quoting of every YAML file shipped or emitted, security and RBAC properties, no credentials anywhere."""

from __future__ import annotations

import base64
import json
import re
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # noqa: F401 - a test dependency: the API schemas the manifests are checked against
import pytest
import yaml

from expkit import cluster as cl
from expkit.cluster import objects as co
from expkit.core.errors import InputError

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests" / "minio"
DOCS = [REPO / "docs" / "cluster.md", MANIFESTS / "README.md"]
TEST_CREDS = co.Credentials("expkit-test-access-7Qp", "test-secret-Zr84kLm2vX0aPq9w")


# ---------------------------------------------------------------------------------------------
# Strict validation, with the schemas loaded once per version
# ---------------------------------------------------------------------------------------------


def _versions() -> list[str]:
    from kubernetes_validate import utils

    found = sorted({utils.major_minor(v) for v in utils.all_versions()}, key=lambda v: tuple(map(int, v.split("."))))
    return [v for v in found if tuple(map(int, v.split("."))) >= (1, 30)]


VERSIONS = _versions()


@cache
def _definitions(version: str) -> Any:
    from kubernetes_validate import utils

    full = next(v for v in utils.all_versions() if utils.major_minor(v) == version)
    return utils.schema_contents(f"kubernetes-json-schema/v{full}-local-strict/_definitions.json", version), full


@cache
def _validator(version: str, kind: str, api_version: str) -> Any:
    import jsonschema
    import referencing
    from kubernetes_validate import utils

    definitions, full = _definitions(version)
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = utils.schema_contents(f"kubernetes-json-schema/v{full}-local-strict/{kind.lower()}-{api}.json", version)
    registry = referencing.Resource.from_contents(schema) @ referencing.Registry()
    registry = referencing.Resource.from_contents(definitions) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate_strict(obj: dict[str, Any]) -> None:
    """kubernetes-validate's strict check (unknown fields are errors) for every supported version."""
    for version in VERSIONS:
        errors = sorted(_validator(version, obj["kind"], obj["apiVersion"]).iter_errors(obj), key=str)
        assert not errors, (
            f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: "
            f"{errors[0].json_path}: {errors[0].message}"
        )


def test_the_strict_validator_rejects_unknown_fields_and_wrong_types() -> None:
    good = co.service(co.InstallOptions())
    validate_strict(good)
    bad = json.loads(json.dumps(good))
    bad["spec"]["portz"] = []
    with pytest.raises(AssertionError, match="portz"):
        validate_strict(bad)
    bad = co.deployment(co.InstallOptions())
    bad["spec"]["template"]["spec"]["containers"][0]["env"][3]["value"] = False  # what unquoted `off` becomes
    with pytest.raises(AssertionError, match="False is not of type 'string'"):
        validate_strict(bad)


def test_versions_cover_what_managed_clusters_offer() -> None:
    assert VERSIONS[0] == "1.30"
    assert {"1.31", "1.32", "1.33"} <= set(VERSIONS)


# ---------------------------------------------------------------------------------------------
# The static manifests equal the builders
# ---------------------------------------------------------------------------------------------


def load_kustomization() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What ``kubectl apply -k manifests/minio`` sends, minus the generated Secret: the resources with the
    kustomization's namespace applied (to namespaced objects and ServiceAccount subjects)."""
    kust = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    docs = []
    for name in kust["resources"]:
        for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kust["namespace"]
            for subject in doc.get("subjects") or []:
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = kust["namespace"]
            docs.append(doc)
    return kust, docs


def test_static_manifests_are_the_builders_objects_with_default_options() -> None:
    kust, docs = load_kustomization()
    opts = co.InstallOptions(namespace=kust["namespace"])
    built = [o for o in co.desired_objects(opts, TEST_CREDS) if o["kind"] != "Secret"]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, docs)) == sorted(map(key, built))
    by_key = {key(o): o for o in built}
    for doc in docs:
        assert doc == by_key[key(doc)], f"{key(doc)} differs from cluster_objects: regenerate manifests/minio"


def test_the_secret_generator_makes_the_secret_the_objects_reference() -> None:
    kust, docs = load_kustomization()
    (gen,) = kust["secretGenerator"]
    secret = co.credentials_secret(co.InstallOptions(), TEST_CREDS)
    assert gen["name"] == secret["metadata"]["name"] == co.CREDENTIALS_SECRET
    assert gen["type"] == secret["type"]
    assert gen["options"]["disableNameSuffixHash"] is True  # referenced by name inside the ConfigMap's text
    assert gen["options"]["labels"] == secret["metadata"]["labels"]
    assert gen["envs"] == ["credentials.env"]
    assert "credentials.env" in (MANIFESTS / ".gitignore").read_text().split()
    assert not (MANIFESTS / "credentials.env").exists() or "credentials.env" in (MANIFESTS / ".gitignore").read_text()
    refs = set()
    for doc in docs:
        for found in re.findall(r"secretKeyRef': \{'name': '([^']+)', 'key': '([^']+)'", str(doc)):
            refs.add(found)
    repo = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"][co.ARTIFACT_KEY])["s3"]
    refs |= {
        (repo["accessKeySecret"]["name"], repo["accessKeySecret"]["key"]),
        (repo["secretKeySecret"]["name"], repo["secretKeySecret"]["key"]),
    }
    assert refs == {(co.CREDENTIALS_SECRET, co.ACCESS_KEY), (co.CREDENTIALS_SECRET, co.SECRET_KEY)}
    # the README tells how to write the file with exactly these keys
    readme = (MANIFESTS / "README.md").read_text()
    assert f"{co.ACCESS_KEY}=" in readme and f"{co.SECRET_KEY}=" in readme


def test_no_credentials_in_any_shipped_file() -> None:
    for path in sorted(MANIFESTS.iterdir()):
        text = path.read_text()
        for doc in yaml.safe_load_all(text) if path.suffix == ".yaml" else []:
            assert doc.get("kind") != "Secret", f"{path.name} ships a Secret"
            for env in _all_env(doc):
                if re.search(r"USER|PASSWORD|KEY|SECRET", env["name"]) and env["name"] != "MC_HOST_expkit":
                    assert "valueFrom" in env and "value" not in env, f"{path.name}: {env['name']} has a literal value"
        assert "minioadmin" not in text
        assert not re.search(r"(?i)(password|secret_?key|access_?key)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{12,}", text), path


def _all_env(doc: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "env" and isinstance(v, list):
                found += [e for e in v if isinstance(e, dict)]
            else:
                found += _all_env(v)
    elif isinstance(doc, list):
        for item in doc:
            found += _all_env(item)
    return found


def test_the_pinned_minio_image_is_a_digest_with_a_comment_saying_why() -> None:
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.[0-9TZ-]+@sha256:[0-9a-f]{64}", co.MINIO_IMAGE)
    text = (MANIFESTS / "deployment.yaml").read_text()
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.strip().startswith("image:"))
    comment = " ".join(line.strip() for line in lines[i - 4 : i])
    assert "stopped publishing" in comment and "digest" in comment and "--minio-image" in comment
    assert co.MINIO_IMAGE in text and co.MINIO_IMAGE in (MANIFESTS / "bucket-job.yaml").read_text()


# ---------------------------------------------------------------------------------------------
# Strict validation of everything shipped and generated
# ---------------------------------------------------------------------------------------------

VARIANTS = {
    "defaults": co.InstallOptions(),
    "distributed-4": co.InstallOptions(namespace="team-b", distributed=4, storage_class="fast-ssd"),
    "distributed-16": co.InstallOptions(
        namespace="lab", distributed=16, storage_size="1Ti", cluster_domain="k8s.local"
    ),
    "registry": co.InstallOptions(
        namespace="alice", bucket="alice.results", registry_server="ghcr.io", registry_username="alice"
    ),
}


def test_every_static_manifest_validates_strictly() -> None:
    _, docs = load_kustomization()
    assert len(docs) == 10
    for doc in docs:
        validate_strict(doc)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_generated_object_validates_strictly(variant: str) -> None:
    opts = VARIANTS[variant]
    password = "reg-pass-123456" if opts.registry_server else None
    objs = co.desired_objects(opts, TEST_CREDS, registry_password=password)
    for obj in objs:
        validate_strict(obj)
    # what --dry-run prints validates too, once parsed back
    for doc in yaml.safe_load_all(cl.dry_run_yaml(opts, registry_password=password)):
        validate_strict(doc)


# ---------------------------------------------------------------------------------------------
# Go's YAML 1.1 booleans: every such string is quoted
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def boolean_keys() -> frozenset[str]:
    """Every property that is a boolean somewhere in the Kubernetes API, plus Argo's and kustomize's."""
    definitions, _ = _definitions(VERSIONS[-1])
    keys: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                t = prop.get("type") if isinstance(prop, dict) else None
                if t == "boolean" or (isinstance(t, list) and "boolean" in t):
                    keys.add(name)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(definitions)
    return frozenset(keys | {"insecure", "disableNameSuffixHash", "immutable"})


def unquoted_go_booleans(text: str, where: str) -> list[str]:
    """Plain (unquoted) scalars Go reads as booleans where no boolean is meant: ``y``/``no``/``off``...
    anywhere, ``true``/``false`` unless under a key that is a boolean. Nested YAML in strings (ConfigMap
    data, literal blocks) is scanned too."""
    problems: list[str] = []

    def scalar(node: yaml.ScalarNode, key: str | None) -> None:
        if node.style is None and node.value in co.GO_YAML_BOOLS:
            if node.value.lower() in ("true", "false") and key in boolean_keys():
                return
            problems.append(
                f"{where}:{node.start_mark.line + 1}: unquoted {node.value!r}" + (f" under {key!r}" if key else "")
            )
        elif node.style in ("|", ">") or "\n" in node.value:
            try:
                for inner in yaml.compose_all(node.value):
                    walk(inner, None, f"{where}:{node.start_mark.line + 1}>")
            except yaml.YAMLError:
                pass

    def walk(node: Any, key: str | None, _w: str = "") -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.style is None and k.value in co.GO_YAML_BOOLS:
                        problems.append(f"{where}:{k.start_mark.line + 1}: unquoted key {k.value!r}")
                    walk(v, k.value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, key)
        elif isinstance(node, yaml.ScalarNode):
            scalar(node, key)

    for doc in yaml.compose_all(text):
        walk(doc, None)
    return problems


def test_the_scan_finds_what_go_would_read_as_booleans() -> None:
    text = (
        "a: y\nb: 'n'\nenv: [{name: X, value: off}]\nreadOnlyRootFilesystem: true\nname: true\nOn: 1\n"
        "data:\n  k: |\n    insecure: true\n    mode: No\n"
    )
    found = unquoted_go_booleans(text, "t")
    assert [p.split(": ", 1)[1] for p in found] == [
        "unquoted 'y' under 'a'",
        "unquoted 'off' under 'value'",
        "unquoted 'true' under 'name'",
        "unquoted key 'On'",
        "unquoted 'No' under 'mode'",
    ]


def test_to_yaml_quotes_every_go_boolean_word_and_reads_back_as_strings() -> None:
    words = sorted(co.GO_YAML_BOOLS)
    text = co.to_yaml([{"values": words, **{w: w for w in words}}])
    assert unquoted_go_booleans(text, "emitted") == []
    assert yaml.safe_load(text) == {"values": words, **{w: w for w in words}}
    # real booleans stay booleans
    assert co.to_yaml([{"insecure": True}]).strip() == "insecure: true"


def _shipped_yaml() -> list[tuple[str, str]]:
    files = [(p.name, p.read_text()) for p in sorted(MANIFESTS.glob("*.yaml"))]
    for doc in DOCS:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.DOTALL)):
            files.append((f"{doc.name}#yaml-{i}", block))
    return files


def test_every_shipped_yaml_file_quotes_go_booleans() -> None:
    files = _shipped_yaml()
    assert len(files) >= 9 and any("cluster.md" in name for name, _ in files)
    problems = [p for name, text in files for p in unquoted_go_booleans(text, name)]
    assert problems == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_emitted_yaml_quotes_go_booleans(variant: str) -> None:
    opts = VARIANTS[variant]
    text = cl.dry_run_yaml(opts, registry_password="pw-123456" if opts.registry_server else None)
    assert 'value: "off"' in text  # MINIO_BROWSER / MINIO_UPDATE: a string, quoted
    assert unquoted_go_booleans(text, f"dry-run {variant}") == []
    assert unquoted_go_booleans(co.artifact_repository_text(opts), "artifact repository") == []


# ---------------------------------------------------------------------------------------------
# What the objects say
# ---------------------------------------------------------------------------------------------


def _pod_specs(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_runs_non_root_with_a_read_only_root_and_no_capabilities(variant: str) -> None:
    opts = VARIANTS[variant]
    objs = co.desired_objects(opts, TEST_CREDS, registry_password="pw" if opts.registry_server else None)
    specs = _pod_specs(objs)
    assert len(specs) == 2
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0 and pod["fsGroup"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert c["image"] == VARIANTS[variant].minio_image and "@sha256:" in c["image"]
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            # a read-only root needs a writable HOME and config directory: the /tmp emptyDir
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts["/tmp"] == "tmp" and {"name": "HOME", "value": "/tmp"} in c["env"]
            assert any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"])


def test_minio_probes_hit_the_health_endpoints_on_the_s3_port() -> None:
    (c,) = co.deployment(co.InstallOptions())["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/minio/health/ready", "port": "s3"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/minio/health/live", "port": "s3"}
    assert {"name": "s3", "containerPort": co.MINIO_PORT, "protocol": "TCP"} in c["ports"]
    assert c["args"][:2] == ["server", "/data"]


def test_standalone_minio_recreates_on_its_read_write_once_volume() -> None:
    opts = co.InstallOptions(storage_size="50Gi", storage_class="standard-rwo")
    dep, claim, svc = co.deployment(opts), co.pvc(opts), co.service(opts)
    assert dep["spec"]["strategy"] == {"type": "Recreate"} and dep["spec"]["replicas"] == 1
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "50Gi"}},
        "storageClassName": "standard-rwo",
    }
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert svc["spec"]["type"] == "ClusterIP"
    assert (
        svc["spec"]["selector"]
        == dep["spec"]["selector"]["matchLabels"]
        == dep["spec"]["template"]["metadata"]["labels"]
    )


@pytest.mark.parametrize("n", [4, 5, 6, 8, 16])
def test_distributed_minio_spreads_one_erasure_set_over_n_nodes(n: int) -> None:
    opts = co.InstallOptions(namespace="team", distributed=n)
    objs = {(o["kind"], o["metadata"]["name"]): o for o in co.desired_objects(opts, TEST_CREDS)}
    sts = objs[("StatefulSet", "minio")]
    assert ("Deployment", "minio") not in objs and ("PersistentVolumeClaim", co.MINIO_PVC) not in objs
    assert sts["spec"]["replicas"] == n and sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == co.MINIO_HEADLESS
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[1] == f"http://minio-{{0...{n - 1}}}.minio-hl.team.svc.cluster.local/data"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    hl = objs[("Service", co.MINIO_HEADLESS)]
    assert hl["spec"]["clusterIP"] == "None" and hl["spec"]["publishNotReadyAddresses"] is True
    budget = objs[("PodDisruptionBudget", "minio")]["spec"]["maxUnavailable"]
    # losing `budget` nodes keeps write quorum; losing one more would not
    parity = co.parity(n)
    quorum = n - parity + (1 if n - parity == parity else 0)
    assert budget >= 1 and n - budget >= quorum and n - budget - 1 < quorum


def test_workflow_rbac_is_the_emissary_minimum_and_nothing_is_a_wildcard() -> None:
    objs = co.desired_objects(co.InstallOptions(namespace="x"), TEST_CREDS)
    role = next(o for o in objs if o["kind"] == "Role" and o["metadata"]["name"] == co.WORKFLOW_SA)
    assert role["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}
    ]
    binding = next(o for o in objs if o["kind"] == "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": co.WORKFLOW_SA}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": co.WORKFLOW_SA, "namespace": "x"}]
    assert not any(o["kind"].startswith("Cluster") for o in objs)
    for o in objs:
        for rule in o.get("rules") or []:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], o["metadata"]["name"]
    submitter = next(o for o in objs if o["metadata"]["name"] == co.SUBMITTER_ROLE)
    secret_rule = next(r for r in submitter["rules"] if r["resources"] == ["secrets"])
    assert secret_rule["verbs"] == ["get"] and set(secret_rule["resourceNames"]) == {
        co.CREDENTIALS_SECRET,
        co.PULL_SECRET,
    }


def test_the_artifact_repository_points_argo_at_this_namespaces_minio() -> None:
    opts = co.InstallOptions(namespace="alice", bucket="alice-runs")
    cm = co.artifact_repositories(opts)
    assert cm["metadata"]["name"] == "artifact-repositories"
    assert cm["metadata"]["annotations"] == {"workflows.argoproj.io/default-artifact-repository": "default-v1"}
    repo = yaml.safe_load(cm["data"]["default-v1"])
    assert repo == {
        "s3": {
            "bucket": "alice-runs",
            "endpoint": "minio.alice.svc:9000",
            "insecure": True,
            "accessKeySecret": {"name": co.CREDENTIALS_SECRET, "key": "accesskey"},
            "secretKeySecret": {"name": co.CREDENTIALS_SECRET, "key": "secretkey"},
        }
    }
    from expkit.executors.argo.render import ARTIFACT_REPOSITORY_CONFIGMAP

    assert cm["metadata"]["name"] == ARTIFACT_REPOSITORY_CONFIGMAP  # what rendered workflows reference


def test_the_bucket_job_gets_its_keys_from_the_secret_not_from_the_object() -> None:
    opts = co.InstallOptions(namespace="n1", bucket="b-1")
    job = co.bucket_job(opts)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["mc", "--config-dir", "/tmp/.mc", "mb", "--ignore-existing", "expkit/b-1"]
    env = c["env"]
    names = [e["name"] for e in env]
    host = next(e for e in env if e["name"] == "MC_HOST_expkit")
    refs = re.findall(r"\$\(([A-Z_]+)\)", host["value"])
    assert host["value"] == "http://$(S3_ACCESS_KEY):$(S3_SECRET_KEY)@minio.n1.svc:9000"
    for ref in refs:  # the kubelet expands $(VAR) only from variables defined before
        assert names.index(ref) < names.index("MC_HOST_expkit")
        assert next(e for e in env if e["name"] == ref)["valueFrom"]["secretKeyRef"]["name"] == co.CREDENTIALS_SECRET
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] >= 6


def test_credentials_are_random_hidden_and_redacted() -> None:
    a, b = co.generate_credentials(), co.generate_credentials()
    assert a.access_key != b.access_key and a.secret_key != b.secret_key
    assert len(a.secret_key) >= 40 and re.fullmatch(r"[A-Za-z0-9_-]+", a.access_key + a.secret_key)
    assert a.secret_key not in repr(a) and a.access_key not in repr(a)
    secret = co.credentials_secret(co.InstallOptions(), a)
    assert co.credentials_from_secret(secret) == a
    assert base64.b64decode(secret["data"]["secretkey"]).decode() == a.secret_key
    shown = co.to_yaml(
        [
            co.redact(o)
            for o in co.desired_objects(
                co.InstallOptions(registry_server="r.io", registry_username="u"),
                a,
                registry_password="hunter2-registry",
            )
        ]
    )
    for value in (a.access_key, a.secret_key, "hunter2-registry", secret["data"]["secretkey"]):
        assert value not in shown
    assert shown.count("<redacted>") == 3


def test_the_pull_secret_is_a_docker_config_for_the_registry() -> None:
    opts = co.InstallOptions(namespace="x", registry_server="registry.example.org:5000", registry_username="bot")
    s = co.pull_secret(opts, "t0ken")
    assert s["type"] == "kubernetes.io/dockerconfigjson"
    doc = json.loads(base64.b64decode(s["data"][".dockerconfigjson"]))
    entry = doc["auths"]["registry.example.org:5000"]
    assert entry["username"] == "bot" and entry["password"] == "t0ken"
    assert base64.b64decode(entry["auth"]).decode() == "bot:t0ken"
    assert co.pull_secret(opts, "t0ken") == s  # deterministic: a re-run compares equal
    sa = co.desired_objects(opts, TEST_CREDS, registry_password="t0ken")
    assert next(o for o in sa if o["kind"] == "ServiceAccount")["imagePullSecrets"] == [{"name": co.PULL_SECRET}]


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"namespace": "Team_A"}, "--namespace"),
        ({"bucket": "My_Bucket"}, "--bucket"),
        ({"bucket": "192.168.1.10"}, "--bucket"),
        ({"bucket": "ab"}, "--bucket"),
        ({"storage_size": "lots"}, "--storage-size"),
        ({"storage_size": "0Gi"}, "--storage-size"),
        ({"distributed": 3}, "--distributed"),
        ({"distributed": 17}, "--distributed"),
        ({"minio_image": "minio/minio:latest"}, "--minio-image"),
        ({"registry_server": "ghcr.io"}, "--registry-server and --registry-username"),
        ({"registry_server": "http://x y", "registry_username": "u"}, "--registry-server"),
    ],
)
def test_bad_options_are_refused_naming_the_flag(changes: dict[str, Any], flag: str) -> None:
    with pytest.raises(InputError) as info:
        co.InstallOptions(**changes).validate()
    assert str(info.value).startswith(flag) and "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_differences_ignore_what_the_server_adds_and_name_what_changed() -> None:
    desired = co.comparable(co.deployment(co.InstallOptions()))
    live = json.loads(json.dumps(co.deployment(co.InstallOptions())))
    live["metadata"].update(uid="u-1", resourceVersion="9", generation=3)
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    live["spec"]["revisionHistoryLimit"] = 10
    live["status"] = {"readyReplicas": 1}
    assert co.differences(desired, live) == []
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "minio/minio:latest"
    live["spec"]["template"]["spec"]["volumes"].pop()
    assert co.differences(desired, live) == ["spec.template.spec.containers[0].image", "spec.template.spec.volumes"]
