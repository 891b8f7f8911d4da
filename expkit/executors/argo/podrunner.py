"""The pod-side cell runner of a batched Argo workflow (``kubernetes.cellsPerPod`` > 1) — its text and its format.

A batch pod runs the replicates of one algorithm x dataset one after another. Its container runs
:data:`RUNNER_SCRIPT` with the image's Python (``<python> -c RUNNER_SCRIPT <the spec's argv>``): the
script needs nothing but the standard library (Python >= 3.6), so the image needs no expkit. For each
replicate it

* substitutes the replicate, the seed and the output directory into the argv (the other placeholders
  were already resolved by Argo, once for the whole pod) and into the run contract's ``EXPKIT_*``
  variables — the seed is the one :mod:`expkit.runs.matrix` computes;
* runs the command with no shell in a fresh ``<output>/<replicate>/`` directory, its output in that
  directory's ``log.txt`` (as a local run's), killed after ``spec.timeout`` and retried up to
  ``spec.retries`` times;
* appends the cell's outcome to the status file (one JSON list, rewritten after every cell), which Argo
  keeps as the pod's output parameter :data:`STATUS_PARAMETER` and :mod:`~expkit.executors.argo.status`
  turns into one ``run.json`` record per cell.

A failed or timed-out replicate does not stop the others; the pod exits 1 when any failed (so the
workflow reports the failure), 0 otherwise. Argo uploads ``<output>/`` as the artifact
``<run-id>/runs/<algorithm>/<dataset>/``: every replicate lands in its own cell directory, the store
layout of an unbatched run.

Status entries (short keys: they live in the Workflow object, see docs/argo.md): ``r`` replicate,
``x`` exit code of the last attempt (``null``: timed out or could not start), ``m`` the reason of a
failure (``null`` on success), ``t0``/``t1`` start and end (Unix seconds), ``h`` the attempts as
``[exit code, seconds, reason]``.
"""

from __future__ import annotations

from expkit.runs.matrix import SEED_MODULUS, SEED_STRIDE

#: The markers the runner replaces in each argv item, per replicate (private-use characters: render
#: refuses them in the spec's command line).
REPLICATE_MARK = "\ue000R\ue001"
SEED_MARK = "\ue000S\ue001"
OUTPUT_MARK = "\ue000O\ue001"
#: The environment the runner reads (and removes before a cell starts).
BATCH_ENV = (
    "EXPKIT_BATCH_REPLICATES",
    "EXPKIT_BATCH_DATASET_SEED",
    "EXPKIT_BATCH_TIMEOUT",
    "EXPKIT_BATCH_RETRIES",
    "EXPKIT_BATCH_OUTPUT",
    "EXPKIT_BATCH_STATUS",
)
#: The output parameter of a batch pod that carries its cells' outcomes.
STATUS_PARAMETER = "cells"

