import os
from pathlib import Path
import pytest

@pytest.fixture(scope='session')
def mnist_dir():
    "The folder holding the real mnist.pkl.gz: $MINIAI_DATA (CI points it at ../shared/data)"
    d = os.environ.get('MINIAI_DATA')
    if not d or not (Path(d)/'mnist.pkl.gz').exists(): pytest.skip('set MINIAI_DATA to a folder with mnist.pkl.gz')
    return Path(d)
