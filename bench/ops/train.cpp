// The full training step (and inference) of the MLP and the CNN, across batch sizes: the CPU's
// step with OpenBLAS (and im2col) or oneDNN. The GPU's step comes with its kernels
// (kernels/train.cu).
#include "bench/ops/family.hpp"
#include "core/train.hpp"
#include "cpu_ref/cpu.hpp"

namespace pb::ops {

OpFamily train_family() {
  auto suite = [](int level) {
    std::vector<SuiteEntry> out;
    for (Model m : {Model::mlp, Model::cnn})
      for (bool train : {true, false})
        for (std::int64_t b : train_suite_batches(level)) {
          TrainShape s;
          s.model = m, s.batch = b, s.train = train;
          out.push_back(entry<TrainWorkload>(s));
        }
    return out;
  };
  return fp32_family<TrainWorkload>("train",
                                    "model=mlp|cnn,batch=B[,pass=train|infer][,lr=L][,momentum=M]",
                                    suite, parse_train_shape, cpu::train_impls());
}

}  // namespace pb::ops
