"""edgevision wheelhouse --target rpi4 -o wheels/"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("wheelhouse", help="download a device's wheels (edgevision + its runtime) for an offline install",
                       description="Fill a folder with the wheels a device needs to install edgevision and the "
                                   "runtime of TARGET with no network: its CPU architecture, Python and glibc "
                                   "come from the target file. Copy the folder to the device and run the printed "
                                   "pip command there.")
    p.add_argument("-t", "--target", required=True, help="target name or .toml file (e.g. rpi4)")
    p.add_argument("-o", "--output", type=Path, default=Path("wheels"), help="folder for the wheels (default wheels/)")
    p.add_argument("--wheel", type=Path,
                   help="the edgevision wheel to ship (default: built from this checkout; needed when "
                        "edgevision itself was installed from a wheel)")
    p.add_argument("--extra", help="edgevision extra to install on the device (default: the target's)")
    p.add_argument("--python-version", help="the device's Python, e.g. 3.11 (default: the target's)")
    p.add_argument("--glibc", help="the device's glibc, e.g. 2.36 (default: the target's)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Console) -> int:
    from ...targets import get_target
    from ...wheelhouse import build_wheelhouse

    target = get_target(args.target)
    console.info(f"• downloading wheels for {target.name} into {args.output}/")
    house = build_wheelhouse(target, args.output, wheel=args.wheel, python=args.python_version, glibc=args.glibc,
                             extra=args.extra)
    device = house.platform
    console.print(f"wheelhouse: {len(house.wheels)} wheels, {house.size_bytes() / 1e6:.1f} MB, "
                  f"for {device.arch} CPython {device.python} (glibc {device.glibc}), extra [{house.extra}]")
    console.print(f"on the device, from the folder holding {house.folder.name}/:")
    console.print(f"  {house.install_command()}")
    return 0
