"""scripts/cuda_toolkit.py, what scripts/setup installs on a GPU machine without a toolkit: the
CUDA version the driver runs, and the toolkit laid out as nvcc and CMake expect it (tested on a
folder shaped as the CUDA 13 wheels install it, against the layout of /usr/local/cuda here)."""
import os

import pytest

import cuda_toolkit


@pytest.mark.parametrize("driver", ["580.65.06", "590.1"])
def test_a_driver_that_runs_cuda13_gets_it_from_pypi(driver):
    version, requirements = cuda_toolkit.choose(driver)
    assert version == 13
    assert requirements and requirements[0].startswith("cuda-toolkit[") and "==13." in requirements[0]
    assert all(part in requirements[0] for part in ("nvcc", "crt", "nvvm", "cudart", "cublas"))


@pytest.mark.parametrize("driver", ["570.86.15", "535.230.02", "525.60.13"])
def test_a_cuda12_driver_is_told_what_to_do(driver):
    # PyPI has no CUDA 12 compiler: the message says how to get one, or to update the driver.
    with pytest.raises(cuda_toolkit.ToolkitError, match="CUDA 12 toolkit.*580"):
        cuda_toolkit.choose(driver)


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
    dest = cuda_toolkit.unify(str(site), str(tmp_path / "cuda"), machine="x86_64")
    for f in ("bin/nvcc", "bin/nvcc.profile", "include/cuda_runtime.h", "nvvm/bin/cicc",
              "lib/libcudart.so", "lib/libcublas.so", "lib64/libcudart.so.13",
              "targets/x86_64-linux/include/cuda_runtime.h",  # where nvcc.profile looks
              "targets/x86_64-linux/lib/libcudart.so"):
        assert os.path.exists(os.path.join(dest, f)), f
    assert not os.path.islink(os.path.join(dest, "bin", "nvcc"))  # a copy: its TOP is dest
    assert os.readlink(os.path.join(dest, "lib", "libcudart.so")) == "libcudart.so.13"


def test_no_toolkit_installed_is_an_error(tmp_path):
    with pytest.raises(cuda_toolkit.ToolkitError, match="no nvcc"):
        cuda_toolkit.unify(str(tmp_path), str(tmp_path / "cuda"))


def test_the_layout_is_the_one_nvcc_uses_here(tmp_path):
    # /usr/local/cuda on these machines was put together from the same CUDA 13 wheels: what it
    # has at its top, a unified toolkit has too.
    local = "/usr/local/cuda"
    if not os.path.isfile(os.path.join(local, "bin", "nvcc")):
        pytest.skip("no /usr/local/cuda here")
    site = tmp_path / "site"
    make(site, ["nvidia/cu13/bin/nvcc", "nvidia/cu13/include/cuda_runtime.h",
                "nvidia/cu13/lib/libcudart.so.13", "nvidia/cu13/nvvm/bin/cicc"])
    dest = cuda_toolkit.unify(str(site), str(tmp_path / "cuda"))
    for entry in ("bin", "include", "lib", "lib64", "nvvm", "targets"):
        assert os.path.exists(os.path.join(local, entry)) == os.path.exists(os.path.join(dest, entry))
    for sub in os.listdir(os.path.join(local, "targets")):
        for link in ("include", "lib"):
            assert os.readlink(os.path.join(local, "targets", sub, link)) == \
                os.readlink(os.path.join(dest, "targets", sub, link))
