"""Training in TensorFlow (`backend: tensorflow`): the mlp and dcgan families with Keras 3 on TensorFlow.

`TFTrainer` is a backend of the training loop (training/loop.py), as the torch `Trainer` is: the G/D updates
are `tf.GradientTape` steps compiled with `tf.function`, on the Keras twins of the torch modules
(`ganforge.tf.train.models`, which start from the torch family's own initialisation for the run's seed). The
loop -- logs, sample grids, TensorBoard, loss curves, progress bar, evaluation during training, NaN stop,
signals, disk-full handling, counters and checkpoint files -- is the same code for both backends, so the run
directory is the same and `ganforge sample/eval/export/report` read it unchanged.

What a step does (as `Trainer.train_step`): `d_steps` D updates on fresh batches, each with a G forward in
training mode, then one G update through the last D step's fakes; EMA after the G update.
- Data: the same `BatchStream` (data order from (seed, epoch), flips from (seed, step)), NCHW -> NHWC.
- Randomness: counter-based. z, the GP's eps and every dropout mask are TensorFlow stateless draws keyed by
  (seed, D update counter): a step is a pure function of the checkpointed state, so there is no RNG state
  to store beyond the counters.
- Losses/penalties: `ganforge.tf.train.losses` (torch's formulas); GP weight `losses.gp_weight(cfg)`, drift
  `loss.drift`, in the objective's order (drift, then GP).
- Adam: Keras Adam with torch's betas and eps=1e-8. One known difference: Keras adds eps to sqrt(v) before
  the bias correction (torch after it), so eps acts sqrt(1 - beta2^t) times smaller early on.

Checkpoints: models in the torch layout under `G.`, `D.`, `G_ema.` (BatchNorm running statistics and
num_batches_tracked included); the Adam moments in the torch layout under `opt_G.<param>.exp_avg` and
`.exp_avg_sq` (same for opt_D), with `optim.opt_G = {"format": "keras-adam", "iterations": t, ...}` in the
JSON sidecar; `backend: "tensorflow"` there too. Resume restores weights, moments, step, D-update counter,
images seen and the data position. A torch checkpoint cannot be resumed here (`--init-from` takes its
weights).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch

from ganforge.config import TrainView, data_view, model_view, train_view
from ganforge.data import ImageData
from ganforge.data.from_config import load_data
from ganforge.data.pipeline import BatchStream, seeded_generator
from ganforge.errors import UserError
from ganforge.losses import gp_weight
from ganforge.models import build_discriminator, build_generator
from ganforge.runs import checkpoint as ckpt
from ganforge.runs.rundir import RunDir
from ganforge.tf.layout import from_torch_layout, to_torch_layout
from ganforge.training.distributed import SINGLE, Dist
from ganforge.training.ema import ema_decay
from ganforge.training.loop import BackendBase, Counters
from ganforge.training.objective import Objective
from ganforge.training.trainer import fixed_labels

SUPPORTED_MODELS = ("mlp", "dcgan")
SUPPORTED_PARTS = ("gp", "drift")  # objective parts (see losses.Part) this trainer computes
TF_LOSSES = ("nsgan", "lsgan", "hinge", "wgan", "wgan-gp")  # the keys of ganforge.tf.train.losses.LOSSES


def check_config(cfg: dict[str, Any]) -> None:
    """A config `backend: tensorflow` can train, or a one-line UserError: called before any data is loaded."""
    m, lc, t = cfg["model"], cfg["loss"], train_view(cfg)
    if m["name"] not in SUPPORTED_MODELS:
        raise UserError(f"backend tensorflow trains the {' and '.join(SUPPORTED_MODELS)} families, not "
                        f"model.name={m['name']!r}; train it with backend=torch")
    if lc["name"] not in TF_LOSSES:
        raise UserError(f"backend tensorflow has no loss {lc['name']!r}; use one of {', '.join(TF_LOSSES)}")
    unsupported = [f"{k}={v}" for k, v in (("augment.name", cfg["augment"]["name"]), ("loss.r1_gamma", lc["r1_gamma"]),
                                           ("loss.pl_weight", lc["pl_weight"]),
                                           ("model.d_spectral_norm", m.get("d_spectral_norm")),
                                           ("train.amp", t.amp))
                   if v not in ("none", 0, 0.0, False, None, "off")]
    if unsupported:
        raise UserError(f"{unsupported[0]} is not supported with backend tensorflow (it has GP, drift, d_steps, EMA "
                        "and conditioning); remove it or use backend=torch")


def _tf() -> Any:
    """TensorFlow, imported on first use: `check_config` (the launcher's early check) must stay cheap."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no C++ INFO lines on the progress bar
    import tensorflow as tf

    return tf


class KerasEMA:
    """G_ema of a Keras generator: parameters follow G by torch's lerp, buffers (BatchNorm statistics) are copied."""

    def __init__(self, model: Any, source: Any, decay: float, start: int, kimg: float | None) -> None:
        tf = _tf()
        self.model, self.source, self.decay, self.start, self.kimg = model, source, decay, start, kimg
        src = {e.key: e.var for e in source.entries}
        self.params = [(e.var, src[e.key]) for e in model.entries if e.var.trainable]
        self.buffers = [(e.var, src[e.key]) for e in model.entries if not e.var.trainable]

        def lerp(w: Any, high: bool) -> None:  # torch.lerp: start + w * (end - start), or from the end for w >= 0.5
            for e, s in self.params:
                e.assign(s - (s - e) * (1.0 - w) if high else e + w * (s - e))
            for e, s in self.buffers:
                e.assign(s)

        def copy() -> None:
            for e, s in self.params + self.buffers:
                e.assign(s)

        self._lerp, self._copy = tf.function(lerp), tf.function(copy)

    def update(self, step: int, images: int) -> None:
        """After G update `step`, which consumed `images` real images."""
        decay = ema_decay(step, images, self.decay, self.start, self.kimg)
        if decay == 0.0:
            self._copy()
        else:
            self._lerp(_tf().constant(1.0 - decay, "float32"), 1.0 - decay >= 0.5)


class TFTrainer(BackendBase):
    """The Keras backend of training/loop.Loop: the torch `Trainer`'s constructor and backend interface (train_step,
    state, load_state, init_from, sample_grid, sampler, progress). Only one process (`dist` must be the
    single-process default)."""

    check_config = staticmethod(check_config)  # the launcher calls it before loading data

    def __init__(self, cfg: dict[str, Any], run: RunDir | None = None, data: ImageData | None = None, quiet: bool = False,
                 dist: Dist = SINGLE) -> None:
        check_config(cfg)
        if dist.enabled:
            raise UserError("backend tensorflow trains in one process; leave out --nproc / torchrun")
        tf = _tf()
        from ganforge.tf.train import losses as tf_losses
        from ganforge.tf.train.models import keras_discriminator, keras_generator

        self.cfg, self.run, self.quiet, self.dist = cfg, run, quiet, dist
        t, m = train_view(cfg), model_view(cfg)
        self.t = t
        self._tf_device = self._configure_tf(cfg)
        self.device = torch.device("cpu")  # the torch side: sample conversion, evaluation
        self.seed = cfg["seed"]
        if data is None:
            data = load_data(cfg)
        self.data = data
        self.conditional = m.conditional
        self.num_labels = int(m.num_labels or 0) if self.conditional else 0
        res, ch = cfg["data"]["resolution"], cfg["data"]["channels"]
        with torch.random.fork_rng():  # the torch family's initialisation for this seed, as Trainer does it
            torch.manual_seed(self.seed)
            G_t, D_t = build_generator(cfg), build_discriminator(cfg)
        parts = sorted(set(Objective.from_config(cfg, G_t, D_t).parts) - set(SUPPORTED_PARTS))
        if parts:  # a part added to the objective later is refused rather than silently left out
            raise UserError(f"the objective part {parts[0]!r} is not supported with backend tensorflow; "
                            "use backend=torch")
        if t.compile:
            self._warn("train.compile is a torch option and is ignored with backend tensorflow (its steps are "
                       "tf.function graphs already)")
        with self._on_device():
            self.G = keras_generator(G_t, "G")
            self.D = keras_discriminator(D_t, (res, res, ch), "D")
            self.ema = (KerasEMA(keras_generator(G_t, "G_ema"), self.G, t.ema_decay, t.ema_start, t.ema_kimg)
                        if t.ema else None)
            self.opt_G = self._adam(t.lr_g, t, self.G)
            self.opt_D = self._adam(t.lr_d, t, self.D)
        self._torch_G = G_t  # what evaluation during training runs (the Keras weights copied in)
        self.d_loss, self.g_loss = tf_losses.LOSSES[cfg["loss"]["name"]]
        self._gp_term = tf_losses.gradient_penalty
        self.gp_weight, self.drift = gp_weight(cfg), float(cfg["loss"]["drift"])
        self.d_steps = t.d_steps
        self.batch_size = t.batch_size
        self.stream = BatchStream(data.images, data.labels, self.batch_size, self.seed, torch.device("cpu"),
                                  hflip=data_view(cfg).hflip)
        self.z_dim = m.z_dim
        n = t.n_samples
        self.fixed_z = torch.randn(n, self.z_dim, generator=seeded_generator(self.seed, -1))  # a torch run's grid noise
        self.fixed_labels = fixed_labels(cfg, data, n, self.device) if self.conditional else None
        self._fixed = (tf.constant(self.fixed_z.numpy()), self._label_vectors(self.fixed_labels))
        self.counters = Counters()
        self._d_only = tf.function(self._d_only_step)
        self._d_and_g = tf.function(self._d_and_g_step)

    # --- TensorFlow set-up ------------------------------------------------------------------------------------
    def _configure_tf(self, cfg: dict[str, Any]) -> str | None:
        """TF's threads (train.threads) and device: cpu pins the CPU, cuda needs a GPU TensorFlow sees."""
        tf = _tf()
        threads = train_view(cfg).threads
        if threads:  # both pools: at most `threads` ops' worth of threads, like torch's one intra-op pool
            torch.set_num_threads(threads)  # the torch side: evaluation during training
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already started in this process: its thread pools are fixed
                if tf.config.threading.get_intra_op_parallelism_threads() not in (0, threads):
                    self._warn("train.threads is ignored: TensorFlow already runs in this process")
        dev = cfg["device"]
        if dev == "cpu":
            return "/CPU:0"
        if dev == "cuda":
            if not tf.config.list_physical_devices("GPU"):
                raise UserError("device=cuda but TensorFlow sees no GPU (the tensorflow-cpu wheel, or no CUDA "
                                "libraries); use device=cpu or install the GPU build of tensorflow")
            return "/GPU:0"
        return None

    def _on_device(self) -> contextlib.AbstractContextManager:
        return _tf().device(self._tf_device) if self._tf_device else contextlib.nullcontext()

    @staticmethod
    def _adam(lr: float, t: TrainView, model: Any) -> Any:
        import keras

        opt = keras.optimizers.Adam(learning_rate=lr, beta_1=t.beta1, beta_2=t.beta2, epsilon=1e-8)
        opt.build(model.trainable_variables)
        return opt

    def _label_vectors(self, labels: torch.Tensor | None) -> Any:
        """Class indices -> one-hot rows, attribute rows as they are (models.layers.label_vector), as a tf tensor."""
        if labels is None or not self.conditional:
            return None
        y = labels.detach().cpu().numpy()
        y = np.eye(self.num_labels, dtype=np.float32)[y] if y.ndim == 1 else y.astype(np.float32)
        return _tf().constant(y)

    # --- the step ---------------------------------------------------------------------------------------------
    def _keys(self, counter: Any) -> Any:
        """Six stateless seeds for D update `counter`: z, dropout on real / fake / x_hat / G-step fake, GP eps."""
        tf = _tf()
        base = tf.stack([tf.constant(self.seed, tf.int64), counter])
        return tf.random.experimental.stateless_split(base, 6)

    def _update_d(self, real: Any, fake: Any, labels: Any, keys: Any) -> tuple[Any, Any]:
        tf = _tf()
        D = self.D
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([v.value for v in D.trainable_variables])
            d_real = D(real, labels, training=True, seed=keys[1])
            d_fake = D(tf.stop_gradient(fake), labels, training=True, seed=keys[2])
            loss_d = self.d_loss(d_real, d_fake)
            total = loss_d
            if self.drift:
                total = total + self.drift * tf.reduce_mean(tf.square(d_real))
            gp = tf.zeros(())
            if self.gp_weight:
                eps = tf.random.stateless_uniform((tf.shape(real)[0], 1, 1, 1), seed=keys[5])
                gp = self._gp_term(D, real, fake, labels, eps, training=True, seed=keys[3])
                total = total + self.gp_weight * gp
        grads = tape.gradient(total, D.trainable_variables)
        self.opt_D.apply_gradients(zip(grads, D.trainable_variables, strict=True))
        return loss_d, gp

    def _z(self, keys: Any, n: Any) -> Any:
        return _tf().random.stateless_normal((n, self.z_dim), seed=keys[0])

    def _d_only_step(self, real: Any, labels: Any, counter: Any) -> tuple[Any, Any]:
        """One D update of the first d_steps - 1 (the G forward is not recorded)."""
        keys = self._keys(counter)
        fake = self.G(self._z(keys, _tf().shape(real)[0]), labels, training=True)
        return self._update_d(real, fake, labels, keys)

    def _d_and_g_step(self, real: Any, labels: Any, counter: Any) -> tuple[Any, Any, Any]:
        """The last D update, then the G update through its fakes (D already updated, as in torch)."""
        tf = _tf()
        keys = self._keys(counter)
        G = self.G
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([v.value for v in G.trainable_variables])
            fake = G(self._z(keys, tf.shape(real)[0]), labels, training=True)
            with tape.stop_recording():
                loss_d, gp = self._update_d(real, fake, labels, keys)
            loss_g = self.g_loss(self.D(fake, labels, training=True, seed=keys[4]))
        grads = tape.gradient(loss_g, G.trainable_variables)
        self.opt_G.apply_gradients(zip(grads, G.trainable_variables, strict=True))
        return loss_d, loss_g, gp

    def _batch(self) -> tuple[Any, Any]:
        """The next batch of the shared BatchStream, NHWC. Its torch ops (a gather and a scale of ~64 KB) run on
        one thread: torch's OpenMP pool next to TensorFlow's busy threads made them 300x slower (29 ms vs 0.1 ms
        per batch on the 2-core machine), and one thread loses nothing on ops this small."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            x, y = self.stream.next(self.counters.d_iter)
        finally:
            torch.set_num_threads(threads)
        real = _tf().constant(np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy()))
        return real, self._label_vectors(y)

    def train_step(self) -> dict[str, Any]:  # type: ignore[override]
        """`d_steps` D updates, then one G update; the logged values as NumPy scalars."""
        tf, c = _tf(), self.counters
        with self._on_device():
            for i in range(self.d_steps):
                real, labels = self._batch()
                counter = tf.constant(c.d_iter, tf.int64)
                if i < self.d_steps - 1:
                    loss_d, gp = self._d_only(real, labels, counter)
                else:
                    loss_d, loss_g, gp = self._d_and_g(real, labels, counter)
                c.d_iter += 1
                c.images_seen += int(real.shape[0])
            if self.ema is not None:
                self.ema.update(c.step, int(real.shape[0]) * self.d_steps)
        c.step += 1
        out = {"loss_d": loss_d.numpy(), "loss_g": loss_g.numpy()}
        if self.gp_weight:
            out["gp"] = gp.numpy()
        return out

    # --- sampling and evaluation -------------------------------------------------------------------------------
    def progress(self) -> dict[str, float]:
        return {}

    def sync_for_checkpoint(self) -> None:
        return None  # one process

    @property
    def keras_sampler(self) -> Any:
        """The Keras generator one samples from: G_ema when the run keeps one, else G."""
        return self.ema.model if self.ema is not None else self.G

    @property
    def sampler(self) -> torch.nn.Module:
        """The torch generator with the sampling generator's current weights (for evaluation during training)."""
        from ganforge.tf.train.models import torch_state

        self._torch_G.load_state_dict({k: torch.from_numpy(v) for k, v in torch_state(self.keras_sampler).items()})
        return self._torch_G.eval()

    def sample_grid(self) -> torch.Tensor:
        with self._on_device():
            x = self.keras_sampler(*self._fixed, training=False)
        return torch.from_numpy(np.ascontiguousarray(x.numpy().transpose(0, 3, 1, 2)))

    # --- checkpoints ------------------------------------------------------------------------------------------
    def _named_models(self) -> tuple[tuple[str, Any], ...]:
        return (("G", self.G), ("D", self.D)) + ((("G_ema", self.ema.model),) if self.ema is not None else ())

    def state(self, ranks: list[dict[str, Any]] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (torch layout) and this backend's metadata of a checkpoint (the loop adds the counters)."""
        import keras
        import tensorflow as tf

        from ganforge.tf.train.models import torch_state

        tensors = {
            f"{p}.{k}": torch.from_numpy(v) for p, model in self._named_models() for k, v in torch_state(model).items()
        }
        optim = {}
        for prefix, opt, model in (("opt_G", self.opt_G, self.G), ("opt_D", self.opt_D, self.D)):
            moments, optim[prefix] = _adam_state(opt, model)
            tensors.update({f"{prefix}.{k}": torch.from_numpy(v) for k, v in moments.items()})
        meta = {
            "backend": "tensorflow",
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "parts": {},
            "rng": {"scheme": "tensorflow stateless: (seed, d_iter)", "seed": self.seed},
            "data": self.stream.state_dict(),
            "optim": optim,
        }
        return tensors, meta

    def _load_models(self, c: ckpt.Checkpoint, with_d: bool = True) -> None:
        from ganforge.tf.train.models import load_torch_state

        what = f" {c.path.name}"
        state = {k: v.numpy() for k, v in c.tensors.items()}
        pairs = [("G", self.G)] + ([("D", self.D)] if with_d else [])
        if self.ema is not None:
            pairs.append((c.generator_prefix(), self.ema.model))
        for prefix, model in pairs:
            sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            if not sub:
                raise UserError(
                    f"checkpoint{what} has no {prefix} tensors; it is not a ganforge checkpoint of this model"
                )
            load_torch_state(model, sub, what)

    def load_state(self, c: ckpt.Checkpoint) -> None:
        """Restore models, Adam moments and iterations, step, D-update counter, images seen and data position."""
        if c.meta.get("backend", "torch") != "tensorflow":
            raise UserError(f"{c.path.name} was written by the torch backend; resume it with backend=torch, or start "
                            "a new TensorFlow run from its weights with --init-from")
        c.require_state("optim", "data")
        self._load_models(c)
        for prefix, opt, model in (("opt_G", self.opt_G, self.G), ("opt_D", self.opt_D, self.D)):
            _load_adam(opt, model, {k[len(prefix) + 1 :]: v.numpy() for k, v in c.tensors.items()
                                    if k.startswith(prefix + ".")}, c.meta["optim"][prefix], f" {c.path.name}")
        self.counters.restore(c, self.batch_size, self.d_steps)
        self.stream.load_state_dict(c.meta["data"])

    def init_from(self, c: ckpt.Checkpoint) -> None:
        """Fine-tuning: weights (G, D, G_ema) from a checkpoint of either backend; optimizers and step start fresh."""
        self._load_models(c, with_d=any(k.startswith("D.") for k in c.tensors))


# --- Adam state <-> torch-layout tensors ------------------------------------------------------------------------
def _adam_slots(opt: Any, model: Any) -> list[tuple[Any, Any, Any]]:
    """(entry, momentum, velocity) per trainable weight; Keras names an optimizer variable after the path of
    the weight it belongs to (`<path with _>_momentum`)."""
    by_name = {v.name: v for v in opt.variables}
    out = []
    for e in model.entries:
        if not e.var.trainable:
            continue
        stem = e.var.path.replace("/", "_")
        try:
            out.append((e, by_name[stem + "_momentum"], by_name[stem + "_velocity"]))
        except KeyError:
            raise RuntimeError(f"Keras Adam has no slots named after {e.var.path}; its naming changed") from None
    return out


def _adam_state(opt: Any, model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    moments = {}
    for e, m, v in _adam_slots(opt, model):
        moments[f"{e.key}.exp_avg"] = np.array(to_torch_layout(e, m.numpy()), order="C")
        moments[f"{e.key}.exp_avg_sq"] = np.array(to_torch_layout(e, v.numpy()), order="C")
    plain = {"format": "keras-adam", "iterations": int(opt.iterations.numpy()), "learning_rate": float(opt.learning_rate),
             "beta_1": float(opt.beta_1), "beta_2": float(opt.beta_2), "epsilon": float(opt.epsilon)}
    return moments, plain


def _load_adam(opt: Any, model: Any, tensors: dict[str, np.ndarray], plain: dict[str, Any], what: str) -> None:
    if plain.get("format") != "keras-adam":
        raise UserError(f"checkpoint{what} holds no Keras optimizer state; resume it with the backend that wrote it")
    for e, m, v in _adam_slots(opt, model):
        for slot, var in (("exp_avg", m), ("exp_avg_sq", v)):
            key = f"{e.key}.{slot}"
            if key not in tensors:
                raise UserError(f"checkpoint{what} has no optimizer state {key}; it does not fit this model")
            var.assign(from_torch_layout(e, tensors[key]))
    opt.iterations.assign(int(plain["iterations"]))

