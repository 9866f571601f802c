"""Signed artifacts: what a trust policy refuses is refused before any native code from the artifact runs.

The canary is a real shared library whose ELF constructor writes a marker file: it is the TVM library of
a tvm-x86-shaped artifact, so loading that artifact dlopens it (``tvm.runtime.load_module``) and the
marker appears. Each refused variant is loaded in one fresh interpreter under the policy; after every
refusal the marker must be absent and TVM not imported. The same artifact loaded with its key trusted
creates the marker: the test can fail.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPO
from reliability_models import MODELS, rewrite_artifact

CANARY_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void edgevision_canary(void) {
    const char *marker = getenv("EDGEVISION_CANARY");
    if (marker) { FILE *f = fopen(marker, "w"); if (f) { fputs("constructor ran\n", f); fclose(f); } }
}
"""


@pytest.fixture(scope="module")
def tiny(compile_artifact) -> Path:
    return compile_artifact("i8-tiny.onnxruntime-cpu.evpkg", model=f"{MODELS}:tiny", target="onnxruntime-cpu")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from edgevision.artifact import generate_key_pair

    folder = tmp_path_factory.mktemp("keys")
    found: dict[str, Path] = {}
    for name in ("publisher", "stranger"):
        private, public, _ = generate_key_pair(name, folder)
        found[name], found[f"{name}.pub"] = private, public
    return found


