"""Adaptive replicates (racing): run seeds in waves and stop where the conclusions are settled.

Sits above :mod:`expkit.analysis` (it uses the statistics to decide) and below the CLI: the sequential
procedure is :mod:`expkit.adaptive.sequential`; the driver that schedules waves through the runner is
:mod:`expkit.adaptive.driver`.
"""
