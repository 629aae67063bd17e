"""airgap: get a machine-learning model running inside a network with no internet."""

__version__ = "0.1.0"
