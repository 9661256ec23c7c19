"""Sweeps, baselines, tables and plots: ``taplab bench`` (:mod:`taplab.bench.sweep`, :mod:`taplab.bench.report`)."""

from taplab.bench.report import write_report
from taplab.bench.sweep import MODULES, BenchConfig, run_sweep

__all__ = ["MODULES", "BenchConfig", "run_sweep", "write_report"]
