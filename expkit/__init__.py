"""expkit: run computational experiments reproducibly and compare algorithms with proper statistics.

Data flows one way: spec -> run matrix -> executor -> run store -> results table -> statistics -> report.
"""

__version__ = "0.1.0"
