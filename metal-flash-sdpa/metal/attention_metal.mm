// The Metal backend's host side: Metal API calls only. It executes the LaunchPlan that
// common/metal_launch_plan.cpp makes (every choice is there) on PyTorch's current MPS stream:
// one encoder (the stream's), no commit per call, pipeline states built once per
// (kernel name, function constants) and cached.
//
// NOTE: no machine this project is developed on has an Apple GPU or Apple's compilers; this file
// is only type-checked (clang-19, `make check-metal`), never built. It is kept small so that it
// can be checked by reading. The kernels it
// launches run in the MSL simulator through the same plan (sim/attention_sim.cpp).
#include <ATen/mps/MPSStream.h>
#include <ATen/ATen.h>

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include "../common/attention_backend.h"
#include "../common/metal_plan_tensors.h"

#ifdef EMBEDDED_METALLIB_HEADER
#include EMBEDDED_METALLIB_HEADER
#else
#error "EMBEDDED_METALLIB_HEADER not defined (kernel-builder embeds the metallib)"
#endif

c10::DeviceType backend_device_type() { return c10::DeviceType::MPS; }

namespace {

id<MTLBuffer> storage_buffer(const at::Tensor& t) {
  return __builtin_bit_cast(id<MTLBuffer>, t.storage().data());
}

std::string pipeline_key(const KernelLaunch& l) {
  std::string key = l.kernel_name;
  for (const PlanFunctionConstant& fc : l.function_constants) {
    key += "/" + std::to_string(fc.index) + "=" + std::to_string(fc.int_value) + ":" +
           std::to_string(fc.float_value);
  }
  return key;
}

id<MTLComputePipelineState> pipeline_state(id<MTLDevice> device, const KernelLaunch& l) {
  static std::mutex mutex;
  static id<MTLLibrary> library = nil;
  static std::unordered_map<std::string, id<MTLComputePipelineState>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string key = pipeline_key(l);
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;

  NSError* error = nil;
  if (library == nil) {
    library = EMBEDDED_METALLIB_NAMESPACE::createLibrary(device, &error);
    TORCH_CHECK(library != nil, "metal-flash-sdpa: cannot load the embedded metallib: ",
                error ? error.localizedDescription.UTF8String : "unknown error");
  }
  MTLFunctionConstantValues* values = [MTLFunctionConstantValues new];
  for (const PlanFunctionConstant& fc : l.function_constants) {
    switch (fc.type) {
      case PlanFunctionConstant::Type::Bool: {
        const bool b = fc.int_value != 0;
        [values setConstantValue:&b type:MTLDataTypeBool atIndex:fc.index];
        break;
      }
      case PlanFunctionConstant::Type::Int:
        [values setConstantValue:&fc.int_value type:MTLDataTypeInt atIndex:fc.index];
        break;
      case PlanFunctionConstant::Type::Float:
        [values setConstantValue:&fc.float_value type:MTLDataTypeFloat atIndex:fc.index];
        break;
    }
  }
  NSString* name = [NSString stringWithUTF8String:l.kernel_name.c_str()];
  id<MTLFunction> function = [library newFunctionWithName:name constantValues:values error:&error];
  TORCH_CHECK(function != nil, "metal-flash-sdpa: no kernel ", l.kernel_name, ": ",
              error ? error.localizedDescription.UTF8String : "unknown error");
  id<MTLComputePipelineState> state = [device newComputePipelineStateWithFunction:function
                                                                            error:&error];
  TORCH_CHECK(state != nil, "metal-flash-sdpa: cannot build the pipeline of ", l.kernel_name,
              ": ", error ? error.localizedDescription.UTF8String : "unknown error");
  cache.emplace(key, state);
  return state;
}

// The GPU's core count as the plan needs it (decode split sizing), from the device's
// architecture name (MTLDevice.architecture, macOS 14+); older systems get the plan's default.
int device_gpu_cores(id<MTLDevice> device) {
  if (@available(macOS 14.0, *)) {
    NSString* name = device.architecture.name;
    if (name != nil) return gpu_cores_from_architecture(name.UTF8String);
  }
  return PlanTarget().gpu_cores;
}

// Encodes every launch of a plan on the stream's encoder; `tensor_of(PlanTensor, const char**)`
// resolves a binding (the forward's tensors, or the backward's with its gradients).
template <typename TensorOf>
void execute(at::mps::MPSStream* stream, const PlannedCall& call, TensorOf&& tensor_of) {
  if (call.plan.launches.empty()) return;
  id<MTLDevice> device = stream->device();
  // Every bound tensor must live on the GPU (the shared checks already ensure it; a scratch
  // tensor is allocated on q's device).
  for (const KernelLaunch& l : call.plan.launches) {
    for (const PlanBuffer& b : l.buffers) {
      const char* name = "";
      const at::Tensor& t = tensor_of(b.tensor, &name);
      TORCH_CHECK(t.is_mps(), name, " must be on mps for the Metal build of metal-flash-sdpa, got ",
                  t.device());
    }
  }

  std::vector<id<MTLComputePipelineState>> states;
  for (const KernelLaunch& l : call.plan.launches) {
    id<MTLComputePipelineState> state = pipeline_state(device, l);
    TORCH_CHECK(state.maxTotalThreadsPerThreadgroup >= l.threads_per_threadgroup[0] *
                                                           l.threads_per_threadgroup[1] *
                                                           l.threads_per_threadgroup[2],
                "metal-flash-sdpa: ", l.kernel_name, " allows only ",
                state.maxTotalThreadsPerThreadgroup, " threads per threadgroup");
    states.push_back(state);
  }

  dispatch_sync(stream->queue(), ^() {
    id<MTLComputeCommandEncoder> encoder = stream->commandEncoder();
    for (size_t i = 0; i < call.plan.launches.size(); ++i) {
      const KernelLaunch& l = call.plan.launches[i];
      [encoder setComputePipelineState:states[i]];
      for (const PlanBuffer& b : l.buffers) {
        const char* name = "";
        const at::Tensor& t = tensor_of(b.tensor, &name);
        [encoder setBuffer:storage_buffer(t)
                    offset:t.storage_offset() * t.element_size()
                   atIndex:b.index];
      }
      for (const PlanBytes& b : l.bytes) {
        [encoder setBytes:b.bytes.data() length:b.bytes.size() atIndex:b.index];
      }
      for (const PlanThreadgroupMemory& m : l.threadgroup_memory) {
        [encoder setThreadgroupMemoryLength:m.bytes atIndex:m.index];
      }
      [encoder dispatchThreadgroups:MTLSizeMake(l.threadgroups[0], l.threadgroups[1],
                                                l.threadgroups[2])
              threadsPerThreadgroup:MTLSizeMake(l.threads_per_threadgroup[0],
                                                l.threads_per_threadgroup[1],
                                                l.threads_per_threadgroup[2])];
    }
  });
  // The scratch tensors go back to torch's MPS allocator when the caller drops `call`; their
  // memory is reused only by later work on this same stream, which the queue orders after these
  // launches.
}

}  // namespace

