"""A run without the shared data (or Chromium, Playwright, the tracked weights) skips on a developer's
machine and fails under CI: a green CI run means the tests that need them ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

DATA_TEST = "tests/test_images.py::test_real_photo_decodes"  # needs one photo of the shared samples


def run_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "CATDOG_REQUIRE_DATA")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", DATA_TEST],
        cwd=REPO,
        env={**clean, "CATDOG_TEST_DATA": str(tmp_path / "absent"), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("env", [{"CATDOG_REQUIRE_DATA": "1"}, {"CI": "true"}], ids=["require-data", "ci"])
def test_missing_shared_data_fails_under_ci(tmp_path: Path, env: dict) -> None:
    done = run_pytest(tmp_path, **env)
    assert done.returncode == 1 and "1 error" in done.stdout and "skipped" not in done.stdout, done.stdout
    assert f"test data not found at {tmp_path / 'absent'}" in done.stdout


def test_missing_shared_data_skips_on_a_developer_machine(tmp_path: Path) -> None:
    done = run_pytest(tmp_path)
    assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout + done.stderr


def test_ci_script_runs_pytest_with_prerequisites_required() -> None:
    script = (REPO / ".ci" / "run").read_text()
    first_pytest = script.index("python -m pytest")
    assert "export CI=true" in script[:first_pytest]
