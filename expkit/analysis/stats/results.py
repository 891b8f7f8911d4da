"""The result records of the statistics: the omnibus test of one dataset and the across-dataset block
(Friedman, Iman-Davenport, Nemenyi, pairwise Wilcoxon over datasets). The whole analysis is
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
class AcrossPair:
    """Two algorithms compared over datasets: Wilcoxon signed-rank (Holm) and the Nemenyi decision."""

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


@dataclass(frozen=True)
class AcrossDatasets:
    """The across-dataset block: blocks = complete datasets, cell = mean/median over replicates."""

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

    def rank_of(self, algorithm: str) -> float | None:
        """Average rank of ``algorithm`` (1 = best), or None when no complete dataset exists."""
        if self.average_ranks is None:
            return None
        return self.average_ranks[self.algorithms.index(algorithm)]
