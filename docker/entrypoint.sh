#!/bin/sh
# Train any model without a champion (a fresh registry volume), then serve.
set -eu

if [ "${TRAIN_MISSING_ON_START:-true}" = "true" ]; then
    # Exit code 3 means "trained but not promoted": serve whatever champion exists.
    python -m prediction_service.training --missing-only || [ "$?" -eq 3 ]
fi

exec prediction-service serve --host 0.0.0.0 --port "${PORT:-8000}" --workers "${WORKERS:-2}" \
    --log-level "${LOG_LEVEL:-info}"
