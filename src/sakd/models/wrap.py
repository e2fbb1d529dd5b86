"""Bring your own model: cut any ``torch.fx``-traceable ``nn.Module`` into a :class:`StagedNet`.

The user names the module paths where stages end (e.g. ``layer1`` … ``layer4`` of a torchvision
ResNet) and the head (``fc``), or leaves them out and lets :func:`stage_model` find them (the last
module output at each spatial resolution, and the ``nn.Linear`` that gives the model output). The
forward graph is split into consecutive segments: one per stage, then a *pooled* segment from the
last stage to the head's input. Each segment may use only the previous cut's output (plus
parameters), so a skip connection that crosses a cut is refused with a :class:`~sakd.errors.SakdError`
naming the cut.

**Train/eval semantics.** ``torch.fx`` evaluates Python ``if self.training:`` branches once, while
tracing, and freezes the branch taken into the graph. So every submodule that is neither a
container (an ``nn.Sequential`` with the stock forward) nor an ancestor of a cut is kept whole: the
segment *calls* it and its own forward reads its own ``training`` flag at run time (dropout,
stochastic depth, BatchNorm, timm's ``BatchNormAct2d`` …). The forwards that are traced (the root
and the ancestors of the cuts) are traced twice, in train and in eval mode; where the graphs differ,
both are cut at the same paths and a segment whose code differs switches with the mode
(:class:`_ModeSwitch`); a train-mode graph that cannot be cut like the eval-mode one is refused with
a line naming the module whose forward branches on the mode. Finally the
staged network is checked on a random input against the module itself, in eval mode and in train
mode (same RNG seed, on a copy, so the user's BatchNorm statistics are untouched).

The segments are ``fx.GraphModule`` objects that hold the user's own submodules and parameters (no
copies): loading a state dict into the original module updates the staged network too, and
:meth:`TracedStagedNet.export_state_dict` gives the weights back under the module's own names.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable

import torch
from torch import Tensor, fx, nn

from sakd.errors import SakdError
from sakd.models.staged import StagedNet, check_state_dict_keys
from sakd.models.tokens import block_stages, num_prefix_tokens

#: Equality tolerance of the construction check: max |staged - module| <= ATOL + RTOL * max |module|.
CHECK_RTOL = 1e-4
CHECK_ATOL = 1e-5
INPUT_CHANNELS = 3  # sakd feeds every model RGB images (grayscale data is repeated)
# How a user gives a model the image size it expects (a probe forward on another size failed).
INPUT_SIZE_FIX = (
    "feed the size the model expects: data.image_size=N (sakd.train / sakd.distill: "
    "image_size=N; a Dataset in memory: its own image size; stage_model: input_size=N)"
)


class TracedStagedNet(StagedNet):
    """A user module cut into traced segments; built by :func:`stage_model`.

    ``source_module`` is the user's module (not registered as a submodule: its parameters are the
    stages' own). ``stage_paths`` / ``head_path`` record where it was cut.
    """

    def __init__(
        self,
        stages: list[nn.Module],
        head: nn.Module,
        stage_roles: tuple[str, ...],
        input_size: int,
        source: nn.Module | None = None,
        stage_paths: tuple[str, ...] = (),
        head_path: str = "",
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.stage_roles = stage_roles
        self.input_size = input_size
        self.stage_paths = stage_paths
        self.head_path = head_path
        # The spots' names users read: the cut module paths, then "pooled" (see SpotInfo.name).
        self.stage_names = (*stage_paths, "pooled") if stage_paths else None
        # A one-element tuple keeps nn.Module from registering the source as a child (its tensors
        # would appear twice in state_dict()).
        self._source = (source,) if source is not None else ()

    @property
    def source_module(self) -> nn.Module:
        """The user's module this network was cut from (it shares every parameter)."""
        return self._source[0] if self._source else self

    def export_state_dict(self) -> dict[str, Tensor]:
        """The weights under the user's module's own names, on the CPU (see :class:`StagedNet`)."""
        if not self._source:
            return super().export_state_dict()
        own = self.state_dict()
        return staged_to_source_state_dict(own, self._source[0], self.head_path, "the staged net")

    def load_export_state_dict(self, state: dict[str, Tensor], what: str = "state dict") -> None:
        """Load a state dict in the user's own names strictly (the inverse of export)."""
        if not self._source:
            super().load_export_state_dict(state, what)
            return
        source = self._source[0]
        check_state_dict_keys(source.state_dict(), state, what, type(source).__name__)
        staged = {key: state[source_key(key, self.head_path)] for key in self.state_dict()}
        with torch.no_grad():
            source.load_state_dict(state, strict=True)
            self.load_state_dict(staged, strict=True)


