#include "AddonArgs.h"

#include <cmath>
#include <limits>

std::string addon_type_name(const Napi::Value & value) {
    if (value.IsUndefined()) {
        return "undefined";
    }
    if (value.IsNull()) {
        return "null";
    }
    if (value.IsNumber()) {
        return "number " + value.ToString().Utf8Value();
    }
    if (value.IsString()) {
        return "a string";
    }
    if (value.IsBoolean()) {
        return "a boolean";
    }
    if (value.IsTypedArray()) {
        switch (value.As<Napi::TypedArray>().TypedArrayType()) {
            case napi_int8_array:          return "an Int8Array";
            case napi_uint8_array:         return "a Uint8Array";
            case napi_uint8_clamped_array: return "a Uint8ClampedArray";
            case napi_int16_array:         return "an Int16Array";
            case napi_uint16_array:        return "a Uint16Array";
            case napi_int32_array:         return "an Int32Array";
            case napi_uint32_array:        return "a Uint32Array";
            case napi_float32_array:       return "a Float32Array";
            case napi_float64_array:       return "a Float64Array";
            default:                       return "a typed array";
        }
    }
    if (value.IsArray()) {
        return "an array";
    }
    if (value.IsFunction()) {
        return "a function";
    }
    return "an object";
}

void addon_throw_type(Napi::Env env, const std::string & where, const std::string & what, const std::string & expected,
                      const Napi::Value & received) {
    throw Napi::TypeError::New(env, where + ": Expected " + what + " to be " + expected + " but received " +
                                    addon_type_name(received));
}

int32_t addon_arg_int32(Napi::Env env, const std::string & where, const std::string & what, const Napi::Value & value) {
    if (value.IsNumber()) {
        const double d = value.As<Napi::Number>().DoubleValue();
        if (std::isfinite(d) && std::trunc(d) == d && d >= std::numeric_limits<int32_t>::min() &&
            d <= std::numeric_limits<int32_t>::max()) {
            return static_cast<int32_t>(d);
        }
    }
    addon_throw_type(env, where, what, "a 32-bit integer", value);
}

bool addon_arg_bool(Napi::Env env, const std::string & where, const std::string & what, const Napi::Value & value) {
    if (!value.IsBoolean()) {
        addon_throw_type(env, where, what, "a boolean", value);
    }
    return value.As<Napi::Boolean>().Value();
}

std::string addon_arg_string(Napi::Env env, const std::string & where, const std::string & what, const Napi::Value & value) {
    if (!value.IsString()) {
        addon_throw_type(env, where, what, "a string", value);
    }
    return value.As<Napi::String>().Utf8Value();
}

Napi::Object addon_arg_object(Napi::Env env, const std::string & where, const std::string & what, const Napi::Value & value) {
    if (!value.IsObject() || value.IsArray() || value.IsFunction()) {
        addon_throw_type(env, where, what, "an object", value);
    }
    return value.As<Napi::Object>();
}

Napi::Int32Array addon_arg_int32_array(Napi::Env env, const std::string & where, const std::string & what,
                                       const Napi::Value & value) {
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        addon_throw_type(env, where, what, "an Int32Array", value);
    }
    return value.As<Napi::Int32Array>();
}
