"""Data stages: NIfTI reading, synthetic generation, preprocessing cache, slice sampling, augmentation."""