def source_key(staged_key: str, head_path: str) -> str | None:
    """The source module's name for a staged key (``stages.N.PATH`` -> ``PATH``), or None.

    A segment holds the user's submodules and tensors under their own qualified paths, and the
    head is the user's head module, so the mapping is structural.
    """
    if staged_key.startswith("head."):
        return f"{head_path}.{staged_key[len('head.') :]}"
    match = re.fullmatch(r"stages\.\d+\.(.+)", staged_key)
    return match.group(1) if match else None


def staged_to_source_state_dict(
    state: dict[str, Tensor], module: nn.Module, head_path: str, what: str
) -> dict[str, Tensor]:
    """``state`` (staged names) as ``module``'s own full state dict, tensors copied to the CPU.

    Keys of ``module`` that no segment holds (submodules the forward never uses) keep ``module``'s
    values. Raises :class:`SakdError` for keys that are not the module's or of the wrong shape.
    """
    own = module.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        name = source_key(key, head_path)
        if name is None or name not in own:
            unexpected.append(key)
        else:
            mapped[name] = value
    wrong = [k for k, v in mapped.items() if v.shape != own[k].shape]
    if unexpected or wrong or not mapped:
        keys = (unexpected or wrong)[:3]
        raise SakdError(
            f"{what} does not fit the architecture of {type(module).__name__}: "
            + (f"{len(unexpected)} unexpected keys" if unexpected else f"{len(wrong)} wrong shapes")
            + f" ({', '.join(keys)}); check the model name and number of classes"
            if keys
            else f"{what} holds no weights of {type(module).__name__}"
        )
    return {k: mapped.get(k, v).detach().to("cpu", copy=True) for k, v in own.items()}


