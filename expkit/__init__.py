"""expkit: run computational experiments reproducibly and compare algorithms with proper statistics.

Data flows one way: spec -> run matrix -> executor -> run store -> results table -> statistics -> report.
"""

__version__ = "0.1.0"
#: Where expkit lives: its RO-Crate entity in every bundle, and its CITATION.cff.
EXPKIT_URL = "https://github.com/expkit/expkit"
