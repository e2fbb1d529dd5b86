"""Bring your own model: cut any ``torch.fx``-traceable ``nn.Module`` into a :class:`StagedNet`.

The user names the module paths where stages end (e.g. ``layer1`` … ``layer4`` of a torchvision
ResNet) and the head (``fc``). The forward graph is traced with those modules kept whole and split
into consecutive segments: one per named stage, then a *pooled* segment from the last stage to the
head's input. Each segment may use only the previous cut's output (plus parameters), so a skip
connection that crosses a cut is refused with a :class:`~sakd.errors.SakdError` naming the cut.

The segments are ``fx.GraphModule`` objects that hold the user's own submodules and parameters (no
copies): loading a state dict into the original module updates the staged network too.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import fx, nn

from sakd.errors import SakdError
from sakd.models.staged import StagedNet


class TracedStagedNet(StagedNet):
    """A user module cut into traced segments; built by :func:`stage_model`."""

    def __init__(
        self,
        stages: list[nn.Module],
        head: nn.Module,
        stage_roles: tuple[str, ...],
        input_size: int,
        stage_names: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.stage_roles = stage_roles
        self.input_size = input_size
        # The spots' names users read: the cut module paths, then "pooled" (see SpotInfo.name).
        self.stage_names = stage_names


class _CutTracer(fx.Tracer):
    """A tracer that keeps the modules at ``leaf_paths`` as single ``call_module`` nodes."""

    def __init__(self, leaf_paths: set[str]) -> None:
        super().__init__()
        self.leaf_paths = leaf_paths

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """Named cut and head modules are leaves; otherwise the default rule."""
        return module_qualified_name in self.leaf_paths or super().is_leaf_module(
            m, module_qualified_name
        )


def stage_model(
    module: nn.Module,
    stage_paths: list[str],
    head_path: str,
    stem_path: str | None = None,
    input_size: int = 224,
) -> StagedNet:
    """Turn ``module`` into a :class:`StagedNet` cut after ``stem_path`` and each of ``stage_paths``.

    ``head_path`` names the classifier; its input is the pooled feature (role ``"pooled"``). The stem
    stage (role ``"stem"``) exists only when ``stem_path`` is given; named stages have role
    ``"stage"``. ``input_size`` is the default square input size for :meth:`StagedNet.spot_info`.
    Raises :class:`SakdError` for unknown paths, untraceable models and cuts that are not a chain.
    """
    cut_paths = ([stem_path] if stem_path is not None else []) + list(stage_paths)
    if not stage_paths:
        raise SakdError("stage_model needs at least one stage path (e.g. ['layer1', 'layer2'])")
    _check_paths(module, [*cut_paths, head_path])

    graph = fx.GraphModule(module, _trace(module, {*cut_paths, head_path})).graph
    graph.eliminate_dead_code()
    input_node = _single_input(graph)
    cut_nodes = [_call_node(graph, path) for path in cut_paths]
    head_node = _call_node(graph, head_path)
    pooled_node = _head_input(graph, head_node, head_path)

    position = {node: i for i, node in enumerate(graph.nodes)}
    ends = [*cut_nodes, pooled_node]
    end_names = [*(repr(path) for path in cut_paths), f"the input of head {head_path!r}"]
    for i in range(1, len(ends)):
        if position[ends[i]] < position[ends[i - 1]]:
            raise SakdError(
                f"stage paths are out of order: {end_names[i]} runs before {end_names[i - 1]}; "
                "list them in the order the forward pass calls them"
            )

    def first_cut_after(node: fx.Node) -> str:
        cuts = zip(ends, end_names, strict=True)
        return next(name for end, name in cuts if position[end] > position[node])

    stages: list[nn.Module] = []
    start_node, start_name = input_node, "the model input"
    for end_node, end_name in zip(ends, end_names, strict=True):
        nodes = [
            n
            for n in graph.nodes
            if position[start_node] < position[n] <= position[end_node]
            and n.op not in ("get_attr", "placeholder")
        ]
        stages.append(_segment(module, nodes, start_node, end_node, start_name, first_cut_after))
        start_node, start_name = end_node, end_name
    roles = ("stem",) * (stem_path is not None) + ("stage",) * len(stage_paths) + ("pooled",)
    names = (*cut_paths, "pooled")
    return TracedStagedNet(stages, module.get_submodule(head_path), roles, input_size, names)


def _check_paths(module: nn.Module, paths: list[str]) -> None:
    known = dict(module.named_modules())
    for path in paths:
        if not path or path not in known:
            top = ", ".join(name for name, _ in module.named_children())
            raise SakdError(
                f"module path {path!r} does not exist in {type(module).__name__}: "
                f"use dotted names from model.named_modules() (top level: {top})"
            )
    duplicates = sorted({path for path in paths if paths.count(path) > 1})
    if duplicates:
        raise SakdError(f"module path {duplicates[0]!r} is named twice: name each cut once")


def _trace(module: nn.Module, leaf_paths: set[str]) -> fx.Graph:
    try:
        return _CutTracer(leaf_paths).trace(module)
    except Exception as err:
        raise SakdError(
            f"cannot trace {type(module).__name__} with torch.fx ({type(err).__name__}: {err}); "
            "remove data-dependent control flow from its forward or wrap that part in a module "
            "named as a stage path"
        ) from err


def _single_input(graph: fx.Graph) -> fx.Node:
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    used_extra = [n.target for n in placeholders[1:] if n.users]
    if not placeholders or used_extra:
        raise SakdError(
            f"stage_model supports models with one tensor input; the forward also uses {used_extra}"
        )
    return placeholders[0]


def _call_node(graph: fx.Graph, path: str) -> fx.Node:
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == path]
    if len(calls) != 1:
        reason = "never called" if not calls else f"called {len(calls)} times"
        raise SakdError(
            f"module {path!r} is {reason} in the forward pass: a cut must be a module called "
            "exactly once (it may not be nested inside another named path)"
        )
    return calls[0]


def _head_input(graph: fx.Graph, head_node: fx.Node, head_path: str) -> fx.Node:
    output = next(n for n in graph.nodes if n.op == "output")
    inputs = head_node.all_input_nodes
    problem = output.args[0] is not head_node or len(inputs) != 1 or bool(head_node.kwargs)
    if not problem:
        nodes = list(graph.nodes)
        after = nodes[nodes.index(inputs[0]) + 1 :]
        problem = any(
            n.op not in ("get_attr", "placeholder") for n in after[:-1] if n is not head_node
        )
    if problem:
        raise SakdError(
            f"head {head_path!r} must take the pooled feature as its only input and its output "
            "must be the model's output, with nothing computed in between"
        )
    return inputs[0]


def _segment(
    root: nn.Module,
    nodes: list[fx.Node],
    start_node: fx.Node,
    end_node: fx.Node,
    start_name: str,
    first_cut_after: Callable[[fx.Node], str],
) -> fx.GraphModule:
    """The part of the graph after ``start_node`` up to ``end_node`` as a one-input module.

    Raises :class:`SakdError` when a node of the part uses a value from before ``start_node``;
    ``first_cut_after`` names the first cut that such a value skips.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {start_node: graph.placeholder("x")}

    def lookup(node: fx.Node) -> fx.Node:
        if node not in env:
            if node.op != "get_attr":
                raise SakdError(
                    f"cannot cut the model at {first_cut_after(node)}: {node.name!r}, computed "
                    f"before that cut, is used again after {start_name} (a connection that skips "
                    "the cut); choose stage paths after which the network is a simple chain"
                )
            env[node] = graph.node_copy(node)
        return env[node]

    for node in nodes:
        env[node] = graph.node_copy(node, lookup)
    graph.output(lookup(end_node))
    return fx.GraphModule(root, graph)
