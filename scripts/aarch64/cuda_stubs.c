/* Stand-ins for the CUDA libraries that PyPI's aarch64 torch (a CUDA build) links against, so
 * that it loads on a machine without them, as a CPU-only torch. scripts/aarch64/setup.py builds
 * one library per soname from this file plus a weak function for every symbol torch imports from
 * it. The runtime answers as on a machine without a GPU (no device); a call into any other CUDA
 * library ends the process naming the call (cuda_stub_called), as it cannot happen without one. */

#include <stdio.h>
#include <stdlib.h>

__attribute__((visibility("hidden"))) void cuda_stub_called(const char *name) {
    fprintf(stderr, "%s: CUDA is a stub in this emulated aarch64 Python (scripts/aarch64)\n", name);
    abort();
}

enum { cudaSuccess = 0, cudaErrorNoDevice = 100 };

#ifdef CUDART_STUB
/* What every other runtime and driver entry point returns: cudaErrorNoDevice (the driver's
 * CUDA_ERROR_NO_DEVICE is 100 too), which torch turns into an exception, as on a machine
 * without a GPU. */
__attribute__((visibility("hidden"))) int cuda_no_device(void) { return cudaErrorNoDevice; }

int cudaGetDeviceCount(int *count) {
    *count = 0;
    return cudaErrorNoDevice;
}

int cudaGetLastError(void) { return cudaSuccess; }

int cudaPeekAtLastError(void) { return cudaSuccess; }

const char *cudaGetErrorString(int error) {
    return error == cudaErrorNoDevice ? "no CUDA-capable device is detected (aarch64 emulation stub)"
                                      : "CUDA stub: no CUDA here";
}

const char *cudaGetErrorName(int error) {
    return error == cudaErrorNoDevice ? "cudaErrorNoDevice" : "cudaErrorStub";
}

/* Called by the static constructors (and destructors) of torch's CUDA code when it loads: they
 * register device code that will never launch. Old-style definitions take any arguments. */
static void *fat_binary_handle;
void **__cudaRegisterFatBinary() { return &fat_binary_handle; }
void __cudaRegisterFatBinaryEnd() {}
void __cudaUnregisterFatBinary() {}
void __cudaRegisterFunction() {}
void __cudaRegisterVar() {}
void __cudaRegisterManagedVar() {}
void __cudaRegisterSurface() {}
void __cudaRegisterTexture() {}
#endif
