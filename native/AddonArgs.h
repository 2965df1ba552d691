// Argument checks shared by the N-API classes. Options were validated and defaulted in TypeScript; these only
// refuse what C++ cannot trust (wrong JS types), with a TypeError naming the argument, what was expected and what
// was received.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

// "undefined", "null", "number", "string", "boolean", "Int32Array", "Float32Array", "array", "object", ...
std::string addon_type_name(const Napi::Value & value);

// Throws `Napi::TypeError`: `<where>: Expected <what> to be <expected> but received <type>`.
[[noreturn]] void addon_throw_type(Napi::Env env, const std::string & where, const std::string & what,
                                   const std::string & expected, const Napi::Value & received);

int32_t     addon_arg_int32(Napi::Env env, const std::string & where, const std::string & what, const Napi::Value & value);
bool        addon_arg_bool(Napi::Env env, const std::string & where, const std::string & what, const Napi::Value & value);
std::string addon_arg_string(Napi::Env env, const std::string & where, const std::string & what, const Napi::Value & value);
Napi::Object addon_arg_object(Napi::Env env, const std::string & where, const std::string & what, const Napi::Value & value);
Napi::Int32Array addon_arg_int32_array(Napi::Env env, const std::string & where, const std::string & what,
                                       const Napi::Value & value);
