"""Semantic directions in a generator's latent space, and the file that carries them.

A `Directions` is K unit vectors in one space (`z`, or `w` for style models) with names, an importance per
direction (descending), the latent's standard deviation along each (`scale`: strengths are in these units) and
the fingerprint of the generator it was computed on. Methods are registered in `METHODS` (one function each):

- `sefa`: closed-form factorisation (Shen & Zhou 2021) of the first layer that reads the latent;
- `pca`: GANSpace (Härkönen et al. 2020): PCA of w, or of first-block activations regressed back to z;
- `classifier`: InterFaceGAN (Shen et al. 2020): one linear boundary per class of a classifier's scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge.data.sources.idx import FASHION_MNIST, MNIST
from ganforge.errors import UserError
from ganforge.latent.core import check_fingerprint, fingerprint, is_style, load_npz, save_npz
from ganforge.models.layers import label_vector
from ganforge.registry import Registry

FORMAT = "ganforge-directions/1"
SCALE_SAMPLES = 4000  # w samples that measure the latent's std along each direction
Classifier = Callable[[torch.Tensor], torch.Tensor]  # images NCHW [-1, 1] -> logits (N, C)


@dataclass
class Directions:
    """`vectors` (K, dim) unit rows in `space`; `importance` (K,) descending; `scale` (K,) the std of the latent
    along each direction (1 in z), so that strength s moves a latent by s * scale[k] * vectors[k]."""

    vectors: torch.Tensor
    space: str
    names: list[str]
    importance: torch.Tensor
    scale: torch.Tensor
    method: str
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def index(self, name_or_index: str | int) -> int:
        """A direction by name (case-insensitive) or index; anything else is a one-line error listing the names."""
        text = str(name_or_index).strip()
        lookup = {n.lower(): i for i, n in enumerate(self.names)}
        if text.lower() in lookup:
            return lookup[text.lower()]
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(self):
            return int(text)
        shown = ", ".join(self.names[:12]) + (", ..." if len(self) > 12 else "")
        raise UserError(f"no direction {text!r} in this file; use a name ({shown}) or an index 0-{len(self) - 1}")

    def save(self, path: str | Path) -> Path:
        arrays = {"vectors": self.vectors.float().numpy(), "importance": self.importance.double().numpy(),
                  "scale": self.scale.double().numpy()}
        header = {"format": FORMAT, "space": self.space, "fingerprint": self.fingerprint, "names": self.names,
                  "method": self.method, "info": self.info}
        return save_npz(Path(path), arrays, header)

    @classmethod
    def load(cls, path: str | Path, G: nn.Module | None = None) -> Directions:
        """A direction file; with G, one computed for another generator is refused."""
        arrays, header = load_npz(Path(path), "direction file")
        if header.get("format") != FORMAT or "vectors" not in arrays:
            raise UserError(f"direction file {path} is not a ganforge direction file (format "
                            f"{header.get('format')!r}); make it with ganforge directions")
        if G is not None:
            check_fingerprint(header, G, Path(path), "direction file")
        return cls(torch.from_numpy(arrays["vectors"]), header["space"], [str(n) for n in header["names"]],
                   torch.from_numpy(arrays["importance"]), torch.from_numpy(arrays["scale"]), header["method"],
                   header["fingerprint"], header.get("info", {}))

    def to_metadata(self) -> dict[str, Any]:
        """JSON-ready, for exported models: everything needed to edit without ganforge."""
        rule = {"z": "z' = z + strength * scale[k] * vectors[k]",
                "w": "ws'[:, layers] = ws[:, layers] + strength * scale[k] * vectors[k] (all layers by default)"}
        return {"method": self.method, "space": self.space, "names": self.names,
                "importance": self.importance.tolist(), "scale": self.scale.tolist(),
                "vectors": self.vectors.float().tolist(), "fingerprint": self.fingerprint,
                "edit": rule[self.space], "strengths": "in standard deviations of the latent, typically -3 to 3"}


@dataclass(frozen=True)
class Spec:
    """What a method may use: `k` directions, `n` samples, a `seed`, a `classifier` with `class_names` (the
    classifier method), `label_kind` ("classes"/"attributes") to sample labels of conditional generators, and for
    sefa on style models the ws `layers` whose affines are factorised (default all)."""

    k: int | None = None
    n: int | None = None
    seed: int = 0
    classifier: Classifier | None = None
    class_names: list[str] | None = None
    multi_label: bool = False
    label_kind: str | None = None
    layers: list[int] | None = None


@dataclass
class Found:
    """A method's raw result, before `compute_directions` normalises, orders and measures it."""

    vectors: torch.Tensor
    importance: torch.Tensor
    names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)


