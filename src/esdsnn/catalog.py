"""What esdsnn offers, as text for people: the ready configs (``esdsnn configs``) and the methods
with the settings each reads (``esdsnn methods``). The command line prints these; the facts come
from the recipes (:mod:`esdsnn.recipes`) and the method registry (:mod:`esdsnn.methods`)."""

from __future__ import annotations

from esdsnn.errors import ConfigError


def configs_table() -> str:
    """One row per ready config: its name, data set, model, method, T, epochs, batch and the top-1
    accuracy the paper reports for it."""
    from esdsnn.recipes import recipe_files

    rows = [
        "| name | data set | model | method | T | epochs | batch | paper top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in recipe_files():
        s = r.settings
        paper = f"{r.paper_top1:.2f} %" if r.paper_top1 is not None else "—"
        rows.append(
            f"| {r.name} | {s.get('dataset', '')} | {s.get('arch', '')} | {s.get('method', 'esd')} | "
            f"{s.get('T', '')} | {s.get('epochs', '')} | {s.get('batch_size', '')} | {paper} |"
        )
    return "\n".join(rows) + (
        "\n\nRun one with: esdsnn train --config NAME --data-path DIR (esdsnn configs NAME prints its settings)\n"
    )


def config_text(name: str) -> str:
    """The ready config ``name`` as it is stored (its header says the paper's figure and the command)."""
    from esdsnn.recipes import find_recipe_file, recipe_files

    path = find_recipe_file(name)
    if path is None:
        raise ConfigError(f"no ready config is called {name!r}; one of: {', '.join(r.name for r in recipe_files())}")
    return f"# {path}\n" + path.read_text(encoding="utf-8")


def methods_table() -> str:
    """One row per registered method: its pass, whether it trains a spiking model, what it is."""
    from esdsnn.methods import list_methods, method_spec

    rows = ["| method | pass | spiking | what it is |", "|---|---|---|---|"]
    for name in list_methods():
        spec = method_spec(name)
        rows.append(f"| {name} | {spec.training_pass} | {'yes' if spec.spiking else 'no'} | {spec.description} |")
    return "\n".join(rows) + "\n\nesdsnn methods NAME lists the settings a method reads and their defaults.\n"


def method_text(name: str) -> str:
    """Method ``name``: its pass, the settings it reads (flag, default, help; values it fixes
    marked), its teacher run and what it is an ablation of."""
    from esdsnn.methods.registry import method_settings, method_spec

    spec = method_spec(name)
    lines = [
        f"{name}: {spec.description}",
        f"  pass: {spec.training_pass}; trained model spikes: {'yes' if spec.spiking else 'no'}",
    ]
    if spec.teacher_method:
        lines.append(f"  teacher: a trained --method {spec.teacher_method} run, given as --teacher-run DIR")
    if spec.ablation_of:
        lines.append(f"  ablation of {spec.ablation_of[0]}: {spec.ablation_of[1]}")
    settings = method_settings(name)
    if not settings:
        lines.append("  settings: none of its own (the common ones: --T, --loss-scale, the optimiser, the neuron)")
    else:
        lines.append("  settings (also keys of --config):")
        width = max(len(s.name) for s in settings) + 2
        for s in settings:
            flag = "--" + s.name.replace("_", "-")
            value = f"fixed to {s.fixed!r}" if s.is_fixed else f"default {s.default!r}"
            lines.append(f"    {flag:<{width + 2}} {value}: {s.help}")
    return "\n".join(lines) + "\n"


__all__ = ["config_text", "configs_table", "method_text", "methods_table"]
