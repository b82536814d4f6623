#!/usr/bin/env bash
# Peer benchmark: our lits trainer vs nnU-Net v2 (2d) on the same synthetic data, patient split, CPU and wall-clock
# budget, both scored by our evaluate.py. Optional; outside CI. Results: outputs/peer_nnunet/results.md.
#
#   bash studies/peer_nnunet/run.sh [MINUTES]          training budget of each method in minutes (default 10)
#
# Run it from the lits dev environment (python with lits installed), on an otherwise idle machine: the two
# trainings run one after the other and the budget is wall-clock. Environment (all optional):
#   PEER_VENV               nnU-Net venv, created once and reused (default outputs/peer_nnunet/venv)
#   LITS_PYTHON             python with lits installed (default: python on PATH)
#   PEER_NNUNET_TTA         both (default) | on | off: nnU-Net prediction with its default mirroring TTA and/or without
#   PEER_DATASET_ID         nnU-Net dataset id (default 501 -> Dataset501_LitsSynthetic)
#   nnUNet_n_proc_DA        nnU-Net augmentation worker processes (default 1 on this 2-core budget; see below)
#   LITS_PEER_NNUNET_BATCH  nnU-Net batch size (default 2; "plans" = the planned 49; see nnUNetTrainer_LitsBudget.py)
#   LITS_PEER_NNUNET_VAL=1  also run nnU-Net's own final validation after training (skipped by default)
# Rerunning reuses the venv, the nnU-Net conversion and preprocessing, and retrains and re-evaluates both methods.
set -Eeuo pipefail  # -E: the ERR trap below also fires for failures inside functions

MINUTES=${1:-10}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/studies/peer_nnunet
OUT=$REPO/outputs/peer_nnunet
PEER_VENV=${PEER_VENV:-$OUT/venv}
LITS_PYTHON=${LITS_PYTHON:-python}
TTA_MODES=${PEER_NNUNET_TTA:-both}
ID=${PEER_DATASET_ID:-501}
DATASET=Dataset${ID}_LitsSynthetic
TRAINER=nnUNetTrainer_LitsBudget
NNPY=$PEER_VENV/bin/python

export nnUNet_raw=$OUT/nnUNet_raw nnUNet_preprocessed=$OUT/nnUNet_preprocessed nnUNet_results=$OUT/nnUNet_results
# 2 cores: torch trains on both (nnU-Net sets torch threads = CPU count on -device cpu); one augmentation process
# prepares the next batch meanwhile (at batch 2 it is idle most of the time). 0 would augment inline, serially.
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
export LITS_PEER_MINUTES=$MINUTES
FOLD_DIR=$nnUNet_results/$DATASET/${TRAINER}__nnUNetPlans__2d/fold_0

CURRENT=setup
# one line naming the failed step (printed by the main shell only, not again by the step's subshell)
trap '(( BASH_SUBSHELL == 0 )) && echo "peer_nnunet: step \"$CURRENT\" failed; see $OUT/logs/$CURRENT.log" >&2' ERR
trap 'echo "peer_nnunet: interrupted during step \"$CURRENT\"" >&2; exit 130' INT TERM

step() {  # step NAME COMMAND...: output to the terminal and logs/NAME.log, wall-clock seconds to timings.tsv
  CURRENT=$1; shift
  echo "=== $CURRENT"
  local t0=$EPOCHREALTIME
  "$@" 2>&1 | tee "$OUT/logs/$CURRENT.log"
  awk -v a="$t0" -v b="$EPOCHREALTIME" -v n="$CURRENT" 'BEGIN { printf "%s\t%.1f\n", n, b - a }' >> "$OUT/timings.tsv"
}

run() {  # run COMMAND...: echo and record the command line, then run it
  echo "+ $*" | tee -a "$OUT/commands.txt"
  "$@"
}

