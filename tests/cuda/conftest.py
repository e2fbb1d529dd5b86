"""The device the tests of this folder run on: the CPU here, and CUDA where there is a GPU.

Every test body runs on both, so its logic is proven on the CPU; the ``cuda`` variants carry the
``cuda`` marker (``pytest -m cuda`` selects them; without CUDA they skip, tests/conftest.py).
"""

from __future__ import annotations

import pytest

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """``cpu`` or ``cuda``."""
    return request.param
