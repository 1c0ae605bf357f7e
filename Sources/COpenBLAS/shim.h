// OpenBLAS's cblas interface. Link `openblas`, not `blas`: only the former carries the cblas symbols
// and openblas_set_num_threads.
#ifndef ADAFACE_COPENBLAS_SHIM_H
#define ADAFACE_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
