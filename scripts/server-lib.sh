# Sourced by scripts that run rir-serve in the background (main.sh,
# cifar10.sh): start it, wait until it listens, stop it on exit.

# start_server PORT LOG ARGS...: runs rir-serve ($RIR_SERVE_BIN, default
# ./target/debug/rir-serve) with ARGS, its
# log in LOG, waits until PORT accepts connections (rir-serve listens once
# every model is loaded and warmed up) and stops it when the script exits.
start_server() {
  local port="$1" log="$2"
  shift 2
  "${RIR_SERVE_BIN:-./target/debug/rir-serve}" "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  SERVER_LOG="$log"
  trap stop_server EXIT
  for _ in $(seq 1 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      cat "$log" >&2
      echo "rir-serve exited before it was ready" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "rir-serve did not listen on port $port within 60 s (log: $log)" >&2
  return 1
}

# stop_server: SIGTERM (graceful: calls in flight finish), then wait.
stop_server() {
  if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    echo "== server stopped (log: $SERVER_LOG)"
  fi
}
