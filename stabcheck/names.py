"""The one place where framework spellings live.

Every qualified name the checks care about maps to a framework-neutral
operation here. Supporting a new spelling is an edit of these tables plus a
fixture line, never an edit of a check.

Names are canonicalised first (`tensorflow.compat.v1.log` -> `tensorflow.log`,
`tensorflow.keras.losses.X` -> `keras.losses.X`), so each table lists one
spelling per framework.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ---------------------------------------------------------------- operations
LOG = "log"
SOFTMAX = "softmax"
SIGMOID = "sigmoid"
CLAMP = "clamp"  # clamp/clip(x, lo, hi)
MAXIMUM = "maximum"  # maximum(x, eps) bounds x from below
MINIMUM = "minimum"  # minimum(x, 1 - eps) bounds x from above
SQUARE = "square"
MULTIPLY = "multiply"
WHERE = "where"  # where(cond, x, safe): the "double where" guard
EXP = "exp"
LOG1P = "log1p"
SQRT = "sqrt"
ACOS = "acos"  # acos / asin: domain [-1, 1], infinite slope at the ends
DIVIDE = "divide"
COSINE = "cosine"  # cosine similarity in [-1, 1]
ABS = "abs"
NEG = "neg"  # x.neg(): flips the sign facts
LOG_PROB = "log_prob"  # log_softmax / log_sigmoid / log_prob: at most 0
POW = "pow"  # pow(x, 2) is a square, pow(x, 0.5) a sqrt
# Reductions: the value they give is a `Red` of this kind.
SUM = "sum"
MEAN = "mean"
NORM = "norm"
STD = "std"
VAR = "var"
MAX = "max"
PASSTHROUGH = "passthrough"  # returns its first argument's kind (reshape, cast, ...)

# Probability sources, as the flow analysis names them in messages.
SRC_SOFTMAX = "softmax"
SRC_SIGMOID = "sigmoid"
SRC_PROBA = "predict_proba"

# Prefixes rewritten before any lookup; longest first.
_CANONICAL_PREFIXES = (
    ("tensorflow.compat.v1.keras.", "keras."),
    ("tensorflow.compat.v2.keras.", "keras."),
    ("tensorflow.python.keras.", "keras."),
    ("tensorflow.compat.v1.", "tensorflow."),
    ("tensorflow.compat.v2.", "tensorflow."),
    ("tensorflow.keras.", "keras."),
    ("tf_keras.", "keras."),
    ("keras.src.", "keras."),
    ("autograd.numpy.", "jax.numpy."),  # HIPS autograd: the NumPy API, with gradients
    ("autograd.scipy.", "jax.scipy."),
    ("keras.api.", "keras."),
    ("keras._tf_keras.keras.", "keras."),
    ("torch.nn.modules.loss.", "torch.nn."),
    ("torch.nn.modules.activation.", "torch.nn."),
    ("torch.nn.modules.container.", "torch.nn."),
    ("torch.nn.modules.", "torch.nn."),
    ("keras.ops.numpy.", "keras.ops."),
    ("keras.ops.nn.", "keras.ops."),
    ("keras.ops.math.", "keras.ops."),
    ("keras.backend.numpy.", "keras.ops."),
    ("keras.backend.nn.", "keras.ops."),
    ("keras.losses.losses.", "keras.losses."),
    ("keras.activations.activations.", "keras.activations."),
    ("keras.models.sequential.", "keras.models."),
    ("keras.models.model.", "keras.models."),
    ("keras.layers.core.dense.", "keras.layers."),
    ("keras.layers.core.", "keras.layers."),
)


_canonical_cache: dict[str, str] = {}


def canonical(qualname: str) -> str:
    out = _canonical_cache.get(qualname)
    if out is None:
        out = qualname
        for prefix, repl in _CANONICAL_PREFIXES:
            if qualname.startswith(prefix):
                out = repl + qualname[len(prefix) :]
                break
        _canonical_cache[qualname] = out
    return out


def _expand(*patterns: str) -> list[str]:
    """`"{torch,numpy}.{log,log2}"` -> `["torch.log", "torch.log2", "numpy.log", "numpy.log2"]`."""
    out = []
    for pat in patterns:
        m = re.search(r"\{([^}]*)\}", pat)
        if not m:
            out.append(pat)
            continue
        out.extend(_expand(*(pat[: m.start()] + alt + pat[m.end() :] for alt in m.group(1).split(","))))
    return out


# ---------------------------------------------------------------- functions
@dataclass(frozen=True)
class Func:
    op: str
    kind: str | None = None  # for reductions: SUM, NORM, ...
    # For CLAMP: where the lower and upper bounds are passed (position, keyword).
    lo: tuple[int, tuple[str, ...]] | None = None
    hi: tuple[int, tuple[str, ...]] | None = None


_LOG_NAMES = _expand(
    "torch.{log,log2,log10}",
    "numpy.{log,log2,log10}",
    "jax.numpy.{log,log2,log10}",
    "tensorflow.{log}",  # TF1
    "tensorflow.math.{log}",
    "keras.ops.{log,log2,log10}",
    "keras.backend.{log}",
    "cupy.{log,log2,log10}",
)
_SOFTMAX_NAMES = [
    "torch.softmax",
    "torch.nn.functional.softmax",
    "torch.special.softmax",
    "tensorflow.nn.softmax",
    "tensorflow.math.softmax",
    "keras.activations.softmax",
    "keras.ops.softmax",
    "keras.backend.softmax",
    "jax.nn.softmax",
    "scipy.special.softmax",
]
_SIGMOID_NAMES = [
    "torch.sigmoid",
    "torch.nn.functional.sigmoid",
    "torch.special.expit",
    "tensorflow.sigmoid",
    "tensorflow.nn.sigmoid",
    "tensorflow.math.sigmoid",
    "keras.activations.sigmoid",
    "keras.ops.sigmoid",
    "keras.backend.sigmoid",
    "jax.nn.sigmoid",
    "jax.scipy.special.expit",
    "scipy.special.expit",
]
_SQUARE_NAMES = _expand(
    "{torch,numpy,jax.numpy,tensorflow,tensorflow.math,keras.ops,keras.backend}.square"
)
_MULTIPLY_NAMES = _expand(
    "{torch.mul,torch.multiply,numpy.multiply,jax.numpy.multiply,tensorflow.multiply,tensorflow.math.multiply,keras.ops.multiply}"
)
_PASSTHROUGH_NAMES = _expand(
    "torch.{squeeze,unsqueeze,reshape,flatten,detach,clone,as_tensor,transpose,permute}",
    "numpy.{asarray,array,squeeze,reshape,expand_dims,transpose,asarray_chkfinite}",
    "jax.numpy.{asarray,array,squeeze,reshape,expand_dims,transpose}",
    "tensorflow.{reshape,squeeze,identity,expand_dims,cast,transpose,stop_gradient,convert_to_tensor}",
    "keras.ops.{reshape,squeeze,expand_dims,cast,transpose,stop_gradient,convert_to_tensor}",
    "jax.lax.{stop_gradient}",
)

_ROOTS = "{torch,numpy,jax.numpy,tensorflow,tensorflow.math,keras.ops,keras.backend}"
_EXP_NAMES = _expand(_ROOTS + ".exp", "cupy.exp")
_LOG1P_NAMES = _expand(_ROOTS + ".log1p", "torch.special.log1p")
_SQRT_NAMES = _expand(_ROOTS + ".sqrt")
_ACOS_NAMES = _expand(
    "{torch,numpy,jax.numpy,keras.ops}.{arccos,arcsin}",
    "torch.{acos,asin}",
    "{tensorflow,tensorflow.math}.{acos,asin}",
)
_DIVIDE_NAMES = _expand(
    "{torch.div,torch.divide,torch.true_divide,numpy.divide,numpy.true_divide,jax.numpy.divide}",
    "{tensorflow.divide,tensorflow.math.divide,tensorflow.truediv,tensorflow.math.truediv,keras.ops.divide,keras.ops.true_divide}",
)
_POW_NAMES = _expand("{torch,numpy,jax.numpy,tensorflow,tensorflow.math,keras.ops}.{pow,power}", "torch.float_power")
_LOG_PROB_NAMES = _expand(
    "torch.{log_softmax,special.log_softmax,nn.functional.log_softmax,nn.functional.logsigmoid}",
    "jax.nn.{log_softmax,log_sigmoid}",
    "{tensorflow.nn,tensorflow.math}.{log_softmax,log_sigmoid}",
    "keras.ops.{log_softmax,log_sigmoid}",
    "scipy.special.{log_softmax,log_expit}",
)
_COSINE_NAMES = ["torch.nn.functional.cosine_similarity", "torch.cosine_similarity"]
_ABS_NAMES = _expand(_ROOTS + ".abs", "{numpy,jax.numpy,keras.ops}.absolute")
_REDUCTIONS = {
    SUM: _expand(
        "{torch,numpy,jax.numpy,keras.ops,keras.backend}.sum",
        "{tensorflow,tensorflow.math}.reduce_sum",
        "torch.nansum",
    ),
    MEAN: _expand(
        "{torch,numpy,jax.numpy,keras.ops,keras.backend}.mean",
        "{tensorflow,tensorflow.math}.reduce_mean",
    ),
    NORM: _expand(
        "torch.norm",
        "torch.linalg.{norm,vector_norm}",
        "{numpy,jax.numpy}.linalg.norm",
        "{tensorflow,tensorflow.linalg}.norm",
        "keras.ops.norm",
    ),
    STD: _expand(
        "{torch,numpy,jax.numpy,keras.ops,keras.backend}.std",
        "{tensorflow,tensorflow.math}.reduce_std",
    ),
    VAR: _expand(
        "{torch,numpy,jax.numpy,keras.ops,keras.backend}.var",
        "{tensorflow,tensorflow.math}.reduce_variance",
    ),
    MAX: _expand(
        "{torch,numpy,jax.numpy,keras.ops,keras.backend}.{max,amax}",
        "{tensorflow,tensorflow.math}.reduce_max",
    ),
}

# (position, keyword names) of clamp bounds, per spelling.
_CLAMPS = {
    "torch.clamp": ((1, ("min",)), (2, ("max",))),
    "torch.clip": ((1, ("min",)), (2, ("max",))),
    "numpy.clip": ((1, ("a_min", "min")), (2, ("a_max", "max"))),
    "jax.numpy.clip": ((1, ("min", "a_min")), (2, ("max", "a_max"))),
    "tensorflow.clip_by_value": ((1, ("clip_value_min",)), (2, ("clip_value_max",))),
    "keras.ops.clip": ((1, ("x_min",)), (2, ("x_max",))),
    "keras.backend.clip": ((1, ("min_value",)), (2, ("max_value",))),
}
_MAXIMUM_NAMES = _expand(
    "{torch,numpy,jax.numpy,tensorflow,tensorflow.math,keras.ops,keras.backend}.maximum", "torch.fmax"
)
_MINIMUM_NAMES = _expand(
    "{torch,numpy,jax.numpy,tensorflow,tensorflow.math,keras.ops,keras.backend}.minimum", "torch.fmin"
)

FUNCS: dict[str, Func] = {}
for _n in _LOG_NAMES:
    FUNCS[_n] = Func(LOG)
for _n in _SOFTMAX_NAMES:
    FUNCS[_n] = Func(SOFTMAX)
for _n in _SIGMOID_NAMES:
    FUNCS[_n] = Func(SIGMOID)
for _n in _SQUARE_NAMES:
    FUNCS[_n] = Func(SQUARE)
for _n in _expand("{torch,numpy,jax.numpy,tensorflow,keras.ops}.where"):
    FUNCS[_n] = Func(WHERE)
for _n in _MULTIPLY_NAMES:
    FUNCS[_n] = Func(MULTIPLY)
for _n in _PASSTHROUGH_NAMES:
    FUNCS[_n] = Func(PASSTHROUGH)
for _n, (_lo, _hi) in _CLAMPS.items():
    FUNCS[_n] = Func(CLAMP, lo=_lo, hi=_hi)
for _op, _names in ((EXP, _EXP_NAMES), (LOG1P, _LOG1P_NAMES), (SQRT, _SQRT_NAMES), (ACOS, _ACOS_NAMES),
                    (DIVIDE, _DIVIDE_NAMES), (COSINE, _COSINE_NAMES), (ABS, _ABS_NAMES), (POW, _POW_NAMES),
                    (LOG_PROB, _LOG_PROB_NAMES)):
    for _n in _names:
        FUNCS[_n] = Func(_op)
for _kind, _names in _REDUCTIONS.items():
    for _n in _names:
        FUNCS[_n] = Func("reduce", kind=_kind)
for _n in _MAXIMUM_NAMES:
    FUNCS[_n] = Func(MAXIMUM)
for _n in _MINIMUM_NAMES:
    FUNCS[_n] = Func(MINIMUM)

# Tensor methods, matched by name when the receiver is a value rather than
# an imported module. `arity` guards against look-alikes: `self.log("loss", v)`
# in Lightning is logging, `x.log()` is a tensor op.
METHODS: dict[str, tuple[Func, range]] = {
    "log": (Func(LOG), range(0, 1)),
    "log2": (Func(LOG), range(0, 1)),
    "log10": (Func(LOG), range(0, 1)),
    "softmax": (Func(SOFTMAX), range(0, 3)),
    "sigmoid": (Func(SIGMOID), range(0, 1)),
    "square": (Func(SQUARE), range(0, 1)),
    "clamp": (Func(CLAMP, lo=(0, ("min",)), hi=(1, ("max",))), range(0, 3)),
    "clip": (Func(CLAMP, lo=(0, ("min",)), hi=(1, ("max",))), range(0, 3)),
    "clamp_min": (Func(CLAMP, lo=(0, ("min",))), range(1, 2)),
    "clamp_max": (Func(CLAMP, hi=(0, ("max",))), range(1, 2)),
    "exp": (Func(EXP), range(0, 1)),
    "abs": (Func(ABS), range(0, 1)),
    "log1p": (Func(LOG1P), range(0, 1)),
    "sqrt": (Func(SQRT), range(0, 1)),
    "acos": (Func(ACOS), range(0, 1)),
    "arccos": (Func(ACOS), range(0, 1)),
    "asin": (Func(ACOS), range(0, 1)),
    "arcsin": (Func(ACOS), range(0, 1)),
    "sum": (Func("reduce", kind=SUM), range(0, 4)),
    "nansum": (Func("reduce", kind=SUM), range(0, 4)),
    "mean": (Func("reduce", kind=MEAN), range(0, 4)),
    "norm": (Func("reduce", kind=NORM), range(0, 4)),
    "std": (Func("reduce", kind=STD), range(0, 4)),
    "var": (Func("reduce", kind=VAR), range(0, 4)),
    "log_softmax": (Func(LOG_PROB), range(0, 3)),
    "log_prob": (Func(LOG_PROB), range(1, 2)),  # a distribution's log-density
    "neg": (Func(NEG), range(0, 1)),
    "max": (Func("reduce", kind=MAX), range(0, 3)),
    "amax": (Func("reduce", kind=MAX), range(0, 3)),
}
# In-place forms: `p.clamp_(eps, 1 - eps)` guards `p` itself.
INPLACE_METHODS = {"clamp_": "clamp", "clip_": "clip", "clamp_min_": "clamp_min", "clamp_max_": "clamp_max"}
# Methods that return (a view or copy of) their receiver's values.
PASSTHROUGH_METHODS = frozenset(
    "detach cpu cuda float double half bfloat16 to view view_as reshape reshape_as squeeze unsqueeze "
    "contiguous clone numpy flatten permute transpose t type type_as expand expand_as astype copy".split()
)

# Libraries whose arrays carry gradients (a forward-finite op can still
# have an infinite derivative there) and whose default float is float32.
AUTODIFF_ROOTS = frozenset({"torch", "tensorflow", "keras", "jax"})

# Where no gradient flows: blocks and decorators (`with torch.no_grad():`,
# `@torch.inference_mode()`), functions whose arguments are cut from the
# graph, and methods that take a value out of it.
NO_GRAD_CONTEXTS = frozenset(_expand(
    "torch.{no_grad,inference_mode,autograd.no_grad,autograd.inference_mode,autograd.grad_mode.no_grad}",
))
GRAD_SWITCH = frozenset({"torch.set_grad_enabled", "torch.autograd.set_grad_enabled"})  # no grad when given False
STOP_GRADIENT = frozenset({"tensorflow.stop_gradient", "jax.lax.stop_gradient", "keras.ops.stop_gradient"})
NO_GRAD_METHODS = frozenset({"item", "detach", "detach_", "tolist", "numpy"})

# ---------------------------------------------------------------- modules and layers
# Constructors whose instances, when called, return a probability.
ACTIVATION_MODULES: dict[str, str] = {
    "torch.nn.Softmax": SRC_SOFTMAX,
    "torch.nn.Softmax2d": SRC_SOFTMAX,
    "torch.nn.Sigmoid": SRC_SIGMOID,
    "keras.layers.Softmax": SRC_SOFTMAX,
}
# `activation=` strings understood by Keras layers.
ACTIVATION_STRINGS = {"softmax": SRC_SOFTMAX, "sigmoid": SRC_SIGMOID}
# Layers whose output is an unconstrained linear map (can be any sign).
LINEAR_MODULES = frozenset(
    _expand("torch.nn.{Linear,LazyLinear,Bilinear,Conv1d,Conv2d,Conv3d,LazyConv1d,LazyConv2d,LazyConv3d}")
)
KERAS_LINEAR_LAYERS = frozenset(_expand("keras.layers.{Dense,Conv1D,Conv2D,Conv3D,EinsumDense}"))
COSINE_MODULES = frozenset({"torch.nn.CosineSimilarity"})
# Optimisers whose epsilon sits in the denominator next to sqrt(v).
ADAM_FAMILY = frozenset(_expand("torch.optim.{Adam,AdamW,Adamax,NAdam,RAdam,SparseAdam}"))
ADAM_DEFAULT_EPS = 1e-8
HALF_DTYPES = frozenset({"torch.float16", "torch.half"})
# Containers whose call returns what their last layer returns.
SEQUENTIAL = frozenset({"torch.nn.Sequential", "keras.Sequential", "keras.models.Sequential"})
# Functional models: `keras.Model(inputs, outputs)` returns what `outputs` holds.
FUNCTIONAL_MODELS = frozenset({"keras.Model", "keras.models.Model"})
# Wrapper libraries that build the loss from a `criterion=` class and apply it
# to the module's output (skorch's classifier feeds it the module's raw output).
CRITERION_WRAPPERS = frozenset(_expand(
    "skorch.{NeuralNet,NeuralNetClassifier,NeuralNetBinaryClassifier}",
    "skorch.{net.NeuralNet,classifier.NeuralNetClassifier,classifier.NeuralNetBinaryClassifier}",
))
# Keras layer namespace: any `keras.layers.X(..., activation=...)` is a layer with that activation.
KERAS_LAYER_PREFIX = "keras.layers."
KERAS_ACTIVATION_LAYER = "keras.layers.Activation"
KERAS_DENSE = "keras.layers.Dense"  # Dense(units, activation) also takes it positionally
# Keras activations cache their logits on the output (`_keras_logits`) and
# Keras' TensorFlow-backend losses use them, so a Keras loss fed a Keras
# activation's output is computed from the logits after all.
KERAS_CACHED_LOGITS = ("keras.activations.", "keras.layers.")
# Methods of a model object that return what calling it returns.
PREDICT_METHODS = frozenset({"forward", "call", "predict", "predict_on_batch", "__call__"})
# Module methods that return the module itself.
MODULE_SELF_METHODS = frozenset({"to", "cuda", "cpu", "eval", "train", "float", "double", "half", "requires_grad_", "to_empty"})
# Methods that return class probabilities whatever the model is (scikit-learn API).
PROBA_METHODS = frozenset({"predict_proba"})

# ---------------------------------------------------------------- losses
SOFTMAX_LOGITS = "softmax-logits"  # applies its own (log_)softmax: wants logits
SIGMOID_LOGITS = "sigmoid-logits"  # applies its own sigmoid: wants logits
BCE_PROBS = "bce-probs"  # binary cross-entropy on probabilities
CE_PROBS = "ce-probs"  # categorical cross-entropy on probabilities (Keras default)
MSE = "mse"


@dataclass(frozen=True)
class LossSpec:
    family: str
    # Where the prediction goes: (position, keywords). MSE checks both operands.
    pred: tuple[tuple[int, tuple[str, ...]], ...]
    # Keras-style `from_logits=` switches a probability loss to its logits form.
    from_logits_family: str | None = None
    # Keyword arguments of `reduction`-style constructors do not move the prediction.


_TORCH_INPUT = ((0, ("input",)),)
_TORCH_BOTH = ((0, ("input",)), (1, ("target",)))
_TF_LOGITS = ((1, ("logits",)),)
_KERAS_PRED = ((1, ("y_pred",)),)
_KERAS_BOTH = ((0, ("y_true",)), (1, ("y_pred",)))
_KERAS_OUTPUT = ((1, ("output",)),)

# Loss functions, called directly.
LOSS_FUNCS: dict[str, LossSpec] = {
    "torch.nn.functional.cross_entropy": LossSpec(SOFTMAX_LOGITS, _TORCH_INPUT),
    "torch.nn.functional.binary_cross_entropy": LossSpec(BCE_PROBS, _TORCH_INPUT),
    "torch.nn.functional.binary_cross_entropy_with_logits": LossSpec(SIGMOID_LOGITS, _TORCH_INPUT),
    "torch.nn.functional.mse_loss": LossSpec(MSE, _TORCH_BOTH),
    "tensorflow.nn.softmax_cross_entropy_with_logits": LossSpec(SOFTMAX_LOGITS, _TF_LOGITS),
    "tensorflow.nn.softmax_cross_entropy_with_logits_v2": LossSpec(SOFTMAX_LOGITS, _TF_LOGITS),
    "tensorflow.nn.sparse_softmax_cross_entropy_with_logits": LossSpec(SOFTMAX_LOGITS, _TF_LOGITS),
    "tensorflow.nn.sigmoid_cross_entropy_with_logits": LossSpec(SIGMOID_LOGITS, _TF_LOGITS),
    "tensorflow.losses.softmax_cross_entropy": LossSpec(SOFTMAX_LOGITS, _TF_LOGITS),
    "tensorflow.losses.sparse_softmax_cross_entropy": LossSpec(SOFTMAX_LOGITS, _TF_LOGITS),
    "tensorflow.losses.sigmoid_cross_entropy": LossSpec(SIGMOID_LOGITS, _TF_LOGITS),
    "tensorflow.losses.log_loss": LossSpec(BCE_PROBS, ((1, ("predictions",)),)),
    "tensorflow.losses.mean_squared_error": LossSpec(MSE, ((0, ("labels",)), (1, ("predictions",)))),
    "optax.softmax_cross_entropy": LossSpec(SOFTMAX_LOGITS, ((0, ("logits",)),)),
    "optax.softmax_cross_entropy_with_integer_labels": LossSpec(SOFTMAX_LOGITS, ((0, ("logits",)),)),
    "optax.sigmoid_binary_cross_entropy": LossSpec(SIGMOID_LOGITS, ((0, ("logits",)),)),
}
for _n in _expand("keras.{losses,metrics}.{categorical_crossentropy,sparse_categorical_crossentropy}"):
    LOSS_FUNCS[_n] = LossSpec(CE_PROBS, _KERAS_PRED, SOFTMAX_LOGITS)
for _n in _expand("keras.{losses,metrics}.binary_crossentropy"):
    LOSS_FUNCS[_n] = LossSpec(BCE_PROBS, _KERAS_PRED, SIGMOID_LOGITS)
for _n in _expand("keras.{ops,backend}.{categorical_crossentropy,sparse_categorical_crossentropy}"):
    LOSS_FUNCS[_n] = LossSpec(CE_PROBS, _KERAS_OUTPUT, SOFTMAX_LOGITS)
for _n in _expand("keras.{ops,backend}.binary_crossentropy"):
    LOSS_FUNCS[_n] = LossSpec(BCE_PROBS, _KERAS_OUTPUT, SIGMOID_LOGITS)
for _n in _expand("keras.{losses,metrics}.{mean_squared_error,mse,MSE}"):
    LOSS_FUNCS[_n] = LossSpec(MSE, _KERAS_BOTH)

# Loss classes: the instance is called with the prediction.
LOSS_CLASSES: dict[str, LossSpec] = {
    "torch.nn.CrossEntropyLoss": LossSpec(SOFTMAX_LOGITS, _TORCH_INPUT),
    "torch.nn.BCELoss": LossSpec(BCE_PROBS, _TORCH_INPUT),
    "torch.nn.BCEWithLogitsLoss": LossSpec(SIGMOID_LOGITS, _TORCH_INPUT),
    "torch.nn.MSELoss": LossSpec(MSE, _TORCH_BOTH),
    "keras.losses.CategoricalCrossentropy": LossSpec(CE_PROBS, _KERAS_PRED, SOFTMAX_LOGITS),
    "keras.losses.SparseCategoricalCrossentropy": LossSpec(CE_PROBS, _KERAS_PRED, SOFTMAX_LOGITS),
    "keras.losses.BinaryCrossentropy": LossSpec(BCE_PROBS, _KERAS_PRED, SIGMOID_LOGITS),
    "keras.losses.BinaryFocalCrossentropy": LossSpec(BCE_PROBS, _KERAS_PRED, SIGMOID_LOGITS),
    "keras.losses.MeanSquaredError": LossSpec(MSE, _KERAS_BOTH),
}

# `model.compile(loss="...")` strings: all of them expect probabilities.
KERAS_LOSS_STRINGS = {
    "categorical_crossentropy": CE_PROBS,
    "sparse_categorical_crossentropy": CE_PROBS,
    "binary_crossentropy": BCE_PROBS,
    "categorical_focal_crossentropy": CE_PROBS,
    "binary_focal_crossentropy": BCE_PROBS,
}

# ---------------------------------------------------------------- suggestions
# The fused replacement a message names, by framework root.
_LOG_SOFTMAX_BY_ROOT = {
    "torch": "torch.nn.functional.log_softmax",
    "tensorflow": "tf.nn.log_softmax",
    "keras": "keras.ops.log_softmax",
    "jax": "jax.nn.log_softmax",
    "scipy": "scipy.special.log_softmax",
    "numpy": "scipy.special.log_softmax",
}
_LOG_SIGMOID_BY_ROOT = {
    "torch": "torch.nn.functional.logsigmoid",
    "tensorflow": "tf.math.log_sigmoid",
    "keras": "keras.ops.log_sigmoid",
    "jax": "jax.nn.log_sigmoid",
    "scipy": "scipy.special.log_expit",
    "numpy": "scipy.special.log_expit",
}


def framework_of(qualname: str | None) -> str | None:
    return qualname.split(".", 1)[0] if qualname else None


def log_softmax_for(qualname: str | None) -> str:
    return _LOG_SOFTMAX_BY_ROOT.get(framework_of(qualname) or "", "log_softmax")


def log_sigmoid_for(qualname: str | None) -> str:
    return _LOG_SIGMOID_BY_ROOT.get(framework_of(qualname) or "", "log-sigmoid")


def bce_with_logits_for(qualname: str) -> str:
    """Name the with-logits form of a binary cross-entropy, for messages."""
    if qualname.startswith("torch."):
        return "binary_cross_entropy_with_logits / nn.BCEWithLogitsLoss"
    if qualname.startswith("tensorflow.losses."):  # TF1 log_loss
        return "tf.nn.sigmoid_cross_entropy_with_logits"
    return "the same loss with from_logits=True"


# Names that hold labels: in `y * log(p)` they mark a hand-rolled
# cross-entropy even when nothing is known about `p`.
LABEL_NAME = re.compile(r"^(?:y|t|gt)(?:_\w*)?$|^y\d+$|label|target|onehot|one_hot|truth", re.I)
NOT_LABEL_NAME = re.compile(r"pred|prob|hat|logit|out|score", re.I)


def is_label_name(key: str | None) -> bool:
    if not key:
        return False
    last = key.rsplit(".", 1)[-1]
    return bool(LABEL_NAME.search(last)) and not NOT_LABEL_NAME.search(last)