def _is_container(module: nn.Module) -> bool:
    """A module whose forward only chains its children (traced through, never a branch)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


class _CutTracer(fx.Tracer):
    """Keeps every submodule whole except containers and the ancestors of ``named`` paths."""

    def __init__(self, named: set[str]) -> None:
        super().__init__()
        self.named = named
        self.ancestors = {p.rsplit(".", i)[0] for p in named for i in range(1, p.count(".") + 1)}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """Named cuts and the head are leaves; so is every module not traced through."""
        if module_qualified_name in self.named:
            return True
        return not (module_qualified_name in self.ancestors or _is_container(m))


def stage_model(
    module: nn.Module,
    stages: list[str] | None = None,
    head: str | None = None,
    stem: str | None = None,
    input_size: int = 224,
    *,
    check: bool = True,
) -> TracedStagedNet:
    """Turn ``module`` into a :class:`StagedNet` cut after ``stem`` and each of ``stages``.

    ``head`` names the classifier; its input is the pooled feature (role ``"pooled"``). The stem
    stage (role ``"stem"``) exists only when ``stem`` is given; named stages have role ``"stage"``.
    ``input_size`` is the default square input size for :meth:`StagedNet.spot_info` and the size of
    the probe input (automatic stages, the equality check).

    Left out, ``head`` is the ``nn.Linear`` whose output is the model output, and ``stages`` are
    found by a probe forward (eval mode, no gradient, on ``input_size``): at each spatial resolution
    of the forward, the last module output at that resolution where the network is a chain (1×1
    maps, the global pool, and maps larger than an earlier one excluded; when functional operations
    end the resolution, the last module before them); the path named is the outermost ``nn.Sequential`` that ends
    with that module and contains no earlier cut. The first of these cuts is the stem. A vision
    transformer (:func:`~sakd.models.tokens.transformer_blocks`) is cut instead after its blocks at
    depth/4, depth/2, 3·depth/4 and depth (no stem); its spots are token maps (B, N, C).

    With ``check`` (default) the staged network must reproduce the module's output on a random
    input in eval mode and in train mode, else :class:`SakdError`. Also raises it for unknown paths,
    untraceable models, a train-mode graph that cannot be cut like the eval-mode one, and cuts
    that are not a chain.
    """
    if stages is not None and not stages:
        raise SakdError("stage_model needs at least one stage path (e.g. ['layer1', 'layer2'])")
    if stages is None and stem is not None:
        raise SakdError("stage_model: give stages together with stem (or leave both out)")
    if head is None:
        head = find_head(module)
    if stages is None:
        blocks = block_stages(module)
        if blocks:
            stages = blocks
        else:
            cuts = find_stages(module, head, input_size)
            stem, stages = (cuts[0], cuts[1:]) if len(cuts) > 1 else (None, cuts)
    cut_paths = ([stem] if stem is not None else []) + list(stages)
    _check_paths(module, [*cut_paths, head])

    eval_graph, train_graph, where = _trace_both_modes(module, {*cut_paths, head})
    segments = _split(module, eval_graph, cut_paths, head)
    if train_graph is not None:
        # The forward of a traced module (the root or an ancestor of a cut) branches on
        # self.training: cut the train-mode graph the same way and switch per segment.
        try:
            train_segments = _split(module, train_graph, cut_paths, head)
        except SakdError as err:
            raise SakdError(
                f"cannot stage {type(module).__name__}: the forward of {where} branches on "
                f"self.training and its train-mode graph cannot be cut the same way ({err})"
            ) from None
        segments = [
            e if e.code == t.code else _ModeSwitch(e, t)
            for e, t in zip(segments, train_segments, strict=True)
        ]
    roles = ("stem",) * (stem is not None) + ("stage",) * len(stages) + ("pooled",)
    staged = TracedStagedNet(
        segments,
        module.get_submodule(head),
        roles,
        input_size,
        source=module,
        stage_paths=tuple(cut_paths),
        head_path=head,
    )
    staged.num_prefix_tokens = num_prefix_tokens(module)
    if check:
        check_staged(module, staged, input_size)
    return staged


def _split(
    module: nn.Module, graph: fx.Graph, cut_paths: list[str], head: str
) -> list[fx.GraphModule]:
    """The segments of ``graph``: one per cut, then the pooled one up to the head's input."""
    input_node = _single_input(graph)
    cut_nodes = [_call_node(graph, path) for path in cut_paths]
    head_node = _call_node(graph, head)
    pooled_node = _head_input(graph, head_node, head)

    position = {node: i for i, node in enumerate(graph.nodes)}
    ends = [*cut_nodes, pooled_node]
    end_names = [*(repr(path) for path in cut_paths), f"the input of head {head!r}"]
    for i in range(1, len(ends)):
        if position[ends[i]] < position[ends[i - 1]]:
            raise SakdError(
                f"stage paths are out of order: {end_names[i]} runs before {end_names[i - 1]}; "
                "list them in the order the forward pass calls them"
            )

    def first_cut_after(node: fx.Node) -> str:
        cuts = zip(ends, end_names, strict=True)
        return next(name for end, name in cuts if position[end] > position[node])

    segments: list[fx.GraphModule] = []
    start_node, start_name = input_node, "the model input"
    for end_node, end_name in zip(ends, end_names, strict=True):
        nodes = [
            n
            for n in graph.nodes
            if position[start_node] < position[n] <= position[end_node]
            and n.op not in ("get_attr", "placeholder")
        ]
        segments.append(_segment(module, nodes, start_node, end_node, start_name, first_cut_after))
        start_node, start_name = end_node, end_name
    return segments


