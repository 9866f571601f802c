"""Regenerate the bundled sample images from registry packages (all public domain / CC0).

Run once by a maintainer; the JPEGs are committed so the device side needs neither package.
"""
from pathlib import Path

import cv2
import numpy as np
import skimage.data as data
import matplotlib

OUT = Path(__file__).resolve().parent.parent / "edgevision" / "samples" / "images"
MAX_SIDE = 480


def grey_to_rgb(img: np.ndarray) -> np.ndarray:
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    hopper = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    images = {
        "chelsea": data.chelsea(), "coffee": data.coffee(), "camera": grey_to_rgb(data.camera()),
        "rocket": data.rocket(), "astronaut": data.astronaut(),
        "hubble_deep_field": data.hubble_deep_field(), "retina": data.retina(),
        "grace_hopper": cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB),
    }
    for name, rgb in images.items():
        scale = MAX_SIDE / max(rgb.shape[:2])
        if scale < 1:
            rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(OUT / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])


if __name__ == "__main__":
    main()
