#!/usr/bin/env python3
"""A CUDA toolkit from PyPI for a GPU machine that has none (scripts/setup calls it).

  cuda_toolkit.py choose DRIVER   the pip requirements for the toolkit this NVIDIA driver runs
                                  (e.g. 580.65.06): one per line
  cuda_toolkit.py unify SITE DEST lays the installed toolkit out as nvcc and CMake expect it,
                                  in DEST (bin/, include/, lib/, nvvm/), from the packages under
                                  SITE (a site-packages folder)

The CUDA 13 runtime needs a driver of version 580 or later; older drivers (525 to 579, common
on A100 and H100 images) run CUDA 12. CUDA 13's wheels install one tree (nvidia/cu13); CUDA
12's install one per component (nvidia/cuda_nvcc, nvidia/cuda_runtime, nvidia/cublas, ...),
which `unify` joins. Both lack the unversioned library names (libcudart.so) that the build
links by: `unify` adds them. Exit codes: 0 done; 2 bad input (a driver too old for either, a
folder with no toolkit)."""
import os
import shutil
import sys

# What pairbench builds with: the compiler and its parts, the runtime, cuBLAS.
CUDA13 = ["cuda-toolkit[nvcc,crt,nvvm,cccl,cudart,cublas]==13.0.2"]
CUDA12 = ["cuda-toolkit[nvcc,cudart,cublas,cccl]==12.8.1"]
MIN_DRIVER = {13: 580, 12: 525}


class ToolkitError(Exception):
    """str() is the one-line message."""


def choose(driver):
    """(CUDA major version, pip requirements) for an NVIDIA driver version string."""
    try:
        major = int(driver.strip().split(".")[0])
    except ValueError:
        raise ToolkitError(f"not a driver version: {driver!r}") from None
    if major >= MIN_DRIVER[13]:
        return 13, CUDA13
    if major >= MIN_DRIVER[12]:
        return 12, CUDA12
    raise ToolkitError(f"NVIDIA driver {driver.strip()} is older than {MIN_DRIVER[12]}, the "
                       "oldest that runs CUDA 12: update the driver")


def _link_tree(src, dest):
    """Symbolic links in dest to every file under src (folders made as needed)."""
    for folder, _, files in os.walk(src):
        target = os.path.join(dest, os.path.relpath(folder, src))
        os.makedirs(target, exist_ok=True)
        for f in files:
            link = os.path.join(target, f)
            if not os.path.lexists(link):
                os.symlink(os.path.join(folder, f), link)


def unify(site, dest):
    """Makes dest a toolkit root: bin/nvcc, include/, lib/ (with unversioned .so names), nvvm/."""
    nvidia = os.path.join(site, "nvidia")
    cu13 = os.path.join(nvidia, "cu13")
    parts = [cu13] if os.path.isdir(cu13) else sorted(
        os.path.join(nvidia, d) for d in (os.listdir(nvidia) if os.path.isdir(nvidia) else []))
    if not any(os.path.isfile(os.path.join(p, "bin", "nvcc")) for p in parts):
        raise ToolkitError(f"no nvcc under {nvidia}: install the toolkit first")
    shutil.rmtree(dest, ignore_errors=True)
    for part in parts:
        for sub in ("include", "lib", "nvvm"):
            if os.path.isdir(os.path.join(part, sub)):
                _link_tree(os.path.join(part, sub), os.path.join(dest, sub))
        if os.path.isfile(os.path.join(part, "bin", "nvcc")):
            # Copied, not linked: nvcc finds its nvcc.profile, nvvm and headers from where it
            # really is, and they are joined here.
            shutil.copytree(os.path.join(part, "bin"), os.path.join(dest, "bin"), symlinks=True)
    lib = os.path.join(dest, "lib")
    for name in os.listdir(lib) if os.path.isdir(lib) else []:
        base, _, version = name.partition(".so.")
        if version and not os.path.lexists(os.path.join(lib, base + ".so")):
            os.symlink(name, os.path.join(lib, base + ".so"))
    os.symlink("lib", os.path.join(dest, "lib64"))
    return dest


def main(argv):
    try:
        if len(argv) == 3 and argv[1] == "choose":
            version, requirements = choose(argv[2])
            print("\n".join(requirements))
            return 0
        if len(argv) == 4 and argv[1] == "unify":
            print(unify(argv[2], argv[3]))
            return 0
    except ToolkitError as e:
        print(f"cuda_toolkit.py: error: {e}", file=sys.stderr)
        return 2
    print("usage: cuda_toolkit.py choose DRIVER | unify SITE DEST", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
