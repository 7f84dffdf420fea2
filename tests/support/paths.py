"""Where the repository and the shared data sets are."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
