"""Call semantics: qualified functions from the name tables, tensor methods,
module instances, loss objects, and the operations they apply."""

from __future__ import annotations

import ast

from stabcheck import names as N
from stabcheck.flow.facts import (
    capped, clamps_inside_unit, guarded_value, named_max, negated, reduction_value, square_of, useful_bound, where_value,
)
from stabcheck.flow.scopes import ClassInfo, FuncInfo, Instance
from stabcheck.flow.syntax import call_arg, base_key, const_value, float16, kw_true, number, target_key
from stabcheck.values import (
    TENSOR_VALUES, Cosine, Exp, Guarded, Layer, LogOf, LossObj, NonNeg, NonPos, LogProb, OnePlusExp, Prob, Qual, Raw, Red,
    Shifted, Tup,
)

# torch-only tensor methods: their constant arguments are float32 arithmetic.
_TORCH_METHODS = frozenset({"clamp", "clamp_", "clamp_min", "clamp_max", "clamp_min_", "clamp_max_"})
_HALF_METHODS = frozenset({"half"})
# Arguments that hold guards: clamp bounds, `maximum(x, eps)`, `log(p + eps)`, `eps=`.
_BOUND_OPS = frozenset({N.CLAMP, N.MAXIMUM, N.MINIMUM, N.LOG, N.SQRT})
_EPSILON_KEYWORDS = frozenset({"eps", "epsilon", "min", "max", "clip_value_min", "clip_value_max", "a_min", "a_max"})


