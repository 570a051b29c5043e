"""Generator backends: diffusers text-to-image, AutoencoderKL reconstruction, entry-point plugins.

A generator is any object with the :class:`Generator` protocol. :func:`create_generator`
turns a :class:`~deepsift.generate.spec.GeneratorSpec` into one; :meth:`Generator.load`
loads weights and raises :class:`GeneratorError` when they cannot be loaded, so a build can
load every generator before any work starts.

Plugins: a distribution declares, e.g. in its ``pyproject.toml``::

    [project.entry-points."deepsift.generators"]
    mine = "my_package.gen:MyGenerator"

and ``--generator x=plugin:mine,foo=1`` calls ``MyGenerator(name="x", foo="1")``.
"""
from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from PIL import Image

from ..exceptions import GeneratorError, ModelNotFoundError
from ..hub import hub_access, looks_like_hub_id, quiet_loading
from .spec import GeneratorSpec

ENTRY_POINT_GROUP = "deepsift.generators"
"""Entry-point group that plugin generators register under."""


@runtime_checkable
class Generator(Protocol):
    """What the builder needs from a generator.

    ``name`` is the spec name (seeds derive from it); ``model`` is written to ``model_gen{k}``;
    ``steps`` to ``num_inference_steps_gen{k}`` (``None`` when not applicable). Width and
    height are read from each returned image. ``needs_real_image`` generators get the decoded
    real images (RGB PIL) in ``real_images``; records without one are skipped.
    """

    name: str
    model: str
    width: int | None
    height: int | None
    steps: int | None
    batch_size: int
    needs_real_image: bool

    def load(self) -> None:
        """Load weights; raise :class:`GeneratorError` if they cannot be loaded."""

    def generate(
        self,
        prompts: Sequence[str],
        negative_prompts: Sequence[str | None],
        seeds: Sequence[int],
        real_images: Sequence[Image.Image] | None = None,
    ) -> list[Image.Image]:
        """Return one image per prompt, determined by its own prompt, seed (and real image) and the options.

        An image must not depend on the other prompts of the call (their number, order or content):
        pad each call to a fixed batch, as :class:`DiffusersText2Image` does.
        """


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """``from_pretrained`` dtype keyword: nothing for float32 (the default), else ``torch_dtype``."""
    import torch

    return {} if dtype == torch.float32 else {"torch_dtype": dtype}


def _resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _torch_dtype(name: str | None, device: str) -> Any:
    """The torch dtype for ``name`` (default float16 on CUDA, float32 on CPU)."""
    import torch

    if name is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise GeneratorError(f"dtype must be one of {', '.join(dtypes)}, got {name!r}")
    return dtypes[name]


def _check_source(name: str, source: str) -> None:
    """Refuse a path-like SOURCE that does not exist (hub ids go to ``from_pretrained``)."""
    looks_local = source.startswith(("/", "./", "../", "~"))
    if looks_local and not Path(source).expanduser().is_dir():
        raise GeneratorError(f"generator {name!r}: {source}: no such model directory")


