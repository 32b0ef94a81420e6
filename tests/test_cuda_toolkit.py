"""scripts/cuda_toolkit.py, what scripts/setup installs on a GPU machine without a toolkit: the
CUDA version the driver runs, and the toolkit laid out as nvcc and CMake expect it (tested on
folders shaped as the CUDA 13 and CUDA 12 wheels install them)."""
import os

import pytest

import cuda_toolkit


@pytest.mark.parametrize("driver,cuda", [("580.65.06", 13), ("590.1", 13), ("570.86.15", 12),
                                         ("535.230.02", 12), ("525.60.13", 12)])
def test_the_driver_decides_the_toolkit(driver, cuda):
    version, requirements = cuda_toolkit.choose(driver)
    assert version == cuda
    assert requirements and all(r.startswith(f"cuda-toolkit[") and f"=={cuda}." in r
                                for r in requirements)
    assert all(part in requirements[0] for part in ("nvcc", "cudart", "cublas"))


@pytest.mark.parametrize("driver", ["470.256.02", "not-a-version", ""])
def test_a_driver_too_old_or_unreadable_is_an_error(driver):
    with pytest.raises(cuda_toolkit.ToolkitError):
        cuda_toolkit.choose(driver)
    assert cuda_toolkit.main(["x", "choose", driver]) == 2


def make(root, files):
    for f in files:
        path = os.path.join(root, f)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as out:
            out.write(f)


def test_cuda13_wheels_become_a_toolkit_root(tmp_path):
    site = tmp_path / "site"
    make(site, ["nvidia/cu13/bin/nvcc", "nvidia/cu13/bin/nvcc.profile", "nvidia/cu13/bin/ptxas",
                "nvidia/cu13/include/cuda_runtime.h", "nvidia/cu13/lib/libcudart.so.13",
                "nvidia/cu13/lib/libcublas.so.13", "nvidia/cu13/nvvm/bin/cicc"])
    dest = cuda_toolkit.unify(str(site), str(tmp_path / "cuda"))
    for f in ("bin/nvcc", "bin/nvcc.profile", "include/cuda_runtime.h", "nvvm/bin/cicc",
              "lib/libcudart.so", "lib/libcublas.so", "lib64/libcudart.so.13"):
        assert os.path.exists(os.path.join(dest, f)), f
    assert not os.path.islink(os.path.join(dest, "bin", "nvcc"))  # a copy: its TOP is dest
    assert os.readlink(os.path.join(dest, "lib", "libcudart.so")) == "libcudart.so.13"


def test_cuda12_wheels_are_joined(tmp_path):
    site = tmp_path / "site"
    make(site, ["nvidia/cuda_nvcc/bin/nvcc", "nvidia/cuda_nvcc/nvvm/bin/cicc",
                "nvidia/cuda_nvcc/include/crt/host_config.h",
                "nvidia/cuda_runtime/include/cuda_runtime.h",
                "nvidia/cuda_runtime/lib/libcudart.so.12", "nvidia/cublas/include/cublas_v2.h",
                "nvidia/cublas/lib/libcublas.so.12", "nvidia/cublas/lib/libcublasLt.so.12"])
    dest = cuda_toolkit.unify(str(site), str(tmp_path / "cuda"))
    for f in ("bin/nvcc", "nvvm/bin/cicc", "include/crt/host_config.h", "include/cuda_runtime.h",
              "include/cublas_v2.h", "lib/libcudart.so", "lib/libcublas.so", "lib/libcublasLt.so"):
        assert os.path.exists(os.path.join(dest, f)), f


def test_no_toolkit_installed_is_an_error(tmp_path):
    with pytest.raises(cuda_toolkit.ToolkitError, match="no nvcc"):
        cuda_toolkit.unify(str(tmp_path), str(tmp_path / "cuda"))
