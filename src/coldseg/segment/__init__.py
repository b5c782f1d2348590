"""Segmentation side of the benchmark: U-Net, fixed-step training, Dice/HD95, many jobs at once."""
from coldseg.segment.metrics import dice_per_image, evaluate, hd95_per_image, scores_per_image
from coldseg.segment.runner import (SegJob, SegJobError, bottleneck_features, predict_proba,
                                    run_jobs)
from coldseg.segment.train import SegConfig, train_segmenter
from coldseg.segment.unet import build_unet

__all__ = ["SegConfig", "SegJob", "SegJobError", "bottleneck_features", "build_unet",
           "dice_per_image", "evaluate", "hd95_per_image", "predict_proba", "run_jobs",
           "scores_per_image", "train_segmenter"]
