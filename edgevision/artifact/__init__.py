"""One self-describing file per compiled model: a zip of manifest.json, the backend payload and,
when signed, signature.json."""
from .manifest import FORMAT_VERSION, AccuracyReport, Manifest, TensorSpec
from .package import (DEFAULT_LIMITS, MANIFEST_NAME, Artifact, Limits, open_artifact, payload_digest,
                      read_manifest, sign_artifact, unpack, write_artifact)
from .signing import (NO_POLICY, SIGNATURE_NAME, PublicKey, SignatureStatus, SigningKey, TrustPolicy,
                      generate_key_pair, resolve_trust)

__all__ = ["FORMAT_VERSION", "AccuracyReport", "Manifest", "TensorSpec", "MANIFEST_NAME", "SIGNATURE_NAME",
           "Artifact", "Limits", "DEFAULT_LIMITS", "open_artifact", "payload_digest", "read_manifest",
           "sign_artifact", "unpack", "write_artifact", "NO_POLICY", "PublicKey", "SignatureStatus",
           "SigningKey", "TrustPolicy", "generate_key_pair", "resolve_trust"]
