"""airgap: get a machine-learning model running inside a network with no internet."""

import os

__version__ = "0.1.0"

# onnxruntime (1.2x+) keeps a telemetry database in the home directory and carries an upload
# endpoint. Nothing airgap runs may write or phone home: off before anything imports onnxruntime.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
