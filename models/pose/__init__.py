"""The pose model itself: the keypoint spec, the network, the heatmap codec, the geometry of boxes
and crops, per-person results and the checks on a network's output."""
