"""Benchmark for tortie.selector: match throughput and parse + compile latency.

Prints, for ``role == "db" && env in {"prod","staging"} && !has(debug)`` against a
10-label dict (which it matches, so every term is evaluated):

* evaluations/s of the compiled matcher (``Selector.matches``) and of the naive
  AST interpreter (``Selector.evaluate_slow``) in the same process, and the ratio;
* parse + compile time in µs: for a selector of a shape not seen before (includes
  CPython's ``compile()``), for a new selector of a known shape (the usual case:
  code is shared by shape), and for a ``parse_cached`` hit.

Each figure is the best of several runs. Run: ``.venv/bin/python bench/bench_selector.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tortie.selector import compile as selector_compile
from tortie.selector import parse, parse_cached

TARGET = 'role == "db" && env in {"prod","staging"} && !has(debug)'
LABELS: dict[str, str] = {
    "role": "db",
    "env": "prod",
    "app": "shop",
    "tier": "backend",
    "team": "payments",
    "version": "v1.2.3",
    "zone": "eu-west-1a",
    "projectcalico.org/namespace": "prod",
    "projectcalico.org/orchestrator": "k8s",
    "pod-template-hash": "5d8f7c9b6",
}


def evals_per_second(fn: Callable[[Mapping[str, str]], bool], n: int, repeats: int) -> float:
    """Best-of-``repeats`` rate of calling ``fn(LABELS)`` ``n`` times."""
    labels = LABELS
    loop = range(n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in loop:
            fn(labels)
        best = min(best, time.perf_counter() - start)
    return n / best


def loop_overhead(n: int, repeats: int) -> float:
    """Seconds per iteration of an empty call loop (reported, not subtracted)."""

    def nothing(labels: Mapping[str, str]) -> bool:
        return True

    return 1 / evals_per_second(nothing, n, repeats)


def microseconds(fn: Callable[[], object], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evals", type=int, default=1_000_000, help="calls per timing run")
    ap.add_argument("--repeats", type=int, default=5, help="timing runs (best is kept)")
    args = ap.parse_args()

    sel = parse(TARGET)
    assert sel.matches(LABELS) and sel.evaluate_slow(LABELS)

    compiled = evals_per_second(sel.matches, args.evals, args.repeats)
    naive = evals_per_second(sel.evaluate_slow, args.evals // 4, args.repeats)
    overhead_ns = loop_overhead(args.evals, args.repeats) * 1e9

    def cold() -> None:
        selector_compile._code.cache_clear()  # forget every compiled shape
        parse(TARGET)

    counter = iter(range(10**9))

    def warm_shape() -> None:
        # A fresh text each time (so nothing is cached but the shape's code).
        parse(f'role == "db{next(counter)}" && env in {{"prod","staging"}} && !has(debug)')

    cold_us = microseconds(cold, 300, args.repeats)
    warm_us = microseconds(warm_shape, 3000, args.repeats)
    parse_cached(TARGET)
    cached_us = microseconds(lambda: parse_cached(TARGET), 100_000, args.repeats)

    print(f"selector: {TARGET}")
    print(f"labels:   {len(LABELS)} labels (selector matches)")
    print(f"compiled matcher:   {compiled:>12,.0f} evaluations/s  ({1e9 / compiled:6.1f} ns/eval)")
    print(f"AST interpreter:    {naive:>12,.0f} evaluations/s  ({1e9 / naive:6.1f} ns/eval)")
    print(f"speed-up:           {compiled / naive:12.1f} x")
    print(f"(empty call loop:   {overhead_ns:.1f} ns/iteration, included above)")
    print(f"parse + compile, new shape (incl. CPython compile()): {cold_us:7.1f} µs")
    print(f"parse + compile, known shape (new text):              {warm_us:7.1f} µs")
    print(f"parse_cached hit:                                     {cached_us:7.2f} µs")


if __name__ == "__main__":
    main()
