"""The Open Inference Protocol (V2): types, encodings and content-type codecs. Pure, no I/O."""
