"""Training data: COCO-format loading, the top-down transforms, the run's keypoint spec and the
checks on a data set before the first step."""
