import pytest
import torch
from torch import nn


def make_data(n: int, seed: int = 0):
    """4 classes: which quadrant of an 8x8 image is brighter."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    for q, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == q, :, r : r + 4, c : c + 4] += 0.4
    return x.clamp(0, 1), y


@pytest.fixture(scope="session")
def trained():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 4)
    )
    x, y = make_data(512)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    xt, yt = make_data(256, seed=1)
    model.eval()
    assert (model(xt).argmax(1) == yt).float().mean() > 0.95
    return model, xt, yt


@pytest.fixture(scope="session")
def quadrants():
    """`make_data(n, seed)`: the 4-class quadrant images of the trained fixture."""
    return make_data
