#!/bin/sh
# Train any model without a champion (a fresh registry volume), then serve.
set -eu

# A volume the service cannot write (a root-owned bind mount) would leave predictions
# unlogged or models untrained: refuse to start, and say why.
for dir in /app/logs /app/mlruns; do
    if ! touch "$dir/.writable" 2>/dev/null; then
        echo "entrypoint: $dir is not writable by uid $(id -u); give the volume to uid 10001" \
             "(chown -R 10001:10001 on the host folder) or use a named volume" >&2
        exit 78
    fi
    rm -f "$dir/.writable"
done

if [ "${TRAIN_MISSING_ON_START:-true}" = "true" ]; then
    # Exit code 3 means "trained but not promoted": serve whatever champion exists.
    python -m prediction_service.training --missing-only || [ "$?" -eq 3 ]
fi

exec prediction-service serve --host 0.0.0.0 --port "${PORT:-8000}" --workers "${WORKERS:-2}" \
    --log-level "${LOG_LEVEL:-info}"
