"""Every notebook runs top to bottom with the quick settings (NPSKIP_QUICK=1).

The notebooks share one run folder, in order, as a reader would run them: a
later notebook loads the stages an earlier one trained. Any cell that raises
fails the test.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from test_data import MIRROR

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.ipynb"))


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory):
    return {"NPSKIP_QUICK": "1", "NPSKIP_RUNS": str(tmp_path_factory.mktemp("runs")),
            "NPSKIP_DATA": str(tmp_path_factory.mktemp("data")), "NPSKIP_MIRROR": MIRROR.as_uri()}


def test_there_are_seven_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, shared_env, monkeypatch):
    for key, value in shared_env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "quick settings" in text
