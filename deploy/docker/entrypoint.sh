#!/bin/bash
# The images' entrypoint: runs `memserve serve` with flags taken from the
# environment (ENV_FLAGS below), followed by the container's arguments.
#
# An unset or empty variable passes no flag (memserve's default applies).
# The arguments come after the environment's flags, so an argument wins over a
# variable for the same flag (memserve takes the last value). When the first
# argument does not start with '-', it is a command run instead of the server
# (`memserve-cli ...`, `memserve-loadgen ...`, `bash`).
#
# memserve replaces this shell (exec), so it is PID 1 of the container and
# receives SIGTERM itself; it blocks SIGTERM/SIGINT and waits for them, which
# works for PID 1 too, then drains (docs/operations.md, docs/deploy.md).
set -euo pipefail

# VARIABLE=flag. Only these names are read: Kubernetes' service links define
# MEMSERVE_PORT, MEMSERVE_SERVICE_HOST, ... for a Service named memserve (the
# manifests turn service links off as well: enableServiceLinks: false).
ENV_FLAGS=(
  MEMSERVE_MODEL=model
  MEMSERVE_MODEL_NAME=model_name
  MEMSERVE_LISTEN=listen
  MEMSERVE_METRICS_LISTEN=metrics_listen
  MEMSERVE_INSECURE=insecure
  MEMSERVE_TLS_CERT=tls_cert
  MEMSERVE_TLS_KEY=tls_key
  MEMSERVE_TLS_CLIENT_CA=tls_client_ca
  MEMSERVE_API_KEYS_FILE=api_keys_file
  MEMSERVE_LOG_FORMAT=log_format
  MEMSERVE_DEVICE=device
  MEMSERVE_THREADS=threads
  MEMSERVE_MEMORY_SHARDS=memory_shards
  MEMSERVE_MEMORY_PLACEMENT=memory_placement
  MEMSERVE_MEMORY_GPUS=memory_gpus
  MEMSERVE_MAX_BATCH_SIZE=max_batch_size
  MEMSERVE_KV_CACHE_MB=kv_cache_mb
  MEMSERVE_SHUTDOWN_TIMEOUT=shutdown_timeout
)

if [[ $# -gt 0 && $1 != -* ]]; then
  exec "$@"
fi

flags=()
for pair in "${ENV_FLAGS[@]}"; do
  variable=${pair%%=*}
  value=${!variable:-}
  if [[ -n $value ]]; then
    flags+=("--${pair#*=}=${value}")
  fi
done
exec "${MEMSERVE_BIN:-memserve}" serve "${flags[@]}" "$@"
