"""What signing and checking signatures cost, on the default model's artifact.

Interleaved in rounds (each round runs every step once, in turn), so a busy host slows all of them
alike. Steps, each on the same artifact file:

* check unsigned: open_artifact (member table, manifest, payload rules) + every member through sha256
  -- what `edgevision info` and `load` already pay without signatures;
* check signed:   the same on the signed copy under a policy trusting its key (+ Ed25519 verify, statement);
* signature only: check_signature on the raw bytes (the part signing adds);
* sign:           sign_artifact (check every member, write a signed copy atomically).

    python benchmarks/signing_cost.py [--artifact A.evpkg] [--rounds 30]

The last line is the ratio check-signed / check-unsigned.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from edgevision.bench.hostinfo import cpu_model  # noqa: E402

DEFAULT_ARTIFACT = REPO / "out" / "efficientnet-lite0.onnxruntime-cpu.evpkg"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    from edgevision.artifact import NO_POLICY, SigningKey, TrustPolicy, generate_key_pair, open_artifact, sign_artifact
    from edgevision.artifact.signing import SIGNATURE_NAME, check_signature

    if not args.artifact.exists():
        from edgevision.compiler import CompileRequest, compile_model

        print(f"compiling the default model into {args.artifact} ...", file=sys.stderr)
        compile_model(CompileRequest(output=args.artifact))
    with tempfile.TemporaryDirectory() as tmp:
        private, public, kid = generate_key_pair("bench", Path(tmp))
        key = SigningKey.load(private)
        policy = TrustPolicy.of([public])
        signed = sign_artifact(args.artifact, key, Path(tmp) / "signed.evpkg")
        with open_artifact(signed, policy) as art:
            raw_manifest = art.raw_manifest
            raw_signature = art.zip.read(SIGNATURE_NAME)

        def check(path: Path, trust: TrustPolicy) -> None:
            with open_artifact(path, trust) as art:
                art.verify_members()

        steps = {
            "check unsigned": lambda: check(args.artifact, NO_POLICY),
            "check signed": lambda: check(signed, policy),
            "signature only": lambda: check_signature(raw_signature, raw_manifest, policy, "signed.evpkg"),
            "sign": lambda: sign_artifact(args.artifact, key, Path(tmp) / "resigned.evpkg"),
        }
        times: dict[str, list[float]] = {name: [] for name in steps}
        for step in steps.values():
            step()  # warm the page cache and imports
        for _ in range(args.rounds):
            for name, step in steps.items():
                started = time.perf_counter()
                step()
                times[name].append((time.perf_counter() - started) * 1e3)
    size = args.artifact.stat().st_size / 1e6
    print(f"{args.artifact.name}: {size:.1f} MB, {args.rounds} interleaved rounds, CPU: {cpu_model()}, "
          f"Python {platform.python_version()}")
    for name, values in times.items():
        print(f"  {name:15s} median {statistics.median(values):7.2f} ms  (min {min(values):.2f}, max {max(values):.2f})")
    base, signed_ms = statistics.median(times["check unsigned"]), statistics.median(times["check signed"])
    print(f"check signed / check unsigned: {signed_ms / base:.3f}x ({signed_ms - base:+.2f} ms for the signature)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
