/* OpenMP queries that also compile in a serial build (no -fopenmp). */
#ifndef LOSSMLE_OMP_COMPAT_H
#define LOSSMLE_OMP_COMPAT_H
#ifdef _OPENMP
#include <omp.h>
#define LOSSMLE_HAVE_OPENMP 1
#else
#define LOSSMLE_HAVE_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
#endif
#endif