class _DiffusersBase:
    """Shared option handling for the diffusers backends."""

    needs_real_image = False

    def __init__(self, spec: GeneratorSpec) -> None:
        opts = spec.options
        self.spec = spec
        self.name = spec.name
        self.source = spec.source
        self.model = str(opts.get("model") or spec.source)
        self.width: int | None = opts.get("width")  # type: ignore[assignment]
        self.height: int | None = opts.get("height")  # type: ignore[assignment]
        self.steps: int | None = opts.get("steps")  # type: ignore[assignment]
        self.guidance: float | None = opts.get("guidance")  # type: ignore[assignment]
        self.negative: str | None = opts.get("negative")  # type: ignore[assignment]
        self.batch_size = int(opts.get("batch") or 4)  # type: ignore[arg-type]
        self.device = str(opts.get("device") or "auto")
        self.dtype_name: str | None = opts.get("dtype")  # type: ignore[assignment]
        self.tokenizer: Any = None

    def _load_error(self, exc: BaseException) -> GeneratorError:
        """A one-line GeneratorError for a failed load."""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return GeneratorError(f"generator {self.name!r} ({self.spec.kind}:{self.source}) does not load: {first}")

    def _hub_kwargs(self, marker: str) -> dict[str, Any]:
        """``local_files_only`` for a hub SOURCE: one clear error at once when it is neither cached nor reachable."""
        if Path(self.source).expanduser().is_dir() or not looks_like_hub_id(self.source):
            return {}
        try:
            return {"local_files_only": hub_access(self.source, marker=marker, what=f"{self.spec.kind} model")}
        except ModelNotFoundError as exc:
            raise GeneratorError(f"generator {self.name!r} ({self.spec.kind}:{self.source}) does not load: {exc}") from None

    def prompt_too_long(self, prompt: str) -> bool:
        """Whether ``prompt`` exceeds the tokenizer's limit (the pipeline truncates it)."""
        tok = self.tokenizer
        limit = getattr(tok, "model_max_length", None)
        if tok is None or not isinstance(limit, int) or limit > 100_000:
            return False
        return len(tok(prompt, truncation=False)["input_ids"]) > limit


class DiffusersText2Image(_DiffusersBase):
    """Any ``diffusers`` text-to-image pipeline, by hub id or local directory.

    An image depends only on its prompt, negative prompt, seed and the spec's options (``batch``
    included), never on the other prompts generated with it, so a restarted build, ``--add-to``
    and a Ray build write the same bytes. Batching alone does not give that: on CPU, oneDNN/MKL
    pick kernels by tensor shape, and the UNet's small timestep-embedding matrix products (M = 2 x
    batch with guidance) and the VAE's 4-channel convolutions (``post_quant_conv``, the decoder's
    ``conv_in``) round differently for another batch size: an image generated in a batch of 2 and
    alone differed by one grey level in about 0.02 % of its pixels (diffusers 0.42, torch 2.13).
    Within one shape the rows never mix (no kernel reduces across the batch), so every call runs at
    exactly ``batch`` images: a call with fewer is padded and the padding's images are dropped.
    The cost is the padding: at most ``batch - 1`` extra images per chunk of a build (and none when
    the chunk size is a multiple of ``batch``); ``batch=1`` pads nothing and batches nothing.
    """

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__(spec)
        self.pipe: Any = None
        self._call_params: set[str] = set()

    def load(self) -> None:
        """Load the pipeline (``AutoPipelineForText2Image``, else ``DiffusionPipeline``)."""
        _check_source(self.name, self.source)
        hub = self._hub_kwargs("model_index.json")  # before importing diffusers: a missing model fails at once
        from diffusers import AutoPipelineForText2Image, DiffusionPipeline

        device = _resolve_device(self.device)
        try:
            dtype = _torch_dtype(self.dtype_name, device)
            with quiet_loading("diffusers", "transformers"):
                try:
                    pipe = AutoPipelineForText2Image.from_pretrained(self.source, **_dtype_kwargs(dtype), **hub)
                except (ValueError, KeyError) as exc:
                    if "AutoPipeline" not in str(exc) and "not supported" not in str(exc):
                        raise
                    pipe = DiffusionPipeline.from_pretrained(self.source, **_dtype_kwargs(dtype), **hub)
            pipe = pipe.to(device)
        except GeneratorError:
            raise
        except Exception as exc:  # diffusers/hub raise many types: one clear error
            raise self._load_error(exc) from exc
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.tokenizer = getattr(pipe, "tokenizer", None)
        self._call_params = set(inspect.signature(pipe.__call__).parameters)
        if "prompt" not in self._call_params:
            raise GeneratorError(
                f"generator {self.name!r}: {type(pipe).__name__} at {self.source} is not a text-to-image pipeline"
            )

    def generate(self, prompts, negative_prompts, seeds, real_images=None) -> list[Image.Image]:
        """One image per prompt, each the same whatever else is generated with it (see :class:`DiffusersText2Image`).

        Prompts go to the pipeline in calls of exactly ``batch_size`` images: a short call is padded
        with copies of its last prompt (their images are dropped), and prompts with and without a
        negative prompt never share a call.
        """
        if self.pipe is None:
            self.load()
        negs = [n if n else (self.negative or "") for n in negative_prompts]
        use_negative = "negative_prompt" in self._call_params
        out: list[Image.Image | None] = [None] * len(prompts)
        groups: dict[bool, list[int]] = {}
        for i, neg in enumerate(negs):
            groups.setdefault(bool(neg) and use_negative, []).append(i)
        bs = max(1, int(self.batch_size))
        for with_negative, idx in groups.items():
            for start in range(0, len(idx), bs):
                call = idx[start:start + bs]
                padded = call + [call[-1]] * (bs - len(call))  # the same shape for every call
                images = self._call([prompts[i] for i in padded], [negs[i] for i in padded] if with_negative else None,
                                    [seeds[i] for i in padded])
                for i, im in zip(call, images):
                    out[i] = im
        return out  # type: ignore[return-value]

    def _call(self, prompts: list[str], negatives: list[str] | None, seeds: list[int]) -> list[Image.Image]:
        """One pipeline call with one seeded CPU generator per image."""
        import torch

        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        kwargs: dict[str, Any] = {"prompt": list(prompts), "generator": gens, "output_type": "pil"}
        if negatives is not None:
            kwargs["negative_prompt"] = negatives
        for key, value in (("height", self.height), ("width", self.width),
                           ("num_inference_steps", self.steps), ("guidance_scale", self.guidance)):
            if value is not None and key in self._call_params:
                kwargs[key] = value
        try:
            with torch.inference_mode():
                result = self.pipe(**{k: v for k, v in kwargs.items() if k in self._call_params})
        except Exception as exc:
            raise GeneratorError(f"generator {self.name!r} failed: {exc}") from exc
        images = list(result.images)
        if len(images) != len(prompts):
            raise GeneratorError(f"generator {self.name!r} returned {len(images)} images for {len(prompts)} prompts")
        if self.steps is None:
            self.steps = _default_steps(self.pipe)
        return [im.convert("RGB") for im in images]


