// <Metal/Metal.h> for the host syntax check: exactly what attention_metal.mm and PyTorch's
// ATen/mps headers use, each as Apple documents it (reference above each declaration).
#pragma once
#import <Foundation/Foundation.h>

// https://developer.apple.com/documentation/metal/mtlsize
typedef struct {
  NSUInteger width, height, depth;
} MTLSize;
// https://developer.apple.com/documentation/metal/mtlsizemake(_:_:_:)
MTLSize MTLSizeMake(NSUInteger width, NSUInteger height, NSUInteger depth);

// https://developer.apple.com/documentation/metal/mtldatatype (the cases the host uses)
typedef enum MTLDataType : NSUInteger {
  MTLDataTypeFloat = 3,
  MTLDataTypeInt = 29,
  MTLDataTypeBool = 53,
} MTLDataType;

// https://developer.apple.com/documentation/metal/mtlresource
@protocol MTLResource <NSObject>
@end
// https://developer.apple.com/documentation/metal/mtlbuffer
@protocol MTLBuffer <MTLResource>
@end
// https://developer.apple.com/documentation/metal/mtlfunction
@protocol MTLFunction <NSObject>
@end
// https://developer.apple.com/documentation/metal/mtlcomputepipelinestate
@protocol MTLComputePipelineState <NSObject>
// https://developer.apple.com/documentation/metal/mtlcomputepipelinestate/maxtotalthreadsperthreadgroup
@property(readonly) NSUInteger maxTotalThreadsPerThreadgroup;
@end

// https://developer.apple.com/documentation/metal/mtlfunctionconstantvalues
@interface MTLFunctionConstantValues : NSObject
// https://developer.apple.com/documentation/metal/mtlfunctionconstantvalues/setconstantvalue(_:type:index:)
- (void)setConstantValue:(const void*)value type:(MTLDataType)type atIndex:(NSUInteger)index;
@end

// https://developer.apple.com/documentation/metal/mtllibrary
@protocol MTLLibrary <NSObject>
// https://developer.apple.com/documentation/metal/mtllibrary/makefunction(name:constantvalues:)
- (id<MTLFunction>)newFunctionWithName:(NSString*)name
                        constantValues:(MTLFunctionConstantValues*)constantValues
                                 error:(NSError**)error;
@end

// https://developer.apple.com/documentation/metal/mtlarchitecture (macOS 14.0+)
@interface MTLArchitecture : NSObject
// https://developer.apple.com/documentation/metal/mtlarchitecture/name
@property(readonly, nonnull) NSString* name;
@end

// https://developer.apple.com/documentation/metal/mtldevice
@protocol MTLDevice <NSObject>
// https://developer.apple.com/documentation/metal/mtldevice/architecture (macOS 14.0+)
@property(readonly, nonnull) MTLArchitecture* architecture;
// https://developer.apple.com/documentation/metal/mtldevice/makecomputepipelinestate(function:)
- (id<MTLComputePipelineState>)newComputePipelineStateWithFunction:(id<MTLFunction>)computeFunction
                                                            error:(NSError**)error;
@end

// https://developer.apple.com/documentation/metal/mtlcommandencoder
@protocol MTLCommandEncoder <NSObject>
@end
// https://developer.apple.com/documentation/metal/mtlcomputecommandencoder
@protocol MTLComputeCommandEncoder <MTLCommandEncoder>
// https://developer.apple.com/documentation/metal/mtlcomputecommandencoder/setcomputepipelinestate(_:)
- (void)setComputePipelineState:(id<MTLComputePipelineState>)state;
// https://developer.apple.com/documentation/metal/mtlcomputecommandencoder/setbuffer(_:offset:index:)
- (void)setBuffer:(id<MTLBuffer>)buffer offset:(NSUInteger)offset atIndex:(NSUInteger)index;
// https://developer.apple.com/documentation/metal/mtlcomputecommandencoder/setbytes(_:length:index:)
- (void)setBytes:(const void*)bytes length:(NSUInteger)length atIndex:(NSUInteger)index;
// https://developer.apple.com/documentation/metal/mtlcomputecommandencoder/setthreadgroupmemorylength(_:index:)
- (void)setThreadgroupMemoryLength:(NSUInteger)length atIndex:(NSUInteger)index;
// https://developer.apple.com/documentation/metal/mtlcomputecommandencoder/dispatchthreadgroups(_:threadsperthreadgroup:)
- (void)dispatchThreadgroups:(MTLSize)threadgroupsPerGrid
       threadsPerThreadgroup:(MTLSize)threadsPerThreadgroup;
@end

// https://developer.apple.com/documentation/metal/mtlcommandqueue (ATen/mps/MPSStream.h)
@protocol MTLCommandQueue <NSObject>
@end
// https://developer.apple.com/documentation/metal/mtlevent
@protocol MTLEvent <NSObject>
@end
// https://developer.apple.com/documentation/metal/mtlsharedevent (ATen/mps/MPSStream.h)
@protocol MTLSharedEvent <MTLEvent>
@end
// https://developer.apple.com/documentation/metal/mtlcommandbuffer
@protocol MTLCommandBuffer <NSObject>
@end
// https://developer.apple.com/documentation/metal/mtlcommandbufferhandler (ATen/mps/MPSStream.h)
typedef void (^MTLCommandBufferHandler)(id<MTLCommandBuffer>);
