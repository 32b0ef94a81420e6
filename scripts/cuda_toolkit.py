#!/usr/bin/env python3
"""A CUDA toolkit from PyPI for a GPU machine that has none (scripts/setup calls it).

  cuda_toolkit.py choose DRIVER   the pip requirements for the toolkit this NVIDIA driver runs
                                  (e.g. 580.65.06): one per line
  cuda_toolkit.py unify SITE DEST lays the installed toolkit out as nvcc and CMake expect it,
                                  in DEST, from the packages under SITE (a site-packages folder)

The CUDA 13 runtime needs a driver of version 580 or later. Older drivers (525 to 579, common
on A100 and H100 images) run CUDA 12, but PyPI has no CUDA 12 compiler (nvidia-cuda-nvcc-cu12
holds ptxas alone): for those, `choose` says what to do instead. CUDA 13's wheels install one
tree (nvidia/cu13) that lacks what nvcc's nvcc.profile and CMake look for: the
targets/<arch>-linux/{include,lib} links, lib64, and the unversioned library names
(libcudart.so); `unify` lays it out as NVIDIA's own installer does (as /usr/local/cuda is on
this project's machines, made from the same wheels). Exit codes: 0 done; 2 bad input (a driver
that runs no CUDA 13, a folder with no toolkit)."""
import os
import platform
import shutil
import sys

# What pairbench builds with: the compiler and its parts, the runtime, cuBLAS, and cuDNN 9
# (which CMake finds in .venv's nvidia/cudnn).
CUDA13 = ["cuda-toolkit[nvcc,crt,nvvm,cccl,cudart,cublas]==13.0.2", "nvidia-cudnn-cu13==9.19.1.2"]
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
        raise ToolkitError(
            f"NVIDIA driver {driver.strip()} runs CUDA 12 but not CUDA 13 (driver 580 or later), "
            "and PyPI has no CUDA 12 compiler: install a CUDA 12 toolkit (NVIDIA's repository; "
            "nvcc on PATH or in /usr/local/cuda), or update the driver to 580 or later, then "
            "run scripts/setup again")
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


def unify(site, dest, machine=None):
    """Makes dest a toolkit root as NVIDIA lays one out: bin/ (nvcc and its tools), include/,
    lib/ (with unversioned .so names) and lib64 -> lib, nvvm/, and targets/<arch>-linux/
    {include,lib} -> ../../{include,lib}, where nvcc.profile looks for headers and libraries."""
    tree = os.path.join(site, "nvidia", "cu13")
    if not os.path.isfile(os.path.join(tree, "bin", "nvcc")):
        raise ToolkitError(f"no nvcc under {tree}: install the toolkit first")
    shutil.rmtree(dest, ignore_errors=True)
    for sub in ("include", "lib", "nvvm"):
        if os.path.isdir(os.path.join(tree, sub)):
            _link_tree(os.path.join(tree, sub), os.path.join(dest, sub))
    # Copied, not linked: nvcc takes its TOP (where nvcc.profile says the rest is) from where
    # it really is.
    shutil.copytree(os.path.join(tree, "bin"), os.path.join(dest, "bin"), symlinks=True)
    lib = os.path.join(dest, "lib")
    os.makedirs(lib, exist_ok=True)
    for name in os.listdir(lib):
        base, _, version = name.partition(".so.")
        if version and not os.path.lexists(os.path.join(lib, base + ".so")):
            os.symlink(name, os.path.join(lib, base + ".so"))
    os.symlink("lib", os.path.join(dest, "lib64"))
    arch = {"x86_64": "x86_64", "aarch64": "sbsa"}.get(machine or platform.machine(), "x86_64")
    target = os.path.join(dest, "targets", f"{arch}-linux")
    os.makedirs(target)
    for sub in ("include", "lib"):
        os.symlink(os.path.join("..", "..", sub), os.path.join(target, sub))
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
