"""The installed version, recorded in every checkpoint and summary."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resnetlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
