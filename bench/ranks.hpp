// Ranks: one process per rank, launched by mpirun or Slurm's srun, never by pairbench. Built
// with MPI (Debian's OpenMPI), a process started by a launcher joins MPI_COMM_WORLD; any other
// run is one rank and touches no MPI. Every rank runs the same cases in the same order and
// takes the same benchmark decisions (each timed iteration's time is the maximum over the
// ranks), so their collectives always match; rank 0 alone writes the report.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace pb::ranks {

struct World {
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;  // on this host
  std::string launcher;                // "mpirun", "srun", ... ; "" for a plain run
};

bool built_with_mpi();
// Joins MPI where a launcher started this process (and pairbench has MPI); throws
// std::runtime_error, with the one line every rank prints, on a launch it cannot use (started
// as one of several ranks by a build without MPI).
const World& init(int* argc, char*** argv);
const World& world();
void finalize();

// Over every rank (the value itself on one rank):
double max_over(double v);
bool all(bool v);
// Every rank's string, in rank order, on every rank.
std::vector<std::string> gather(const std::string& s);

// Every rank's GPU ("host bus-id"; "" for none), in rank order: "" when no two ranks share one,
// else the one-line error that says which do.
std::string shared_gpu(const std::vector<std::string>& gpus);

// A communicator of another library bootstrapped over the ranks, as NCCL's is: load() on every
// rank ("" or why not), agreed; rank 0's make_id() given to every rank; init(id) on every rank,
// agreed. "" when every rank's is up, else this rank's reason (or that `name` failed on another):
// no rank is ever left in a collective call that another never makes.
std::string bootstrap(const std::string& name, const std::function<std::string()>& load,
                      const std::function<std::string()>& make_id,
                      const std::function<std::string(const std::string&)>& init);

}  // namespace pb::ranks
