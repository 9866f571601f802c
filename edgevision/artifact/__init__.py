"""One self-describing file per compiled model: a zip of manifest.json and the backend payload."""
from .manifest import FORMAT_VERSION, AccuracyReport, Manifest, TensorSpec
from .package import MANIFEST_NAME, read_manifest, unpack, write_artifact

__all__ = ["FORMAT_VERSION", "AccuracyReport", "Manifest", "TensorSpec", "MANIFEST_NAME",
           "read_manifest", "unpack", "write_artifact"]