def _default_steps(pipe: Any) -> int | None:
    """The pipeline's default ``num_inference_steps`` (from its call signature)."""
    p = inspect.signature(pipe.__call__).parameters.get("num_inference_steps")
    return p.default if p is not None and isinstance(p.default, int) else None


class VAEReconstruction(_DiffusersBase):
    """``AutoencoderKL`` round-trip of the real image: a content-aligned fake.

    The real image is centre-cropped/resized to ``width``x``height`` when given, otherwise
    cropped to a multiple of the VAE's downsampling factor. The latent is sampled from the
    encoder's distribution with the image's seed, then decoded.
    """

    needs_real_image = True

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__(spec)
        self.vae: Any = None
        self.batch_size = int(spec.options.get("batch") or 1)  # type: ignore[arg-type]

    def load(self) -> None:
        """Load the AutoencoderKL (a ``vae`` subfolder is used for pipeline directories)."""
        _check_source(self.name, self.source)
        hub = self._hub_kwargs("config.json")
        from diffusers import AutoencoderKL

        device = _resolve_device(self.device)
        src = Path(self.source).expanduser()
        kwargs: dict[str, Any] = {}
        if src.is_dir() and (src / "model_index.json").is_file():
            kwargs["subfolder"] = "vae"
        kwargs.update(hub)
        try:
            dtype = _torch_dtype(self.dtype_name, device)
            with quiet_loading("diffusers"):
                vae = AutoencoderKL.from_pretrained(str(src) if src.is_dir() else self.source, **_dtype_kwargs(dtype),
                                                    **kwargs)
            vae = vae.to(device).eval()
        except GeneratorError:
            raise
        except Exception as exc:
            raise self._load_error(exc) from exc
        self.vae = vae
        self.device = device
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)

    def _prepare(self, im: Image.Image) -> Image.Image:
        """Fit ``im`` to the target size (or to a multiple of the downsampling factor)."""
        from PIL import ImageOps

        if self.width and self.height:
            return ImageOps.fit(im, (self.width, self.height), Image.BICUBIC)
        w, h = (im.width // self.factor) * self.factor, (im.height // self.factor) * self.factor
        if w == 0 or h == 0:
            raise GeneratorError(f"generator {self.name!r}: image {im.width}x{im.height} is smaller than {self.factor} px")
        left, top = (im.width - w) // 2, (im.height - h) // 2
        return im.crop((left, top, left + w, top + h))

    def generate(self, prompts, negative_prompts, seeds, real_images=None) -> list[Image.Image]:
        """Encode, sample the latent with each seed, decode; one image per real image."""
        import numpy as np
        import torch

        if real_images is None or len(real_images) != len(seeds):
            raise GeneratorError(f"generator {self.name!r} needs one real image per record")
        if self.vae is None:
            self.load()
        out = []
        for im, seed in zip(real_images, seeds):
            im = self._prepare(im.convert("RGB"))
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
            x = x.to(self.device, self.vae.dtype)
            gen = torch.Generator("cpu").manual_seed(int(seed))
            with torch.inference_mode():
                dist = self.vae.encode(x).latent_dist
                noise = torch.randn(dist.mean.shape, generator=gen, dtype=torch.float32).to(dist.mean.device, dist.mean.dtype)
                latent = dist.mean + dist.std * noise
                y = self.vae.decode(latent).sample
            arr = ((y[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            out.append(Image.fromarray(arr, "RGB"))
        return out


def load_plugin_class(entry_name: str) -> Any:
    """The object registered as ``entry_name`` in the ``deepsift.generators`` entry-point group."""
    eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == entry_name]
    if not eps:
        known = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
        raise GeneratorError(
            f"no generator plugin {entry_name!r} in entry-point group {ENTRY_POINT_GROUP!r}"
            f" (installed: {', '.join(known) or 'none'})"
        )
    try:
        return eps[0].load()
    except Exception as exc:
        raise GeneratorError(f"generator plugin {entry_name!r} ({eps[0].value}) does not import: {exc}") from exc


def create_generator(spec: GeneratorSpec) -> Generator:
    """Build (not load) the generator a spec names."""
    if spec.kind == "t2i":
        return DiffusersText2Image(spec)
    if spec.kind == "vae":
        return VAEReconstruction(spec)
    factory = load_plugin_class(spec.source)
    try:
        gen = factory(name=spec.name, **spec.options)
    except Exception as exc:
        raise GeneratorError(f"generator plugin {spec.source!r} rejected {spec.to_text()!r}: {exc}") from exc
    missing = [a for a in ("name", "model", "load", "generate") if not hasattr(gen, a)]
    if missing:
        raise GeneratorError(f"generator plugin {spec.source!r} lacks {', '.join(missing)} (see deepsift.generate.Generator)")
    for attr, default in (("width", None), ("height", None), ("steps", None), ("batch_size", 1), ("needs_real_image", False)):
        if not hasattr(gen, attr):
            setattr(gen, attr, default)
    return gen


def load_generators(specs: Sequence[GeneratorSpec]) -> list[Generator]:
    """Create and load every generator, failing on the first that does not load (before any work)."""
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise GeneratorError(f"generator name(s) used twice: {', '.join(dup)}")
    gens = [create_generator(s) for s in specs]
    for gen in gens:
        try:
            gen.load()
        except GeneratorError:
            raise
        except Exception as exc:
            raise GeneratorError(f"generator {gen.name!r} does not load: {exc}") from exc
    return gens
