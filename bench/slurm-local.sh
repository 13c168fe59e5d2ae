#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine (Debian's slurmctld + slurmd + munge), then a tiny digits
# sweep with --executor slurm --detach, collected with --collect, against the same sweep with --executor
# local:2. As root on Debian/Ubuntu, from the repository root after `make install`; not run in CI.
#   bash bench/slurm-local.sh            # PY=... to choose the interpreter (default .venv/bin/python)
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-w2s-slurm-check}
host=$(hostname -s)

echo "== installing slurmctld, slurmd, slurm-client, munge (Debian packages)"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi
slurmctld -V

echo "== configuring a one-node cluster ($host, $(nproc) CPUs)"
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
conf=/etc/slurm/slurm.conf
mkdir -p /etc/slurm
cat > $conf <<EOF
ClusterName=w2s-local
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
NodeName=$host CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
pgrep -x munged >/dev/null || sudo -u munge munged 2>/dev/null || runuser -u munge -- munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 1; done
sinfo

echo "== the sweep with --executor local:2"
common=(--weak test_efficientnet@32 --strong test_resnet@32 --no-pretrained --data digits --n-labeled 200
  --n-test 300 --subspace 20 --num-workers 0 -q --vary n-pseudo=300,600,900 --trials 2)
rm -rf "$OUT"
start=$(date +%s)
"$PY" -m w2s_cli sweep "${common[@]}" --out-dir "$OUT/local" --csv "$OUT/local.csv" --executor local:2 >/dev/null
echo "local:2 took $(($(date +%s) - start)) s"

echo "== the same sweep as a SLURM job array: submitted (--detach), watched with squeue, collected"
start=$(date +%s)
"$PY" -m w2s_cli sweep "${common[@]}" --out-dir "$OUT/slurm" --executor slurm --slurm-cpus 1 \
  --slurm-mem-gb 1 --slurm-time 20 --detach
squeue
while [ -n "$(squeue -h)" ]; do sleep 2; done
echo "all jobs left the queue after $(($(date +%s) - start)) s; their states:"
"$PY" - "$OUT/slurm" <<'EOF'
import json, sys
from pathlib import Path
import submitit
out = Path(sys.argv[1])
for entry in json.loads((out / "jobs" / "submitted.json").read_text())["jobs"]:
    job = submitit.SlurmJob(out / "jobs" / "%j", entry["id"])
    print(f"  {entry['id']:>8}  {entry['job']:<45} {'finished' if job.done() and job.exception() is None else 'FAILED'}")
EOF
"$PY" -m w2s_cli sweep --collect "$OUT/slurm" --csv "$OUT/slurm.csv" >/dev/null

echo "== the two CSVs"
"$PY" - "$OUT/local.csv" "$OUT/slurm.csv" <<'EOF'
import csv, math, sys
a, b = (list(csv.DictReader(open(p))) for p in sys.argv[1:])
worst = 0.0
for ra, rb in zip(a, b, strict=True):
    for k in ra:
        try:
            x, y = float(ra[k]), float(rb[k])
        except ValueError:
            assert ra[k] == rb[k], k
            continue
        if not (math.isnan(x) and math.isnan(y)):
            worst = max(worst, abs(x - y))
print(f"{len(a)} rows each; largest difference {worst:.1e}")
sys.exit(0 if worst <= 1e-12 else 1)
EOF
