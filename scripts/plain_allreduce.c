/* An independent, plain MPI all-reduce loop, as osu_allreduce times it: the yardstick for
 * pairbench's collective/cpu/mpi all-reduce. Built by scripts/vs_mpi_allreduce with mpicc -O2.
 * Usage (under mpirun): plain_allreduce BYTES SECONDS; rank 0 prints the median bus bandwidth in
 * GB/s (bytes / time x 2(n-1)/n, each iteration's time the slowest rank's), in place, fp32. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void* x, const void* y) {
  double a = *(const double*)x, b = *(const double*)y;
  return (a > b) - (a < b);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc != 3) {
    if (rank == 0) fprintf(stderr, "usage: plain_allreduce BYTES SECONDS\n");
    MPI_Finalize();
    return 2;
  }
  const long n = atol(argv[1]) / 4;
  const double budget = atof(argv[2]);
  float* buf = malloc(n * sizeof(float));
  for (long i = 0; i < n; ++i) buf[i] = (float)(i % 17) - 8.0f;
  static double times[100000];
  double spent = 0;
  int runs = 0, more = 1;
  for (int w = 0; w < 3; ++w) MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  while (more) {
    const double t0 = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    double t = MPI_Wtime() - t0;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);  /* every rank alike */
    times[runs++] = t;
    spent += t;
    more = (spent < budget || runs < 3) && runs < 100000;
  }
  qsort(times, runs, sizeof(double), cmp);
  if (rank == 0)
    printf("%.4f\n", 4.0 * n / times[runs / 2] / 1e9 * 2.0 * (size - 1) / size);
  free(buf);
  MPI_Finalize();
  return 0;
}
