"""The lowest layer: errors and exit codes, the run contract (file names, result.json), shipped data files."""
