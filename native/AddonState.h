// Per-environment state of the addon (napi instance data): the constructors of the classes it creates itself.
#pragma once

#include <napi.h>

struct AddonState {
    Napi::FunctionReference stream_model_constructor;
    Napi::FunctionReference stream_context_constructor;
};
