import os
from pathlib import Path

import pytest

from yiyun.demo import generate_demo


def shared_data_dir() -> Path | None:
    """The shared reference data: $YIYUN_SHARED_DATA or <repo>/../shared/data."""
    env = os.environ.get("YIYUN_SHARED_DATA")
    candidate = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def demo():
    """The default demo data set, generated once for all demo tests."""
    return generate_demo()


@pytest.fixture(scope="session")
def by_id(demo):
    return {(r["resourceType"], r["id"]): (slug, r) for slug, r in demo.resources}


@pytest.fixture(scope="session")
def shared_data():
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data not found: set YIYUN_SHARED_DATA")
    return path