Method = Callable[[nn.Module, Spec], Found]
METHODS: Registry[Method] = Registry("direction method")


def latent_space(G: nn.Module) -> str:
    """Where directions live: w for style models (more disentangled, as every reference edits there), else z."""
    return "w" if is_style(G) else "z"


# --- what each family's latent enters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """`weight(G)`: the first layer's weight as a (outputs, z_dim) matrix (label columns dropped). `features(G)`:
    (module, True = its input / False = its output): the first nonlinear feature map, GANSpace's z-space layer."""

    weight: Callable[[nn.Module], torch.Tensor]
    features: Callable[[nn.Module], tuple[nn.Module, bool]]


def _conv_t_rows(G: nn.Module) -> torch.Tensor:
    # ConvTranspose2d from a 1x1 input, weight (in, out, k, k): output unit (o, y, x) = sum_i W[i, o, y, x] z_i
    w = G.convs[0].weight
    return w.permute(1, 2, 3, 0).reshape(-1, w.shape[0])


ENTRIES: dict[str, Entry] = {
    "DCGANGenerator": Entry(_conv_t_rows, lambda G: (G.convs[1] if len(G.convs) > 1 else G.to_img, True)),
    "SNGANGenerator": Entry(lambda G: G.fc.weight, lambda G: (G.blocks[0], False)),
    "MLPGenerator": Entry(lambda G: G.net[0].weight, lambda G: (G.net[2], True)),
    "ProGANGenerator": Entry(
        lambda G: G.blocks[0].dense.weight * G.blocks[0].dense.scale, lambda G: (G.blocks[0], False)
    ),
}


def entry(G: nn.Module, method: str) -> Entry:
    name = type(G).__name__
    if name not in ENTRIES:
        raise UserError(f"--method {method} does not know where a {name} reads its latent (known: "
                        f"{', '.join(ENTRIES)} and style models); use --method classifier")
    return ENTRIES[name]


def style_affines(G: nn.Module, layers: list[int] | None = None) -> torch.Tensor:
    """The style affines of a style model's modulated convs (toRGB excluded, as rosinality's
    closed_form_factorization), stacked: (sum of input channels, w_dim), with the equalized-lr scale applied."""
    from ganforge.models.stylegan2 import SynthesisLayer

    rows = [layer.affine.weight * layer.affine.scale for i, layer in G.synthesis.modulated_layers()
            if isinstance(layer, SynthesisLayer) and (layers is None or i in layers)]
    if not rows:
        raise UserError(f"--layers {layers}: no modulated conv reads those ws; pick other layers")
    return torch.cat(rows)


# --- sampling ------------------------------------------------------------------------------------------------------


def sample_labels(G: nn.Module, n: int, kind: str | None, gen: torch.Generator) -> torch.Tensor | None:
    """Labels for n samples of a conditional generator: every class in turn, or random attribute bits."""
    if not getattr(G, "num_labels", None):
        return None
    if kind == "attributes":
        return (torch.rand(n, G.num_labels, generator=gen) > 0.5).float()
    return label_vector(torch.arange(n) % G.num_labels, G.num_labels)


