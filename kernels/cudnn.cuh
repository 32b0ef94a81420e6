// What the files that call cuDNN share (kernels/conv.cu, kernels/batchnorm.cu): its error
// check and the ownership of its handles and descriptors. Included where PAIRBENCH_HAVE_CUDNN.
#pragma once

#include <cudnn.h>

#include <string>

#include "kernels/gpu_impl.cuh"

namespace pb::gpu::cudnn_detail {

// A failed call's status and, where cuDNN 9 kept one, its own account of why (which layout,
// data type or size check failed): cudnnGetLastErrorString.
inline std::string cudnn_error(cudnnStatus_t st) {
  char why[512] = "";
  cudnnGetLastErrorString(why, sizeof why);
  return std::string(cudnnGetErrorString(st)) + (why[0] ? std::string(": ") + why : "");
}

#define PB_CUDNN(call)                                                                    \
  do {                                                                                    \
    cudnnStatus_t st_ = (call);                                                           \
    if (st_ != CUDNN_STATUS_SUCCESS)                                                      \
      ::pb::gpu::fail(#call, ::pb::gpu::cudnn_detail::cudnn_error(st_).c_str(), __FILE__, \
                      __LINE__);                                                          \
  } while (0)

// Owns a cuDNN object: a handle or a descriptor, destroyed with its cudnnDestroy* function.
template <class T, cudnnStatus_t (*Destroy)(T)>
class CudnnObject {
 public:
  CudnnObject() = default;
  CudnnObject(const CudnnObject&) = delete;
  CudnnObject& operator=(const CudnnObject&) = delete;
  ~CudnnObject() {
    if (p_) Destroy(p_);
  }
  T* out() { return &p_; }
  T get() const { return p_; }

 private:
  T p_ = nullptr;
};

}  // namespace pb::gpu::cudnn_detail
