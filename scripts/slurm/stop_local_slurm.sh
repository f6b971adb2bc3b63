#!/usr/bin/env bash
# Stop the single-node SLURM started by start_local_slurm.sh (slurmctld, slurmd, and munged if that
# script started it). Only processes named in its pid files are signalled.
#
#   sudo scripts/slurm/stop_local_slurm.sh           # stop the daemons, keep config and state
#   sudo scripts/slurm/stop_local_slurm.sh --purge   # also delete the state dir and the slurm.conf it wrote
#
# Same settings as the start script: SLURM_CONF, TMSTARGET_SLURM_STATE_DIR.
set -euo pipefail

export SLURM_CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
STATE_DIR="${TMSTARGET_SLURM_STATE_DIR:-/var/spool/tmstarget-slurm}"
MARKER="# written by tmstarget scripts/slurm/start_local_slurm.sh"
MUNGE_PID=/run/munge/munged.pid
PURGE=0
[ "${1:-}" = "--purge" ] && PURGE=1

log() { echo "[stop_local_slurm] $*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "ERROR: must run as root."; exit 2; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, wait up to 15 s, then KILL
  local name="$1" pidfile="$2" pid
  [ -s "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not exit; killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

# Cancel our cluster's jobs first so no slurmstepd outlives slurmd.
if [ -f "$SLURM_CONF" ] && grep -qF "$MARKER" "$SLURM_CONF" && [ -s "$STATE_DIR/slurmctld.pid" ] \
   && kill -0 "$(cat "$STATE_DIR/slurmctld.pid")" 2>/dev/null; then
  timeout 10 scancel --full --quiet --state=PENDING 2>/dev/null || true
  timeout 10 scancel --full --quiet --state=RUNNING 2>/dev/null || true
fi
stop_pidfile slurmd "$STATE_DIR/slurmd.pid"
stop_pidfile slurmctld "$STATE_DIR/slurmctld.pid"
if [ -f "$STATE_DIR/munged.started-by-script" ]; then
  stop_pidfile munged "$MUNGE_PID"
  rm -f "$STATE_DIR/munged.started-by-script"
fi

if [ "$PURGE" -eq 1 ]; then
  log "purging $STATE_DIR"
  rm -rf "$STATE_DIR"
  if [ -f "$SLURM_CONF" ] && grep -qF "$MARKER" "$SLURM_CONF"; then
    log "removing $SLURM_CONF"
    rm -f "$SLURM_CONF"
  fi
fi
log "stopped."
