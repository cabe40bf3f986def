#!/bin/bash
# Time to first answer on a clean clone, and the time Ctrl-C takes to stop the demo.
#
#   flock /tmp/lorafleet-heavy.lock bench/demo_first_answer.sh [SRC] [RESULTS_FILE]
#
# Clones SRC (default: this checkout) into $DIR (default /tmp/lorafleet-ttfa), runs
# `make setup` (timed), then `make demo` with nothing built (`.demo-assets/` is not in
# git) and polls /v1/completions with the base model every 0.5 s until it answers; waits
# for every demo adapter to be published; sends Ctrl-C (SIGINT to make's process group,
# as a terminal does) while a long request is in flight, and times the stop. Then a
# second `make demo` in the same clone (everything cached) and its stop, idle.
# With REUSE=1, the clone in $DIR that already ran `make setup` is updated to SRC's newest
# commit and its demo assets removed (re-measuring the demo part only); with
# PYTHON=/path/to/python, a fresh clone runs that interpreter with the command `make demo` runs.
set -u
SRC=${1:-$(cd "$(dirname "$0")/.." && pwd)}
RESULTS=${2:-/dev/null}
DIR=${DIR:-/tmp/lorafleet-ttfa}
PORT=${PORT:-18741}
METRICS_PORT=${METRICS_PORT:-18742}
now() { date +%s.%N; }
since() { printf "%.1f" "$(echo "$(now) - $1" | bc)"; }
say() { echo "$*" | tee -a "$RESULTS"; }

if [ "${REUSE:-0}" = 1 ] && [ -x "$DIR/.venv/bin/python" ]; then
  # Re-measure the demo part in a clone that already ran `make setup`: newest commit, no assets.
  cd "$DIR" && git pull -q && rm -rf .demo-assets || exit 1
  say "# $(date -u +%FT%TZ) the clone in $DIR (set up earlier) at $(git rev-parse --short HEAD), no demo assets, $(nproc) cores"
else
  rm -rf "$DIR"; git clone -q "$SRC" "$DIR"; cd "$DIR" || exit 1
  say "# $(date -u +%FT%TZ) clean clone of $SRC at $(git rev-parse --short HEAD), $(nproc) cores"
fi
if [ "${REUSE:-0}" = 1 ]; then
  DEMO=(make demo PORT=$PORT METRICS_PORT=$METRICS_PORT)
  PY=.venv/bin/python
elif [ -z "${PYTHON:-}" ]; then
  T0=$(now); make setup > setup.log 2>&1; rc=$?
  say "make setup: $(since "$T0") s (exit $rc)"
  DEMO=(make demo PORT=$PORT METRICS_PORT=$METRICS_PORT)
  PY=.venv/bin/python
else
  DEMO=("$PYTHON" -m deployments.cli serve --config configs/default.yaml --port $PORT --metrics-port $METRICS_PORT --demo)
  PY=$PYTHON
fi

completion() {  # model prompt max_tokens -> HTTP status
  curl -s -o /dev/null -w "%{http_code}" --max-time 5 "http://127.0.0.1:$PORT/v1/completions" \
    -H 'Content-Type: application/json' -d "{\"model\": \"$1\", \"prompt\": \"$2\", \"max_tokens\": $3, \"temperature\": 0}"
}

stop_demo() {  # pid label: Ctrl-C with a 300-token request in flight; time until every process is gone
  local pid=$1 label=$2
  curl -s -o /dev/null -w "$label: the request in flight at Ctrl-C got %{http_code} after %{time_total} s\n" \
    "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model": "poet", "prompt": "vowels: hello\n", "max_tokens": 300, "min_tokens": 300}' | tee -a "$RESULTS" &
  local curl_pid=$!
  sleep 0.5
  local pids; pids=$($PY -c "import psutil; print(' '.join(str(p.pid) for p in psutil.Process($pid).children(recursive=True)))")
  local t; t=$(now)
  kill -INT -"$pid"
  wait "$pid"; local rc=$?
  local exited; exited=$(since "$t")
  while [ -n "$(for p in $pids; do kill -0 "$p" 2>/dev/null && echo "$p"; done)" ]; do sleep 0.1; done
  say "$label: Ctrl-C -> exit $rc in $exited s, every one of its $(echo $pids | wc -w) processes gone after $(since "$t") s"
  wait "$curl_pid"
}

run_demo() {  # label log: start the demo, time its first answer (and the adapters when it builds them)
  local label=$1 log=$2
  local t0; t0=$(now)
  setsid "${DEMO[@]}" > "$log" 2>&1 &
  DEMO_PID=$!
  until [ "$(completion lorafleet-tiny-llama 'copy: hello\n' 8)" = 200 ]; do
    kill -0 $DEMO_PID 2>/dev/null || { say "$label: the demo exited"; tail -30 "$log"; exit 1; }
    sleep 0.5
  done
  say "$label: first answer (base model) $(since "$t0") s after the demo started"
  until grep -q "every demo adapter is served\|demo skills (greedy" "$log"; do
    grep -q "\] published " "$log" && [ -z "${first_adapter:-}" ] && first_adapter=1 && say "$label: first adapter published $(since "$t0") s after"
    sleep 1
  done
  grep -q "every demo adapter is served" "$log" && say "$label: all 10 adapters published $(since "$t0") s after"
  say "$label: translator on 'rot13: hello' -> $(curl -s "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
      -d '{"model": "translator", "prompt": "rot13: hello\n", "max_tokens": 8, "temperature": 0}' | $PY -c 'import json,sys; print(repr(json.load(sys.stdin)["choices"][0]["text"]))')"
}

run_demo "cold" "$DIR/demo-cold.txt"; stop_demo $DEMO_PID "cold"
first_adapter=1
run_demo "warm" "$DIR/demo-warm.txt"; stop_demo $DEMO_PID "warm"
say "terminal output: $DIR/demo-cold.txt, $DIR/demo-warm.txt"
