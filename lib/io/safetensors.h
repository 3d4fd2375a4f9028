/* safetensors.h: placeholder header, replaced by the safetensors reader/writer. */
#pragma once
