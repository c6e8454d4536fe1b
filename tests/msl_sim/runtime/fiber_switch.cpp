// The fibers' context switch, per machine: msl_sim_fiber_switch saves the callee-saved registers
// on the current stack, stores sp in *save_sp, loads load_sp and restores the target's registers;
// a fresh stack (init_stack) "returns" into msl_sim_fiber_start, which calls entry(arg). The
// floating-point control state (MXCSR and x87 control word, FPCR) is shared: kernels don't change
// it. No #include, so that it compiles for any target without that target's headers (arm64
// macOS is checked on Linux by tests/test_msl_sim.py): init_stack is declared as in fiber.h (a
// difference would fail to link).

namespace msl_sim::fiber {
void* init_stack(char* stack_top, void (*entry)(void*), void* arg);
}  // namespace msl_sim::fiber

// Symbol directives: ELF (Linux) or Mach-O (macOS, whose C symbols carry a leading underscore).
#if defined(__APPLE__)
#define MSL_SIM_ASM_FUNCTION(name) \
  ".globl _" #name "\n.private_extern _" #name "\n.p2align 4\n_" #name ":\n"
#define MSL_SIM_ASM_END(name) ""
#else
#define MSL_SIM_ASM_FUNCTION(name) \
  ".globl " #name "\n.hidden " #name "\n.type " #name ", %function\n.p2align 4\n" #name ":\n"
#define MSL_SIM_ASM_END(name) ".size " #name ", .-" #name "\n"
#endif

using uptr = __UINTPTR_TYPE__;

#if defined(__x86_64__) && !defined(__APPLE__)

asm(".text\n" MSL_SIM_ASM_FUNCTION(msl_sim_fiber_switch) R"(
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
)" MSL_SIM_ASM_END(msl_sim_fiber_switch) MSL_SIM_ASM_FUNCTION(msl_sim_fiber_start) R"(
    .cfi_startproc
    .cfi_undefined rip
    movq %r12, %rdi
    callq *%r13
    ud2
    .cfi_endproc
)" MSL_SIM_ASM_END(msl_sim_fiber_start));

extern "C" void msl_sim_fiber_start();

void* msl_sim::fiber::init_stack(char* stack_top, void (*entry)(void*), void* arg) {
  uptr top = reinterpret_cast<uptr>(stack_top) & ~uptr(15);
  // After the six pops and `ret`, sp = top - 16: 16-byte aligned before msl_sim_fiber_start's call.
  auto* sp = reinterpret_cast<uptr*>(top - 72);
  sp[0] = 0;                                       // r15
  sp[1] = 0;                                       // r14
  sp[2] = reinterpret_cast<uptr>(entry);           // r13
  sp[3] = reinterpret_cast<uptr>(arg);             // r12
  sp[4] = 0;                                       // rbx
  sp[5] = 0;                                       // rbp
  sp[6] = reinterpret_cast<uptr>(&msl_sim_fiber_start);  // return address
  return sp;
}

#elif defined(__aarch64__)

// AAPCS64 (and Apple's arm64 ABI): x19-x28, fp (x29), lr (x30) and d8-d15 are callee-saved.
// Frame of 160 bytes: x19..x28 at 0..72, fp at 80, lr at 88, d8..d15 at 96..152.
asm(".text\n" MSL_SIM_ASM_FUNCTION(msl_sim_fiber_switch) R"(
    sub sp, sp, #160
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    add sp, sp, #160
    ret
)" MSL_SIM_ASM_END(msl_sim_fiber_switch) MSL_SIM_ASM_FUNCTION(msl_sim_fiber_start) R"(
    mov x0, x19
    blr x20
    brk #0
)" MSL_SIM_ASM_END(msl_sim_fiber_start));

extern "C" void msl_sim_fiber_start();

void* msl_sim::fiber::init_stack(char* stack_top, void (*entry)(void*), void* arg) {
  uptr top = reinterpret_cast<uptr>(stack_top) & ~uptr(15);
  // After the restores and `add sp, sp, #160`, sp = top: 16-byte aligned, as AAPCS64 requires.
  auto* frame = reinterpret_cast<uptr*>(top - 160);
  for (int i = 0; i < 20; ++i) frame[i] = 0;
  frame[0] = reinterpret_cast<uptr>(arg);                   // x19
  frame[1] = reinterpret_cast<uptr>(entry);                 // x20
  frame[11] = reinterpret_cast<uptr>(&msl_sim_fiber_start);  // lr: where `ret` goes
  return frame;
}

#else
#error "msl_sim fibers: no context switch for this machine (x86-64 Linux, arm64 Linux and macOS)"
#endif
