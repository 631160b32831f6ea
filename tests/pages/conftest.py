"""Shared fixture of the in-process page tests: the seeded challenge (seed.py), committed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).parent))

from seed import Seeded, seed


@pytest.fixture
def seeded(db_session: Session) -> Seeded:
    data = seed(db_session)
    db_session.commit()
    return data
