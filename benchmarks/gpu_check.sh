#!/usr/bin/env bash
# The GPU checks of docs/performance.md ("Running the GPU checks"), one command, results in OUTDIR.
#
#   benchmarks/gpu_check.sh OUTDIR [--device cuda|cpu] [--size full|tiny] [--steps 1,2,3,4]
#       [--wheels DIR] [--fashion-mnist DIR] [--archive FILE] [--budget N:SECONDS ...]
#
# Steps, in order; each one's results are in OUTDIR (and, with --archive, packed into FILE)
# before the next starts, and each runs under `timeout` with its own budget in seconds:
#   1  pytest -m cuda: the CUDA-marked tests of tests/cuda (on --device cpu: their cpu variants)
#   2  benchmarks/throughput.py: resnet32x4 -> resnet8x4, AT and CRD, fp32 and bf16, batch 64 and
#      256, eager then compile=true (images/s, GFLOP/step, peak memory), nvidia-smi dmon alongside
#   3  one measured epoch of CIFAR-100 shape (generated files, 50,000 + 10,000 images) through
#      `sakd distill`, adaptive AT, bf16 and fp32, the projected 240-epoch time, and a
#      torch.profiler table of one adaptive bf16 step (benchmarks/profile_step.py)
#   4  scripts/gpu_study.py: the Fashion-MNIST multi-seed study (needs --fashion-mnist)
# Default steps: 1,2,3. --size tiny shrinks every step (a CPU dry run: --device cpu --size tiny;
# step 1 then runs the tests' cpu variants, step 2 batch 16 eager only, step 3 192 + 64 images).
# Missing Python packages are installed from --wheels (pip --no-index --no-deps into a
# folder put on PYTHONPATH; `make gpu-carry` fills .whl/ here), sakd itself runs from src/ with
# --no-deps (nothing of its dependencies is fetched). Exit status: 0 when every step passed.
set -u -o pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
OUTDIR=$1
shift
DEVICE=cuda SIZE=full STEPS=1,2,3 WHEELS="" FASHION="" ARCHIVE=""
declare -A BUDGET=([1]=150 [2]=120 [3]=110 [4]=480)
while [ $# -gt 0 ]; do
    case $1 in
        --device) DEVICE=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --wheels) WHEELS=$2; shift 2 ;;
        --fashion-mnist) FASHION=$2; shift 2 ;;
        --archive) ARCHIVE=$2; shift 2 ;;
        --budget) BUDGET[${2%%:*}]=${2#*:}; shift 2 ;;
        *) echo "gpu_check: unknown argument $1" >&2; usage ;;
    esac
done
case $DEVICE in cuda|cpu) ;; *) echo "gpu_check: --device must be cuda or cpu" >&2; exit 2 ;; esac
case $SIZE in full|tiny) ;; *) echo "gpu_check: --size must be full or tiny" >&2; exit 2 ;; esac

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sakd-gpu-check.XXXXXX")
SITE=$WORK/site
export PYTHONPATH="$REPO/src:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
cd "$REPO"

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$OUTDIR/gpu_check.log"; }
pack() {  # results so far into the archive (checkpoints left out), replaced atomically
    [ -n "$ARCHIVE" ] || return 0
    tar czf "$ARCHIVE.part" -C "$OUTDIR" --exclude='*.pt' . && mv "$ARCHIVE.part" "$ARCHIVE"
}
FAILED=0
record() {  # step name, exit status, seconds
    local verdict=ok
    [ "$2" -eq 0 ] || { verdict="failed (exit $2$([ "$2" -eq 124 ] && echo ', over its time budget'))"; FAILED=1; }
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$OUTDIR/steps.tsv"
    log "step $1: $verdict after $3 s"
    pack
}
wants() { [[ ",$STEPS," == *",$1,"* ]]; }

