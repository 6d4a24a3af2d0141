"""PT as a KerasTuner oracle, and the same decision space as a HyperModel.

The search space is one `hp.Choice` per decision: the op of every edge
("normal/edge_0_2") and, for DARTS-family nodes with more than two inputs, the pair of kept
inputs ("normal/node_4_inputs" = "0,3"). `GenotypeHyperModel.build(hp)` turns a full set of
values into the discrete network, so the same space runs under `keras_tuner.RandomSearch`
as a baseline.

`PerturbationOracle` schedules one decision event per trial (the DARTS-PT order) and records
what the trial decided; after the last event it issues one final trial holding the whole
genotype and stops, and `get_best_hyperparameters()` returns that genotype. `PTTuner` does the
compute with a `PerturbationSelector` (mask, score, fix, tune). State lives in KerasTuner's
own project files (`oracle.json`, `trial_*/trial.json`) plus the selector's checkpoints.
"""

import itertools

import keras
import keras_tuner as kt

from tfnas.genotype import Edge, Genotype
from tfnas.derive import decision_events
from tfnas.spaces import get_space

OBJECTIVE = "supernet_acc"


def op_label(ctype, node, inp):
    return f"{ctype}/edge_{inp}_{node}"


def node_label(ctype, node):
    return f"{ctype}/node_{node}_inputs"


def _op_choices(space, ctype, e):
    ops = space.cells[ctype].ops[e]
    return [ops[k] for k in space.candidates(ctype, e)]


def declare_space(hp, space):
    """Declares every decision of `space` on `hp`; returns {label: choices}."""
    labels = {}
    for ctype in space.cell_types:
        cspace = space.cells[ctype]
        for e, (node, inp) in enumerate(cspace.edges):
            labels[op_label(ctype, node, inp)] = _op_choices(space, ctype, e)
        for node in space.topology_nodes(ctype):
            inputs = [cspace.edges[e][1] for e in cspace.node_edges(node)]
            labels[node_label(ctype, node)] = [",".join(map(str, c)) for c in
                                               itertools.combinations(inputs,
                                                                      space.inputs_per_node)]
    for label, choices in labels.items():
        hp.Choice(label, choices)
    return labels


def genotype_from_values(space, values, meta=None):
    """The Genotype that a full set of decision values describes."""
    cells = {}
    for ctype in space.cell_types:
        cspace, edges = space.cells[ctype], []
        for node in cspace.nodes:
            inputs = [cspace.edges[e][1] for e in cspace.node_edges(node)]
            if node in space.topology_nodes(ctype):
                inputs = [int(v) for v in values[node_label(ctype, node)].split(",")]
            edges += [Edge(node, j, values[op_label(ctype, node, j)]) for j in inputs]
        cells[ctype] = {"edges": edges, "concat": space.concat(ctype)}
    g = Genotype(space.ref, cells, dict(meta or {}))
    g.validate("hyperparameters")
    return g


