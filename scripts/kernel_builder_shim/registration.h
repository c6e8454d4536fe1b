// Stand-in for the registration.h that kernel-builder generates into its builds; used only by the
// local builds (scripts/build_local.py). Same macros, same meaning.
#pragma once

#include <Python.h>

#define MFS_CONCAT_(a, b) a##b
#define MFS_CONCAT(a, b) MFS_CONCAT_(a, b)
#define MFS_STRINGIFY_(a) #a
#define MFS_STRINGIFY(a) MFS_STRINGIFY_(a)

// TORCH_LIBRARY / TORCH_LIBRARY_IMPL with the namespace macro-expanded first.
#define TORCH_LIBRARY_EXPAND(NAME, MODULE) TORCH_LIBRARY(NAME, MODULE)
#define TORCH_LIBRARY_IMPL_EXPAND(NAME, DEVICE, MODULE) TORCH_LIBRARY_IMPL(NAME, DEVICE, MODULE)

// An empty Python module, so that `from . import <ops name>` loads the library and runs its
// static op registrations.
#define REGISTER_EXTENSION(NAME)                                                        \
  PyMODINIT_FUNC MFS_CONCAT(PyInit_, NAME)() {                                          \
    static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, MFS_STRINGIFY(NAME),     \
                                        nullptr, 0, nullptr};                           \
    return PyModule_Create(&module);                                                    \
  }
