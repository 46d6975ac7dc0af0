"""Measurement helpers shared by the benchmarks: interleaved timing, peak memory, tables.

Timing: every implementation runs once per round, rounds interleave implementations, and each reports the median
over rounds after warm-up, so slow drift of a shared machine hits all of them alike. Ratios come from one run.

Peak memory (CPU): each (case, implementation) runs in a fresh subprocess. glibc's mmap threshold is pinned at
1 MiB so freed blocks go back to the OS and the resident set tracks live tensors; after one warm-up call the
kernel's high-water mark is reset (``/proc/self/clear_refs``) and the peak *extra* memory of one forward+backward
is ``VmHWM - VmRSS`` at the start. On CUDA it is ``torch.cuda.max_memory_allocated`` above the start.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = ""
    try:
        model = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)  # noqa: SIM115
    except (OSError, AttributeError):
        model = platform.processor()
    return f"CPU {model}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_medians(
    runs: dict[str, Callable[[], None]], device: str, rounds: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each callable over ``rounds`` interleaved rounds, after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(warmup + rounds):
        for name, run in runs.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+)", status.read()).group(1)) * 1024


def pin_malloc() -> None:
    """Make freed large blocks return to the OS so RSS follows live memory (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: fixed, disables the dynamic threshold
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def peak_extra_bytes(run: Callable[[], None], device: str) -> int:
    """Peak memory above the starting point during one call of ``run`` (after one warm-up call)."""
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    start = _status("VmRSS")
    run()
    return _status("VmHWM") - start


def measure_in_subprocess(module: str, case: str, impl: str, device: str) -> int:
    """Run ``python -m module --peak case impl`` in a fresh process and return its peak extra bytes."""
    env = dict(os.environ)
    command = [sys.executable, "-m", module, "--peak", case, impl, "--device", device]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_bytes"])


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    header = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(row[key]) for key, _ in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])


# -- run records (added for bench_compile) ------------------------------------------------------------------------
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags() -> dict:
    """What decides CPU kernel speed, for the record: ISA flags, ATen's dispatch level, thread settings, load."""
    flags: list[str] = []
    try:
        line = re.search(r"^flags\s*:\s*(.*)$", open("/proc/cpuinfo").read(), re.MULTILINE)  # noqa: SIM115
        present = set(line.group(1).split()) if line else set()
        flags = [flag for flag in _ISA_FLAGS if flag in present]
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = []
    return {
        "isa_flags": flags,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpus_usable": affinity,
        "env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_AFFINITY")},
        "load_average_1_5_15": load,
    }


def run_record(device: str) -> dict:
    """Device, versions and (on CPU) :func:`cpu_flags`, stored with every result file."""
    record = {
        "device": device_description(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if device.startswith("cuda"):
        record["cuda"] = torch.version.cuda
        record["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        record["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    else:
        record["cpu"] = cpu_flags()
    return record
