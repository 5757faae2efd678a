"""What the benchmark ran on: CPU, cores, memory, kernel, Python, git and the libraries that matter."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def _first(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def _version(args: list[str]) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "not found"
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if (proc.stdout or proc.stderr) else "?"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on the machine makes numbers noisier)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def describe() -> dict[str, str]:
    """Machine facts for the report, as label -> value."""
    mem_kb = _first("/proc/meminfo", "MemTotal")
    mem = f"{int(mem_kb.split()[0]) / 1024 / 1024:.1f} GiB" if mem_kb else "?"
    virt = _first("/proc/cpuinfo", "flags") or ""
    packages = []
    for name in ("litestar", "uvicorn", "uvloop", "httptools", "msgspec", "watchfiles", "PyYAML", "python-frontmatter"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages.append(f"{name} {metadata.version(name)}")
    return {
        "CPU": _first("/proc/cpuinfo", "model name") or platform.processor() or "?",
        "Cores (online CPUs)": str(os.cpu_count()),
        "Virtualised": "yes (hypervisor flag)" if "hypervisor" in virt.split() else "no",
        "RAM": mem,
        "Kernel": f"{platform.system()} {platform.release()}",
        "OS": _os_name(),
        "Python": platform.python_version(),
        "git": _version(["git", "--version"]),
        "Libraries": ", ".join(packages),
    }