void run_attention_forward(const AttentionParams& params, const AttentionTensors& tensors) {
  at::mps::MPSStream* stream = at::mps::getCurrentMPSStream();
  static const int gpu_cores = device_gpu_cores(stream->device());
  const PlannedCall call = plan_forward_call(params, tensors, gpu_cores);
  execute(stream, call, [&](PlanTensor which, const char** name) -> const at::Tensor& {
    return plan_tensor(tensors, call, which, name);
  });
}

void run_attention_backward(const AttentionParams& params, const AttentionTensors& tensors,
                            const AttentionGradients& grads) {
  at::mps::MPSStream* stream = at::mps::getCurrentMPSStream();
  static const int gpu_cores = device_gpu_cores(stream->device());
  const PlannedCall call = plan_backward_call(params, tensors, grads, gpu_cores);
  execute(stream, call, [&](PlanTensor which, const char** name) -> const at::Tensor& {
    return plan_backward_tensor(tensors, grads, call, which, name);
  });
}

void run_attention_probabilities(const AttentionParams& params, const AttentionTensors& tensors,
                                 const at::Tensor& probs) {
  at::mps::MPSStream* stream = at::mps::getCurrentMPSStream();
  const PlannedCall call = plan_probabilities_call(params, tensors);
  execute(stream, call, [&](PlanTensor which, const char** name) -> const at::Tensor& {
    return plan_probabilities_tensor(tensors, probs, call, which, name);
  });
}
