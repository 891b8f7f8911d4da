"""``expkit pin``: image references, credentials, and pinning against real registries on loopback.

The registries are the CNCF distribution registry (``/usr/bin/docker-registry``) started by
``tests/registry.py``; the tests push tiny images through the registry API and check that the pinned
digest is the sha256 of the manifest bytes they pushed. Tests that need a registry skip when the
binary is missing (``apt-get install docker-registry``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import stat
import uuid
from pathlib import Path

import pytest
from registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    DigestStrippingProxy,
    NotARegistry,
    RegistryServer,
    find_registry,
    free_port,
)

from expkit.core.errors import ExpkitError, InputError, SpecError
from expkit.reproduce.credentials import Credentials
from expkit.reproduce.image_ref import is_loopback_host, parse_image_reference
from expkit.reproduce.pin import check_spec_file, pin_spec_file
from expkit.reproduce.registry import (
    RegistryAuthError,
    RegistryClient,
    RegistryProtocolError,
    RegistryTLSError,
    RegistryUnreachable,
    RepositoryNotFound,
    TagNotFound,
    parse_challenge,
    resolve_digest,
)
from expkit.spec import load_spec

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64

SPEC = """\
# A paper's experiment: comments, blank lines and odd spacing must survive `expkit pin`.
apiVersion: expkit/v1
kind: Experiment
metadata:
  name: pin-test      # aligned comment


spec:
  # the image; expkit pin resolves it
  image:   {image}   # trailing comment
  command: [python, "run.py"]
  algorithms:
    - name: a
  datasets: [d1]
  replicates: 2
  metric: {{name: score, goal: maximize}}
