"""Run and verify artifacts for other CPUs on this host: qemu-aarch64 in a cached arm64 sysroot.

Importing this package is cheap; qemu and the sysroot are only touched when a function runs.
"""
