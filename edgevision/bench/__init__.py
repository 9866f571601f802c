"""Benchmarks: model-only latency and throughput, end-to-end stream FPS and memory, per artifact.

Every row runs in its own worker process (so peak RSS and imported runtimes never mix), timing rounds
are interleaved across rows, and the report records the host, library versions and date.
"""
from .hostinfo import host_info
from .results import (SCHEMA, BenchReport, BenchSettings, EndToEndResult, HostInfo, LatencyStats, MemoryResult,
                      ModelOnlyResult, RowResult)
from .session import Candidate, run_benchmark

__all__ = ["SCHEMA", "BenchReport", "BenchSettings", "Candidate", "EndToEndResult", "HostInfo", "LatencyStats",
           "MemoryResult", "ModelOnlyResult", "RowResult", "host_info", "run_benchmark"]
