"""Video: pose similarity, temporal smoothing, tracking of people across frames and reading video
files."""
