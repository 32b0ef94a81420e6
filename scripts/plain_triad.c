/* An independent, plain OpenMP STREAM triad: the yardstick for pairbench's CPU triad.
 * Built by scripts/vs_plain_triad with gcc -O3 -march=native -fopenmp.
 * Usage: plain_triad N SECONDS; prints the median GB/s (12 bytes per element, as STREAM). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void* x, const void* y) {
  double a = *(const double*)x, b = *(const double*)y;
  return (a > b) - (a < b);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: plain_triad N SECONDS\n");
    return 2;
  }
  const long n = atol(argv[1]);
  const double budget = atof(argv[2]);
  float* a = malloc(n * sizeof(float));
  float* b = malloc(n * sizeof(float));
  float* c = malloc(n * sizeof(float));
  if (n < 1 || !a || !b || !c) return 2;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) a[i] = 0, b[i] = 1, c[i] = 2;
  double times[10000], spent = 0;
  int runs = 0;
  while ((spent < budget || runs < 3) && runs < 10000) {
    const double t0 = omp_get_wtime();
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; ++i) a[i] = b[i] + 3.0f * c[i];
    times[runs] = omp_get_wtime() - t0;
    spent += times[runs++];
  }
  qsort(times, runs, sizeof(double), cmp);
  printf("%.3f\n", 12.0 * n / times[runs / 2] / 1e9);
  return a[n / 2] == 7.0f ? 0 : 1;
}