class _ModeSwitch(nn.Module):
    """A segment whose traced code differs between train and eval mode: runs the one for the mode.

    It registers the eval segment's children and tensors under the same names (so its state dict
    keys are the user's paths, like any segment's); both traced segments are held unregistered
    and share those children. Their own references to root-level tensors are re-pointed after
    every ``_apply`` (``.to()``, ``.half()``, ``to_empty``).
    """

    def __init__(self, eval_segment: fx.GraphModule, train_segment: fx.GraphModule) -> None:
        super().__init__()
        for name, child in eval_segment.named_children():
            self.add_module(name, child)
        for name, param in eval_segment.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buf in eval_segment.named_buffers(recurse=False):
            self.register_buffer(name, buf)
        self._segments = (eval_segment, train_segment)
        self._attrs = sorted(
            {str(n.target) for seg in self._segments for n in seg.graph.nodes if n.op == "get_attr"}
        )
        self._sync()

    def _sync(self) -> None:
        for seg in self._segments:
            for target in self._attrs:
                prefix, _, field = target.rpartition(".")
                try:
                    value = self.get_submodule(prefix) if prefix else self
                    tensor = getattr(value, field)
                    owner = seg.get_submodule(prefix) if prefix else seg
                except AttributeError:
                    continue
                if isinstance(tensor, nn.Parameter):
                    owner._parameters[field] = tensor
                elif isinstance(tensor, Tensor):
                    owner._buffers[field] = tensor

    def _apply(self, fn, recurse: bool = True):  # noqa: D401 - nn.Module hook
        super()._apply(fn, recurse)
        self._sync()
        return self

    def forward(self, x: Tensor) -> Tensor:
        """The train-mode segment in train mode, else the eval-mode one."""
        return self._segments[1 if self.training else 0](x)


def find_head(module: nn.Module) -> str:
    """The path of the ``nn.Linear`` whose output is ``module``'s output.

    When the output comes from another submodule (e.g. timm's ``NormMlpClassifierHead``), the last
    ``nn.Linear`` inside it is tried: it is the head if its output is the model output.
    """
    last = _output_producer(module, set())
    if last is not None and isinstance(module.get_submodule(last), nn.Linear):
        return last
    if last is not None:
        inner = [
            f"{last}.{name}"
            for name, m in module.get_submodule(last).named_modules()
            if name and isinstance(m, nn.Linear)
        ]
        if inner and _output_producer(module, {inner[-1]}) == inner[-1]:
            return inner[-1]
    raise SakdError(
        f"cannot find the head of {type(module).__name__}: its output is not computed by an "
        "nn.Linear; name the classifier with head='path' (a module path from named_modules())"
    )


def _output_producer(module: nn.Module, named: set[str]) -> str | None:
    """The path of the module whose call gives the traced (eval-mode) output, or None."""
    graph = _trace_eval(module, named)
    output = next(n for n in graph.nodes if n.op == "output")
    last = output.args[0]
    if isinstance(last, fx.Node) and last.op == "call_module":
        return str(last.target)
    return None


def find_stages(module: nn.Module, head: str, input_size: int) -> list[str]:
    """Module paths of the automatic cuts (see :func:`stage_model`), found by a probe forward."""
    graph = _trace_eval(module, {head})
    traced = fx.GraphModule(module, graph)
    shapes = _probe_shapes(module, traced, input_size)
    nodes = list(graph.nodes)
    position = {node: i for i, node in enumerate(nodes)}
    # A cut after node i is a chain iff no later node reads a value from before i.
    last_use = [0] * len(nodes)
    for i, node in enumerate(nodes):
        for used in node.all_input_nodes:
            if used.op != "get_attr":
                last_use[position[used]] = max(last_use[position[used]], i)
    chain_after = []
    latest = -1
    for i in range(len(nodes)):
        chain_after.append(latest <= i)
        latest = max(latest, last_use[i] if last_use[i] > i else -1)
    # chain_after[i]: every value computed before node i is dead once node i has run.
    maps: list[fx.Node] = []
    smallest: tuple[int, ...] | None = None
    for n in nodes:
        if n not in shapes or len(shapes[n]) != 4 or shapes[n][2:] == (1, 1):
            continue
        size = shapes[n][2:]
        # Maps larger than an earlier one (an upsampling, a fixed-size adaptive pool) start no stage.
        if smallest is None or (size[0] <= smallest[0] and size[1] <= smallest[1]):
            smallest = size
            maps.append(n)
    groups: list[list[fx.Node]] = []
    for node in maps:
        if groups and shapes[groups[-1][-1]][2:] == shapes[node][2:]:
            groups[-1].append(node)
        else:
            groups.append([node])
    leaf_paths = []
    for group in groups:
        # The last module output of the resolution where the network is a chain.
        found = [
            n
            for n in group
            if n.op == "call_module" and n.target != head and chain_after[position[n]]
        ]
        if found and str(found[-1].target) not in leaf_paths:
            leaf_paths.append(str(found[-1].target))
    if not leaf_paths:
        raise SakdError(
            f"cannot find stages in {type(module).__name__} automatically (no module ends a "
            f"resolution where the network is a chain at {input_size}×{input_size}): "
            "name them with stages=[...]"
        )
    paths: list[str] = []
    for leaf in leaf_paths:
        paths.append(_outermost_sequential(module, leaf, paths[-1] if paths else None))
    return paths


