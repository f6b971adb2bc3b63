#!/usr/bin/env bash
# Start a single-node SLURM (Debian packages slurm-wlm + munge) on this machine, for tests and demos.
#
#   sudo scripts/slurm/start_local_slurm.sh     # idempotent: a second call only checks and returns
#   sudo scripts/slurm/stop_local_slurm.sh      # stops what this script started
#
# What it does: creates a munge key if absent and starts munged; writes slurm.conf from
# slurm.conf.in beside this script (node = `hostname -s`, CPUs = nproc, RealMemory = free -m,
# partition `debug`, select/cons_tres, no accounting); starts slurmctld and slurmd; waits until
# `sinfo` shows the node idle. Without an accounting database Snakemake must query job status with
# squeue: `--slurm-status-command squeue` (set in workflow/profiles/slurm).
#
# Settings (environment):
#   SLURM_CONF                 slurm.conf to write and use (default /etc/slurm/slurm.conf). An existing
#                              file not written by this script is never overwritten. Snakemake jobs need
#                              the default path: snakemake-executor-plugin-slurm-jobstep 0.6.1 drops
#                              SLURM_CONF from the environment of the srun inside each job.
#   TMSTARGET_SLURM_STATE_DIR  spool, pid and log files (default /var/spool/tmstarget-slurm)
#   TMSTARGET_SLURM_TIMEOUT_S  seconds to wait for the node to become idle (default 60)
# Needs root and: apt-get install -y slurm-wlm munge
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATE="$SCRIPT_DIR/slurm.conf.in"
export SLURM_CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
STATE_DIR="${TMSTARGET_SLURM_STATE_DIR:-/var/spool/tmstarget-slurm}"
TIMEOUT_S="${TMSTARGET_SLURM_TIMEOUT_S:-60}"
MARKER="# written by tmstarget scripts/slurm/start_local_slurm.sh"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
NODE_NAME="$(hostname -s)"

log() { echo "[start_local_slurm] $*" >&2; }
die() { echo "[start_local_slurm] ERROR: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it starts munged, slurmctld and slurmd)."
for cmd in munged munge unmunge slurmctld slurmd sinfo scontrol; do
  command -v "$cmd" >/dev/null 2>&1 \
    || die "'$cmd' not found. Install the Debian packages: apt-get update && apt-get install -y slurm-wlm munge"
done
[ -f "$TEMPLATE" ] || die "template $TEMPLATE is missing; restore it from the repository."
[ "$SLURM_CONF" = /etc/slurm/slurm.conf ] \
  || log "warning: SLURM_CONF=$SLURM_CONF is not the default; sbatch/squeue work, but Snakemake's slurm jobs fail (their inner srun reads /etc/slurm/slurm.conf)."

node_state() {  # compact state of our node (idle, mix, alloc, down*, drain, ...) or empty
  timeout 10 sinfo --noheader --nodes="$NODE_NAME" --format=%t 2>/dev/null | head -n1 | tr -d ' '
}

pid_alive() {  # pid_alive PIDFILE: the process in PIDFILE exists
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Idempotence: everything already up and the node usable -> nothing to do.
if [ -f "$SLURM_CONF" ] && grep -qF "$MARKER" "$SLURM_CONF" \
   && pid_alive "$STATE_DIR/slurmctld.pid" && pid_alive "$STATE_DIR/slurmd.pid"; then
  case "$(node_state)" in
    idle|mix|alloc|comp)
      log "already running (node $NODE_NAME $(node_state), SLURM_CONF=$SLURM_CONF); nothing to do."
      exit 0 ;;
  esac
fi

# 1. munge: key, then daemon.
if [ ! -s "$MUNGE_KEY" ]; then
  log "creating munge key $MUNGE_KEY"
  install -d -m 0700 -o munge -g munge /etc/munge
  if command -v mungekey >/dev/null 2>&1; then
    runuser -u munge -- mungekey --create --keyfile="$MUNGE_KEY"
  else
    dd if=/dev/urandom bs=1 count=1024 of="$MUNGE_KEY" status=none
  fi
  chown munge:munge "$MUNGE_KEY"
  chmod 0400 "$MUNGE_KEY"
fi
mkdir -p "$STATE_DIR/log" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  install -d -m 0755 -o munge -g munge /run/munge
  install -d -m 0700 -o munge -g munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$STATE_DIR/munged.started-by-script"
  for _ in $(seq 1 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n | unmunge >/dev/null || die "munged did not start; see /var/log/munge/munged.log"
fi

# 2. slurm.conf for this machine.
if [ -f "$SLURM_CONF" ] && ! grep -qF "$MARKER" "$SLURM_CONF"; then
  die "$SLURM_CONF exists and was not written by this script; move it away or set SLURM_CONF to another path."
fi
CPUS="$(nproc)"
REAL_MEMORY_MB="$(free -m | awk '/^Mem:/ {print $2}')"
mkdir -p "$(dirname "$SLURM_CONF")"
tmp_conf="$(mktemp "$SLURM_CONF.XXXXXX")"
sed -e "s|@NODE_NAME@|$NODE_NAME|g" -e "s|@CPUS@|$CPUS|g" -e "s|@REAL_MEMORY_MB@|$REAL_MEMORY_MB|g" \
    -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@CTLD_PORT@|${TMSTARGET_SLURMCTLD_PORT:-6817}|g" \
    -e "s|@SLURMD_PORT@|${TMSTARGET_SLURMD_PORT:-6818}|g" "$TEMPLATE" > "$tmp_conf"
chmod 0644 "$tmp_conf"
if [ -f "$SLURM_CONF" ] && cmp -s "$tmp_conf" "$SLURM_CONF"; then
  rm -f "$tmp_conf"
else
  mv -f "$tmp_conf" "$SLURM_CONF"
  log "wrote $SLURM_CONF (node $NODE_NAME, CPUs=$CPUS, RealMemory=${REAL_MEMORY_MB} MB)"
  # A running controller must re-read a changed file.
  if pid_alive "$STATE_DIR/slurmctld.pid"; then scontrol reconfigure || true; fi
fi

# 3. Daemons (both fork into the background and write their pid files).
if ! pid_alive "$STATE_DIR/slurmctld.pid"; then
  log "starting slurmctld"
  slurmctld -f "$SLURM_CONF"
fi
if ! pid_alive "$STATE_DIR/slurmd.pid"; then
  log "starting slurmd"
  slurmd -f "$SLURM_CONF"
fi

# 4. Wait for the node; a node left down/drained by an earlier run is resumed once.
resumed=0
deadline=$(( SECONDS + TIMEOUT_S ))
while :; do
  state="$(node_state)"
  case "$state" in
    idle|mix|alloc)
      log "SLURM ready: node $NODE_NAME $state, partition debug (SLURM_CONF=$SLURM_CONF)"
      exit 0 ;;
    down*|drain*|drng*|fail*|inval*)
      if [ "$resumed" -eq 0 ]; then
        log "node $NODE_NAME is $state; resuming it"
        scontrol update NodeName="$NODE_NAME" State=RESUME || true
        resumed=1
      fi ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "node $NODE_NAME not idle after ${TIMEOUT_S}s (state '${state:-none}'). Last log lines:"
    tail -n 20 "$STATE_DIR/log/slurmctld.log" "$STATE_DIR/log/slurmd.log" >&2 || true
    exit 1
  fi
  sleep 1
done
