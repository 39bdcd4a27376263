"""Names shared by the NWB reader and writer."""

IMAGE_ID_COLUMNS = ("image_id", "frame_image_id", "image_index", "stimulus_id", "frame")
"""Trial-table columns naming the image of each trial, in order of preference."""

FIXED_COLUMNS = {"start_time", "stop_time", "image_id", "tier", "trial_idx", "file_index", "withheld", "id"}
"""Trial-table columns the writer fills itself: a per-trial array of another name is written as its
own column, and the reader takes every column not among these back as a per-trial array."""
