"""The MXNet lane: these tests run in the virtualenv that has mxnet 1.9.1 (``make test`` builds it as .venv-gluon).

MXNet needs numpy < 1.24, so it cannot share the main environment; where mxnet is not installed this folder is not
collected at all (the main lane's tests of the missing-MXNet errors live in tests/test_optional_dependencies.py).
"""

import importlib.util
import os

# what the Gluon engine selects when it imports MXNet first (bit-reproducible runs); set before any test imports it
os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")

collect_ignore_glob = [] if importlib.util.find_spec("mxnet") else ["test_*.py"]