def _outermost_sequential(module: nn.Module, leaf: str, previous: str | None) -> str:
    """The largest ``nn.Sequential`` ancestor of ``leaf`` ending with it and holding no earlier cut."""
    path = leaf
    while "." in path:
        parent, child = path.rsplit(".", 1)
        seq = module.get_submodule(parent)
        names = [name for name, _ in seq.named_children()]
        if not _is_container(seq) or names[-1] != child:
            break
        if previous is not None and (previous + ".").startswith(parent + "."):
            break
        path = parent
    return path


@torch.no_grad()
def _probe_shapes(
    module: nn.Module, traced: fx.GraphModule, input_size: int
) -> dict[fx.Node, tuple[int, ...]]:
    """Output shape of every tensor-valued node for one eval-mode probe input."""
    shapes: dict[fx.Node, tuple[int, ...]] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node):
            out = super().run_node(n)
            if isinstance(out, Tensor):
                shapes[n] = tuple(out.shape)
            return out

    flags = _training_flags(module)
    try:
        module.eval()
        Recorder(traced).run(_probe_input(module, input_size))
    except SakdError:
        raise
    except Exception as err:
        _refuse_other_input_channels(module)
        raise SakdError(
            f"the probe forward of {type(module).__name__} on a {input_size}×{input_size} input "
            f"failed ({type(err).__name__}: {str(err).splitlines()[0][:160]}): {INPUT_SIZE_FIX}, "
            "or name stages=[...]"
        ) from None
    finally:
        _restore_training_flags(module, flags)
    return shapes


def _probe_input(module: nn.Module, input_size: int) -> Tensor:
    """Two random images as sakd feeds them: (2, 3, input_size, input_size), the module's dtype."""
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn(
        2, INPUT_CHANNELS, input_size, input_size, generator=torch.Generator().manual_seed(0)
    )
    return x.to(device=device, dtype=dtype)


