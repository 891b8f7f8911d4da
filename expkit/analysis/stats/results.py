"""The result records of the statistics: the omnibus test of one dataset and the across-dataset block
(the exact / Monte-Carlo Friedman or Skillings-Mack omnibus test, Friedman, Iman-Davenport, Nemenyi,
pairwise Wilcoxon over datasets). The whole analysis is
:class:`~expkit.analysis.stats.analysis.Analysis`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OmnibusResult:
    """Omnibus test on one dataset (Kruskal-Wallis or Friedman); ``test`` is None when not run."""

    dataset: str
    test: str | None
    statistic: float | None
    p: float | None
    significant: bool
    algorithms: tuple[str, ...]
    n_blocks: int | None
    note: str | None


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman test across datasets (tie-corrected, scipy) plus Demsar's uncorrected statistic."""

    chi2: float | None
    p: float | None
    chi2_uncorrected: float
    df: int
    note: str | None


@dataclass(frozen=True)
class ImanDavenportResult:
    """Iman-Davenport F test derived from the Friedman statistic; ``f`` may be ``math.inf``."""

    f: float | None
    df1: int
    df2: int
    p: float | None
    note: str | None


@dataclass(frozen=True)
class NemenyiResult:
    """Nemenyi critical differences (average-rank units) for k algorithms on n datasets."""

    k: int
    n: int
    q_05: float
    cd_05: float
    q_10: float
    cd_10: float
    alpha: float
    q_alpha: float
    cd_alpha: float


@dataclass(frozen=True)
class BlockTestResult:
    """An omnibus test over blocks (datasets): Friedman on complete blocks, Skillings-Mack when some
    blocks lack an algorithm. ``method`` says how p was obtained: 'exact' (the whole permutation
    distribution), 'monte-carlo' (``n_resamples`` seeded random permutations, p = (c + 1) / (B + 1),
    standard error ``mc_se``) or 'asymptotic'. ``p_min`` is the smallest p-value the design allows
    (None when unknown); ``statistic`` is None when every block ties all algorithms (then p = 1)."""

    test: str
    statistic: float | None
    df: int
    p: float
    method: str
    n_blocks: int
    n_resamples: int | None
    mc_se: float | None
    p_min: float | None
    note: str


@dataclass(frozen=True)
class AcrossPair:
    """Two algorithms compared over datasets: Wilcoxon signed-rank (Holm) and the Nemenyi decision.

    ``n`` datasets have a value of both; on ``better_a`` of them a is better, on ``better_b`` b is.
    ``in_family`` says whether the pair is one of the Holm family (every pair, or the comparisons with
    the control); ``significant`` needs p_holm < alpha and, with three or more algorithms, the omnibus
    test's rejection."""

    a: str
    b: str
    statistic: float | None
    p: float | None
    p_holm: float | None
    significant: bool
    winner: str | None
    rank_a: float
    rank_b: float
    nemenyi_significant: bool
    note: str | None
    n: int = 0
    better_a: int = 0
    better_b: int = 0
    in_family: bool = True


@dataclass(frozen=True)
class AcrossDatasets:
    """The across-dataset block, cell = mean/median over replicates. ``datasets`` are the complete ones
    (average ranks, Friedman, Iman-Davenport, Nemenyi); ``excluded`` the others, of which ``incomplete``
    (two or more values) enter the omnibus Skillings-Mack test and the pairs. ``omnibus`` gates every
    claim; ``pairs`` (Wilcoxon, Holm over every pair or the comparisons with ``control``) decide them;
    ``verdict`` is the sentence (:func:`~expkit.analysis.stats.verdict.verdict_sentence`)."""

    aggregate: str
    algorithms: tuple[str, ...]
    datasets: tuple[str, ...]
    excluded: tuple[str, ...]
    average_ranks: tuple[float, ...] | None
    friedman: FriedmanResult | None
    iman_davenport: ImanDavenportResult | None
    nemenyi: NemenyiResult | None
    pairs: tuple[AcrossPair, ...]
    verdict: str
    notes: tuple[str, ...]
    #: the omnibus test that gates the pairwise claims (Friedman or Skillings-Mack), None with < 3 algorithms
    omnibus: BlockTestResult | None = None
    #: datasets lacking some algorithm (but with two or more), with the algorithms they lack
    incomplete: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: the control algorithm when the pairwise family is the comparisons with it
    control: str | None = None
    alpha: float = 0.05

    def rank_of(self, algorithm: str) -> float | None:
        """Average rank of ``algorithm`` (1 = best), or None when no complete dataset exists."""
        if self.average_ranks is None:
            return None
        return self.average_ranks[self.algorithms.index(algorithm)]
