import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # In the interpreter process (TRITON_INTERPRET=1) keep only Triton cases; they are generated
    # only there (tests/backend_params.py), so the normal process never skips them.
    if os.environ.get("TRITON_INTERPRET") == "1":
        items[:] = [i for i in items if i.get_closest_marker("triton_interpreter")]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