# --- 1. the nnU-Net venv (once)
setup_venv() {
  if [[ -f $PEER_VENV/.peer_ready ]]; then
    echo "reusing $PEER_VENV: $(cat "$PEER_VENV/.peer_ready")"
  else
    rm -rf "$PEER_VENV"
    python3 -m venv "$PEER_VENV"
    # CPU torch first, from local disk (pip's find-links); then nnunetv2 with torch pinned as a constraint, so that
    # its chain dynamic-network-architectures -> timm -> torchvision does not pull a CUDA torch 2.14.1 (+ nvidia-*)
    echo "torch==2.13.0" > "$OUT/torch-constraint.txt"
    run "$NNPY" -m pip install -q torch==2.13.0
    run "$NNPY" -m pip install -q nnunetv2 -c "$OUT/torch-constraint.txt"
    # the juggling, should the pin not hold: back to the CPU torch, and no torchvision or CUDA wheels. torchvision is
    # a CUDA build whose C ops do not load on the CPU torch; nnU-Net's training and prediction never import it
    # (only timm does, and timm is only imported by trainers under variants/)
    if ! "$NNPY" -c 'import torch, sys; sys.exit(not torch.__version__.startswith("2.13.0"))'; then
      run "$NNPY" -m pip install -q --force-reinstall --no-deps torch==2.13.0
    fi
    run "$NNPY" -m pip uninstall -y -q torchvision || true
    local cuda
    cuda=$("$NNPY" -m pip list --format=freeze 2>/dev/null | grep -iE '^(nvidia-|cuda|triton)' | cut -d= -f1 || true)
    if [[ -n $cuda ]]; then run "$NNPY" -m pip uninstall -y -q $cuda; fi
    "$NNPY" -c "import nnunetv2, torch; print(torch.__version__)"
    "$NNPY" -m pip list --format=freeze 2>/dev/null | grep -iE '^(torch|nnunetv2|dynamic.network|batchgenerators)' \
      | tr '\n' ' ' > "$PEER_VENV/.peer_ready"
    echo "nnU-Net venv ready: $(cat "$PEER_VENV/.peer_ready")"
  fi
  # our trainer goes next to nnUNetTrainer.py (found by class name there), not under variants/ (imports timm)
  local site
  site=$("$NNPY" -c 'import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))')
  cp "$HERE/$TRAINER.py" "$site/training/nnUNetTrainer/$TRAINER.py"
  "$NNPY" -c "from nnunetv2.training.nnUNetTrainer.$TRAINER import $TRAINER"
}

# --- 2+3. ours: train on the budget (generates the synthetic data and our cache on first use), then evaluate
ours_train() {
  rm -rf "$OUT/lits"  # a fresh run: in a fixed run dir trainer.resume=auto would continue the last one
  run "$LITS_PYTHON" train.py trainer.max_time="$MINUTES" name=peer_lits hydra.run.dir=outputs/peer_nnunet/lits \
    trainer.progress=false
}

ours_eval() {
  run "$LITS_PYTHON" evaluate.py ckpt=outputs/peer_nnunet/lits/checkpoints/best.pt \
    hydra.run.dir=outputs/peer_nnunet/lits/evaluate progress=false
}

# --- 4. nnU-Net: raw dataset (our train+val -> imagesTr, test -> imagesTs), plan + preprocess, our split as fold 0
nnunet_convert() {
  # the split is recomputed with lits' own make_splits and checked against our run's split.json
  run "$LITS_PYTHON" "$HERE/to_nnunet.py" raw "$nnUNet_raw" "$DATASET" \
    --check-split "$OUT/lits/split.json" --split-out "$OUT/split.json"
}

nnunet_preprocess() {
  local pre=$nnUNet_preprocessed/$DATASET
  if [[ -d $pre/nnUNetPlans_2d ]] && cmp -s "$nnUNet_raw/$DATASET/conversion.json" "$pre/peer_conversion.json"; then
    echo "reusing $pre (preprocessed from the same conversion)"
  else
    rm -rf "$pre"
    # outside the budget, like our cache building; -np/-npfp 2: the machine's cores (nnU-Net's default is 8)
    run "$PEER_VENV/bin/nnUNetv2_plan_and_preprocess" -d "$ID" -c 2d --verify_dataset_integrity -np 2 -npfp 2
    cp "$nnUNet_raw/$DATASET/conversion.json" "$pre/peer_conversion.json"
  fi
  run "$LITS_PYTHON" "$HERE/to_nnunet.py" splits "$OUT/split.json" "$pre"  # fold 0 = our train / our val
}

