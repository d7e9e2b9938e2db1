"""One inference path: which boxes each image gets, crops, the forward pass, decoding and the split
per person (Predictor, PosePipeline), and the agreement measures between two runs."""
