"""itsd: an edge daemon for traffic cameras.

Decode processes feed shared-memory frame rings; an inference process runs YOLO11 in
batches; analytics processes track vehicles and turn tracks into traffic facts; a
publisher writes events to Kafka or a JSONL file. A supervisor keeps them alive.

Importing this package must stay cheap: it never imports numpy, a backend or a GPU
library.
"""

__version__ = "0.1.0"
