import random

import numpy as np
import pytest
import torch

from tests.lens_kinds import MODEL_KIND, build_tiny_model


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def tiny_model():
    return build_tiny_model()


@pytest.fixture(scope="session")
def default_model():
    from tl_diffusion_prior.data.models import load_default_model

    return load_default_model(kind=MODEL_KIND)
