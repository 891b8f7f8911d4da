"""Reproducibility: paper bundles (export/import), statistical re-run checks, image pinning."""
