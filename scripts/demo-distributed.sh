#!/usr/bin/env bash
# The distributed layout on one machine: Mosquitto, a central site (with the simulated
# metropolis and the HMI) and two edges splitting the communes ([sparkplug] in config.toml).
# Ctrl-C stops the edges, then the central, then the broker (each in its own session, so that
# the terminal's Ctrl-C reaches this script only). Files: var/distributed/<role>/.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CONFIG=${CONFIG:-config.toml}
DATA=var/distributed
mkdir -p "$DATA/broker"
read_toml() { "$BIN/python" -c "import tomllib,sys; d=tomllib.load(open(sys.argv[1],'rb'))['sparkplug']; print($1)" "$CONFIG"; }
PORT=$(read_toml 'd["port"]')
EDGES=$(read_toml '" ".join(e["name"] for e in d["edges"])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_queued_messages 100000\n' \
  "$PORT" "$PWD/$DATA/broker" > "$DATA/broker/mosquitto.conf"

edges=()
stop() {
  trap - INT TERM
  kill -INT "${edges[@]}" 2>/dev/null; wait "${edges[@]}" 2>/dev/null
  kill -INT "$central" 2>/dev/null; wait "$central" 2>/dev/null
  kill -TERM "$broker" 2>/dev/null; wait "$broker" 2>/dev/null
  exit 0
}
trap stop INT TERM

setsid /usr/sbin/mosquitto -c "$DATA/broker/mosquitto.conf" & broker=$!
sleep 0.5
setsid "$BIN/beffroi" demo -c "$CONFIG" --role central --data "$DATA/central" & central=$!
sleep 3
for edge in $EDGES; do
  setsid "$BIN/beffroi" demo -c "$CONFIG" --role edge --edge "$edge" --data "$DATA/$edge" & edges+=($!)
done
wait
