#!/usr/bin/env python3
"""Set up what the aarch64-linux `cpu` variant needs on an x86_64 Linux machine: a cross compiler,
an arm64 Python with the project's pinned packages, and qemu user-mode emulation to run it.

    python scripts/aarch64/setup.py     # (make aarch64-setup) -> .aarch64/

Everything lands in the git-ignored `.aarch64/`; each step is skipped while its inputs (the pins
below, requirements-dev.txt's torch, the host .venv's packages, this script) are unchanged:

    .aarch64/apt/        a private apt root (APT::Architecture arm64): the host's dpkg is untouched
    .aarch64/sysroot/    Debian arm64 packages unpacked with `dpkg -x`: python3.11, Python.h,
                         libstdc++; a fake proc/cpuinfo (see write_cpuinfo)
    .aarch64/wheels/     the aarch64 torch wheel
    .aarch64/cuda-stubs/ stand-ins for the CUDA libraries that wheel links (see cuda_stubs.c)
    .aarch64/venv/       an arm64 venv: bin/python is an x86 shell script running the sysroot's
                         python3.11 under qemu-aarch64, site-packages has the host .venv's versions
    .aarch64/bin/        cross g++ for torch.compile inside the emulated Python (see CXX_WRAPPER)

PyPI's aarch64 torch is the CUDA build (2 GB of nvidia wheels as dependencies); the Hub variant
`torch213-cxx11-cpu-aarch64-linux` is for the CPU build, which only PyTorch's own index has. So
the wheel is installed without its CUDA dependencies, its CUDA libraries are stubs, and its
`torch/version.py` says `cuda = None` as the CPU build's does (kernels and transformers pick the
backend from it).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ROOT = REPO / ".aarch64"
HOST_VENV_PY = REPO / ".venv" / "bin" / "python"

# Debian bookworm packages, pinned (the versions this was measured with).
HOST_PACKAGES = {
    "g++-aarch64-linux-gnu": "4:12.2.0-3",
    "qemu-user": "1:7.2+dfsg-7+deb12u18+b3",
}
SYSROOT_PACKAGES = {  # arm64; apt adds their dependencies
    "python3.11": "3.11.2-6+deb12u9",
    "libpython3.11-dev": "3.11.2-6+deb12u9",
    "libstdc++6": "12.2.0-14+deb12u1",
}
PYTHON_VERSION = "3.11"
# pip does not fall back to older manylinux tags when one is given: list them all.
WHEEL_PLATFORMS = ["manylinux_2_28_aarch64", *(f"manylinux_2_{m}_aarch64" for m in range(27, 16, -1)),
                   "manylinux2014_aarch64", "linux_aarch64"]
# The emulated CPU: Neoverse N1 (Graviton 2 / Ampere Altra class). qemu's default `max` cpu has
# 512-bit SVE, for which inductor's generated code (built for 256-bit SVE) is wrong.
QEMU_CPU = "neoverse-n1"
CROSS = "aarch64-linux-gnu-"


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, check=True, **kwargs)


def step(name: str, inputs: str, action) -> None:
    """Runs `action` unless the last run of step `name` had the same inputs (and code)."""
    stamp = ROOT / f".{name}.stamp"
    key = hashlib.sha256((inputs + inspect.getsource(action)).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == key:
        return
    print(f"aarch64 set-up: {name}", flush=True)
    action()
    stamp.write_text(key)


def installed_version(package: str) -> str | None:
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                       text=True)
    return r.stdout if r.returncode == 0 else None


def install_host_packages() -> None:
    missing = [f"{p}={v}" for p, v in HOST_PACKAGES.items() if installed_version(p) != v]
    if not missing:
        return
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env).returncode != 0:  # a machine whose lists are stale
        run(["apt-get", "update", "-q"])
        run(install, env=env)


def build_sysroot() -> None:
    apt_root = ROOT / "apt"
    for d in ["etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/apt/preferences.d",
              "var/lib/dpkg", "var/lib/apt/lists/partial", "var/cache/apt/archives/partial"]:
        (apt_root / d).mkdir(parents=True, exist_ok=True)
    (apt_root / "var/lib/dpkg/status").write_text("")  # nothing installed: apt fetches the closure
    for sources in Path("/etc/apt/sources.list.d").glob("*.sources"):
        shutil.copy(sources, apt_root / "etc/apt/sources.list.d")
    if Path("/etc/apt/sources.list").exists():
        shutil.copy("/etc/apt/sources.list", apt_root / "etc/apt/sources.list")
    config = apt_root / "apt.conf"
    config.write_text(f'Dir "{apt_root}/";\n'
                      f'Dir::State::status "{apt_root}/var/lib/dpkg/status";\n'
                      'APT::Architecture "arm64";\nAPT::Architectures { "arm64"; };\n'
                      'Debug::NoLocking "true";\n')
    env = {**os.environ, "APT_CONFIG": str(config)}
    archives = apt_root / "var/cache/apt/archives"
    for old in archives.glob("*.deb"):
        old.unlink()
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--download-only", "--no-install-recommends",
         *(f"{p}={v}" for p, v in SYSROOT_PACKAGES.items())], env=env)
    sysroot = ROOT / "sysroot"
    fresh = ROOT / "sysroot.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    for deb in sorted(archives.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(fresh)], check=True)
    # qemu -L looks here first for every path: keep the host's /tmp, /etc/... visible.
    for host_only in ["tmp", "etc/ld.so.cache"]:
        shutil.rmtree(fresh / host_only, ignore_errors=True)
    write_cpuinfo(fresh)
    shutil.rmtree(sysroot, ignore_errors=True)
    fresh.rename(sysroot)


def write_cpuinfo(sysroot: Path) -> None:
    """qemu-user passes the host's /proc/cpuinfo through; torch's cpuinfo library segfaults on an
    x86 one. qemu's -L redirects the path to this Neoverse N1 description, one entry per host core
    (the emulated process sees the host's core count)."""
    entry = ("processor\t: {i}\nBogoMIPS\t: 50.00\n"
             "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
             "asimdrdm lrcpc dcpop asimddp ssbs\n"
             "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\n"
             "CPU part\t: 0xd0c\nCPU revision\t: 1\n\n")
    (sysroot / "proc").mkdir(exist_ok=True)
    (sysroot / "proc" / "cpuinfo").write_text(
        "".join(entry.format(i=i) for i in range(os.cpu_count() or 1)))
    # The same CPU's MIDR_EL1 (Arm r3p1, part 0xd0c), which oneDNN's CPU detection reads.
    for i in range(os.cpu_count() or 1):
        midr = sysroot / f"sys/devices/system/cpu/cpu{i}/regs/identification/midr_el1"
        midr.parent.mkdir(parents=True, exist_ok=True)
        midr.write_text("0x00000000413fd0c1\n")


def torch_pin() -> str:
    for line in (REPO / "requirements-dev.txt").read_text().splitlines():
        if line.startswith("torch=="):
            return line.strip()
    raise SystemExit("requirements-dev.txt pins no torch")


def pip(*args: str) -> None:
    run([str(HOST_VENV_PY), "-m", "pip", "--disable-pip-version-check", *args])


def platform_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for p in WHEEL_PLATFORMS:
        args += ["--platform", p]
    return args


def torch_wheel() -> Path:
    wheels = ROOT / "wheels"
    version = torch_pin().split("==")[1]
    found = sorted(wheels.glob(f"torch-{version}-*aarch64.whl"))
    if not found:
        pip("download", "--no-deps", "-q", "-d", str(wheels), *platform_args(), torch_pin())
        found = sorted(wheels.glob(f"torch-{version}-*aarch64.whl"))
    return found[-1]


# What the tests import. Their dependencies come along, at the versions of the host .venv
# (requirements-dev.txt's pins and what they pulled); the host's own tools (linters) stay out.
TEST_PACKAGES = ["torch", "kernels", "transformers", "pytest", "numpy"]


def test_requirements() -> str:
    """TEST_PACKAGES and their dependencies, pinned to the host .venv's versions, less torch
    (installed from the aarch64 wheel without its CUDA dependencies)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    todo = list(TEST_PACKAGES)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in pinned:
            continue
        dist = metadata.distribution(name)
        pinned[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return "".join(f"{n}=={v}\n" for n, v in sorted(pinned.items()) if n != "torch")


PYTHON_WRAPPER = """#!/bin/sh
# arm64 python3.11 of {sysroot} under qemu user-mode emulation. This script is sys.executable
# inside (qemu -0): child Python processes come back here, to be emulated too.
exec qemu-aarch64 -L "{sysroot}" -cpu {cpu} -E LD_LIBRARY_PATH="{stubs}" -0 "{venv}/bin/python" \\
    "{sysroot}/usr/bin/python{version}" "$@"
"""


def build_venv() -> None:
    venv = ROOT / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    site = venv / "lib" / f"python{PYTHON_VERSION}" / "site-packages"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    # A venv whose home is the sysroot's /usr/bin as the emulated process sees it.
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\n"
                                     f"version = {PYTHON_VERSION}\n")
    python = venv / "bin" / "python"
    python.write_text(PYTHON_WRAPPER.format(sysroot=ROOT / "sysroot", cpu=QEMU_CPU, venv=venv,
                                            stubs=ROOT / "cuda-stubs", version=PYTHON_VERSION))
    python.chmod(0o755)
    requirements = ROOT / "requirements.txt"
    requirements.write_text(test_requirements())
    pip("install", "-q", "--no-deps", "--target", str(site), *platform_args(), "--abi",
        f"cp{PYTHON_VERSION.replace('.', '')}", "--abi", "abi3", "--abi", "none",
        str(torch_wheel()), "-r", str(requirements))
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with the host's shebang
    version_py = site / "torch" / "version.py"
    text, n = re.subn(r"^cuda: Optional\[str\] = .*$", "cuda: Optional[str] = None",
                      version_py.read_text(), flags=re.M)
    if n != 1:
        raise SystemExit(f"{version_py}: no `cuda = ...` line to clear")
    version_py.write_text(text)


# Unversioned CUDA imports (cuSPARSELt, NCCL, cuFile, the driver API) name no library: they are
# defined in the runtime's stub, which every CUDA-linked torch library loads.
UNVERSIONED_CUDA = re.compile(r"^(cu[A-Z]|cusparseLt|nccl)")


def imports(torch_lib: Path) -> dict[str, dict[str, set[str]]]:
    """soname -> {version node: the symbols torch's libraries import from it}, for every library
    torch links (one without symbol versions has no nodes)."""
    wanted: dict[str, dict[str, set[str]]] = {}
    node_lib: dict[str, str] = {}  # version node -> soname
    versioned: list[tuple[str, str]] = []  # (symbol, version node)
    unversioned: set[str] = set()
    defined: set[str] = set()
    for lib in sorted(torch_lib.glob("*.so*")):
        out = subprocess.run([f"{CROSS}readelf", "-d", "-V", "--dyn-syms", "-W", str(lib)],
                             check=True, capture_output=True, text=True).stdout
        current = None
        for line in out.splitlines():
            if m := re.search(r"\(NEEDED\).*\[(.+)\]", line):
                wanted.setdefault(m.group(1), {})
            elif m := re.search(r"File: (\S+)", line):
                current = m.group(1)
            elif current and (m := re.search(r"Name: (\S+)", line)):
                node_lib[m.group(1)] = current
            elif m := re.search(r"\s(?:FUNC|OBJECT|NOTYPE)\s+(\w+)\s+\w+\s+(\w+) ([\w.]+)(@\S+)?",
                                line):
                binding, index, symbol, version = m.groups()
                if index != "UND":
                    defined.add(symbol)
                elif version:
                    versioned.append((symbol, version.lstrip("@")))
                elif binding == "GLOBAL" and UNVERSIONED_CUDA.match(symbol):
                    unversioned.add(symbol)
    for symbol, node in versioned:
        if node in node_lib:
            wanted[node_lib[node]].setdefault(node, set()).add(symbol)
    runtime = next(s for s in wanted if s.startswith("libcudart."))
    wanted[runtime].setdefault(runtime, set()).update(unversioned - defined)
    return wanted


STUB_FUNCTION = "__attribute__((weak)) void {name}(void) {{ cuda_stub_called(\"{name}\"); }}\n"
# The runtime's (and driver's) entry points answer as on a machine without a GPU.
RUNTIME_STUB_FUNCTION = "__attribute__((weak)) int {name}(void) {{ return cuda_no_device(); }}\n"


def build_cuda_stubs() -> None:
    """A library for every soname torch links that neither the wheel nor the sysroot has, with
    every symbol torch imports from it under its version node: cuda_stubs.c's few answers, the
    rest of the runtime (and driver) reports that there is no device, any other library's functions
    stop the process naming themselves."""
    stubs = ROOT / "cuda-stubs"
    shutil.rmtree(stubs, ignore_errors=True)
    stubs.mkdir()
    torch_lib = ROOT / "venv" / "lib" / f"python{PYTHON_VERSION}" / "site-packages" / "torch" / "lib"
    search = [torch_lib, *(ROOT / "sysroot" / d for d in
                           ["lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib"])]
    for soname, nodes in sorted(imports(torch_lib).items()):
        if any((d / soname).exists() for d in search):
            continue
        if not soname.startswith(("libcu", "libnv", "libnccl")):
            raise SystemExit(f"torch needs {soname}, which is neither CUDA nor in the sysroot")
        script = stubs / f"{soname}.map"
        script.write_text("".join(f"{node} {{ global: {' '.join(f'{s};' for s in sorted(syms))} "
                                  "local: *; };\n" for node, syms in sorted(nodes.items()))
                          or "{ global: *; };\n")
        source = stubs / f"{soname}.c"
        runtime = soname.startswith("libcudart.")
        template = RUNTIME_STUB_FUNCTION if runtime else STUB_FUNCTION
        source.write_text("void cuda_stub_called(const char *name);\nint cuda_no_device(void);\n"
                          + "".join(template.format(name=s) for syms in nodes.values()
                                    for s in sorted(syms)))
        defines = ["-DCUDART_STUB"] if runtime else []
        run([f"{CROSS}gcc", "-O2", "-shared", "-fPIC", *defines, f"-Wl,-soname,{soname}",
             f"-Wl,--version-script,{script}", "-o", str(stubs / soname), str(source),
             str(HERE / "cuda_stubs.c")],
            stdout=subprocess.DEVNULL)
        script.unlink()
        source.unlink()


CXX_WRAPPER = """#!/bin/sh
# torch.compile inside the emulated Python runs $CXX (make test-aarch64 points it here): compile
# for aarch64 instead, against the sysroot (Python.h, libc), for the emulated CPU where inductor
# asks for the build machine's (-march=native).
for arg; do
    shift
    case "$arg" in
        -march=native) set -- "$@" -mcpu={cpu} ;;
        *) set -- "$@" "$arg" ;;
    esac
