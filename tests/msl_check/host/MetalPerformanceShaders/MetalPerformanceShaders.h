// <MetalPerformanceShaders/MetalPerformanceShaders.h> for the host syntax check: what PyTorch's
// ATen/mps/MPSStream.h uses.
#pragma once
#import <Metal/Metal.h>

// https://developer.apple.com/documentation/metalperformanceshaders/mpscommandbuffer
@interface MPSCommandBuffer : NSObject
@end
