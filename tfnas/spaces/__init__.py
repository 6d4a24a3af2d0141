"""Search spaces as data: which candidate ops sit on which edge of which cell type.

A space never reads a global op list; the supernet, the genotype validator and the
selectors all take a `SearchSpace`. Built-in spaces are registered by name; a user space is a
JSON file whose path is accepted wherever a space name is:

    {"name": "tiny", "family": "darts", "steps": 2, "ops": ["skip_connect", "sep_conv_3x3"]}
    {"name": "mine", "family": "darts", "normal": [[...ops of edge 0...], ...14 lists],
     "reduce": [...]}
    {"name": "mine201", "family": "nb201", "ops": ["none", "skip_connect", "nor_conv_3x3"]}

DARTS numbering: inputs 0 and 1 are the cell inputs, intermediate nodes are 2..steps+1 and
edge ids run (node 2: in 0, 1), (node 3: in 0, 1, 2), ... NB201: node 0 is the input, nodes
1..3 sum all earlier nodes; edge ids 0:1<-0, 1:2<-0, 2:2<-1, 3:3<-0, 4:3<-1, 5:3<-2.
"""

from tfnas.spaces.base import (FAMILIES, SPACES, CellSpace, SearchSpace, darts_edges, get_space,
                               load_space_file, make_space, nb201_edges)
from tfnas.spaces import builtin  # noqa: E402,F401,I100  (registers the built-in spaces)

__all__ = ["SPACES", "FAMILIES", "CellSpace", "SearchSpace", "make_space", "get_space",
           "load_space_file", "darts_edges", "nb201_edges"]
