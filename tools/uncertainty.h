/* uncertainty.h (tools): `mexd eval`'s report of selective classification and calibration. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdint.h>

/* The selective-classification and calibration report (uncertainty.c) of n slides' probs [n·C]
 * and labels, into `json` (an object being built: members "selective", "calibration" and, with
 * a referral rule, "referral") and/or `text` (either may be NULL); spread [n] (the predicted
 * class's spread of the chains) or NULL; the model's calibration: temperature and refer_spread
 * (NaN: none); with png, the reliability diagram written there (atomically). */
gboolean mexd_eval_uncertainty(const double *probs, const int *labels, const double *spread,
                               int64_t n, int C, double temperature, double refer_spread,
                               JsonBuilder *json, GString *text, const char *png, GError **error);
