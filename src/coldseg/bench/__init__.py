"""The benchmark: strategies × ratios × seeds on real image/mask pairs, scored by trained U-Nets.

sweep.py (plan, select, train, append)  ->  results.py (results.csv, settings.json, runs.jsonl)
->  stats.py (mean ± std, paired differences to random)  ->  report.py (figure.png, report.md/.html).
"""
from coldseg.bench.results import COLUMNS, FULL, SettingsMismatch, read_results
from coldseg.bench.stats import paired_differences, summarize, t_interval
from coldseg.bench.sweep import BenchmarkConfig, Outcome, run_benchmark, strategy_kinds

__all__ = ["COLUMNS", "FULL", "BenchmarkConfig", "Outcome", "SettingsMismatch", "paired_differences",
           "read_results", "run_benchmark", "strategy_kinds", "summarize", "t_interval"]
