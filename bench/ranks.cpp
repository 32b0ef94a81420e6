#include "bench/ranks.hpp"

#include <cstdlib>
#include <stdexcept>

#ifdef PAIRBENCH_HAVE_MPI
#include <mpi.h>
#endif

namespace pb::ranks {

namespace {

World g_world;
[[maybe_unused]] bool g_mpi = false;  // MPI was initialised by init()

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : -1;
}

// The launcher that started this process and the size it gave, from its environment; "" and 1
// for a plain run.
std::pair<std::string, int> launched() {
  if (env_int("OMPI_COMM_WORLD_SIZE") > 0) return {"mpirun", env_int("OMPI_COMM_WORLD_SIZE")};
  if (env_int("PMI_SIZE") > 0) return {"pmi", env_int("PMI_SIZE")};
  if (env_int("SLURM_NTASKS") > 1 && env_int("SLURM_PROCID") >= 0)
    return {"srun", env_int("SLURM_NTASKS")};
  return {"", 1};
}

}  // namespace

bool built_with_mpi() {
#ifdef PAIRBENCH_HAVE_MPI
  return true;
#else
  return false;
#endif
}

const World& init(int* argc, char*** argv) {
  const auto [launcher, size] = launched();
  g_world.launcher = launcher;
  if (launcher.empty() || size <= 1) return g_world;
#ifdef PAIRBENCH_HAVE_MPI
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);  // for the overlap's thread
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world.size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_world.rank, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &g_world.local_rank);
  MPI_Comm_size(local, &g_world.local_size);
  MPI_Comm_free(&local);
  return g_world;
#else
  (void)argc, (void)argv;
  throw std::runtime_error("started as one of " + std::to_string(size) + " ranks (by " + launcher +
                           ") but this pairbench was built without MPI: run scripts/setup (it "
                           "installs OpenMPI) and scripts/build, or run it without a launcher");
#endif
}

const World& world() { return g_world; }

void finalize() {
#ifdef PAIRBENCH_HAVE_MPI
  if (g_mpi) MPI_Finalize();
  g_mpi = false;
#endif
}

double max_over(double v) {
#ifdef PAIRBENCH_HAVE_MPI
  if (g_mpi) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
#endif
  return v;
}

bool all(bool v) {
#ifdef PAIRBENCH_HAVE_MPI
  int x = v ? 1 : 0;
  if (g_mpi) MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return x != 0;
#else
  return v;
#endif
}

std::vector<std::string> gather(const std::string& s) {
#ifdef PAIRBENCH_HAVE_MPI
  if (g_mpi) {
    const int n = g_world.size;
    int len = static_cast<int>(s.size());
    std::vector<int> lens(n), offsets(n);
    MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
    int total = 0;
    for (int r = 0; r < n; ++r) offsets[r] = total, total += lens[r];
    std::string all(static_cast<std::size_t>(total), '\0');
    MPI_Allgatherv(s.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(), MPI_CHAR,
                   MPI_COMM_WORLD);
    std::vector<std::string> out;
    for (int r = 0; r < n; ++r) out.push_back(all.substr(offsets[r], lens[r]));
    return out;
  }
#endif
  return {s};
}

std::string bootstrap(const std::string& name, const std::function<std::string()>& load,
                      const std::function<std::string()>& make_id,
                      const std::function<std::string(const std::string&)>& init) {
  std::string why = load();
  if (!all(why.empty())) return why.empty() ? name + " cannot be loaded on another rank" : why;
  const std::string id = gather(g_world.rank == 0 ? make_id() : std::string())[0];
  why = init(id);
  if (!all(why.empty()) && why.empty())
    return name + " failed on another rank (its messages say why)";
  return why;
}

std::string shared_gpu(const std::vector<std::string>& gpus) {
  for (std::size_t i = 0; i < gpus.size(); ++i)
    for (std::size_t j = i + 1; j < gpus.size(); ++j)
      if (!gpus[i].empty() && gpus[i] == gpus[j])
        return "ranks " + std::to_string(i) + " and " + std::to_string(j) + " share the GPU " +
               gpus[i] +
               ": one GPU per rank (launch at most as many ranks per host as it has GPUs, or "
               "pass --devices=cpu)";
  return "";
}

}  // namespace pb::ranks
