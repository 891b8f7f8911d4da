"""The run matrix (cells and seeds), run ids, the provenance manifest and host facts."""
