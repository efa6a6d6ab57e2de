#!/usr/bin/env bash
# Install and start a single-node SLURM cluster (slurmctld + slurmd + munge, and slurmdbd on MariaDB
# so that `sacct` answers, which submitit uses for job states) from Debian packages, for the
# `slurm`-marked tests (tests/test_slurm.py). Idempotent: daemons already running are left alone.
# Needs root and apt. Usage: sudo .ci/setup_slurm.sh   (then: sinfo shows partition `debug` idle)
# SLURM_NO_DBD=1 skips slurmdbd/MariaDB (sacct then fails; the runner does not need it).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "setup_slurm.sh: needs root (apt-get install and daemons)" >&2
  exit 1
fi

USE_DBD=1
[[ "${SLURM_NO_DBD:-0}" == 1 ]] && USE_DBD=0
PKGS=(slurmctld slurmd slurm-client munge)
[[ $USE_DBD == 1 ]] && PKGS+=(slurmdbd mariadb-server)
missing=0
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing=1; done
if [[ $missing == 1 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${PKGS[@]}"
fi

HOST=$(hostname -s)
read -r CPUS MEM < <(slurmd -C | awk '/^NodeName/ {
  for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["CPUs"], v["RealMemory"] }')
# Leave 1 GiB to the system.
MEM=$(( MEM > 2048 ? MEM - 1024 : MEM ))

# munge: a key and a running daemon.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 20); do munge -n >/dev/null 2>&1 && break; sleep 0.5; done
fi
munge -n | unmunge >/dev/null

# slurmdbd on MariaDB (accounting, for sacct).
ACCOUNTING="AccountingStorageType=accounting_storage/none"
if [[ $USE_DBD == 1 ]]; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if ! mariadb-admin ping >/dev/null 2>&1; then
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    (cd / && exec setsid /usr/sbin/mariadbd --user=mysql </dev/null >/var/log/mariadbd.log 2>&1 &)
    for _ in $(seq 60); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
CONF
  chown slurm:slurm /etc/slurm/slurmdbd.conf
  chmod 0600 /etc/slurm/slurmdbd.conf
  install -d -o slurm -g slurm -m 0755 /var/log/slurm /run/slurm
  if ! pgrep -x slurmdbd >/dev/null; then
    /usr/sbin/slurmdbd
  fi
  for _ in $(seq 60); do
    (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break
    sleep 0.5
  done
  ACCOUNTING="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
fi

# slurm.conf: one node, one partition, no cgroups (runs inside containers too).
install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat > /etc/slurm/slurm.conf.new <<CONF
ClusterName=tasktransfer
SlurmctldHost=${HOST}
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
${ACCOUNTING}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
# Debian's slurmd also reads cgroup.conf when present; keep it absent of cgroup plugins.
rm -f /etc/slurm/cgroup.conf

# A changed configuration needs fresh daemons.
if ! cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf; then
  for d in slurmd slurmctld; do
    for pid in $(pgrep -x "$d"); do
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    done
  done
  mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf
else
  rm -f /etc/slurm/slurm.conf.new
fi
if [[ $USE_DBD == 1 ]]; then
  sacctmgr -i add cluster tasktransfer >/dev/null 2>&1 || true
fi
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 60); do
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
  case "$state" in
    idle|mixed|allocated) break ;;
    down*|drain*) scontrol update NodeName="${HOST}" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
sinfo
state=$(sinfo -h -N -o '%T' | head -n1)
case "$state" in
  idle|mixed|allocated) echo "setup_slurm.sh: single-node SLURM up (node ${HOST}, ${CPUS} CPUs, ${MEM} MiB)" ;;
  *) echo "setup_slurm.sh: node ${HOST} is '${state}', see /var/log/slurm/*.log" >&2; exit 1 ;;
esac