@pytest.fixture(scope="module")
def canary(tiny: Path, keys: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tvm-x86 artifact, signed by 'publisher', whose model.so is the canary library."""
    from edgevision.artifact import SigningKey, read_manifest, write_artifact
    from edgevision.targets import get_target

    work = tmp_path_factory.mktemp("canary")
    (work / "canary.c").write_text(CANARY_C)
    payload = work / "payload"
    payload.mkdir()
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(payload / "model.so"), str(work / "canary.c")], check=True)
    manifest = read_manifest(tiny)
    manifest = replace(manifest, target=get_target("tvm-x86"), backend="tvm", backend_version="0.27.0",
                       accuracy=None, payload={"library": "model.so", "entry": "main", "cpu_features": [],
                                               "tvm_target": {"kind": "llvm"}})
    return write_artifact(manifest, payload, work / "canary.tvm-x86.evpkg", signer=SigningKey.load(keys["publisher"]))


LOADER = """
import json, os, sys
import edgevision.runtime as rt
trust = json.loads(sys.argv[1])
marker = os.environ["EDGEVISION_CANARY"]
results = []
for path in sys.argv[2:]:
    try:
        rt.load(path, trust=trust).close()
        error = None
    except rt.EdgevisionError as err:
        error = {"type": type(err).__name__, "message": str(err)}
    results.append({"path": path, "error": error, "marker": os.path.exists(marker), "tvm": "tvm" in sys.modules,
                    "tmp": sorted(p for p in os.listdir(os.environ["TMPDIR"]) if p != ".ses")})
print(json.dumps(results))
"""


def load_each(paths: list[Path], tmp_path: Path, trust: list[str] | None = None,
              env: dict[str, str] | None = None) -> list[dict]:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir(exist_ok=True)
    marker = tmp_path / "constructor-ran"
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), "EDGEVISION_CANARY": str(marker),
                   "HOME": str(tmp_path / "home"), **(env or {})}
    for name in ("EDGEVISION_TRUSTED_KEYS", "EDGEVISION_REQUIRE_SIGNATURE", "XDG_CONFIG_HOME"):
        if name not in (env or {}):
            environment.pop(name, None)
    done = subprocess.run([sys.executable, "-c", LOADER, json.dumps(trust), *map(str, paths)], capture_output=True,
                          text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def variants(canary: Path, keys: dict[str, Path], folder: Path) -> dict[str, tuple[Path, str]]:
    """Each way to get the canary past a policy that trusts 'publisher', and what the refusal must say."""
    from edgevision.artifact import SigningKey, sign_artifact

    def grown(name: str, data: bytes) -> bytes:
        return data + b"\0" if name == "payload/model.so" else data  # still a loadable ELF, other bytes

    out = {
        "member changed, hashes recomputed": (
            rewrite_artifact(canary, folder / "member.evpkg", member_edit=grown, reseal=True),
            "manifest.json is not the one key"),
        "manifest field changed": (
            rewrite_artifact(canary, folder / "labels.evpkg", manifest_edit=lambda m: m["labels"].reverse()),
            "manifest.json is not the one key"),
        "signed by an untrusted key": (
            sign_artifact(canary, SigningKey.load(keys["stranger"]), folder / "stranger.evpkg"),
            "which is not among the 1 trusted key(s)"),
        "signature stripped": (
            rewrite_artifact(canary, folder / "stripped.evpkg",
                             member_edit=lambda n, d: None if n == "signature.json" else d),
            "it is not signed, and signed artifacts are required"),
        "renamed to another target": (
            rewrite_artifact(canary, folder / "canary.x86.evpkg",
                             manifest_edit=lambda m: m["target"].update(name="x86", description="renamed")),
            "manifest.json is not the one key"),
    }
    with zipfile.ZipFile(canary) as zf:
        bundle = json.loads(zf.read("signature.json"))
    sig = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = ("B" if sig[0] == "A" else "A") + sig[1:]
    out["signature bytes changed"] = (
        rewrite_artifact(canary, folder / "badsig.evpkg",
                         member_edit=lambda n, d: json.dumps(bundle).encode() if n == "signature.json" else d),
        "does not hold")
    return out


def test_refused_before_the_library_is_loaded(canary: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    cases = variants(canary, keys, tmp_path)
    trusted = [str(keys["publisher.pub"])]
    # The policy as a load() argument, and the same policy from the environment.
    for how, kwargs in (("argument", {"trust": trusted}),
                        ("environment", {"env": {"EDGEVISION_TRUSTED_KEYS": trusted[0]}})):
        results = load_each([path for path, _ in cases.values()], tmp_path, **kwargs)
        for (case, (path, needle)), result in zip(cases.items(), results):
            assert result["error"] is not None, f"{how}: {case} loaded"
            assert result["error"]["type"] == "ArtifactError", (how, case, result)
            message = result["error"]["message"]
            assert needle in message and " — " in message and "\n" not in message, (how, case, message)
            assert not result["marker"], f"{how}: {case}: the canary's constructor ran"
            assert not result["tvm"], f"{how}: {case}: TVM was imported before the refusal"
            assert result["tmp"] == [], f"{how}: {case}: left {result['tmp']} in TMPDIR"

    # Control: the very same artifact, trusted, gets dlopened (and then fails: it is no TVM module).
    [control] = load_each([canary], tmp_path, trust=trusted)
    assert control["marker"] and control["tvm"], control
    assert control["error"] is None or control["error"]["type"] == "BackendError", control


def test_a_signed_artifact_loads_under_policies_that_trust_its_key(tiny: Path, keys: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    import numpy as np

    from edgevision.artifact import SigningKey, TrustPolicy, sign_artifact
    from edgevision.runtime import load

    signed = sign_artifact(tiny, SigningKey.load(keys["publisher"]), tmp_path / "signed.evpkg")
    image = np.full((64, 64, 3), 120, np.uint8)
    with load(tiny) as plain, load(signed, trust=[keys["publisher.pub"]]) as model:
        assert model.predict(image) == plain.predict(image)  # the same model, only signed
    # A folder of keys, the trust directory in ~/.config, and REQUIRE=1 without keys (fail closed).
    trust_home = tmp_path / "home" / ".config" / "edgevision" / "trust"
    trust_home.mkdir(parents=True)
    (trust_home / "publisher.pub").write_bytes(keys["publisher.pub"].read_bytes())
    results = load_each([signed, tiny], tmp_path, trust=None)
    assert results[0]["error"] is None, results[0]
    assert "it is not signed" in results[1]["error"]["message"]
    results = load_each([signed, tiny], tmp_path, trust=None, env={"EDGEVISION_REQUIRE_SIGNATURE": "0"})
    assert [r["error"] for r in results] == [None, None]  # unsigned allowed, the signed one still trusted
    (trust_home / "publisher.pub").unlink()
    results = load_each([signed], tmp_path, trust=None, env={"EDGEVISION_REQUIRE_SIGNATURE": "1"})
    assert "no trusted keys are configured" in results[0]["error"]["message"]
    # Without any policy, unsigned and signed artifacts load as before.
    assert [r["error"] for r in load_each([signed, tiny], tmp_path, trust=None)] == [None, None]
    with pytest.raises(Exception, match="not among the 1 trusted"):
        load(signed, trust=TrustPolicy.of([keys["stranger.pub"]]))


def cli(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home), **(env or {})}
    for name in ("EDGEVISION_TRUSTED_KEYS", "EDGEVISION_REQUIRE_SIGNATURE", "XDG_CONFIG_HOME",
                 "EDGEVISION_KEY_PASSPHRASE"):
        if name not in (env or {}):
            environment.pop(name, None)
    return subprocess.run([sys.executable, "-m", "edgevision.cli", "-q", *args], capture_output=True, text=True,
                          timeout=300, env=environment, stdin=subprocess.DEVNULL)


def one_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_keys_sign_verify_and_info_commands(tiny: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = cli("keys", "new", "ci", home=home)
    assert made.returncode == 0, made.stderr
    key, pub = home / ".config/edgevision/keys/ci.key", home / ".config/edgevision/keys/ci.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and b"PRIVATE KEY" in key.read_bytes()
    assert b"PUBLIC KEY" in pub.read_bytes()
    kid = cli("keys", "id", str(pub), home=home).stdout.strip()
    assert len(kid) == 16 and kid in made.stdout
    one_line(cli("keys", "new", "ci", home=home), "exists already")  # never replaces a key
    assert b"PRIVATE KEY" in key.read_bytes()

    secret = {"EDGEVISION_KEY_PASSPHRASE": "correct horse"}
    assert cli("keys", "new", "locked", "--dir", str(tmp_path), "--passphrase", home=home, env=secret).returncode == 0
    assert b"ENCRYPTED" in (tmp_path / "locked.key").read_bytes()

    art = tmp_path / "m.evpkg"
    compiled = cli("compile", f"{MODELS}:tiny", "-o", str(art), "--sign", "ci", home=home)
    assert compiled.returncode == 0, compiled.stderr
    info = cli("info", str(art), home=home)
    assert info.returncode == 0, info.stderr
    assert f"key {kid}: signature holds; no trusted keys configured" in info.stdout
    assert "verified: manifest and 1 member(s) match their sha256" in info.stdout

    passed = cli("verify", str(art), "--trust", str(pub), home=home)
    assert passed.returncode == 0 and f"PASS: m.evpkg is signed by trusted key {kid}" in passed.stdout, passed.stderr
    one_line(cli("verify", str(art), "--trust", str(tmp_path / "locked.pub"), home=home),
             f"signed by key {kid}, which is not among the 1 trusted key(s)")

    # Re-signing: a wrong passphrase is one line and leaves the file as it was; the right one re-signs in place.
    before = art.read_bytes()
    one_line(cli("sign", str(art), "--key", str(tmp_path / "locked.key"), home=home,
                 env={"EDGEVISION_KEY_PASSPHRASE": "wrong"}), "wrong passphrase")
    one_line(cli("sign", str(art), "--key", str(tmp_path / "locked.key"), home=home), "protected by a passphrase")
    assert art.read_bytes() == before
    assert cli("sign", str(art), "--key", str(tmp_path / "locked.key"), home=home, env=secret).returncode == 0
    assert cli("verify", str(art), "--trust", str(tmp_path / "locked.pub"), home=home).returncode == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left

    # info under a device policy reports (does not enforce) what the policy thinks.
    trusting = {"EDGEVISION_TRUSTED_KEYS": str(pub)}
    assert "key NOT trusted" in cli("info", str(art), home=home, env=trusting).stdout
    unsigned = cli("info", str(tiny), home=home, env=trusting)
    assert unsigned.returncode == 0 and "unsigned (refused by the trust policy" in unsigned.stdout
    assert any("signature" in ln and "unsigned" in ln for ln in cli("info", str(tiny), home=home).stdout.splitlines())


def test_malformed_and_mismatched_signatures(tiny: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    from edgevision.artifact import SigningKey, open_artifact, read_manifest, sign_artifact
    from edgevision.artifact.signing import sign_manifest
    from edgevision.errors import ArtifactError

    signed = sign_artifact(tiny, SigningKey.load(keys["publisher"]), tmp_path / "s.evpkg")
    with zipfile.ZipFile(signed) as zf:
        good, raw_manifest = json.loads(zf.read("signature.json")), zf.read("manifest.json")

    def with_signature(name: str, data: bytes) -> Path:
        return rewrite_artifact(signed, tmp_path / name,
                                member_edit=lambda n, d: data if n == "signature.json" else d)

    bad_hint = json.loads(json.dumps(good))
    bad_hint["verificationMaterial"]["publicKey"]["hint"] = "0" * 16
    other_type = json.loads(json.dumps(good))
    other_type["dsseEnvelope"]["payloadType"] = "application/json"
    for name, data, needle in [("garbage.evpkg", b"{nope", "is not valid JSON"),
                               ("empty.evpkg", b"{}", "signature.json is malformed (no 'verificationMaterial')"),
                               ("hint.evpkg", json.dumps(bad_hint).encode(), "its key id does not name its public key"),
                               ("type.evpkg", json.dumps(other_type).encode(), "unknown media type")]:
        with pytest.raises(ArtifactError, match=re_escape(needle)):
            read_manifest(with_signature(name, data))

    # Validly signed by the publisher, but for another target than the manifest says.
    manifest = read_manifest(tiny)
    manifest.target = replace(manifest.target, name="elsewhere")
    forged = with_signature("target.evpkg", sign_manifest(raw_manifest, manifest, SigningKey.load(keys["publisher"])))
    with pytest.raises(ArtifactError, match="its signed statement does not describe its manifest"):
        open_artifact(forged, None)
    with open_artifact(signed, None) as art:
        assert art.signature.describe().endswith("signature holds; no trusted keys configured here")


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_key_files_and_policy_settings_are_checked(keys: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevision.artifact import PublicKey, SigningKey, TrustPolicy, generate_key_pair
    from edgevision.errors import ArtifactError, InputError

    with pytest.raises(InputError, match="is not a PEM public key"):
        PublicKey.load(keys["publisher"])
    with pytest.raises(InputError, match="cannot read public key"):
        PublicKey.load(tmp_path / "missing.pub")
    with pytest.raises(InputError, match="is not a PEM private key"):
        SigningKey.load(keys["publisher.pub"])
    with pytest.raises(InputError, match="not a plain name"):
        generate_key_pair("../evil", tmp_path)
    private, _, _ = generate_key_pair("locked", tmp_path, b"pw")
    with pytest.raises(InputError, match="wrong passphrase"):
        SigningKey.load(private, b"nope")
    with pytest.raises(InputError, match="protected by a passphrase"):
        SigningKey.load(private)
    with pytest.raises(InputError, match="not protected by a passphrase"):
        SigningKey.load(keys["publisher"], b"pw")
    assert SigningKey.load(private, b"pw").key_id == PublicKey.load(tmp_path / "locked.pub").key_id

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert not TrustPolicy.from_environment({}).active
    with pytest.raises(ArtifactError, match="EDGEVISION_REQUIRE_SIGNATURE='maybe' is not 1 or 0"):
        TrustPolicy.from_environment({"EDGEVISION_REQUIRE_SIGNATURE": "maybe"})
    folder = TrustPolicy.from_environment({"EDGEVISION_TRUSTED_KEYS": str(keys["publisher"].parent)})
    assert {k.source for k in folder.keys} == {str(keys["publisher.pub"]), str(keys["stranger.pub"])}
    assert folder.require_signature


def test_without_cryptography(tiny: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    """A device lacking the package: unsigned and signed artifacts load without a policy (the signature
    unchecked, said in a warning); under a policy, one line naming the install."""
    from edgevision.artifact import SigningKey, sign_artifact

    signed = sign_artifact(tiny, SigningKey.load(keys["publisher"]), tmp_path / "s.evpkg")
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "cryptography":
                    raise ImportError("blocked")
        sys.meta_path.insert(0, Block())
        import edgevision.runtime as rt
        from edgevision.artifact import open_artifact
        rt.load({str(signed)!r}).close()
        with open_artifact({str(signed)!r}, None) as art:
            print(art.signature.describe())
        try:
            rt.load({str(signed)!r}, trust=rt.TrustPolicy(require_signature=True))
        except rt.EdgevisionError as err:
            print(err)
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    described, refused = done.stdout.strip().splitlines()
    assert described.startswith("ed25519, key ") and "not checked (cryptography is not installed" in described
    assert refused.startswith("signing and checking signatures need the cryptography package")
    assert "is signed by key" in done.stderr  # the warning


def test_recording_a_device_check_keeps_a_signature_valid(tiny: Path, keys: dict[str, Path], tmp_path: Path) -> None:
    from edgevision.artifact import SigningKey, TrustPolicy, open_artifact, sign_artifact
    from edgevision.emulation.verify import Verification, record_verification
    from edgevision.errors import ArtifactError

    signed = sign_artifact(tiny, SigningKey.load(keys["publisher"]), tmp_path / "s.evpkg")
    result = Verification(device="native x86_64", reference="test", images=["chelsea"], max_abs_diff=0.0,
                          max_allowed=1e-3, worst_ratio=0.0, top1_agreement=1.0,
                          tolerance={"rtol": 0.02, "atol": 1e-3}, passed=True, seconds=1.0, load_s=0.1,
                          run_s_per_input=0.01, cold_start_s=None, top1=["285:Egyptian cat"])
    before = signed.read_bytes()
    with pytest.raises(ArtifactError, match="recording the check would break its signature"):
        record_verification(signed, result)
    assert signed.read_bytes() == before
    record_verification(signed, result, signer=SigningKey.load(keys["publisher"]))
    with open_artifact(signed, TrustPolicy.of([keys["publisher.pub"]])) as art:
        art.verify_members()
        assert art.manifest.payload["device_check"]["device"] == "native x86_64"