def _refuse_other_input_channels(module: nn.Module) -> None:
    """After a failed probe: :class:`SakdError` when the first convolution wants other channels.

    sakd feeds every model 3-channel images (grayscale data is repeated to 3 channels); it does
    not adapt a model built for another number of input channels.
    """
    first = next(((n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first[1].in_channels != INPUT_CHANNELS:
        name, conv = first
        raise SakdError(
            f"{type(module).__name__}'s first convolution {name} takes {conv.in_channels} input "
            f"channel(s), but sakd feeds 3-channel (RGB) images (grayscale data is repeated to 3 "
            "channels): build the model with 3 input channels"
        )


def check_staged(module: nn.Module, staged: StagedNet, input_size: int) -> None:
    """Raise :class:`SakdError` unless ``staged`` reproduces ``module`` in eval and train mode.

    Runs on a deep copy of both (sharing preserved), so the caller's BatchNorm statistics and
    training flags are untouched. Train mode runs both with the same RNG seed (dropout masks and
    stochastic depth draws are then identical).
    """
    mod, net = copy.deepcopy((module, staged))
    x = _probe_input(mod, input_size)
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    for mode in ("eval", "train"):
        outputs = []
        for runner in (mod, net):
            runner.train(mode == "train")
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                try:
                    outputs.append(runner(x))
                except Exception as err:
                    _refuse_other_input_channels(module)
                    raise SakdError(
                        f"the {mode}-mode check forward of {type(module).__name__} on a "
                        f"{input_size}×{input_size} input failed ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:160]}): {INPUT_SIZE_FIX}"
                    ) from None
        expected, got = outputs
        if not isinstance(expected, Tensor) or expected.shape != got.shape:
            raise SakdError(
                f"the staged {type(module).__name__} gives an output of another shape than the "
                f"module in {mode} mode: the head must give the model output"
            )
        diff = (got - expected).abs().max().item() if expected.numel() else 0.0
        bound = CHECK_ATOL + CHECK_RTOL * expected.abs().max().item()
        if not diff <= bound:
            raise SakdError(
                f"the staged {type(module).__name__} does not reproduce the module's {mode}-mode "
                f"output (max difference {diff:.3g}): its forward depends on something the cuts "
                "cannot keep (e.g. a random draw or state above a cut); choose other stages or "
                "report the model"
            )


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


def _training_flags(module: nn.Module) -> dict[nn.Module, bool]:
    return {m: m.training for m in module.modules()}


def _restore_training_flags(module: nn.Module, flags: dict[nn.Module, bool]) -> None:
    for m, flag in flags.items():
        m.training = flag


def _trace(module: nn.Module, named: set[str]) -> fx.Graph:
    try:
        graph = _CutTracer(named).trace(module, concrete_args=_optional_inputs(module))
    except SakdError:
        raise
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise SakdError(
            f"cannot trace {type(module).__name__} with torch.fx ({type(err).__name__}: {reason}); "
            "remove data-dependent control flow from its forward or wrap that part in a module "
            "named as a stage path"
        ) from None
    _drop_specialisation_guards(graph)
    graph = fx.GraphModule(module, graph).graph
    graph.eliminate_dead_code()
    return graph


def _drop_specialisation_guards(graph: fx.Graph) -> None:
    """Remove the ``torch._assert`` guards fx adds for fixed optional inputs (they read no image)."""
    extra = [n for n in graph.nodes if n.op == "placeholder"][1:]
    derived = set(extra)
    guards = []
    for node in graph.nodes:
        inputs = node.all_input_nodes
        if node.op == "call_function" and inputs and all(used in derived for used in inputs):
            derived.add(node)
            guards.append(node)
    for node in reversed(guards):
        if all(user in derived for user in node.users):
            graph.erase_node(node)


def _optional_inputs(module: nn.Module) -> dict[str, object] | None:
    """The forward's parameters after the image that have defaults, fixed at them (timm's ``attn_mask``)."""
    params = list(inspect.signature(module.forward).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    fixed = {p.name: p.default for p in params if p.kind in kinds and p.default is not p.empty}
    return fixed or None


def _trace_eval(module: nn.Module, named: set[str]) -> fx.Graph:
    flags = _training_flags(module)
    try:
        module.eval()
        return _trace(module, named)
    finally:
        _restore_training_flags(module, flags)


def _trace_both_modes(module: nn.Module, named: set[str]) -> tuple[fx.Graph, fx.Graph | None, str]:
    """The eval-mode graph, the train-mode one when it differs (else None), and where it differs."""
    flags = _training_flags(module)
    try:
        module.train()
        train_graph = _trace(module, named)
        module.eval()
        eval_graph = _trace(module, named)
    finally:
        _restore_training_flags(module, flags)
    if str(train_graph) == str(eval_graph):
        return eval_graph, None, ""
    train_nodes, eval_nodes = list(train_graph.nodes), list(eval_graph.nodes)
    where = type(module).__name__
    for a, b in zip(train_nodes + [None], eval_nodes + [None], strict=False):
        if a is None or b is None or _node_text(a) != _node_text(b):
            node = a if a is not None else b
            where = _module_of(node, module) if node is not None else where
            break
    return eval_graph, train_graph, where


def _node_text(node: fx.Node) -> str:
    return f"{node.op} {node.target} {node.args} {node.kwargs}"


def _module_of(node: fx.Node, root: nn.Module) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack)[-1]
        entry = stack[path]
        path = entry[0] if isinstance(entry, tuple) else path
        if path:
            try:
                return f"{path!r} ({type(root.get_submodule(path)).__name__})"
            except AttributeError:
                return repr(path)
    return type(root).__name__


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
