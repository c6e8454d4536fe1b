/* Stand-ins for the CUDA libraries that PyPI's aarch64 torch (a CUDA build) links against, so
 * that it loads on a machine without them, as a CPU-only torch. Every stub library is this file
 * built under the library's soname (with its version node, which torch's references name); only
 * the runtime answers calls: torch asks it how many devices there are (none). Any other CUDA
 * entry point stays undefined, so reaching one ends the process instead of pretending. */

enum { cudaSuccess = 0, cudaErrorNoDevice = 100 };

#ifdef CUDART_STUB
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
#endif
