"""Settings shared by every test."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # tiny models on a shared 2-core machine: intra-op threads cost more than they gain (4x here)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
