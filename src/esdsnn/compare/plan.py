"""What a comparison will train: the methods asked for, the settings they share, and one
:class:`RunPlan` per method × seed (a distilling method's teacher runs included).

Each run gets the shared settings as its method reads them (:func:`method_config`): the option
sections a method does not read stay at their defaults and the values it fixes are fixed, so a
run's ``config.yaml`` never records an option that did not act on it; a shared option that none
of the compared methods reads is refused, by the rule ``esdsnn train`` and ``create_method``
apply (:func:`esdsnn.methods.registry.unread_options`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from esdsnn.config import LEAVES, TrainConfig, read_yaml
from esdsnn.errors import ConfigError, EsdsnnError
from esdsnn.methods import list_methods, method_spec
from esdsnn.methods.registry import readers_of, section_of, unread_options
from esdsnn.runs.files import CONFIG_FILE


# ---- input -----------------------------------------------------------------------------------
def parse_methods(methods: Union[str, Sequence[str]]) -> list[str]:
    """Method names from ``"bptt,esd"`` or a list: known, non-empty, duplicates dropped."""
    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    names = list(dict.fromkeys(m for m in names if m))
    if not names:
        raise ConfigError("--methods is empty; give a comma-separated list, e.g. bptt,esd")
    known = list_methods()
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ConfigError(
            f"unknown method(s) {', '.join(map(repr, unknown))} in --methods; choose from {', '.join(known)}"
        )
    return names


def base_config(path: Optional[Union[str, Path]] = None, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """The settings every run shares: defaults, then the YAML file, then ``overrides``. The keys
    ``method``, ``teacher_run`` and ``out`` are set per run, so a value for them is ignored."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(TrainConfig.coerce_values(read_yaml(path), source=str(path)))
    values.update(TrainConfig.coerce_values(dict(overrides or {}), source="the command line"))
    values.update(method="bptt", teacher_run=None, out=None, progress=False)  # placeholders
    return TrainConfig.from_dict(values).resolved()


# ---- plan --------------------------------------------------------------------------------------
@dataclass
class RunPlan:
    """One run of the comparison: where it lives and the exact config it must have."""

    method: str
    seed_index: int
    run_dir: Path
    config: TrainConfig  # resolved, with absolute paths
    role: str = "method"  # "method", or "teacher" (a run trained only to teach a distilling method)
    teacher: Optional[RunPlan] = None

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    @property
    def label(self) -> str:
        return f"{self.method} seed {self.seed}"


def seed_run_dir(out: Path, method: str, index: int, seed: int) -> Path:
    """``out/<method>/seed-<seed>``; or the index-named ``out/<method>/seed<index>`` of an older
    comparison when that folder holds this seed's run and the new one does not exist."""
    named = out / method / f"seed-{seed}"
    legacy = out / method / f"seed{index}"
    if named.exists() or not (legacy / CONFIG_FILE).is_file():
        return named
    try:
        saved_seed = read_yaml(legacy / CONFIG_FILE).get("seed")
    except EsdsnnError:
        return named
    return legacy if saved_seed == seed else named


def plan_runs(base: TrainConfig, methods: Sequence[str], seeds: int, out: Union[str, Path]) -> list[RunPlan]:
    """The runs in training order: method by method, seed by seed; a distilling method's teacher
    run (kd: an ann run) comes right before it, once per seed and teacher method, shared with
    that method's own row if it is itself compared."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be an integer >= 1, got {seeds!r}")
    methods = parse_methods(methods)
    out = Path(out).expanduser().resolve()
    base = base.resolved()
    if base.data_path is not None:
        base = base.replace(data_path=str(Path(base.data_path).expanduser().resolve()))

    def make(method: str, k: int, role: str, teacher: Optional[RunPlan] = None) -> RunPlan:
        run_dir = seed_run_dir(out, method, k, base.seed + k)
        config = method_config(
            base, method, seed=base.seed + k, out=str(run_dir), teacher_run=str(teacher.run_dir) if teacher else None
        )
        return RunPlan(method, k, run_dir, config, role, teacher)

    check_shared_options(base, [*methods, *(t for m in methods if (t := method_spec(m).teacher_method))])
    planned: dict[tuple[str, int], RunPlan] = {}
    plans: list[RunPlan] = []
    for method in methods:
        teacher_method = method_spec(method).teacher_method
        for k in range(seeds):
            teacher = None
            if teacher_method is not None:
                teacher = planned.get((teacher_method, k))
                if teacher is None:
                    role = "method" if teacher_method in methods else "teacher"
                    teacher = planned[(teacher_method, k)] = make(teacher_method, k, role)
                    plans.append(teacher)
            if (method, k) in planned:
                continue  # already planned as a teacher
            plans.append(planned.setdefault((method, k), make(method, k, "method", teacher)))
    return plans


def _default(name: str) -> Any:
    default = LEAVES[name].default
    return list(default) if isinstance(default, tuple) else default


def method_config(base: TrainConfig, method: str, **changes: Any) -> TrainConfig:
    """The shared settings ``base`` as ``method`` runs them: the options it does not read at their
    defaults, the values it fixes fixed; then ``changes`` (its seed, folder, teacher run)."""
    values = base.to_dict()
    values.update({k: _default(k) for k in unread_options(method, values)})
    values.update(method_spec(method).forced)
    values.update(method=method, **changes)
    return TrainConfig.from_dict(values)


def check_shared_options(base: TrainConfig, methods: Sequence[str]) -> None:
    """Refuse a shared option (set to other than its default) that none of ``methods`` reads, or
    that every method reading it fixes to another value."""
    methods = list(dict.fromkeys(methods))
    for key, value in base.to_dict().items():
        if key in ("method", "teacher_run", "out") or value == _default(key):
            continue
        readers = [m for m in methods if not unread_options(m, [key])]
        if not readers:
            others = ", ".join(readers_of(section_of(key) or ""))
            raise ConfigError(
                f"none of the compared methods ({', '.join(methods)}) reads {key} (read only by "
                f"{others}); drop it, or compare one of those methods"
            )
        if all(method_spec(m).forced.get(key, value) != value for m in readers):
            raise ConfigError(
                f"{', '.join(readers)} fix(es) {key} = {method_spec(readers[0]).forced[key]!r}; drop {key}"
            )


__all__ = [
    "RunPlan",
    "base_config",
    "check_shared_options",
    "method_config",
    "parse_methods",
    "plan_runs",
    "seed_run_dir",
]