done
exec {cross}g++ --sysroot="{sysroot}" -isystem "{sysroot}/usr/include" \\
    -isystem "{sysroot}/usr/include/aarch64-linux-gnu" "$@"
"""


def write_cxx_wrapper() -> None:
    bin_dir = ROOT / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ["g++", "c++"]:
        wrapper = bin_dir / name
        wrapper.write_text(CXX_WRAPPER.format(cross=CROSS, sysroot=ROOT / "sysroot", cpu=QEMU_CPU))
        wrapper.chmod(0o755)


def main() -> None:
    if not HOST_VENV_PY.exists():
        raise SystemExit("the host .venv is missing: run `make venv` first")
    ROOT.mkdir(exist_ok=True)
    install_host_packages()  # checked every time: a work tree may outlive its machine
    step("sysroot", repr(SYSROOT_PACKAGES) + inspect.getsource(write_cpuinfo), build_sysroot)
    step("venv", torch_pin() + test_requirements() + str(ROOT) + PYTHON_WRAPPER + QEMU_CPU
         + repr(platform_args()), build_venv)
    step("cuda-stubs", (HERE / "cuda_stubs.c").read_text() + torch_pin() + str(ROOT)
         + inspect.getsource(imports) + STUB_FUNCTION + RUNTIME_STUB_FUNCTION
         + UNVERSIONED_CUDA.pattern,
         build_cuda_stubs)
    step("cxx-wrapper", str(ROOT) + CXX_WRAPPER + QEMU_CPU, write_cxx_wrapper)
    print(f"aarch64 set-up ready: {(ROOT / 'venv' / 'bin' / 'python').relative_to(REPO)}")


if __name__ == "__main__":
    main()
