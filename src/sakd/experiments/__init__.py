"""Experiments: grids of runs (``sakd reproduce``), result tables (``sakd report``) and figures."""
