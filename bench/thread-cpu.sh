#!/usr/bin/env bash
# CPU per request of each gateway thread, and its context switches, under the shared
# harness's load: what the harness's "cpu us/req" of a whole process cannot split (the
# audit's writer thread against the thread that serves requests).
#
#   ../shared/bench/run.sh with BENCH_DIR=DIR once (it writes the keys, the tokens and
#   the nginx configuration this reuses), then:
#   bench/thread-cpu.sh DIR bench/intraport-bench-audit.toml 8
#
# The gateway is pinned to core 0 and nginx (upstream and IdP stand-in) and wrk to
# core 1, as in the harness; a 2-second load warms it up before the measured one.
# BIN: the gateway binary (target/release/intraport). BATCH=1 puts the blocking-pool
# threads under SCHED_BATCH (no wake-up preemption) after the warm-up.
set -euo pipefail
[[ $# -eq 3 ]] || { sed -n '2,13p' "$0" >&2; exit 2; }
dir=$1 cfg=$2 secs=$3
for f in claims.json nginx.conf tokens.lua; do
  [[ -f $dir/$f ]] || { echo "$dir/$f: missing (run the harness with BENCH_DIR=$dir first)" >&2; exit 2; }
done
[[ -f $cfg ]] || { echo "$cfg: no such configuration" >&2; exit 2; }
bin=${BIN:-target/release/intraport}
[[ -x $bin ]] || { echo "$bin: not built (cargo build --release -p intraport)" >&2; exit 2; }
claim() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$dir/claims.json" "$1"; }
export BENCH_DIR=$dir UPSTREAM_URL=http://127.0.0.1:18080/ IDP_URL=http://127.0.0.1:18079
BENCH_ISSUER=$(claim issuer) BENCH_AUDIENCE=$(claim audience) BENCH_TENANT=$(claim tenant)
export BENCH_ISSUER BENCH_AUDIENCE BENCH_TENANT INTRAPORT_LOG=${INTRAPORT_LOG:-warn}

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
taskset -c 1 nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' & pids+=($!)
sleep 0.5
taskset -c 0 "$bin" serve --config "$cfg" & gw=$!; pids+=($gw)
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18090/ && break; sleep 0.1; done
load() { taskset -c 1 wrk -t1 -c32 -d"$1" -s "$dir/tokens.lua" http://127.0.0.1:18090/; }
load 2s >/dev/null
if [[ -n ${BATCH:-} ]]; then
  for t in /proc/$gw/task/*; do grep -q '^tokio-rt' "$t/comm" && chrt -b -p 0 "${t##*/}"; done
fi
# per thread: tid, name, voluntary and involuntary switches, CPU ticks
snap() {
  for t in /proc/$gw/task/*; do
    echo "${t##*/} $(tr ' ' _ <"$t/comm") $(awk '/^voluntary_ctxt/ {v=$2} /^nonvoluntary_ctxt/ {n=$2} END {print v, n}' "$t/status") $(awk '{print $14 + $15}' "$t/stat")"
  done
}
s0=$(snap)
out=$(load "${secs}s")
s1=$(snap)
n=$(awk '/requests in/ {print $1}' <<<"$out")
python3 - "$s0" "$s1" "$n" "$(getconf CLK_TCK)" <<'PY'
import sys
before = {l.split()[0]: l.split() for l in sys.argv[1].splitlines()}
n, tck = int(sys.argv[3]), int(sys.argv[4])
print(f"{n} requests")
for line in sys.argv[2].splitlines():
    tid, name, vol, invol, ticks = line.split()
    b = before.get(tid, [tid, name, 0, 0, 0])
    dv, di, dt = int(vol) - int(b[2]), int(invol) - int(b[3]), int(ticks) - int(b[4])
    if dv or di or dt:
        print(f"{name:<16} {tid:>8}  cpu {dt * 1e6 / tck / n:6.2f} us/req"
              f"  switches per 1,000 requests: voluntary {dv * 1000 / n:6.1f}, involuntary {di * 1000 / n:5.1f}")
PY
