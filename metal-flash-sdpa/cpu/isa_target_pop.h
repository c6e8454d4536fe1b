// Ends the instruction set that isa_target_push.h began: what follows is compiled for the
// baseline ISA again.
#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#undef MFS_ISA_TARGET
