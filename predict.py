"""Segment new CTs from a checkpoint alone: python predict.py ckpt=PATH input=FILE_OR_DIR output=DIR"""

import hydra

from lits.core.cli import prepare_hydra, run_task

prepare_hydra()


@hydra.main(version_base="1.3", config_path="configs", config_name="predict")
def main(cfg):
    from lits.infer.predict import predict  # imported here so --help and config errors stay fast

    return run_task(predict, cfg)


if __name__ == "__main__":
    main()
