#!/bin/bash
# make test-gpu for a GPU machine that takes a limited upload a call (tests/metal_cuda/README.md).
# Run from a folder that holds tests/metal_cuda/ (this folder's files), tests/reference.py,
# cu.tgz (build-check/gpu/cubins: the .cu files and index.json) and packs/ (any of packs/cases,
# packs/bench, batches of packs/suite): compiles the cubins those launches use (kept in
# /tmp/mfs_cubins while the machine stays warm), replays each pack but bench, writing logs and
# failures to $OUT; BENCH=1 also times packs/bench, SAN=1 runs compute-sanitizer's racecheck,
# synccheck and memcheck over one launch of each kernel of packs/cases.
export PYTHONUNBUFFERED=1
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "${RUN_DIR:-$HERE/../..}"
OUT="${OUT:-/tmp/mfs_gpu_out}"; mkdir -p "$OUT"
C=/tmp/mfs_cubins
if ! cmp -s cu.tgz $C/cu.tgz; then
  rm -rf $C; mkdir -p $C; tar xzf cu.tgz -C $C; cp cu.tgz $C/
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch,numpy;print('torch', torch.__version__, 'numpy', numpy.__version__)"
fi
start=$(date +%s)
python3 tests/metal_cuda/compile_cubins.py $C packs/* --compile-only --jobs $(nproc) > $OUT/compile.txt 2>&1 || { tail -30 $OUT/compile.txt; exit 1; }
echo "$(grep -c ': compiled' $OUT/compile.txt) cubins compiled in $(( $(date +%s) - start )) s ($(ls $C/*.cubin | wc -l) here)"
rc=0
for p in packs/*; do
  n=$(basename $p)
  [ "$n" = bench ] && continue
  python3 tests/metal_cuda/gpu_replay.py $C $p --failures $OUT/fail_$n.json > $OUT/replay_$n.txt 2>&1 || rc=1
  grep -E "FAIL|worst|gpu_replay:" $OUT/replay_$n.txt | tail -n 12
done
if [ -n "$BENCH" ]; then python3 tests/metal_cuda/gpu_replay.py $C packs/bench --bench 2>&1 | tail -n 3; fi
if [ -n "$SAN" ]; then
  for t in racecheck synccheck memcheck; do
    s=$(date +%s)
    compute-sanitizer --tool $t --kernel-name kns=mfs_ --error-exitcode 1 python3 tests/metal_cuda/gpu_replay.py $C packs/cases --one-per-kernel > $OUT/san_$t.txt 2>&1
    echo "$t rc=$? ($(( $(date +%s) - s )) s): $(grep -E 'ERROR SUMMARY|gpu_replay:' $OUT/san_$t.txt | tr '\n' ' ')"
  done
fi
exit $rc
