"""The user-fixable error types: main.py prints these as one paragraph and exits with status 2."""
from dataset.glue import DataError
from prune.fisher import NonFiniteGradientError
from prune.latency import LutError
from utils.arch import UnsupportedModelError
from utils.checkpoint import CheckpointError
from utils.device import DeviceError
from utils.run_folder import OutputError

USER_ERRORS = (DataError, CheckpointError, OutputError, DeviceError, UnsupportedModelError,
               NonFiniteGradientError, NotImplementedError, LutError)
