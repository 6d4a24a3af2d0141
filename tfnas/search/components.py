"""The search's own architecture update: SGAS (greedy edge decisions during the search).

The other updates and perturbations live in `tfnas.bilevel.updates` (they need only the
search state); SGAS decides edges at the end of epochs of a search run, so it is part of the
search and registers itself here. `ARCH_UPDATES` and `PERTURBATIONS` are importable from
here as before.
"""

import os

import numpy as np

from tfnas.bilevel.updates import ARCH_UPDATES, PERTURBATIONS, FirstOrder
from tfnas.derive.perturbation import decide_op
from tfnas.derive.sgas import sgas_scores
from tfnas.io import append_jsonl, read_jsonl


# --- SGAS -----------------------------------------------------------------------------------
class SGAS(FirstOrder):
    """SGAS: first-order DARTS plus greedy edge decisions during the search.

    After epoch `sgas_warmup` and every `sgas_freq` epochs after it, each cell type fixes the
    undecided edge with the highest SGAS score to its best op (alpha argmax over non-'none'
    ops, or the PT criterion with `--sgas_op=pt`: SGAS+PT). A node with two decided inputs
    loses its other input edges. Decisions are ArchParameters state, so they are checkpointed
    with the model; each is one line of WORKDIR/sgas.jsonl.
    """

    def setup(self, state):
        self.history = None  # softmaxed alphas per finished epoch (criterion 2)

    def _load_history(self, loop, epoch):
        rows = read_jsonl(os.path.join(loop.workdir, "alphas.jsonl"))
        return [r["softmax"] for r in rows if r["epoch"] < epoch]

    # Several workers: only the chief's run directory holds alphas.jsonl, so on resume the
    # chief sends the history (criterion 2's stability) with its checkpoint state.
    def state_for_workers(self, loop, start):
        return self._load_history(loop, start) if start else []

    def set_state_from_chief(self, loop, history):
        self.history = history

    def end_epoch(self, loop, epoch):
        c = loop.config
        if self.history is None:
            self.history = self._load_history(loop, epoch) if epoch else []
        soft = loop.model.softmax_numpy()
        due = epoch >= c.sgas_warmup and (epoch - c.sgas_warmup) % c.sgas_freq == 0
        if due:
            for ctype in loop.space.cell_types:
                row = self.decide(loop, ctype, soft, epoch)
                if row:
                    loop.log(f"SGAS epoch {epoch + 1}: {ctype} edge {row['input']}->"
                             f"{row['node']} = {row['op']}")
                    if loop.is_chief:
                        append_jsonl(os.path.join(loop.workdir, "sgas.jsonl"), row)
        self.history.append({t: np.asarray(v).tolist() for t, v in soft.items()})

    def decide(self, loop, ctype, soft, epoch):
        space, arch = loop.space, loop.model.arch(ctype)
        cspace = space.cells[ctype]
        fixed, live = arch.decided(), arch.live()
        cand = [e for e in range(cspace.num_edges) if live[e] and not fixed[e]]
        if not cand:
            return None
        hist = [h[ctype] for h in self.history]
        scores = sgas_scores(space, ctype, soft[ctype], hist, loop.config.sgas_criterion)
        edge = max(cand, key=lambda e: (scores[e], -e))
        ops = cspace.ops[edge]
        if loop.config.sgas_op == "pt":  # SGAS+PT: the same edge, the op by perturbation
            row = decide_op(arch, space, ctype, edge, lambda: loop.evaluate(
                loop.config.sgas_pt_batches, batch_stats=True))
            op, pt_scores = row["choice"], row["scores"]
        else:
            k = max(space.candidates(ctype, edge), key=lambda k: (soft[ctype][edge][k], -k))
            arch.fix_edge(edge, k)
            op, pt_scores = ops[k], {}
        node, inp = cspace.edges[edge]
        fixed, live = arch.decided(), arch.live()
        node_fixed = [e for e in cspace.node_edges(node) if fixed[e]]
        pruned = []
        if len(node_fixed) >= 2:  # SGAS's check_edges: the node has its two inputs
            for e in cspace.node_edges(node):
                if e not in node_fixed and live[e]:
                    arch.remove_edge(e)
                    pruned.append(cspace.edges[e][1])
        return {"epoch": epoch, "cell": ctype, "edge": edge, "node": node, "input": inp,
                "op": op, "score": float(scores[edge]),
                "scores": {str(e): float(scores[e]) for e in cand},
                "pt_scores": pt_scores, "pruned_inputs": pruned}


ARCH_UPDATES.register("sgas", SGAS)

__all__ = ["ARCH_UPDATES", "PERTURBATIONS", "SGAS"]
