"""Segment new CTs: python predict.py ckpt=PATH | model=DIR  input=FILE_OR_DIR output=DIR

model=DIR (a folder written by export.py) is the task's `model_dir` setting: `model` also names the training config
group of the networks (configs/model/), which Hydra would try to select, so the argument is renamed before Hydra
parses it. That path runs onnxruntime and never imports torch.
"""

import sys

import hydra

from lits.core.cli import prepare_hydra, rename_argument, run_task, starting

prepare_hydra()
sys.argv = rename_argument(sys.argv, "model", "model_dir")


@hydra.main(version_base="1.3", config_path="configs", config_name="predict")
def main(cfg):
    with starting():
        from lits.infer.predict import predict  # imported here so --help and config errors stay fast

    return run_task(predict, cfg)


if __name__ == "__main__":
    main()
