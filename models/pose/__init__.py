"""The pose model itself: the keypoint spec, the network, the heatmap codec, the geometry of boxes
and crops, person crops, and per-person boxes and results."""