# ---------------------------------------------------------------- 0: dependencies and machine
printf 'step\texit\tseconds\n' >"$OUTDIR/steps.tsv"
MISSING=$("$PYTHON" - <<'EOF'
import importlib.util
names = {"pydantic": "pydantic", "yaml": "pyyaml", "numpy": "numpy", "PIL": "pillow",
         "tqdm": "tqdm", "tensorboard": "tensorboard", "matplotlib": "matplotlib", "pytest": "pytest"}
print(" ".join(p for m, p in names.items() if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$MISSING" ]; then
    log "missing Python packages: $MISSING"
    if [ -n "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$WHEELS"/*.whl 2>&1 | tee -a "$OUTDIR/gpu_check.log"
        export PYTHONPATH="$PYTHONPATH:$SITE"
        log "installed $(ls "$WHEELS" | tr '\n' ' ')into $SITE"
    else
        log "no wheels given (--wheels DIR, filled by 'make gpu-carry'): steps will fail"
    fi
fi
"$PYTHON" - >"$OUTDIR/environment.txt" 2>&1 <<EOF
import datetime, platform, subprocess, torch, sakd
print("date (UTC):", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
print("sakd:", sakd.__version__, "from", sakd.__file__)
print("commit:", subprocess.run(["git", "-C", "$REPO", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown")
print("python:", platform.python_version(), "torch:", torch.__version__, "cuda:", torch.version.cuda)
print("cpu cores:", __import__("os").cpu_count(), "machine:", platform.machine())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu:", p.name, f"{p.total_memory / 2**30:.0f} GiB,", p.multi_processor_count, "SMs, capability", f"{p.major}.{p.minor}")
    print("cudnn:", torch.backends.cudnn.version(), "bf16:", torch.cuda.is_bf16_supported())
print("args: device=$DEVICE size=$SIZE steps=$STEPS")
EOF
if ! grep -q '^sakd:' "$OUTDIR/environment.txt"; then
    log "python cannot import torch and sakd:"; cat "$OUTDIR/environment.txt"; exit 1
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
        >>"$OUTDIR/environment.txt" 2>&1
fi
log "environment: $(tr '\n' ';' <"$OUTDIR/environment.txt" | cut -c1-400)"
pack

if [ "$SIZE" = tiny ]; then
    TP_ARGS=(--samples 512 --steps 1 --rounds 1) BATCHES=(16) COMPILES=(eager)
    PROFILE_ARGS=(--warmup 1 --steps 1 --samples 256)
    CIFAR_TRAIN=192 CIFAR_TEST=64 STUDY_ARGS=(--tiny)
else
    TP_ARGS=(--samples 50000 --steps 5 --rounds 3) BATCHES=(64 256) COMPILES=(eager compile)
    PROFILE_ARGS=()
    CIFAR_TRAIN=50000 CIFAR_TEST=10000 STUDY_ARGS=()
fi

# ------------------------------------------------------------------------ 1: pytest -m cuda
if wants 1; then
    log "step 1: CUDA-marked tests (budget ${BUDGET[1]} s)"
    start=$SECONDS
    if [ "$DEVICE" = cuda ]; then SELECT=(-m cuda); else SELECT=(-m "not cuda"); fi
    SAKD_NONDETERMINISTIC_OPS="$OUTDIR/step1_nondeterministic_ops.txt" \
        timeout -k 10 "${BUDGET[1]}" "$PYTHON" -m pytest "${SELECT[@]}" -v -rA \
        tests/cuda/test_device_batches.py tests/cuda/test_mixed_precision.py \
        tests/cuda/test_resume_device.py tests/cuda/test_compile_device.py \
        -p no:cacheprovider --junitxml="$OUTDIR/step1_pytest.xml" >"$OUTDIR/step1_pytest.txt" 2>&1
    record 1-pytest $? $((SECONDS - start))
fi

# ---------------------------------------------------------------- 2: benchmarks/throughput.py
if wants 2; then
    log "step 2: throughput matrix (budget ${BUDGET[2]} s)"
    start=$SECONDS status=0
    mkdir -p "$OUTDIR/step2"
    DMON=""
    if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi dmon -s uc -d 1 >"$OUTDIR/step2/dmon.txt" 2>&1 &
        DMON=$!
    fi
    # Most informative first: eager before compiled, the paper's batch before the larger one.
    for compiled in "${COMPILES[@]}"; do
        for batch in "${BATCHES[@]}"; do
            for distiller in at crd; do
                left=$((BUDGET[2] - (SECONDS - start)))
                name="throughput-$distiller-b$batch-$compiled"
                if [ "$left" -lt 10 ]; then log "  $name: skipped, budget spent"; status=124; continue; fi
                extra=()
                [ "$compiled" = compile ] && extra=(--compile)
                timeout -k 5 "$left" "$PYTHON" benchmarks/throughput.py --devices "$DEVICE" \
                    --teacher resnet32x4 --student resnet8x4 --distiller "$distiller" \
                    --precisions fp32 bf16 --batch "$batch" --threads 4 "${TP_ARGS[@]}" \
                    "${extra[@]}" --json "$OUTDIR/step2/$name.json" >"$OUTDIR/step2/$name.md" 2>&1
                rc=$?
                [ "$rc" -eq 0 ] || status=$rc
                log "  $name: exit $rc"
                pack
            done
        done
    done
    [ -n "$DMON" ] && kill "$DMON" 2>/dev/null
    record 2-throughput $status $((SECONDS - start))
fi

# ----------------------------------------------------- 3: one CIFAR-100-shaped epoch, sakd distill
if wants 3; then
    log "step 3: measured epochs through sakd distill (budget ${BUDGET[3]} s)"
    start=$SECONDS status=0
    mkdir -p "$OUTDIR/step3"
    "$PYTHON" benchmarks/cifar_files.py "$WORK/cifar" --dataset cifar100 \
        --train "$CIFAR_TRAIN" --test "$CIFAR_TEST" >>"$OUTDIR/gpu_check.log" 2>&1
    "$PYTHON" -c "import sys, torch; from sakd.models import create_model; torch.manual_seed(0); \
torch.save({'model': create_model('resnet32x4', 100).state_dict()}, sys.argv[1])" "$WORK/teacher.pt"
    for precision in bf16 fp32; do
        left=$((BUDGET[3] - (SECONDS - start)))
        if [ "$left" -lt 10 ]; then log "  $precision: skipped, budget spent"; status=124; continue; fi
        run_dir=$WORK/epoch-$precision
        timeout -k 5 "$left" "$PYTHON" -m sakd distill cifar100/resnet32x4-resnet8x4 \
            "data.root=$WORK/cifar" "teacher.checkpoint=$WORK/teacher.pt" distiller.name=at \
            spots.mode=adaptive epochs=2 "precision=$precision" "device=$DEVICE" progress=false \
            "output_dir=$run_dir" >"$OUTDIR/step3/distill-$precision.txt" 2>&1
        rc=$?
        [ "$rc" -eq 0 ] || status=$rc
        for file in metrics.jsonl run.json summary.json; do
            [ -f "$run_dir/$file" ] && cp "$run_dir/$file" "$OUTDIR/step3/$precision-$file"
        done
        log "  $precision: exit $rc"
        pack
    done
    left=$((BUDGET[3] - (SECONDS - start)))
    if [ "$left" -ge 10 ]; then  # where the adaptive step's time goes (torch.profiler)
        timeout -k 5 "$left" "$PYTHON" benchmarks/profile_step.py --device "$DEVICE" \
            --precision bf16 --batch "${BATCHES[0]}" "${PROFILE_ARGS[@]}" \
            >"$OUTDIR/step3/profile-adaptive-bf16.txt" 2>&1 || log "  profile: exit $?"
    fi
    "$PYTHON" benchmarks/project_epochs.py "$OUTDIR/step3" --epochs 240 \
        >"$OUTDIR/step3/projection.md" 2>&1 || status=1
    cat "$OUTDIR/step3/projection.md" | tee -a "$OUTDIR/gpu_check.log"
    record 3-epoch $status $((SECONDS - start))
fi

# ------------------------------------------------------------ 4: the Fashion-MNIST study
if wants 4; then
    log "step 4: Fashion-MNIST study (budget ${BUDGET[4]} s)"
    start=$SECONDS
    if [ -z "$FASHION" ]; then
        for candidate in "$REPO/.gpu-data/fashion-mnist" /usr/share/datasets/fashion-mnist; do
            [ -f "$candidate/train-images-idx3-ubyte.gz" ] && { FASHION=$candidate; break; }
        done
    fi
    # The study sizes itself to its budget; timeout is the safety net above it.
    timeout -k 10 $((BUDGET[4] + 120)) "$PYTHON" scripts/gpu_study.py "$OUTDIR/study" \
        --data-root "${FASHION:-missing}" --device "$DEVICE" --budget-seconds "${BUDGET[4]}" \
        --work "$WORK/study" "${STUDY_ARGS[@]}" >"$OUTDIR/step4_study.txt" 2>&1
    record 4-study $? $((SECONDS - start))
fi

log "done: $(tail -n +2 "$OUTDIR/steps.tsv" | cut -f1,2 | tr '\t\n' '= ')(exit status per step)"
rm -rf "$WORK"
exit $FAILED