@torch.no_grad()
def sample_latents(G: nn.Module, spec: Spec, n: int, stream: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n seeded latents in the directions' space (z, or w without truncation) and their labels."""
    gen = torch.Generator().manual_seed(spec.seed * 1000 + stream)
    z = torch.randn(n, G.z_dim, generator=gen)
    labels = sample_labels(G, n, spec.label_kind, gen)
    if not is_style(G):
        return z, labels
    device = next(G.parameters()).device
    ws = [G.mapping(z[i : i + 512].to(device), None if labels is None else labels[i : i + 512].to(device),
                    update_w_avg=False)[:, 0].cpu() for i in range(0, n, 512)]
    return torch.cat(ws), labels


@torch.no_grad()
def render_space(G: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, batch: int = 256) -> torch.Tensor:
    """Images (CPU, [-1, 1]) of latents in the directions' space."""
    device = next(G.parameters()).device
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(device)
        if is_style(G):
            img = G.synthesis(xb.unsqueeze(1).repeat(1, G.num_ws, 1), noise_mode="const")
        else:
            img = G(xb, None if labels is None else labels[i : i + batch].to(device))
        out.append(img.float().clamp(-1.0, 1.0).cpu())
    return torch.cat(out)


def top_components(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA of rows x (N, D): (components (k, D) orthonormal, their variances (k,), total variance), descending.
    Exact, from the eigendecomposition of the smaller of XᵀX and XXᵀ (3x faster than an SVD of X here)."""
    x = x.double() - x.double().mean(0)
    total = x.square().sum() / (len(x) - 1)
    if x.shape[1] <= x.shape[0]:
        values, vectors = torch.linalg.eigh(x.T @ x)
        comp = vectors.flip(1)[:, :k].T
    else:
        values, u = torch.linalg.eigh(x @ x.T)
        comp = (x.T @ u.flip(1)[:, :k]).T
        comp = comp / comp.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return comp, values.flip(0)[:k].clamp_min(0.0) / (len(x) - 1), total


# --- methods -------------------------------------------------------------------------------------------------------


@METHODS.register("sefa")
def sefa(G: nn.Module, spec: Spec) -> Found:
    """Eigenvectors of AᵀA for the weight A that reads the latent, each output's weight row normalised to unit
    length first (as the official SeFa code does): the latent directions the first layer amplifies most."""
    if spec.n is not None:
        raise UserError("--method sefa is closed-form and samples nothing; leave out --n")
    if is_style(G):
        a = style_affines(G, spec.layers)
    else:
        a = entry(G, "sefa").weight(G)[:, : G.z_dim]
    a = a.detach().double().cpu()
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    values, vectors = torch.linalg.eigh(a.T @ a)  # ascending
    return Found(vectors.T.flip(0), values.flip(0), info={"layers": spec.layers})


@METHODS.register("pca")
def pca(G: nn.Module, spec: Spec) -> Found:
    """GANSpace: principal components of w (style models), or of the first block's activations with each
    component regressed back to z (least squares from the whitened PCA coordinates to z)."""
    n = spec.n or 5000
    k = spec.k or 10
    x, labels = sample_latents(G, spec, n)
    if is_style(G):
        comp, var, total = top_components(x, k)
        return Found(comp, var / total, info={"n": n, "explained_variance": var.tolist()})
    module, use_input = entry(G, "pca").features(G)
    acts: list[torch.Tensor] = []

    def grab(_m: nn.Module, inp: Any, out: Any = None) -> None:
        acts.append((inp[0] if use_input else out).detach().flatten(1).cpu())

    hook = module.register_forward_pre_hook(grab) if use_input else module.register_forward_hook(grab)
    try:
        render_space(G, x, labels)
    finally:
        hook.remove()
    feats = torch.cat(acts).double()
    k = min(k, feats.shape[1], n - 1)
    comp, var, total = top_components(feats, k)
    coords = (feats - feats.mean(0)) @ comp.T / var.sqrt()
    m = torch.linalg.lstsq(coords, x.double()).solution  # (k, z_dim): z ≈ coords @ m
    return Found(m, var / total, info={"n": n, "feature_dim": int(feats.shape[1]), "explained_variance": var.tolist()})


def logistic_fit(x: torch.Tensor, y: torch.Tensor, l2: float = 1.0, steps: int = 50) -> tuple[torch.Tensor, float]:
    """L2-regularised logistic regression by Newton's method (float64): argmin sum BCE(x w + b, y) + l2/2 |w|².
    Returns (w, b). Exact and deterministic; the dimensions here (<= 512) make the Hessian cheap."""
    x = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    y = y.double()
    reg = torch.full((x.shape[1],), l2, dtype=torch.float64)
    reg[-1] = 0.0
    beta = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(x @ beta)
        grad = x.T @ (p - y) + reg * beta
        hess = (x.T * (p * (1 - p))) @ x + torch.diag(reg)
        delta = torch.linalg.solve(hess, grad)
        beta = beta - delta
        if delta.abs().max() < 1e-10:
            break
    return beta[:-1], float(beta[-1])


def class_scores(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Per-class log-odds: the logits of a multi-label (sigmoid) classifier, log p_c - log(1 - p_c) of a softmax."""
    if multi_label:
        return logits
    others = torch.stack([torch.cat([logits[:, :c], logits[:, c + 1 :]], 1).logsumexp(1)
                          for c in range(logits.shape[1])], 1)
    return logits - others


@METHODS.register("classifier")
def classifier(G: nn.Module, spec: Spec, ratio: float = 0.05, held_out: float = 0.3) -> Found:
    """InterFaceGAN: score n samples with the classifier; per class, the top and bottom `ratio` of samples by its
    log-odds are positives and negatives; a logistic boundary fitted on 70% of them gives the direction (its
    normal), and its accuracy on the other 30% the importance. InterFaceGAN takes 2% of 500k samples; 5% of the
    CPU default 5000 gave the demo run's class directions the best held-out accuracy and edits (README)."""
    if spec.classifier is None:
        raise UserError("--method classifier needs a classifier: pass --network NAME")
    n = spec.n or 5000
    x, labels = sample_latents(G, spec, n)
    with torch.no_grad():
        images = render_space(G, x, labels)
        logits = torch.cat([spec.classifier(images[i : i + 500]).float().cpu() for i in range(0, n, 500)])
    scores = class_scores(logits, spec.multi_label)
    names = spec.class_names or [f"class{c}" for c in range(logits.shape[1])]
    if len(names) != logits.shape[1]:
        raise UserError(f"the classifier has {logits.shape[1]} outputs but {len(names)} class names")
    m = max(2, int(n * ratio))
    if 2 * m > n:
        raise UserError(f"--n {n} is too small for the classifier method; use --n 100 or more")
    center = x.double().mean(0)
    perm = torch.randperm(2 * m, generator=torch.Generator().manual_seed(spec.seed))
    cut = int(2 * m * (1 - held_out))
    vectors, accuracy = [], []
    for c in range(scores.shape[1]):
        order = scores[:, c].argsort(descending=True)
        idx = torch.cat([order[:m], order[-m:]])[perm]
        y = torch.cat([torch.ones(m), torch.zeros(m)])[perm]
        xs = x[idx].double() - center
        w, b = logistic_fit(xs[:cut], y[:cut])
        pred = (xs[cut:] @ w + b) > 0
        accuracy.append(float((pred == y[cut:].bool()).double().mean()))
        vectors.append(w)
    info = {"n": n, "ratio": ratio, "held_out": held_out, "held_out_accuracy": dict(zip(names, accuracy, strict=True)),
            "class_share": {nm: float((logits.argmax(1) == c).double().mean()) for c, nm in enumerate(names)}}
    return Found(torch.stack(vectors), torch.tensor(accuracy, dtype=torch.float64), list(names), info)


# --- the API -------------------------------------------------------------------------------------------------------


@torch.no_grad()
def latent_scale(G: nn.Module, vectors: torch.Tensor, space: str, seed: int = 0) -> torch.Tensor:
    """The standard deviation of the latent along each unit direction: 1 in z (z ~ N(0, I)), measured from
    samples of the mapping in w (as GANSpace does), so strength 3 means "3 sigma" in either space."""
    if space == "z":
        return torch.ones(len(vectors), dtype=torch.float64)
    w, _ = sample_latents(G, Spec(seed=seed), SCALE_SAMPLES, stream=7)
    return (w.double() @ vectors.double().T).std(0)


def compute_directions(G: nn.Module, method: str, spec: Spec | None = None) -> Directions:
    """Directions of `method` for G: unit rows, signs fixed (largest component positive), ordered by importance
    descending, the first `spec.k` kept, with the latent's std along each and G's fingerprint."""
    spec = spec or Spec()
    fn = METHODS.get(method)
    if spec.k is not None and spec.k < 1:
        raise UserError(f"--k must be at least 1, got {spec.k}")
    if spec.n is not None and spec.n < 10:
        raise UserError(f"--n must be at least 10 samples, got {spec.n}")
    was_training = G.training
    G.eval()
    try:
        found = fn(G, spec)
    finally:
        G.train(was_training)
    v = found.vectors.double()
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if method != "classifier":  # a class direction's sign means something; an eigenvector's does not
        v = v * torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
    order = torch.argsort(found.importance.double(), descending=True, stable=True)[: spec.k]
    names = found.names or [f"{method}{i}" for i in range(len(v))]
    space = latent_space(G)
    vectors = v[order].float()
    return Directions(vectors, space, [names[i] for i in order.tolist()], found.importance.double()[order],
                      latent_scale(G, vectors, space, spec.seed), method, fingerprint(G),
                      {**found.info, "seed": spec.seed})


def condition(dirs: Directions, target: str | int, keep: list[str | int], G: nn.Module | None = None) -> Directions:
    """InterFaceGAN's conditional manipulation: `target` with the span of the `keep` directions projected out,
    so moving along it leaves their scores unchanged to first order. One direction, named TARGET_keep_KEEP; its
    scale is measured on G in w (without G, the target's is kept: exact in z, an approximation in w)."""
    t = dirs.index(target)
    ks = [dirs.index(k) for k in keep]
    if t in ks:
        raise UserError(f"--condition {dirs.names[t]} is also in --keep; keep other directions")
    basis, _ = torch.linalg.qr(dirs.vectors[ks].double().T)  # orthonormal columns spanning the kept directions
    a = dirs.vectors[t].double()
    out = a - basis @ (basis.T @ a)
    if out.norm() < 1e-6:
        raise UserError(f"{dirs.names[t]} lies in the span of the kept directions: nothing is left to edit along")
    out = out / out.norm()
    cosines = {dirs.names[k]: float(dirs.vectors[k].double() @ a) for k in ks}
    name = f"{dirs.names[t]}_keep_{'_'.join(dirs.names[k] for k in ks)}"
    info = {**dirs.info, "conditioned": {"target": dirs.names[t], "keep": [dirs.names[k] for k in ks],
                                         "cosine_before": cosines}}
    vec = out.float()[None]
    scale = dirs.scale[t : t + 1].clone() if G is None else latent_scale(G, vec, dirs.space, dirs.info.get("seed", 0))
    return Directions(vec, dirs.space, [name], dirs.importance[t : t + 1].clone(), scale, dirs.method,
                      dirs.fingerprint, info)


# --- classifiers by name -------------------------------------------------------------------------------------------

CLASS_NAMES = {"fashion-mnist": list(FASHION_MNIST.classes), "mnist": list(MNIST.classes)}


def network_classifier(name: str, weights: str | None = None) -> tuple[Classifier, list[str] | None, bool]:
    """A registered feature network with logits as a classifier: (images -> logits, class names, multi-label)."""
    from ganforge.metrics.domain import DOMAIN_DATASETS
    from ganforge.metrics.features import build_extractor

    kwargs = {} if weights is None else {"weights": weights}
    net = build_extractor(name, **kwargs)
    if not net.num_classes:
        raise UserError(f"feature network {name!r} has no class outputs; --method classifier needs one with logits")

    def logits(images: torch.Tensor) -> torch.Tensor:
        return net(images)["logits"]

    names = CLASS_NAMES.get(DOMAIN_DATASETS.get(name, ""))
    return logits, names, bool(getattr(net, "multi_label", False))


def run_spec(cfg: dict[str, Any], method: str, *, k: int | None = None, n: int | None = None, seed: int = 0,
             network: str | None = None, network_weights: str | None = None) -> Spec:
    """The Spec for a run's generator: its label kind and, for the classifier method, `network` or the run's
    domain classifier (the 10-class Fashion-MNIST / MNIST CNN)."""
    from ganforge.metrics.domain import DOMAIN_DATASETS
    from ganforge.metrics.evaluate import default_network

    m = cfg["model"]
    kind = m.get("label_kind") if m.get("conditional") else None
    if method != "classifier":
        if network is not None:
            raise UserError(f"--network is for --method classifier, not {method}")
        return Spec(k=k, n=n, seed=seed, label_kind=kind)
    if network is None:
        network = default_network(cfg["data"]["source"])
        if network not in DOMAIN_DATASETS:
            raise UserError(f"this run's data ({cfg['data']['source']}) has no shipped classifier; pass --network "
                            "NAME, a feature network with class outputs")
    fn, names, multi = network_classifier(network, network_weights)
    return Spec(k=k, n=n, seed=seed, classifier=fn, class_names=names, multi_label=multi, label_kind=kind)


def cached_directions(run_dir: str | Path, G: nn.Module, method: str, spec: Spec | None = None) -> Directions:
    """RUN_DIR/directions/<method>.npz when it belongs to this generator, else computed now (with `spec`, default
    `run_spec` of the run's config) and stored there atomically for next time: the web playground's directions.
    A newer checkpoint's generator has another fingerprint, so its directions are recomputed."""
    path = Path(run_dir) / "directions" / f"{method}.npz"
    METHODS.get(method)
    if path.is_file():
        try:
            return Directions.load(path, G)
        except UserError:
            pass  # another checkpoint's (or a damaged) cache: recompute below
    if spec is None:
        from ganforge.runs.rundir import RunDir

        spec = run_spec(RunDir.open(Path(run_dir)).read_config(), method)
    dirs = compute_directions(G, method, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    dirs.save(path)
    return dirs


def check_out(path: str | Path, overwrite: bool, suffix: str = ".npz") -> Path:
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise UserError(f"--out {p}: a direction file's name must end in {suffix}")
    if p.exists() and (p.is_dir() or not overwrite):
        raise UserError(f"{p} already exists; choose another --out or pass --overwrite")
    return p


def directions_for_run(
    run_dir: str | Path, method: str, out: str | Path, *, k: int | None = None, n: int | None = None, seed: int = 0,
    network: str | None = None, network_weights: str | None = None, layers: str | None = None,
    condition_on: str | None = None, keep: list[str] | None = None, ema: bool = True, device: str = "cpu",
    overwrite: bool = False,
) -> Directions:
    """`ganforge directions`: compute a run's directions (optionally one conditioned on others) into `out`.
    Every argument is checked before the work, and nothing is written on an error."""
    from ganforge.generate import load_generator, style_layers

    METHODS.get(method)
    path = check_out(out, overwrite)
    if (condition_on is None) != (not keep):
        raise UserError("--condition A and --keep B go together: A with the directions B projected out")
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    spec = run_spec(cfg, method, k=k, n=n, seed=seed, network=network, network_weights=network_weights)
    if layers is not None:
        if method != "sefa" or not is_style(G):
            raise UserError("--layers picks the style layers sefa factorises; it needs --method sefa on a style model")
        spec = replace(spec, layers=style_layers(G, layers))
    if condition_on is not None:
        spec = replace(spec, k=None)  # condition on any direction, not only the top k
    dirs = compute_directions(G, method, spec)
    if condition_on is not None:
        dirs = condition(dirs, condition_on, list(keep or []), G)
    dirs.save(path)
    return dirs
