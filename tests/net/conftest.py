"""Fixtures of the connpool.net tests (see ``nethelpers.py``)."""

from __future__ import annotations

import pytest
from nethelpers import TLSContexts, make_tls_contexts


@pytest.fixture(scope="session")
def tls() -> TLSContexts:
    """TLS contexts around a CA made at test time."""
    return make_tls_contexts()
