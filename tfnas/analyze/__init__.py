"""`tfnas analyze`: the paper's evidence that alpha does not measure operation strength.

- `strength` (paper Figures 1 and 7): per chosen edge and candidate op, discretise the edge to
  the op, fine-tune the rest of the supernet until validation accuracy stops improving and
  record it ("discretization accuracy at convergence"); beside it the op's softmaxed alpha
  and its PT score (supernet accuracy with the op removed). Kendall tau between the three.
- `shuffle` (paper Table 1): test accuracy of the trained supernet before and after swapping
  the weights of two compatible edges in every cell; optionally the same for a small ResNet
  and a small VGG with two layers of each stage swapped.
- `skip_gap` (paper Figure 3): per search epoch the mean over edges of
  softmax(alpha_skip) - softmax(alpha_best_other) against supernet validation accuracy.

Results are JSON + PNG under WORKDIR/analysis/; TensorBoard scalars under WORKDIR/tb/analysis.
"""

from tfnas.analyze.common import kendall_tau, pearson
from tfnas.analyze.shuffle import (compatible_pairs, run_shuffle, shuffle_baselines,
                                   shuffle_supernet)
from tfnas.analyze.skip_gap import run_skip_gap, skip_gaps
from tfnas.analyze.strength import (parse_edges, run_strength, strength_targets,
                                    summarize_strength)

KINDS = ("strength", "shuffle", "skip_gap")

__all__ = ["KINDS", "kendall_tau", "pearson", "compatible_pairs", "run_shuffle",
           "shuffle_baselines", "shuffle_supernet", "run_skip_gap", "skip_gaps", "parse_edges",
           "run_strength", "strength_targets", "summarize_strength"]
