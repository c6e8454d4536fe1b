// The header kernel-builder generates from the compiled .metallib and passes to the .mm as
// EMBEDDED_METALLIB_HEADER, with EMBEDDED_METALLIB_NAMESPACE naming its namespace (kernel-builder's
// CMake: EMBEDDED_METALLIB_HEADER="<target>_metallib.h", EMBEDDED_METALLIB_NAMESPACE=<target>_metal).
// Its one function, as kernels call it: the library built from the embedded bytes, nil + error
// on failure.
#pragma once
#import <Metal/Metal.h>

namespace EMBEDDED_METALLIB_NAMESPACE {
id<MTLLibrary> createLibrary(id<MTLDevice> device, NSError** error);
}  // namespace EMBEDDED_METALLIB_NAMESPACE