nnunet_train() {
  rm -rf "$FOLD_DIR"
  echo "+ LITS_PEER_MINUTES=$MINUTES nnUNet_n_proc_DA=$nnUNet_n_proc_DA LITS_PEER_NNUNET_BATCH=${LITS_PEER_NNUNET_BATCH:-2}" \
    >> "$OUT/commands.txt"
  run "$PEER_VENV/bin/nnUNetv2_train" "$ID" 2d 0 -tr "$TRAINER" -device cpu
  test -f "$FOLD_DIR/checkpoint_final.pth" && test -f "$FOLD_DIR/budget.json"
}

nnunet_predict() {  # nnunet_predict tta|notta; -npp/-nps 1: one pre- and one export process beside torch on 2 cores
  local out=$OUT/nnunet_pred_$1 flag=()
  [[ $1 == notta ]] && flag=(--disable_tta)
  rm -rf "$out"
  run "$PEER_VENV/bin/nnUNetv2_predict" -i "$nnUNet_raw/$DATASET/imagesTs" -o "$out" -d "$ID" -c 2d -f 0 \
    -tr "$TRAINER" -chk checkpoint_final.pth -device cpu -npp 1 -nps 1 "${flag[@]}"
}

# --- 5. score nnU-Net's predictions with our scorer (only the predicted cases, i.e. our test split, are scored)
nnunet_score() {  # nnunet_score tta|notta
  local root lits_dir=$OUT/nnunet_lits_$1 eval_dir=outputs/peer_nnunet/nnunet_eval
  [[ $1 == notta ]] && eval_dir=${eval_dir}_notta
  root=$("$LITS_PYTHON" -c "import json; print(json.load(open('$nnUNet_raw/$DATASET/conversion.json'))['data_root'])")
  run "$LITS_PYTHON" "$HERE/from_nnunet.py" "$OUT/nnunet_pred_$1" "$lits_dir" "$root"
  rm -rf "$REPO/$eval_dir"
  run "$LITS_PYTHON" evaluate.py predictions="$lits_dir" data=synthetic data.root="$root" \
    hydra.run.dir="$eval_dir" progress=false
}

# --- 6. the table
machine_info() {
  echo "nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "lits python: $("$LITS_PYTHON" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__)')"
  echo "nnU-Net venv: $NNPY $(cat "$PEER_VENV/.peer_ready")"
  echo "nnUNet_n_proc_DA=$nnUNet_n_proc_DA LITS_PEER_NNUNET_BATCH=${LITS_PEER_NNUNET_BATCH:-2} PEER_NNUNET_TTA=$TTA_MODES"
}

report() {
  machine_info > "$OUT/machine.txt"
  run "$LITS_PYTHON" "$HERE/compare.py" "$OUT" "$MINUTES" "$FOLD_DIR/budget.json"
}

main() {
  case $TTA_MODES in both) modes=(tta notta) ;; on) modes=(tta) ;; off) modes=(notta) ;;
    *) echo "peer_nnunet: PEER_NNUNET_TTA=$TTA_MODES: choose both, on or off" >&2; exit 2 ;; esac
  [[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "peer_nnunet: MINUTES=$MINUTES: give a number of minutes" >&2; exit 2; }
  cd "$REPO"
  "$LITS_PYTHON" -c "import hydra, lits.evaluate.scoring" 2>/dev/null \
    || { echo "peer_nnunet: $LITS_PYTHON cannot import lits; activate the lits environment or set LITS_PYTHON" >&2; exit 2; }
  mkdir -p "$OUT/logs"
  rm -f "$OUT/timings.tsv" "$OUT/results.md"
  echo "# studies/peer_nnunet/run.sh $MINUTES, $(date -Is), in $REPO" > "$OUT/commands.txt"
  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

  step venv setup_venv
  step ours_train ours_train
  step ours_eval ours_eval
  step nnunet_convert nnunet_convert
  step nnunet_preprocess nnunet_preprocess
  step nnunet_train nnunet_train
  for mode in "${modes[@]}"; do
    step "nnunet_predict_$mode" nnunet_predict "$mode"
    step "nnunet_score_$mode" nnunet_score "$mode"
  done
  step report report
}

main "$@"
