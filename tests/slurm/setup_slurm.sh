#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/test_slurm.py.
#
#   tests/slurm/setup_slurm.sh install            install slurm-wlm and munge where missing
#   tests/slurm/setup_slurm.sh start STATE_DIR    install if needed, start munged, slurmctld, slurmd
#   tests/slurm/setup_slurm.sh stop STATE_DIR     stop the daemons that `start` started
#
# One cluster per machine at a time (fixed ports, /etc/slurm): tests/test_slurm.py serializes
# concurrent test runs with a lock file.
#
# `install` (also run by `start`) installs the Debian packages slurm-wlm and munge when they are
# missing (root and apt-get needed) and exits 3 when they cannot be had, so the caller can skip.
# It needs root, which CI has: slurmd runs jobs as the submitting user.
#
# The configuration goes to /etc/slurm/slurm.conf and gres.conf, where every SLURM command finds
# it (the job step that Snakemake's SLURM plugin starts inside a job drops SLURM_CONF from its
# environment); a slurm.conf that this script did not write is never replaced (exit 3).
# Everything else lives in STATE_DIR (spool directories, logs slurmctld.log and slurmd.log, pid
# files) and, for munged, in a directory under /tmp named in STATE_DIR/munge_dir.
#
# The node, "localhost", is shaped to accept what profiles/slurm asks for, so the user's profile
# runs unchanged: partitions named after its placeholders (YOUR_PARTITION, YOUR_GPU_PARTITION),
# 16 CPUs, 2 GPUs of type YOUR_GPU_MODEL and 256 GB. The GPUs are stand-ins (/dev/null and
# /dev/zero: SLURM needs a device file per GPU and only records it), CPUs and memory are declared,
# not measured (SlurmdParameters=config_overrides), and nothing is enforced (no cgroups), so the
# tiny test jobs run on the real cores. SLURM still allocates the GPUs: each job gets its own
# (CUDA_VISIBLE_DEVICES) and at most two GPU jobs run at once. There is no
# accounting storage: `sacct` answers nothing and job states come from `squeue`; each finished
# job is written to STATE_DIR/jobcomp.log (state, partition, CPUs, TRES), for the test to check.
set -euo pipefail

action=${1:-}
state=${2:-}
if [[ "$action" != install && -z "$state" ]]; then
    echo "usage: $0 install | start STATE_DIR | stop STATE_DIR" >&2
    exit 2
fi

stop() {
    for name in slurmd slurmctld munged; do
        pidfile="$state/$name.pid"
        if [[ -f "$pidfile" ]]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            rm -f "$pidfile"
        fi
    done
    if [[ -f "$state/munge_dir" ]]; then
        rm -rf "$(cat "$state/munge_dir")" "$state/munge_dir"
    fi
}

have_slurm() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null
}

install() {
    have_slurm && return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "SLURM is not installed and cannot be installed here (needs root and apt-get)" >&2
        exit 3
    fi
    echo "installing slurm-wlm and munge" >&2
    log=$(mktemp)
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends slurm-wlm munge; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "apt-get could not install slurm-wlm and munge" >&2
        exit 3
    fi
    rm -f "$log"
    have_slurm || { echo "slurm-wlm installed without its daemons" >&2; exit 3; }
}
if [[ "$action" == install ]]; then
    install
    exit 0
fi
mkdir -p "$state"
state=$(cd "$state" && pwd)

etc=/etc/slurm
marker="# lmscaling test cluster (tests/slurm/setup_slurm.sh)"
ours() { [[ ! -e "$etc/slurm.conf" ]] || grep -qxF "$marker" "$etc/slurm.conf"; }

if [[ "$action" == stop ]]; then
    stop
    # Remove the configuration only when it is this cluster's.
    if [[ -e "$etc/slurm.conf" ]] && grep -qxF "# state: $state" "$etc/slurm.conf"; then
        rm -f "$etc/slurm.conf" "$etc/gres.conf"
    fi
    exit 0
fi
if [[ "$action" != start ]]; then
    echo "unknown action: $action" >&2
    exit 2
fi
install

if [[ $(id -u) -ne 0 ]]; then
    echo "starting slurmd needs root" >&2
    exit 3
fi
if ! ours; then
    echo "$etc/slurm.conf exists and belongs to another cluster; not replacing it" >&2
    exit 3
fi

stop
# From here on, a failure stops whatever was started.
trap 'stop' ERR
rm -rf "$state/spool" "$state"/*.log
mkdir -p "$state/spool/ctld" "$state/spool/d"

# munged: its own key, socket and state, so a system munged is left alone. They live in a
# directory of their own under /tmp that the munge user can reach (STATE_DIR may sit below a
# directory only root can enter).
munge=$(mktemp -d /tmp/lmscaling-munge.XXXXXX)
echo "$munge" >"$state/munge_dir"
key="$munge/munge.key"
dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
chmod 400 "$key"
chown -R munge:munge "$munge"
chmod 700 "$munge"
socket="$munge/munge.socket"
runuser -u munge -- munged --key-file="$key" --socket="$socket" \
    --pid-file="$munge/munged.pid" --log-file="$munge/munged.log" \
    --seed-file="$munge/munged.seed" --force
cp "$munge/munged.pid" "$state/munged.pid"

mkdir -p "$etc"
cat >"$etc/gres.conf" <<EOF
$marker
NodeName=localhost Name=gpu Type=YOUR_GPU_MODEL File=/dev/null,/dev/zero
EOF

cat >"$etc/slurm.conf" <<EOF
$marker
# state: $state
ClusterName=lmscaling-test
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/jobcomp.log
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
MinJobAge=300
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=16 RealMemory=256000 Gres=gpu:YOUR_GPU_MODEL:2 State=UNKNOWN
PartitionName=YOUR_PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=YOUR_GPU_PARTITION Nodes=localhost MaxTime=INFINITE State=UP
EOF

unset SLURM_CONF
slurmctld -c
slurmd -N localhost

for _ in $(seq 60); do
    if sinfo -h -N -o "%T" 2>/dev/null | grep -qx "idle"; then
        echo "SLURM is up (configuration in $etc, state in $state)" >&2
        exit 0
    fi
    sleep 1
done
echo "SLURM did not come up; logs in $state" >&2
sinfo -N -l >&2 || true
tail -n 20 "$state/slurmctld.log" "$state/slurmd.log" >&2 || true
stop
exit 1
