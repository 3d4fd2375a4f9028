/* mexd.h: the public API of libmexd. */
#pragma once

#include "backend/backend.h"
#include "core/error.h"
#include "core/log.h"
#include "core/tensor.h"
#include "io/features.h"
#include "io/safetensors.h"
#include "nn/backbone.h"
#include "nn/model.h"
#include "ops/ops.h"
#include "train/synth.h"
#include "train/metrics.h"
#include "train/optim.h"
#include "wsi/slide.h"
#include "wsi/tissue.h"
