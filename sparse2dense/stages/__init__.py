"""Stage programs. Each runs as its own process: `python -m sparse2dense.stages.<program> SPEC.json`.

What the stages are (names, versions, kinds, typed inputs) is declared in `sparse2dense.graph`.
"""

from sparse2dense.graph import Stage

__all__ = ["Stage"]
