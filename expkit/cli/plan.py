"""``expkit plan``: how many replicates a spec needs, from the spec and optionally a pilot run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from expkit.cli.common import JsonOpt, ParamsOpt, StoreOpt, app, handle_errors, open_checked_store, out, print_json


@app.command()
@handle_errors
def plan(
    file: Annotated[Path, typer.Argument(help="The experiment spec (YAML).")],
    pilot: Annotated[
        Optional[str],
        typer.Option("--pilot", help="A finished run (id or 'latest') whose data inform the plan: failures, ties."),
    ] = None,
    effect: Annotated[
        float,
        typer.Option(
            "--effect", help="Effect to detect: A12 (paired: P(D + D' > 0)); 0.64 is Vargha & Delaney's medium."
        ),
    ] = 0.64,
    power: Annotated[float, typer.Option("--power", help="Probability of detecting the effect.")] = 0.8,
    alpha: Annotated[float, typer.Option("--alpha", "-a", help="Significance level per pair.")] = 0.05,
    params: ParamsOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recommend the number of replicates: what the spec's replicates detect, what an effect needs.

    Runs nothing. Noether's (1987) sample sizes for the design's rank test; with --pilot, the pilot run's
    failure rate and ties adjust the advice. Example: [bold]expkit plan experiment.yml --pilot latest[/]
    """
    from expkit.analysis.collect import collect
    from expkit.analysis.plan import plan_replicates
    from expkit.spec import load_spec

    loaded = load_spec(file, params or [])
    collected = collect(open_checked_store(store), pilot) if pilot else None
    result = plan_replicates(loaded.experiment, pilot=collected, effect=effect, power=power, alpha=alpha)
    if as_json:
        print_json(result.to_dict())
        return
    for line in result.lines():
        out.print(escape(line))
