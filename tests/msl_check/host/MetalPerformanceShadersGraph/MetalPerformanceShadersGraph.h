// <MetalPerformanceShadersGraph/MetalPerformanceShadersGraph.h> for the host syntax check: what
// PyTorch's ATen/mps/MPSStream.h uses.
#pragma once
#import <Metal/Metal.h>

// https://developer.apple.com/documentation/metalperformanceshadersgraph/mpsgraph
@interface MPSGraph : NSObject
@end
// https://developer.apple.com/documentation/metalperformanceshadersgraph/mpsgraphexecutiondescriptor
@interface MPSGraphExecutionDescriptor : NSObject
@end
// https://developer.apple.com/documentation/metalperformanceshadersgraph/mpsgraphcompilationdescriptor
@interface MPSGraphCompilationDescriptor : NSObject
@end
