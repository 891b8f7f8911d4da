"""From a run store to conclusions: the tidy results table, statistics, plots and the report."""
