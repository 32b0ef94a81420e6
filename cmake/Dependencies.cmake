# Libraries from Debian's packages (scripts/setup installs them).
find_package(OpenMP REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(benchmark REQUIRED)

# Debian's OpenMP build of OpenBLAS, by its own path: the pthread build can win the
# alternatives and oversubscribes the cores when it runs inside OpenMP code.
find_path(OPENBLAS_INCLUDE_DIR cblas.h
          HINTS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/openblas
          NO_DEFAULT_PATH)
find_library(OPENBLAS_LIBRARY openblas
             HINTS /usr/lib/x86_64-linux-gnu/openblas-openmp NO_DEFAULT_PATH)
if(NOT OPENBLAS_INCLUDE_DIR OR NOT OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS (OpenMP build) not found: run scripts/setup "
                      "(Debian package libopenblas-openmp-dev)")
endif()
add_library(pb::openblas INTERFACE IMPORTED)
target_include_directories(pb::openblas INTERFACE ${OPENBLAS_INCLUDE_DIR})
target_link_libraries(pb::openblas INTERFACE ${OPENBLAS_LIBRARY})

# oneDNN 3.x, the CPU library behind PyTorch's matmuls and convolutions: PyPI's
# onednn-devel-cpu-gomp (built with GNU OpenMP, so the process keeps one OpenMP runtime),
# installed by scripts/setup into .venv (Debian's libdnnl-dev is 2.x). Optional: without it the
# oneDNN cases are listed as skipped with the reason.
if(PAIRBENCH_ONEDNN)
  find_package(dnnl 3 CONFIG QUIET HINTS ${CMAKE_SOURCE_DIR}/.venv/lib/cmake/dnnl)
endif()
if(dnnl_FOUND)
  message(STATUS "pairbench: oneDNN ${dnnl_VERSION} (${dnnl_DIR})")
else()
  message(STATUS "pairbench: oneDNN not found (run scripts/setup): its cases will be skipped")
endif()

# MPI (Debian's OpenMPI: openmpi-bin and libopenmpi-dev, installed by scripts/setup), for runs of
# several ranks (bench/ranks.hpp) and the CPU's collectives. Optional: without it pairbench runs
# as one rank and the collectives are listed as skipped with the reason.
# MPI's C API, from C++ (the project enables no C compiler), without the C++ bindings.
if(PAIRBENCH_MPI)
  set(MPI_CXX_SKIP_MPICXX ON)
  find_package(MPI COMPONENTS CXX QUIET)
endif()
if(MPI_CXX_FOUND)
  message(STATUS "pairbench: MPI ${MPI_CXX_VERSION} (${MPI_CXX_LIBRARY_VERSION_STRING})")
else()
  message(STATUS "pairbench: MPI not found (run scripts/setup): one rank only")
endif()
