"""Every notebook runs top to bottom with the quick settings (NPSKIP_QUICK=1), and reads
as one sitting: no markdown cell over 300 words, and a first cell that quotes the paper,
gives the run time and links the glossary.

The notebooks share one run folder, in order, as a reader would run them: a
later notebook loads the stages an earlier one trained. Any cell that raises
fails the test.
"""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from test_data import MIRROR

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
MAX_WORDS = 300      # a markdown cell a learner reads in one go


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory):
    return {"NPSKIP_QUICK": "1", "NPSKIP_RUNS": str(tmp_path_factory.mktemp("runs")),
            "NPSKIP_DATA": str(tmp_path_factory.mktemp("data")), "NPSKIP_MIRROR": MIRROR.as_uri()}


def test_there_are_seven_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_markdown_cell_is_longer_than_a_reader_takes_in_at_once(path):
    cells = nbformat.read(path, as_version=4).cells
    long = {i: len(re.findall(r"\S+", c.source)) for i, c in enumerate(cells)
            if c.cell_type == "markdown"}
    assert {i: n for i, n in long.items() if n > MAX_WORDS} == {}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_first_cell_quotes_the_paper_gives_the_run_time_and_links_the_glossary(path):
    first = nbformat.read(path, as_version=4).cells[0]
    assert first.cell_type == "markdown"
    assert "(the paper, section" in first.source
    assert "**Run time:** quick" in first.source
    assert "(../docs/glossary.md)" in first.source and (ROOT / "docs" / "glossary.md").is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, shared_env, monkeypatch):
    for key, value in shared_env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "quick settings" in text
