// HD marks functions that compile for both the host and a CUDA device.
#pragma once

#if defined(__CUDACC__)
#define HD __host__ __device__
#else
#define HD
#endif
