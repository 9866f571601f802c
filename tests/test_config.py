"""Targets and preprocessing are data: a wrong file or config is refused with the reason and the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

BAD_TARGET_FILES = {
    "unknown precision": ('name = "t"\nbackend = "onnxruntime"\nprecisions = ["fp32", "int4"]\n',
                          "unknown precision(s) ['int4']"),
    "default not offered": ('name = "t"\nbackend = "onnxruntime"\ndefault_precision = "int8"\n',
                            "default_precision 'int8' is not in precisions ['fp32']"),
    "misspelt key": ('name = "t"\nbackend = "onnxruntime"\nthread = 2\n', "unknown key(s) ['thread']"),
    "no backend": ('name = "t"\n', "lacks ['backend']"),
    "broken toml": ('name = "t\nbackend = "onnxruntime"\n', "fix the TOML syntax"),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGET_FILES))
def test_a_bad_target_file_is_refused_with_the_reason(case: str, tmp_path: Path) -> None:
    from edgevision.errors import TargetError
    from edgevision.targets import get_target

    text, reason = BAD_TARGET_FILES[case]
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(TargetError) as caught:
        get_target(str(path))
    assert reason in str(caught.value)


def test_the_cli_names_a_bad_target_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "box.toml"
    path.write_text('name = "box"\nbackend = "onnxruntime"\nprecisions = ["fp8"]\n')
    result = run_cli("-q", "compile", "--target", str(path), "-o", str(tmp_path / "m.evpkg"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "fp8" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "m.evpkg").exists()


def test_a_missing_target_file_and_a_user_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgevision.errors import TargetError
    from edgevision.targets import get_target

    with pytest.raises(TargetError, match="does not exist"):
        get_target(str(tmp_path / "absent.toml"))
    # A user folder later on the search path replaces a built-in target of the same name.
    (tmp_path / "intel-cpu.toml").write_text('name = "intel-cpu"\nbackend = "openvino"\nthreads = 1\n')
    monkeypatch.setenv("EDGEVISION_TARGETS_PATH", str(tmp_path))
    assert get_target("intel-cpu").threads == 1


@pytest.mark.parametrize("name", ["base", "../etc", "no_such_backend"])
def test_unknown_backend_names_are_refused(name: str) -> None:
    from edgevision.backends import backend_names, get_backend
    from edgevision.errors import TargetError

    with pytest.raises(TargetError, match="unknown backend") as caught:
        get_backend(name)
    assert "onnxruntime" in str(caught.value) and "base" not in backend_names()


@pytest.mark.parametrize("field, value", [("channel_order", "RGBA"), ("layout", "CHW"),
                                          ("interpolation", "lanczos9"), ("crop", "random")])
def test_a_bad_preprocessing_config_is_refused(field: str, value: str) -> None:
    from edgevision.errors import InputError
    from edgevision.preprocess import PreprocessConfig

    with pytest.raises(InputError, match=value):
        PreprocessConfig(**{field: value})


def test_preprocessing_honours_channel_order_layout_and_resizing() -> None:
    from edgevision.preprocess import PreprocessConfig, preprocess
    from edgevision.samples import sample_image

    bgr = sample_image("chelsea")  # 300x451 photo
    rgb_net = preprocess(bgr, PreprocessConfig(input_size=(64, 64), resize_short=None))
    # The same photo, handed over as RGB, for a network that wants BGR: the same planes in reverse order.
    bgr_net = preprocess(bgr[:, :, ::-1], PreprocessConfig(input_size=(64, 64), resize_short=None,
                                                          channel_order="BGR", mean=(0.485, 0.456, 0.406)[::-1],
                                                          std=(0.229, 0.224, 0.225)[::-1]), channels="RGB")
    np.testing.assert_allclose(rgb_net, bgr_net[::-1], atol=1e-6)
    nhwc = preprocess(bgr, PreprocessConfig(input_size=(64, 64), resize_short=None, layout="NHWC"))
    np.testing.assert_allclose(nhwc.transpose(2, 0, 1), rgb_net, atol=1e-6)
    # crop="none" squeezes the whole frame, "center" cuts the sides of this landscape photo: they differ.
    squeezed = preprocess(bgr, PreprocessConfig(input_size=(64, 64), resize_short=73, crop="none"))
    cropped = preprocess(bgr, PreprocessConfig(input_size=(64, 64), resize_short=73))
    assert squeezed.shape == cropped.shape == (3, 64, 64)
    assert np.abs(squeezed - cropped).mean() > 0.05
    # Round trip through the manifest's dict form.
    config = PreprocessConfig(input_size=(160, 192), layout="NHWC", channel_order="BGR")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
