"""edgevision conformance [--backend NAME] [--op NAME] [--feed constants|inputs] [--markdown FILE]"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...files import write_atomic
from ..console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", help="run ONNX's node tests for classifier operators through each backend",
                       description="Run onnx.backend.test node cases (Conv, Relu, Resize, ...) through every "
                                   "backend installed here and report pass/fail per backend and operator.")
    p.add_argument("--backend", action="append", help="a backend with a conformance runner (repeatable; default: every one installed here)")
    p.add_argument("--op", action="append", help="operator, e.g. Conv (repeatable; default: all 22)")
    p.add_argument("--feed", choices=["constants", "inputs"], default="constants",
                   help="constants: inputs after the first are initializers, as in exported models (default); "
                        "inputs: feed every input at run time, as the ONNX test defines it")
    p.add_argument("--full-suite", action="store_true",
                   help="build all ~1900 node cases with load_model_tests(kind='node') before filtering (slower)")
    p.add_argument("--markdown", type=Path, help="write the table and the failures as Markdown")
    p.add_argument("--json", type=Path, help="write every case result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from dataclasses import asdict

    from ...conformance import failure_lines, load_cases, markdown_table, run_conformance

    cases = load_cases(args.op, full_suite=args.full_suite)
    console.info(f"{len(cases)} ONNX node cases for {len({c.op for c in cases})} operators, feed={args.feed}")
    results = run_conformance(cases, args.backend, feed=args.feed, progress=console.info)
    table = markdown_table(results)
    failures = failure_lines(results)
    console.print(table)
    console.print("")
    console.print(f"{len(failures)} failing (backend, case) pairs")
    for line in failures:
        console.print(line)
    if args.markdown:
        text = (f"{table}\n\n| backend | operator | case | known reason | observed |\n|---|---|---|---|---|\n"
                + "\n".join(failures) + "\n")
        write_atomic(args.markdown, text.encode())
    if args.json:
        write_atomic(args.json, json.dumps([asdict(r) for r in results], indent=1).encode())
    return 0
