"""What the forkserver that front processes are forked from imports once (front.py).

Importing torch, ONNX Runtime and the server costs each Python process about 270 MB of its
own memory (measured: docs/weights-in-memory.md). Imported here, before the fronts are forked,
those pages are shared copy-on-write by every front. `gc.freeze()` moves every object made so
far out of the garbage collector's sight, so its passes do not write to (and so copy) the
shared pages, as Instagram's and gunicorn's pre-fork servers do.

Importing this module has those effects and nothing else; only the forkserver imports it.
"""

from __future__ import annotations

import contextlib
import gc

import recaccel.serve.server  # noqa: F401 (the server, its executors and torch)

with contextlib.suppress(ImportError):
    import onnxruntime  # noqa: F401 (imported lazily by the server; most serve with it)

gc.freeze()
