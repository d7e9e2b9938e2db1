"""Evaluation: a split through the shared pipeline and the COCO keypoint metrics."""
