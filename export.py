"""Write a checkpoint as a model folder that runs without torch: python export.py ckpt=PATH output=DIR"""

import hydra

from lits.core.cli import prepare_hydra, run_task, starting

prepare_hydra()


@hydra.main(version_base="1.3", config_path="configs", config_name="export")
def main(cfg):
    with starting():
        from lits.infer.onnx_export import export  # imported here so --help and config errors stay fast

    return run_task(export, cfg)


if __name__ == "__main__":
    main()
