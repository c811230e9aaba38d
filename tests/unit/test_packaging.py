"""`make install` is quiet: building the editable wheel emits no Python warning.

setuptools' meta-path-finder strategy for a flat layout warned on every `pip install -e`
("BuildBackendWarning: Editable installation ... be careful with folders in your working
directory"); `package-dir = {"" = "."}` in pyproject.toml declares the repository root as the
import root, for which setuptools writes a plain .pth entry and warns about nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from services.settings import REPO_ROOT

# How warnings.warn prints: "<file>:<line>: SomeWarning: message".
WARNING = re.compile(r"\b\w*(Warning|InformationOnly): ")


def test_the_editable_build_prints_no_warning(tmp_path: Path) -> None:
    script = (
        "import sys; from setuptools import build_meta; "
        "print(build_meta.build_editable(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", script, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / done.stdout.strip().splitlines()[-1]).exists()  # a wheel was built
    assert not WARNING.search(done.stderr), done.stderr[-2000:]
