"""Write constraints.txt: the exact versions of this environment's packages, for the Docker image.

    .venv/bin/python .ci/make_constraints.py > constraints.txt

Local version tags are dropped (this venv's `torch==2.13.0+cpu` becomes `torch==2.13.0`, which on PyPI's Linux index
is the CUDA build the GPU image wants; torch pins its own nvidia-* CUDA libraries exactly). The project itself is
left out. tests/test_deploy.py checks that every dependency in pyproject.toml is pinned here within its range.
"""

from __future__ import annotations

import sys
from importlib.metadata import distributions

from packaging.utils import canonicalize_name

SKIP = {"counsel-bot", "pip", "setuptools", "wheel"}

HEADER = """\
# Exact versions for the Docker image (`pip install -c constraints.txt .`), generated from the development
# environment by `python .ci/make_constraints.py > constraints.txt`. Local tags are dropped: torch==X here is the
# CUDA build from PyPI in the image, the CPU build in the Makefile's venv.
"""


def pins() -> list[str]:
    out = {}
    for dist in distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if not name or name in SKIP:
            continue
        out[name] = dist.version.split("+", 1)[0]
    return [f"{n}=={v}" for n, v in sorted(out.items())]


if __name__ == "__main__":
    sys.stdout.write(HEADER + "\n".join(pins()) + "\n")