"""


def write_spec(tmp_path: Path, image: str, *, template: str = SPEC, newline: str = "\n") -> Path:
    path = tmp_path / f"experiment-{uuid.uuid4().hex[:6]}.yml"
    path.write_bytes(template.format(image=image).replace("\n", newline).encode())
    return path


def no_creds(tmp_path: Path) -> dict[str, str]:
    """An environment with no registry credentials (an empty Docker config dir)."""
    empty = tmp_path / "no-docker-config"
    empty.mkdir(exist_ok=True)
    return {"DOCKER_CONFIG": str(empty), "HOME": str(tmp_path)}


def docker_config(tmp_path: Path, data: dict) -> dict[str, str]:
    cfg = tmp_path / f"docker-{uuid.uuid4().hex[:6]}"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(cfg), "HOME": str(tmp_path)}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def repo_name() -> str:
    return f"expkit/t{uuid.uuid4().hex[:8]}"


# -- references (no network) ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reference", "domain", "registry_host", "repository", "tag", "digest"),
    [
        ("python", "docker.io", "registry-1.docker.io", "library/python", None, None),
        ("python:3.12-slim", "docker.io", "registry-1.docker.io", "library/python", "3.12-slim", None),
        ("docker.io/python:3", "docker.io", "registry-1.docker.io", "library/python", "3", None),
        ("index.docker.io/library/python", "docker.io", "registry-1.docker.io", "library/python", None, None),
        ("myuser/tool:1.0", "docker.io", "registry-1.docker.io", "myuser/tool", "1.0", None),
        ("ghcr.io/org/sub/repo:v1", "ghcr.io", "ghcr.io", "org/sub/repo", "v1", None),
        ("localhost:5000/x", "localhost:5000", "localhost:5000", "x", None, None),
        ("localhost/x:Latest_1", "localhost", "localhost", "x", "Latest_1", None),
        (f"127.0.0.1:5000/a/b:tag@{DIGEST_A}", "127.0.0.1:5000", "127.0.0.1:5000", "a/b", "tag", DIGEST_A),
        (f"python@{DIGEST_B}", "docker.io", "registry-1.docker.io", "library/python", None, DIGEST_B),
        ("[::1]:5000/x:y", "[::1]:5000", "[::1]:5000", "x", "y", None),
        ("Registry.Example.com/a__b/c-d.e:t", "Registry.Example.com", "Registry.Example.com", "a__b/c-d.e", "t", None),
    ],
)
def test_parse_image_reference(reference, domain, registry_host, repository, tag, digest):
    ref = parse_image_reference(reference)
    assert (ref.domain, ref.registry, ref.repository, ref.tag, ref.digest) == (
        domain,
        registry_host,
        repository,
        tag,
        digest,
    )
    assert ref.pinned == (digest is not None)


@pytest.mark.parametrize(
    "reference",
    [
        "",
        " python",
        "Python",
        "python:",
        "python:-x",
        "python@sha256:abc",
        f"python@md5:{'a' * 32}",
        f"python@sha256:{'A' * 64}",
        "a//b",
        "repo:tag with space",
        "ghcr.io/Org/repo",
        "-x/y",
    ],
)
def test_parse_image_reference_rejects(reference):
    with pytest.raises(InputError):
        parse_image_reference(reference)


@pytest.mark.parametrize(
    ("reference", "pinned"),
    [
        ("python", f"python:latest@{DIGEST_A}"),
        ("python:3.12-slim", f"python:3.12-slim@{DIGEST_A}"),
        ("localhost:5000/x", f"localhost:5000/x:latest@{DIGEST_A}"),
        (f"ghcr.io/o/r:v1@{DIGEST_B}", f"ghcr.io/o/r:v1@{DIGEST_A}"),
    ],
)
def test_output_form_keeps_name_and_tag(reference, pinned):
    assert parse_image_reference(reference).with_digest(DIGEST_A) == pinned


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("LOCALHOST:1", True),
        ("127.0.0.1:5000", True),
        ("127.3.2.1", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("10.0.0.1:5000", False),
        ("registry.example.com", False),
        ("localhost.example.com:5000", False),
        ("128.0.0.1", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback


def test_parse_challenge():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="x y"') == ("basic", {"realm": "x y"})


# -- credentials (no network) -----------------------------------------------------------------------------
def test_credentials_from_docker_config(tmp_path):
    env = docker_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser:hub:pass")},
                "ghcr.io": {"username": "gh", "password": "ghpw"},
                "http://localhost:5000": {"auth": b64("loc:pw")},
                "broken.example": {"auth": "%%%not base64"},
            }
        },
    )
    creds = Credentials(env)
    hub = creds.for_registry("docker.io")
    assert (hub.username, hub.password) == ("hubuser", "hub:pass")
    assert "index.docker.io" in hub.source and "hub:pass" not in hub.source and "hub:pass" not in repr(hub)
    assert creds.for_registry("ghcr.io").username == "gh"
    assert creds.for_registry("localhost:5000").username == "loc"
    assert creds.for_registry("broken.example") is None
    assert creds.for_registry("quay.io") is None
    assert any("broken.example" in note for note in creds.notes)


def test_environment_credentials_take_precedence_and_can_be_scoped(tmp_path):
    env = docker_config(tmp_path, {"auths": {"ghcr.io": {"auth": b64("file:filepw")}}})
    env.update({"EXPKIT_REGISTRY_USERNAME": "envuser", "EXPKIT_REGISTRY_PASSWORD": "envpw"})
    assert Credentials(env).for_registry("ghcr.io").username == "envuser"
    assert Credentials(env).for_registry("quay.io").username == "envuser"
    env["EXPKIT_REGISTRY"] = "https://quay.io"
    assert Credentials(env).for_registry("ghcr.io").username == "file"
    assert Credentials(env).for_registry("quay.io").username == "envuser"
    with pytest.raises(InputError, match="EXPKIT_REGISTRY_PASSWORD"):
        Credentials({"EXPKIT_REGISTRY_USERNAME": "u", "DOCKER_CONFIG": env["DOCKER_CONFIG"]})


def test_credential_helpers_are_not_run_but_explained(tmp_path):
    env = docker_config(tmp_path, {"credHelpers": {"gcr.io": "gcloud"}, "auths": {"gcr.io": {}}})
    creds = Credentials(env)
    assert creds.for_registry("gcr.io") is None
    assert "docker-credential-gcloud" in creds.note_for("gcr.io")
    assert creds.note_for("quay.io") is None
    store = Credentials(docker_config(tmp_path, {"credsStore": "desktop"}))
    assert "docker-credential-desktop" in store.note_for("quay.io")


# -- spec files without network ---------------------------------------------------------------------------
def test_check_lists_unpinned_images(tmp_path):
    unpinned = check_spec_file(write_spec(tmp_path, "python:3.12"))
    assert [(f.field, f.line, f.value) for f in unpinned] == [("spec.image", 10, "python:3.12")]
    assert unpinned[0].describe() == "spec.image (line 10): python:3.12 is not pinned by digest"
    assert check_spec_file(write_spec(tmp_path, f"python:3.12@{DIGEST_A}")) == []
    assert check_spec_file(write_spec(tmp_path, f"python@{DIGEST_A}")) == []


def test_already_pinned_is_left_alone_without_asking_any_registry(tmp_path):
    # The registry in the reference is a closed port: any request would fail.
    image = f"127.0.0.1:{free_port()}/x/y:1@{DIGEST_A}"
    path = write_spec(tmp_path, image)
    before = path.read_bytes()
    result = pin_spec_file(path, environ=no_creds(tmp_path))
    assert path.read_bytes() == before
    assert not result.written and not result.changed
    assert [(i.action, i.before, i.after) for i in result.images] == [("already-pinned", image, image)]


@pytest.mark.parametrize(
    ("image_yaml", "message"),
    [
        ("42", "must be a string"),
        ("[a, b]", "must be a string"),
        ("|\n    python:3.12", "one line"),
        ('"python:3.12\\u0040x"', "one line"),
        ("Python:3", "not valid"),
    ],
)
def test_bad_image_fields_are_spec_errors(tmp_path, image_yaml, message):
    path = write_spec(tmp_path, image_yaml)
    with pytest.raises(SpecError, match=message) as err:
        check_spec_file(path)
    assert "spec.image" in str(err.value) and str(path) in str(err.value)
    assert err.value.line == 10


def test_missing_image_and_bad_yaml(tmp_path):
    path = tmp_path / "s.yml"
    path.write_text("spec:\n  command: [x]\n")
    with pytest.raises(SpecError, match="spec.image: missing"):
        check_spec_file(path)
    path.write_text("spec: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        pin_spec_file(path, environ=no_creds(tmp_path))
    with pytest.raises(InputError, match="no such file"):
        check_spec_file(tmp_path / "absent.yml")


# -- a real registry: anonymous, plain HTTP on loopback ---------------------------------------------------
def test_pin_single_manifest_preserves_everything_else(registry, tmp_path):
    repo = repo_name()
    pushed = registry.push_image(repo, "v1")
    assert pushed.digest == "sha256:" + hashlib.sha256(pushed.body).hexdigest()
    image = f"{registry.host}/{repo}:v1"
    path = write_spec(tmp_path, image)
    path.chmod(0o640)
    before = path.read_bytes()

    result = pin_spec_file(path, environ=no_creds(tmp_path))

    pinned = f"{image}@{pushed.digest}"
    after = path.read_bytes()
    assert after == before.replace(f"image:   {image}   #".encode(), f"image:   {pinned}   #".encode())
    assert after != before
    assert result.written and result.changed
    assert [(i.field, i.line, i.before, i.after, i.action, i.media_type) for i in result.images] == [
        ("spec.image", 10, image, pinned, "pinned", OCI_MANIFEST)
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left
    loaded = load_spec(path)
    assert loaded.experiment.spec.image == pinned and loaded.warnings == ()
    assert check_spec_file(path) == []
    # Pinning again is a no-op: the file is not rewritten.
    mtime = path.stat().st_mtime_ns
    again = pin_spec_file(path, environ=no_creds(tmp_path))
    assert not again.written and path.stat().st_mtime_ns == mtime


def test_pin_multi_arch_index_uses_the_index_digest(registry, tmp_path):
    repo = repo_name()
    amd = registry.push_image(repo, None, arch="amd64")
    arm = registry.push_image(repo, None, arch="arm64")
    index = registry.push_index(repo, "2024.1", [(amd, "amd64"), (arm, "arm64")])
    path = write_spec(tmp_path, f"{registry.host}/{repo}:2024.1")
    result = pin_spec_file(path, environ=no_creds(tmp_path))
    (img,) = result.images
    assert img.after == f"{registry.host}/{repo}:2024.1@{index.digest}"
    assert index.digest == "sha256:" + hashlib.sha256(index.body).hexdigest()
    assert index.digest not in (amd.digest, arm.digest)
    assert img.media_type == OCI_INDEX and img.is_index
    assert img.describe() == f"spec.image (line 10): {img.before} -> {img.after} (multi-arch index)"


def test_quoting_crlf_and_implicit_latest(registry, tmp_path):
    repo = repo_name()
    latest = registry.push_image(repo, "latest")
    v2 = registry.push_image(repo, "v2")
    for quoted, expected in (
        (f"'{registry.host}/{repo}'", f"'{registry.host}/{repo}:latest@{latest.digest}'"),
        (f'"{registry.host}/{repo}:v2"', f'"{registry.host}/{repo}:v2@{v2.digest}"'),
    ):
        path = write_spec(tmp_path, quoted, newline="\r\n")
        before = path.read_bytes()
        pin_spec_file(path, environ=no_creds(tmp_path))
        assert path.read_bytes() == before.replace(quoted.encode(), expected.encode())
        assert path.read_bytes().count(b"\r\n") == before.count(b"\r\n")


def test_flow_mapping_spec_and_symlink(registry, tmp_path):
    repo = repo_name()
    pushed = registry.push_image(repo, "v1")
    real = tmp_path / "real.yml"
    real.write_text(f"spec: {{command: [x], image: {registry.host}/{repo}:v1, replicates: 1}}  # flow\n")
    link = tmp_path / "link.yml"
    link.symlink_to(real)
    pin_spec_file(link, environ=no_creds(tmp_path))
    assert link.is_symlink()
    assert real.read_text() == (
        f"spec: {{command: [x], image: {registry.host}/{repo}:v1@{pushed.digest}, replicates: 1}}  # flow\n"
    )


def test_refresh_and_dry_run(registry, tmp_path):
    repo = repo_name()
    old = registry.push_image(repo, "v1", note="old")
    path = write_spec(tmp_path, f"{registry.host}/{repo}:v1")
    pin_spec_file(path, environ=no_creds(tmp_path))
    new = registry.push_image(repo, "v1", note="new")  # the tag moves
    assert new.digest != old.digest
    pinned_old = path.read_bytes()
    assert pin_spec_file(path, environ=no_creds(tmp_path)).images[0].action == "already-pinned"
    dry = pin_spec_file(path, refresh=True, dry_run=True, environ=no_creds(tmp_path))
    assert not dry.written and path.read_bytes() == pinned_old
    assert dry.images[0].after.endswith(new.digest) and dry.images[0].action == "refreshed"
    result = pin_spec_file(path, refresh=True, environ=no_creds(tmp_path))
    assert result.written and path.read_bytes() == pinned_old.replace(old.digest.encode(), new.digest.encode())


def test_unknown_tag_and_repository(registry, tmp_path):
    repo = repo_name()
    registry.push_image(repo, "v1")
    path = write_spec(tmp_path, f"{registry.host}/{repo}:nope")
    before = path.read_bytes()
    with pytest.raises(TagNotFound) as err:
        pin_spec_file(path, environ=no_creds(tmp_path))
    assert str(err.value).startswith(f"tag nope not found in repository {repo} at registry {registry.host}")
    assert path.read_bytes() == before
    with pytest.raises(RepositoryNotFound, match=f"repository {repo}-missing not found at registry {registry.host}"):
        pin_spec_file(write_spec(tmp_path, f"{registry.host}/{repo}-missing:v1"), environ=no_creds(tmp_path))


def test_unreachable_registry_names_the_host(tmp_path):
    host = f"127.0.0.1:{free_port()}"
    path = write_spec(tmp_path, f"{host}/x/y:1")
    before = path.read_bytes()
    with pytest.raises(RegistryUnreachable) as err:
        pin_spec_file(path, environ=no_creds(tmp_path))
    assert host in str(err.value) and "refused" in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 1
    assert path.read_bytes() == before


def test_a_web_server_that_is_not_a_registry(tmp_path):
    server = NotARegistry()
    try:
        with pytest.raises(RegistryProtocolError, match="without a digest") as err:
            resolve_digest(f"{server.host}/x/y:1", client=RegistryClient(credentials=Credentials(no_creds(tmp_path))))
        assert server.host in str(err.value)
    finally:
        server.stop()


def test_digest_computed_from_the_body_when_the_header_is_missing(registry, tmp_path):
    repo = repo_name()
    amd = registry.push_image(repo, None, arch="amd64")
    index = registry.push_index(repo, "multi", [(amd, "amd64")])
    proxy = DigestStrippingProxy(registry)
    try:
        client = RegistryClient(credentials=Credentials(no_creds(tmp_path)))
        assert resolve_digest(f"{proxy.host}/{repo}:multi", client=client) == index.digest
        assert proxy.methods == ["HEAD", "GET"]
    finally:
        proxy.stop()


def test_plain_http_needs_loopback_or_insecure(tmp_path):
    """Only loopback hosts get plain HTTP: a token realm on plain HTTP elsewhere is refused, never contacted."""
    if find_registry() is None:
        pytest.skip("no container registry binary (/usr/bin/docker-registry): apt-get install docker-registry")
    server = RegistryServer(tmp_path / "reg", auth="token", token_realm="http://tokens.example.invalid/token")
    server.start()
    try:
        path = write_spec(tmp_path, f"{server.host}/x/y:1")
        before = path.read_bytes()
        with pytest.raises(RegistryAuthError, match=r"token server on plain HTTP \(tokens.example.invalid\)"):
            pin_spec_file(path, environ=no_creds(tmp_path))
        assert path.read_bytes() == before
    finally:
        server.stop()


# -- Basic auth (htpasswd) --------------------------------------------------------------------------------
def test_basic_auth(basic_registry, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    repo = repo_name()
    pushed = basic_registry.push_image(repo, "v1")
    image = f"{basic_registry.host}/{repo}:v1"
    user, password = basic_registry.username, basic_registry.password

    with pytest.raises(RegistryAuthError) as err:
        pin_spec_file(write_spec(tmp_path, image), environ=no_creds(tmp_path))
    assert basic_registry.host in str(err.value) and "EXPKIT_REGISTRY_USERNAME" in str(err.value)

    env = docker_config(tmp_path, {"auths": {f"http://{basic_registry.host}": {"auth": b64(f"{user}:{password}")}}})
    result = pin_spec_file(write_spec(tmp_path, image), environ=env)
    assert result.images[0].after == f"{image}@{pushed.digest}"

    env = {**no_creds(tmp_path), "EXPKIT_REGISTRY_USERNAME": user, "EXPKIT_REGISTRY_PASSWORD": password}
    assert pin_spec_file(write_spec(tmp_path, image), environ=env).images[0].after.endswith(pushed.digest)

    wrong = "wrong-" + password
    env = docker_config(tmp_path, {"auths": {basic_registry.host: {"auth": b64(f"{user}:{wrong}")}}})
    with pytest.raises(RegistryAuthError) as err:
        pin_spec_file(write_spec(tmp_path, image), environ=env)
    message = str(err.value)
    assert basic_registry.host in message and env["DOCKER_CONFIG"] in message
    for secret in (password, wrong, b64(f"{user}:{wrong}")):
        assert secret not in message and secret not in caplog.text


# -- Bearer tokens (registry auth: token) -----------------------------------------------------------------
def test_bearer_token_auth(token_registry, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    repo = repo_name()
    pushed = token_registry.push_image(repo, "v1")
    image = f"{token_registry.host}/{repo}:v1"
    tokens = token_registry.token_server
    tokens.requests.clear()

    env = {
        **no_creds(tmp_path),
        "EXPKIT_REGISTRY_USERNAME": token_registry.username,
        "EXPKIT_REGISTRY_PASSWORD": token_registry.password,
    }
    result = pin_spec_file(write_spec(tmp_path, image), environ=env)
    assert result.images[0].after == f"{image}@{pushed.digest}"
    (req,) = tokens.requests  # one token, reused for the GET after HEAD if any
    assert req["authorization"] == "Basic"
    assert req["query"]["scope"] == [f"repository:{repo}:pull"]
    assert req["query"]["service"] == ["expkit-test-registry"]

    with pytest.raises(RegistryAuthError) as err:  # anonymous token: no access to this repository
        pin_spec_file(write_spec(tmp_path, image), environ=no_creds(tmp_path))
    assert f"denied anonymous access to repository {repo}" in str(err.value)
    assert token_registry.host in str(err.value)

    bad = {**env, "EXPKIT_REGISTRY_PASSWORD": "not-" + token_registry.password}
    with pytest.raises(RegistryAuthError) as err:
        pin_spec_file(write_spec(tmp_path, image), environ=bad)
    assert "rejected the credentials from environment variables" in str(err.value)
    assert tokens.host in str(err.value)
    assert bad["EXPKIT_REGISTRY_PASSWORD"] not in str(err.value) + caplog.text
    assert token_registry.password not in caplog.text


# -- TLS --------------------------------------------------------------------------------------------------
def test_tls_registry(tls_registry, tmp_path, monkeypatch):
    repo = repo_name()
    pushed = tls_registry.push_image(repo, "v1")
    image = f"{tls_registry.host}/{repo}:v1"
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(RegistryTLSError) as err:
        pin_spec_file(write_spec(tmp_path, image), environ=no_creds(tmp_path))
    assert tls_registry.host in str(err.value) and "--insecure" in str(err.value)

    result = pin_spec_file(write_spec(tmp_path, image), insecure=True, environ=no_creds(tmp_path))
    assert result.images[0].after == f"{image}@{pushed.digest}"

    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_file))
    result = pin_spec_file(write_spec(tmp_path, image), environ=no_creds(tmp_path))
    assert result.images[0].after == f"{image}@{pushed.digest}"


def test_errors_are_expkit_errors_with_one_line():
    for cls in (
        TagNotFound,
        RepositoryNotFound,
        RegistryUnreachable,
        RegistryAuthError,
        RegistryTLSError,
        RegistryProtocolError,
    ):
        assert issubclass(cls, ExpkitError) and cls.exit_code == 1
