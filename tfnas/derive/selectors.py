"""Selectors: how an op decision picks among the candidates of an edge.

    @SELECTORS.register("my_selector")
    class MySelector(Selector):
        def choose(self, scores, alphas, allowed, crit): ...

A registered selector works everywhere a selector name is taken: `tfnas select --selector=`,
`tfnas.derive.select(selector=...)`, SGAS+PT. `scores` holds, for every candidate, the
supernet's (loss, accuracy) with that op masked out (only when `scores_ops`); `alphas` the
edge's softmaxed alphas; `allowed` the candidate indices that may be kept (all of them, or
those that fit a budget).
"""

from tfnas.registry import Registry

SELECTORS = Registry("selector")


class Selector:
    """Base: `decides` False means no progressive decisions at all (read the genotype from
    the mixing weights, as magnitude does); `scores_ops` says whether `choose` needs the
    masked evaluations of every candidate."""

    decides = True
    scores_ops = True
    zero_cost = False  # evaluate() gives a zero-cost proxy's value (tfnas.derive.zero_cost)

    def choose(self, scores, alphas, allowed, crit):
        raise NotImplementedError


def stronger(new, best, crit="acc"):
    """Is `new` (loss, acc) a stronger sign of importance than `best` (None: nothing yet)?
    `acc`: a lower accuracy without the op; `loss`: a higher loss. Strict, so ties keep the
    earlier op, as the reference."""
    if best is None:
        return True
    return new[1] < best[1] if crit == "acc" else new[0] > best[0]


def choose_op(scores, crit="acc"):
    """The op whose removal hurts most (iteration order breaks ties: the earlier op)."""
    best, choice = None, None
    for k, s in scores.items():
        if stronger(s, best, crit):
            best, choice = s, k
    return choice


@SELECTORS.register("pt")
class PT(Selector):
    """The paper's PT: keep the op whose removal hurts the supernet most."""

    def choose(self, scores, alphas, allowed, crit):
        return choose_op({k: scores[k] for k in allowed}, crit)


@SELECTORS.register("zc_pt")
class ZeroCostPT(PT):
    """Zero-Cost-PT (tfnas.derive.zero_cost): PT's choice on a proxy's value, which its
    evaluate() returns in the accuracy slot (the op whose removal lowers it most is kept)."""

    zero_cost = True


@SELECTORS.register("pt_mag")
class PTMag(Selector):
    """The paper's PT-Mag ablation: the same schedule and tuning, decided by alpha."""

    scores_ops = False

    def choose(self, scores, alphas, allowed, crit):
        return max(allowed, key=lambda k: (alphas[k], -k))


@SELECTORS.register("magnitude")
class Magnitude(Selector):
    """The DARTS baseline: no decisions; argmax of the mixing weights."""

    decides = False
    scores_ops = False


def get_selector(name):
    """The registered selector `name` (an instance); RegistryError lists the names."""
    return SELECTORS.get(name)()
