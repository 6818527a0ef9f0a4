import os
import pytest
from miniai.datasets import data_dir

@pytest.fixture(scope='session')
def mnist_dir():
    "The folder holding the real mnist.pkl.gz: `data_dir()`, i.e. $MINIAI_DATA (CI points it at ../shared/data) or the download cache"
    d = data_dir()
    if not (d/'mnist.pkl.gz').exists():
        msg = f"no mnist.pkl.gz in {d}: expected it there (set MINIAI_DATA to a folder holding it, or run the notebooks once to download it)"
        if os.environ.get('CI'): pytest.fail(msg) # in CI a missing dataset is an error, not a reason to skip
        pytest.skip(msg)
    return d

@pytest.fixture(params=['lean', 'general'])
def ce_route(request, monkeypatch):
    "Run a cross-entropy test through each route: 'lean' takes the plain calls the lean way, 'general' sends every call the general way"
    import miniai.losses as L
    if request.param == 'general': monkeypatch.setattr(L, '_lean_ok', lambda *a: False)
    return request.param
