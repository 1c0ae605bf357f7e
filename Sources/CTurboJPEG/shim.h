#ifndef ADAFACE_CTURBOJPEG_SHIM_H
#define ADAFACE_CTURBOJPEG_SHIM_H
#include <turbojpeg.h>
#endif
