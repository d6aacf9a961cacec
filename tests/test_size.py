"""The engine stays small enough to read in an evening, and the README says how small."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 1800          # lines of npskip/engine, docstrings and comments included


def engine_lines():
    return sum(len(p.read_text().splitlines()) for p in (ROOT / "npskip" / "engine").glob("*.py"))


def test_the_engine_stays_within_its_line_budget():
    assert engine_lines() <= BUDGET, (
        f"npskip/engine has {engine_lines()} lines, over its budget of {BUDGET}: before "
        f"adding, ask what can go")


def test_the_readme_states_the_engines_size():
    stated = re.search(r"engine[^.]*?([\d,]+) lines", (ROOT / "README.md").read_text())
    assert stated, "the README must state the engine's size in lines"
    assert abs(int(stated.group(1).replace(",", "")) - engine_lines()) <= 50, (
        f"the README says {stated.group(1)} lines; npskip/engine has {engine_lines()}")
