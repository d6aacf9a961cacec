"""Shared test helpers.

PyTorch is an oracle here, never a dependency of npskip. Locally a missing
torch skips its comparisons; CI sets NPSKIP_REQUIRE_TORCH=1 so that they can
never be skipped there silently.
"""

import os

import numpy as np
import pytest

SKIPPED_TORCH = []          # the tests that skipped their PyTorch comparison


def require_torch():
    """Import torch, or skip (locally) / fail (when NPSKIP_REQUIRE_TORCH=1)."""
    try:
        import torch
    except ImportError:
        if os.environ.get("NPSKIP_REQUIRE_TORCH") == "1":
            pytest.fail("torch is required here (NPSKIP_REQUIRE_TORCH=1) but not importable")
        SKIPPED_TORCH.append(1)
        pytest.skip("torch not installed")
    torch.set_default_dtype(torch.float64)
    return torch


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_terminal_summary(terminalreporter):
    """One line saying the PyTorch comparisons were skipped, and how to run them."""
    if SKIPPED_TORCH:
        terminalreporter.write_line(
            f"{len(SKIPPED_TORCH)} PyTorch comparisons skipped (torch is not installed); to run "
            f"them: pip install torch==2.13.0 && pip install -e \".[test,oracle]\" && "
            f"NPSKIP_REQUIRE_TORCH=1 python -m pytest")