class GenotypeHyperModel(kt.HyperModel):
    """Builds the discrete network of the genotype the hyperparameters describe."""

    def __init__(self, space, num_classes, input_shape, channels=16, layers=8, lr=0.025):
        super().__init__(name="tfnas_genotype")
        self.space, self.num_classes, self.input_shape = get_space(space), num_classes, \
            tuple(input_shape)
        self.channels, self.layers, self.lr = channels, layers, lr

    def build(self, hp):
        from tfnas.models import build_model
        declare_space(hp, self.space)
        g = genotype_from_values(self.space, hp.values)
        model = build_model(g, self.num_classes, self.input_shape, self.channels, self.layers)
        model.compile(keras.optimizers.SGD(self.lr, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model


class PerturbationOracle(kt.Oracle):
    """One trial per DARTS-PT decision event, then one final trial with the genotype.

    Args:
        space: the search space (name, path or SearchSpace).
        seed: seed of the edge order (the same order as `tfnas select`).
    """

    def __init__(self, space, seed=2, **kwargs):
        self.space = get_space(space)
        self.events = decision_events(self.space, seed)
        kwargs.setdefault("objective", kt.Objective(OBJECTIVE, "max"))
        kwargs.setdefault("max_trials", len(self.events) + 1)
        super().__init__(seed=seed, **kwargs)
        declare_space(self.hyperparameters, self.space)
        self.decided, self.probe, self.next_event, self.final_trial = {}, {}, 0, None

    def event_labels(self, i):
        kind, targets = self.events[i]
        out = {}
        for ctype, target in targets.items():
            if kind == "op":
                node, inp = self.space.cells[ctype].edges[target]
                out[ctype] = op_label(ctype, node, inp)
            else:
                out[ctype] = node_label(ctype, target)
        return out

    def populate_space(self, trial_id):
        if self.final_trial is not None or self.next_event > len(self.events):
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        values = {hp.name: hp.default for hp in self.hyperparameters.space}
        values.update(self.decided)
        if self.next_event == len(self.events):
            self.final_trial = trial_id
        else:
            self.probe[trial_id] = self.next_event
        self.next_event += 1
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}

    @kt.synchronized
    def end_trial(self, trial):
        i = self.probe.get(trial.trial_id)
        if i is not None and trial.status == "COMPLETED":
            for label in self.event_labels(i).values():
                idx = int(trial.metrics.get_last_value(f"choice/{label}"))
                choices = next(h for h in self.hyperparameters.space if h.name == label).values
                self.decided[label] = choices[idx]
        super().end_trial(trial)

    def get_best_trials(self, num_trials=1):
        if self.final_trial is not None and self.final_trial in self.trials:
            return [self.trials[self.final_trial]][:num_trials]
        return super().get_best_trials(num_trials)

    def get_state(self):
        state = super().get_state()
        state.update(decided=self.decided, probe=self.probe, next_event=self.next_event,
                     final_trial=self.final_trial)
        return state

    def set_state(self, state):
        super().set_state(state)
        self.decided, self.probe = state["decided"], {k: int(v) for k, v in
                                                       state["probe"].items()}
        self.next_event, self.final_trial = state["next_event"], state["final_trial"]


class _StopSelection(kt.errors.FatalError):
    """Carries an error of a trial out of KerasTuner (which would otherwise record the trial
    as invalid and go on)."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class PTTuner(kt.Tuner):
    """Runs each trial's decision event on the supernet with a PerturbationSelector.

    Call `selector.restore()` before `search()` when resuming: an event the selector's
    checkpoint already holds is replayed from its log instead of recomputed.
    """

    def __init__(self, oracle, selector, hypermodel=None, **kwargs):
        self.selector = selector
        super().__init__(oracle, hypermodel=hypermodel, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        try:
            return self._run_trial(trial)
        except Exception as e:  # noqa: BLE001 - re-raised outside KerasTuner
            raise _StopSelection(e) from e

    def _run_trial(self, trial):
        i = self.oracle.probe.get(trial.trial_id)
        metrics = {}
        if i is not None:
            labels = self.oracle.event_labels(i)
            for row in self.selector.run_event(i):
                label = labels[row["cell"]]
                hp = next(h for h in self.oracle.hyperparameters.space if h.name == label)
                choice = row["choice"] if row["kind"] == "op" else \
                    ",".join(str(v) for v in sorted(row["kept_inputs"]))
                # an edge removed during the search (SGAS) is in no genotype: any value
                metrics[f"choice/{label}"] = float(hp.values.index(choice)) \
                    if choice in hp.values else 0.0
        metrics[OBJECTIVE] = self.selector.score()[1]
        return metrics

    def save_model(self, trial_id, model, step=0):
        pass

    def load_model(self, trial):
        return None


def select_with_oracle(selector, folder):
    """Runs (or resumes) `selector` as KerasTuner trials under `folder/tuner`; returns the
    Genotype of `get_best_hyperparameters()` (checked against the supernet's own)."""
    from tfnas.errors import TrainingError
    loop = selector.loop
    selector.restore()
    oracle = PerturbationOracle(loop.space, seed=selector.seed)
    hypermodel = GenotypeHyperModel(loop.space, loop.data.num_classes, loop.data.input_shape,
                                    loop.config.channels, loop.config.layers)
    tuner = PTTuner(oracle, selector, hypermodel=hypermodel, directory=folder,
                    project_name="tuner", overwrite=False)
    try:
        tuner.search(verbose=0)
    except _StopSelection as e:
        raise e.error from None
    values = tuner.get_best_hyperparameters()[0].values
    genotype = genotype_from_values(loop.space, values, selector.genotype().meta)
    own = selector.genotype()
    if genotype.to_json()["cells"] != own.to_json()["cells"]:
        raise TrainingError(f"the oracle's genotype differs from the decided supernet's; the "
                            f"KerasTuner project {tuner.project_dir} does not match the "
                            f"selector's checkpoints (rerun with --overwrite)")
    return genotype