RUNNER_SCRIPT = (
    """\
import json, os, shutil, signal, subprocess, sys, time
E = os.environ
reps = json.loads(E.pop("EXPKIT_BATCH_REPLICATES"))
ds_seed = int(E.pop("EXPKIT_BATCH_DATASET_SEED"))
timeout = float(E.pop("EXPKIT_BATCH_TIMEOUT") or 0) or None
retries = int(E.pop("EXPKIT_BATCH_RETRIES") or 0)
root = E.pop("EXPKIT_BATCH_OUTPUT")
status_path = E.pop("EXPKIT_BATCH_STATUS")
template = sys.argv[1:]
alg, ds = E["EXPKIT_ALGORITHM"], E["EXPKIT_DATASET"]
done = []
def save():
    tmp = status_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(done, fh, separators=(",", ":"))
    os.replace(tmp, status_path)
def attempt(argv, env, out):
    with open(os.path.join(out, "log.txt"), "wb") as log:
        try:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            return None, "could not start the command: %s" % err
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            return None, "timed out after %gs (killed)" % timeout
    return code, (None if code == 0 else "exit code %d" % code)
save()
for rep in reps:
    seed = (ds_seed + rep * SEED_STRIDE) % SEED_MODULUS
    out = os.path.join(root, str(rep))
    marks = (("REPLICATE_MARK", str(rep)), ("SEED_MARK", str(seed)), ("OUTPUT_MARK", out))
    argv = []
    for item in template:
        for mark, value in marks:
            item = item.replace(mark, value)
        argv.append(item)
    env = dict(E)
    cell = "%s/%s/%d" % (alg, ds, rep)
    env.update(EXPKIT_REPLICATE=str(rep), EXPKIT_SEED=str(seed), EXPKIT_OUTPUT_DIR=out, EXPKIT_CELL=cell)
    history, t0 = [], time.time()
    for n in range(retries + 1):
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        start = time.time()
        code, reason = attempt(argv, env, out)
        history.append([code, round(time.time() - start, 3), reason])
        with open(os.path.join(out, "log.txt"), "rb") as log:
            sys.stdout.write("==> %s attempt %d <==\\n" % (cell, n + 1))
            sys.stdout.flush()
            sys.stdout.buffer.write(log.read())
        sys.stdout.write("expkit: %s %s\\n" % (cell, reason or "succeeded"))
        sys.stdout.flush()
        if code == 0:
            break
    done.append(dict(r=rep, x=code, m=reason, t0=round(t0, 3), t1=round(time.time(), 3), h=history))
    save()
sys.exit(1 if any(c["m"] for c in done) else 0)
""".replace("SEED_STRIDE", str(SEED_STRIDE))
    .replace("SEED_MODULUS", str(SEED_MODULUS))
    .replace('"REPLICATE_MARK"', '"\\ue000R\\ue001"')
    .replace('"SEED_MARK"', '"\\ue000S\\ue001"')
    .replace('"OUTPUT_MARK"', '"\\ue000O\\ue001"')
)


#: Where the environment probe step writes what the image reports (uploaded as ``<run-id>/environment.json``).
PROBE_OUTPUT = "/expkit/output/environment.json"
_PROBE_MARKER = "EXPKIT-ENVIRONMENT:"

#: The environment probe step (docs/reproducibility.md): runs :data:`expkit.runs.environment.PROBE_SCRIPT`
#: with the image's Python and writes the JSON object it prints to :data:`PROBE_OUTPUT`.
PROBE_WRAPPER = (
    "import io, sys\n"
    "out, real = io.StringIO(), sys.stdout\n"
    "sys.stdout = out\n"
    "exec(compile(PROBE, '<expkit-probe>', 'exec'), dict(__name__='__expkit_probe__'))\n"
    "sys.stdout = real\n"
    "line = [x for x in out.getvalue().splitlines() if x.startswith(MARKER)][-1]\n"
    "with open(PATH, 'w') as fh:\n"
    "    fh.write(line[len(MARKER):])\n"
    "print('expkit: environment recorded')\n"
)


def probe_wrapper(probe_script: str) -> str:
    """The probe step's program: :data:`PROBE_WRAPPER` around ``probe_script``."""
    wrapper = PROBE_WRAPPER.replace("MARKER", repr(_PROBE_MARKER)).replace("PATH", repr(PROBE_OUTPUT))
    return wrapper.replace("PROBE", repr(probe_script), 1)  # last: nothing is replaced inside the script


def runner_interpreter(command: list[str]) -> str:
    """The Python a batch pod runs the runner with: the spec's own when its command starts with one
    (``python``, ``python3``, ``/usr/bin/python3.12``), else ``python3``."""
    first = command[0] if command else ""
    base = first.rsplit("/", 1)[-1]
    return first if base.startswith("python") and " " not in first else "python3"


__all__ = [
    "BATCH_ENV",
    "OUTPUT_MARK",
    "PROBE_OUTPUT",
    "REPLICATE_MARK",
    "RUNNER_SCRIPT",
    "SEED_MARK",
    "STATUS_PARAMETER",
    "probe_wrapper",
    "runner_interpreter",
]
