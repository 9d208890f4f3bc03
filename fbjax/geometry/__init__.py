"""Floor 1: image geometry and head biometry (letterbox, ellipse fits, HC/BPD/OFD, the aligned
head crop, the skull gate). Pure numpy/OpenCV; imports `fbjax.core` only."""
