// A function constant value as a dispatch supplies it (same shape as PlanFunctionConstant).
#pragma once

#include <cstdint>

namespace msl_sim {

struct FunctionConstant {
  enum class Type : int { Bool, Int, Float };
  Type type = Type::Bool;
  int32_t int_value = 0;  // bool and int
  float float_value = 0.0f;

  static FunctionConstant boolean(bool v) { return {Type::Bool, v ? 1 : 0, 0.0f}; }
  static FunctionConstant integer(int32_t v) { return {Type::Int, v, 0.0f}; }
  static FunctionConstant floating(float v) { return {Type::Float, 0, v}; }

  // The value converted to the declared type of the constant.
  template <class T>
  T as() const {
    if (type == Type::Float) return T(float_value);
    if (type == Type::Bool) return T(int_value != 0);
    return T(int_value);
  }
};

// Finds the value bound to a [[function_constant(index)]], or null when the dispatch has none.
struct FunctionConstantLookup {
  const void* ctx;
  const FunctionConstant* (*find)(const void* ctx, int index);
  const FunctionConstant* operator()(int index) const { return find(ctx, index); }
};

}  // namespace msl_sim