class CallWalker:
    # ------------------------------------------------------------ calls
    def _args(self, node: ast.Call, f32: bool = False, guard: bool = False, no_grad: bool = False,
              test: ast.AST | None = None, where: str | None = None) -> dict[int, object]:
        """Evaluate every argument once; values by id of the argument node.
        `f32`: the callee computes in float32 and `guard`: its arguments are
        bounds (constant arithmetic there is checked for absorbed epsilons);
        `no_grad`: the callee cuts its arguments from the graph; `test`: the
        condition of the `where` function `where`, which selects between the arguments."""
        vals = {}
        facts = self.facts
        self._f32 += f32
        facts.guard_position += guard
        facts.no_grad += no_grad
        marks = (facts.push(test, where=where), facts.push(test, negated=True, where=where)) if test is not None else None
        try:
            for a in node.args:
                vals[id(a)] = self.expr(a)
            for kw in node.keywords:
                if kw.arg in _EPSILON_KEYWORDS and not guard:
                    facts.guard_position += 1
                    try:
                        vals[id(kw.value)] = self.expr(kw.value)
                    finally:
                        facts.guard_position -= 1
                else:
                    vals[id(kw.value)] = self.expr(kw.value)
        finally:
            self._f32 -= f32
            facts.guard_position -= guard
            facts.no_grad -= no_grad
            if marks:
                facts.pop(marks[0])
        return vals

    def _call(self, node: ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute):
            cut = func.attr in N.NO_GRAD_METHODS  # `loss.item()`: the receiver leaves the graph
            self.facts.no_grad += cut
            try:
                recv = self.expr(func.value)
            finally:
                self.facts.no_grad -= cut
            if isinstance(recv, Qual):
                callee = Qual(N.canonical(f"{recv.name}.{func.attr}"))
            elif isinstance(recv, Instance) and func.attr in recv.cls.attrs:
                callee = recv.cls.attrs[func.attr]  # `self.main(x)`, `self.criterion(out, y)`
            else:
                bounds = func.attr in _TORCH_METHODS
                return self._method(node, func, recv, self._args(node, bounds, guard=bounds))
        else:
            callee = self.expr(func)
        vals = self._args(node, **self._arg_context(node, callee))
        if isinstance(callee, Qual):
            return self._qualified(node, callee.name, vals)
        if isinstance(callee, FuncInfo):
            ret = self._call_function(callee, node, vals)
            return Red(N.MAX, node, per_row=True) if ret is None and named_max(node) else ret
        if isinstance(callee, ClassInfo):
            return self._construct(callee, node, vals)
        if isinstance(callee, Instance):
            return self._call_instance(callee)
        if isinstance(callee, Layer):
            ret = callee.ret
            if callee.activation and isinstance(ret, Prob):
                return Prob(ret.src, node, ret.qual)
            if isinstance(ret, Raw):
                return Raw(node)
            if isinstance(ret, Cosine):
                return Cosine(node)
            return ret
        if isinstance(callee, LossObj):
            self._emit_loss(node, callee.spec, callee.family, callee.qual, vals)
        elif named_max(node):
            # `m = _max_mask_non_finite(x)`: a helper the walk cannot see into (taken as per row)
            return Red(N.MAX, node, per_row=True)
        return None

    def _arg_context(self, node: ast.Call, callee) -> dict:
        """How a library function treats its arguments (see `_args`)."""
        if not isinstance(callee, Qual):
            return {}
        name = callee.name
        func = N.FUNCS.get(name)
        op = func.op if func is not None else None
        return {
            "f32": name.split(".", 1)[0] in N.AUTODIFF_ROOTS,
            "guard": op in _BOUND_OPS,
            "no_grad": name in N.STOP_GRADIENT,
            "test": node.args[0] if op == N.WHERE and len(node.args) == 3 else None,
            "where": name if op == N.WHERE else None,
        }

    def _qualified(self, node: ast.Call, name: str, vals: dict):
        func = N.FUNCS.get(name)
        if func is not None:
            x = call_arg(node, 0, _OPERAND_KEYWORDS)
            return self._apply(node, func, name, x, vals.get(id(x)), vals)
        spec = N.LOSS_FUNCS.get(name)
        if spec is not None:
            self._emit_loss(node, spec, loss_family(spec, node), name, vals)
            return None
        spec = N.LOSS_CLASSES.get(name)
        if spec is not None:
            return LossObj(spec, loss_family(spec, node), name)
        src = N.ACTIVATION_MODULES.get(name)
        if src is not None:
            return Layer(Prob(src, node, name), activation=True)
        if name in N.LINEAR_MODULES:
            return Layer(Raw(node))
        if name in N.COSINE_MODULES:
            return Layer(Cosine(node))
        if name in N.ADAM_FAMILY:
            self._adam(node, vals)
            return None
        if name in N.SEQUENTIAL:
            if name == "torch.nn.Sequential":
                last = vals.get(id(node.args[-1])) if node.args else None
            else:
                layers = vals.get(id(call_arg(node, 0, ("layers",))))
                last = layers.items[-1] if isinstance(layers, Tup) and layers.items else None
            return Layer(last.ret if isinstance(last, Layer) else None, sequential=name)
        if name in N.FUNCTIONAL_MODELS:  # Keras 2 spelled them `input=`, `output=`
            return Layer(vals.get(id(call_arg(node, 1, ("outputs", "output")))))
        if name in N.CRITERION_WRAPPERS:
            self._criterion_wrapper(node, vals)
            return None
        export = self._export(name)
        if export is not None:
            kind, src = export
            prob = Prob(src, node, name)
            return Layer(prob) if kind == "class" else prob
        if name.startswith(N.KERAS_LAYER_PREFIX):
            if name == N.KERAS_ACTIVATION_LAYER:
                act = call_arg(node, 0, ("activation",))
            elif name == N.KERAS_DENSE:
                act = call_arg(node, 1, ("activation",))
            else:
                act = call_arg(node, -1, ("activation",))
            src = activation_src(act, vals.get(id(act)))
            if src:
                return Layer(Prob(src, node, name), activation=name == N.KERAS_ACTIVATION_LAYER)
            if name in N.KERAS_LINEAR_LAYERS and is_linear_activation(act):
                return Layer(Raw(node))
            return Layer(None)
        return None

    def _method(self, node: ast.Call, func: ast.Attribute, recv, vals: dict):
        name = func.attr
        if name in _HALF_METHODS or (name == "to" and self._to_half(node, vals)):
            key = base_key(func.value)
            if key is not None:
                self._half_keys.add(key)
            self._half_call = node  # `model = Net().half()`: the target is the model
        if name == "compile" and isinstance(recv, (Layer, Instance)):
            loss = call_arg(node, 1, ("loss",))
            if loss is not None:
                out = recv.ret if isinstance(recv, Layer) else self._call_instance(recv)
                self._emit("compile", node, loss, vals.get(id(loss)), out)
            return None
        if name in N.MODULE_SELF_METHODS and isinstance(recv, (Instance, Layer, LossObj)):
            return recv  # `Net().to(device)`, `model.eval()`
        if isinstance(recv, Instance):
            if name in N.PROBA_METHODS:
                return Prob(N.SRC_PROBA, node)
            if name in N.PREDICT_METHODS:
                return self._call_instance(recv)
            info = recv.cls.methods.get(name)
            return self._summary(info) if info is not None else None
        if isinstance(recv, Layer):
            if name == "add" and recv.sequential and node.args:
                added = vals.get(id(node.args[0]))
                key = target_key(func.value)
                if key is not None:
                    self.scope.assign(key, Layer(added.ret if isinstance(added, Layer) else None, recv.sequential))
                return None
            if name in N.PREDICT_METHODS:
                return recv.ret
            return Prob(N.SRC_PROBA, node) if name in N.PROBA_METHODS else None
        if isinstance(recv, LossObj):
            if name in ("forward", "call", "__call__"):
                self._emit_loss(node, recv.spec, recv.family, recv.qual, vals)
            return None
        if isinstance(recv, (FuncInfo, ClassInfo)):
            return None
        if name in N.PROBA_METHODS:
            return Prob(N.SRC_PROBA, node)
        nargs = len(node.args) + len(node.keywords)
        inplace = N.INPLACE_METHODS.get(name)
        spec = N.METHODS.get(inplace or name)
        if spec is not None and nargs in spec[1]:
            val = self._apply(node, spec[0], None, func.value, recv, vals)
            if inplace:
                key = target_key(func.value)
                if key is not None:
                    self.scope.assign(key, val)
            return val
        if len(node.args) == 1 and not node.keywords:
            arg = node.args[0]
            if name == "pow" and const_value(arg) == 2.0:
                self._emit("square", node, func.value, recv)
                return square_of(node, recv)
            if name == "pow" and const_value(arg) == 0.5:
                return self._on_sqrt(node, func.value, recv, None)
            if name == "mul":
                self._emit("mult", node, func.value, arg, recv, vals.get(id(arg)))
                return None
            if name == "div":
                return self._divide(node, func.value, arg, recv, vals.get(id(arg)))
            if name == "add" and isinstance(recv, Exp) and const_value(arg) == 1.0:
                return OnePlusExp(recv)
        if name in N.PASSTHROUGH_METHODS:
            return recv if isinstance(recv, TENSOR_VALUES) else None
        return None

    def _apply(self, node: ast.Call, func: N.Func, qual, x_node, x_val, vals: dict):
        """Apply a table operation to its operand `x`: the first argument of a
        function, the receiver of a method."""
        op = func.op
        if op == N.SOFTMAX:
            return Prob(N.SRC_SOFTMAX, node, qual)
        if op == N.SIGMOID:
            return Prob(N.SRC_SIGMOID, node, qual)
        if op == N.LOG:
            return self._on_log(node, x_node, x_val)
        if op == N.PASSTHROUGH:
            return x_val if isinstance(x_val, TENSOR_VALUES) else None
        if op == "reduce":
            axes = any(kw.arg in ("dim", "axis", "reduction_indices") for kw in node.keywords)
            per_row = axes or len(node.args) >= (1 if qual is None else 2)
            return reduction_value(func.kind, node, x_val, per_row)
        if op == N.EXP:
            if isinstance(x_val, LogProb):
                return Prob(x_val.src, node, qual)  # exp(log_softmax(x)) is the softmax
            shift = x_val if isinstance(x_val, Shifted) else None
            return Exp(node, isinstance(x_val, (Shifted, NonPos)), qual, maxshift=shift is not None,
                       global_max=shift is not None and shift.global_max)
        if op == N.LOG_PROB:
            name = qual or (node.func.attr if isinstance(node.func, ast.Attribute) else "")
            src = N.SRC_SOFTMAX if "softmax" in name else N.SRC_SIGMOID if "sigmoid" in name or "expit" in name else None
            return LogProb(src, node) if src else NonPos()
        if op == N.NEG:
            return negated(x_val)
        if op == N.POW:
            exponent = const_value(call_arg(node, 1, ("exponent", "y", "x2")))
            if exponent == 2.0 and x_node is not None:
                self._emit("square", node, x_node, x_val)
                return square_of(node, x_val)
            if exponent == 0.5 and x_node is not None:
                return self._on_sqrt(node, x_node, x_val, qual)
            return None
        if op == N.ABS:
            return NonNeg()
        if op == N.SQRT:
            return self._on_sqrt(node, x_node, x_val, qual) if x_node is not None else None
        if op == N.LOG1P:
            if x_node is not None:
                self._emit("log1p", node, x_node, x_val)
            return None
        if op == N.ACOS:
            if x_node is not None:
                self._emit("acos", node, x_node, x_val)
            return None
        if op == N.COSINE:
            return Cosine(node)
        if op == N.SQUARE:
            if x_node is not None:
                self._emit("square", node, x_node, x_val)
            return square_of(node, x_val)
        if op == N.WHERE:
            return where_value(node) or Guarded(True, True)
        if op in (N.MULTIPLY, N.DIVIDE):
            if len(node.args) == 2:
                a, b = node.args
                if op == N.DIVIDE:
                    return self._divide(node, a, b, vals.get(id(a)), vals.get(id(b)))
                self._emit("mult", node, a, b, vals.get(id(a)), vals.get(id(b)))
                if type(a) is type(b) and ast.dump(a) == ast.dump(b):  # `torch.mul(d, d)`
                    self._emit("square", node, a, vals.get(id(a)))
                    return square_of(node, vals.get(id(a)))
            return None
        if op == N.CLAMP:
            if isinstance(x_val, Cosine):
                inside = clamps_inside_unit(func, node, self.facts.differentiable(qual))
                return Cosine(x_val.node, guarded=inside, clamped=not inside)
            lo = func.lo is not None and useful_bound(call_arg(node, *func.lo), low=True)
            upper = call_arg(node, *func.hi) if func.hi is not None else None
            hi = useful_bound(upper, low=False)
            if upper is not None:
                x_val = capped(x_val)
            return guarded_value(x_val, lo, hi)
        if op in (N.MAXIMUM, N.MINIMUM):
            if len(node.args) != 2:
                return None
            a, b = node.args
            x_val, bound = vals.get(id(a)), b
            if not isinstance(x_val, (Prob, Guarded)) and isinstance(vals.get(id(b)), (Prob, Guarded)):
                x_val, bound = vals.get(id(b)), a
            if op == N.MAXIMUM:
                return guarded_value(x_val, useful_bound(bound, low=True), False)
            return guarded_value(x_val, False, useful_bound(bound, low=False))
        return None

    def _on_log(self, node, x_node, x_val):
        if x_node is None:
            return None
        self._emit("log", node, x_node, x_val)
        if x_val is not None:
            return None
        # Unknown origin: remember it, in case it turns out to be `y * log(p)`.
        inner, comp = x_node, False
        if isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Sub) and const_value(inner.left) == 1.0:
            inner, comp = inner.right, True
        if isinstance(inner, (ast.Name, ast.Attribute, ast.Subscript)):
            key = base_key(inner)
            if key is not None:
                return LogOf(node, key, comp, id(self._function_scope()))
        return None

    def _criterion_wrapper(self, node: ast.Call, vals: dict) -> None:
        """`NeuralNetClassifier(Net, criterion=nn.CrossEntropyLoss)`: the
        wrapper applies the criterion to what the module returns."""
        module = call_arg(node, 0, ("module",))
        criterion = call_arg(node, -1, ("criterion",))
        if module is None or criterion is None:
            return
        mod, crit = vals.get(id(module)), vals.get(id(criterion))
        if isinstance(crit, Qual) and crit.name in N.LOSS_CLASSES:
            crit = LossObj(N.LOSS_CLASSES[crit.name], N.LOSS_CLASSES[crit.name].family, crit.name)
        if not isinstance(crit, LossObj):
            return
        out = None
        if isinstance(mod, ClassInfo):
            out = self._call_instance(Instance(mod))
        elif isinstance(mod, (Instance, Layer)):
            out = self._call_instance(mod) if isinstance(mod, Instance) else mod.ret
        if isinstance(out, Prob):
            self._emit("loss", node, crit.spec, crit.family, crit.qual, [(module, Prob(out.src, out.node, out.qual))])

    def _emit_loss(self, node: ast.Call, spec: N.LossSpec, family: str, qual: str, vals: dict) -> None:
        pairs = []
        for pos, kws in spec.pred:
            arg = call_arg(node, pos, kws)
            if arg is not None:
                pairs.append((arg, vals.get(id(arg))))
        self._emit("loss", node, spec, family, qual, pairs)

    def _to_half(self, node: ast.Call, vals: dict) -> bool:
        """`.to(torch.float16)`, `.to(device, dtype=torch.half)`."""
        for v in vals.values():
            if isinstance(v, Qual) and v.name in N.HALF_DTYPES:
                return True
        return False

    def _adam(self, node: ast.Call, vals: dict) -> None:
        params = call_arg(node, 0, ("params",))
        if not (isinstance(params, ast.Call) and isinstance(params.func, ast.Attribute)):
            return
        if params.func.attr != "parameters" or base_key(params.func.value) not in self._half_keys:
            return
        eps_node = call_arg(node, 3, ("eps",))
        eps = N.ADAM_DEFAULT_EPS if eps_node is None else number(eps_node, vals.get(id(eps_node)))
        if eps is not None and float16(eps) == 0.0:
            self._emit("half_optimizer", node, eps)


_OPERAND_KEYWORDS = ("input", "x", "a", "t", "tensor", "logits", "features")


def loss_family(spec: N.LossSpec, node: ast.Call) -> str:
    if spec.from_logits_family and kw_true(node, "from_logits"):
        return spec.from_logits_family
    return spec.family



def is_linear_activation(act: ast.AST | None) -> bool:
    return act is None or (isinstance(act, ast.Constant) and act.value in (None, "linear"))



def activation_src(node: ast.AST | None, val) -> str | None:
    """`"softmax"`, `tf.nn.softmax`, `keras.activations.sigmoid` -> a SRC_*."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return N.ACTIVATION_STRINGS.get(node.value.lower())
    if isinstance(val, Qual):
        func = N.FUNCS.get(val.name)
        if func is not None and func.op == N.SOFTMAX:
            return N.SRC_SOFTMAX
        if func is not None and func.op == N.SIGMOID:
            return N.SRC_SIGMOID
    return None


