#ifndef ADAFACE_CZSTD_SHIM_H
#define ADAFACE_CZSTD_SHIM_H
#include <zstd.h>
#endif
