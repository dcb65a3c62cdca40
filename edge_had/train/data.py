"""Training data: scenes prepared in the model's K canonical bands, and a random tile sampler.

Preparation of one scene (:func:`prepare_scene`), in order:

1. the detection cube (good bands only) and, when the file has them, its wavelengths;
2. **background** = ``valid & ~gt``, less the pixels the map leaves unlabelled (``Scene.labelled``:
   they may hide anomalies, so they are masked and inpainted as anomalies are); ``valid`` only
   when anomaly masking is off, or without gt;
3. **imputation**: invalid pixels get the scene's mean spectrum (mean over the background pixels);
   when anomalies are masked, ground-truth anomaly pixels are **inpainted** from the background
   around them (normalised convolution: the mean of the background pixels in a 5 x 5 window,
   growing 9, 17, 33 ... until one is found; the mean spectrum as a last resort). So no anomaly
   value ever reaches a network: every loss is taken on background pixels only, and with
   inpainting the *inputs* of those pixels' receptive fields do not carry anomalies either (the
   spatial student pools over the whole tile, so masking the loss alone would not be enough);
4. **normalisation**: :class:`~edge_had.models.normalize.Normalization` fitted on the valid pixels
   of the imputed cube (robust 1st/99th percentiles, the same recipe the detector applies);
5. **resampling** to K canonical bands with the spectral adapter, in wavelength when the scene has
   wavelengths and on band index otherwise (what :meth:`ModelBundle.adapter_for` does at
   inference). Normalisation is a scalar affine map and every adapter row sums to 1, so the order
   of steps 4 and 5 does not matter.

:class:`TileSampler` draws random square tiles: a scene with probability proportional to its
pixel count, then a uniformly random tile position inside it, then a random augmentation from
the dihedral group of the square - a horizontal flip, a vertical flip (each with probability
1/2) and a rotation by ``0/90/180/270`` degrees (uniform) - applied identically to the cube and its
background mask. The 8 symmetries mix the along-track and cross-track axes, so per-column
detector striping of a pushbroom sensor is seen in both orientations (the networks must not rely
on it). Everything comes from the sampler's own ``torch.Generator`` seeded with ``seed``: the same
seed gives the same batches, and :meth:`TileSampler.state_dict` / :meth:`load_state_dict` let a
resumed run continue the identical stream. Under data-parallel training every rank draws the
same *global* batch of ``batch * world_size`` tile positions and keeps only its own slice
``[rank * batch, (rank + 1) * batch)``: ranks see different tiles, and the union of all ranks'
tiles is the batch a single process with ``batch * world_size`` would draw.

The supervised ranking phase uses the training scenes differently: :func:`load_labelled_scenes`
prepares them *without* inpainting and keeps their ground truth (the anomalies are its targets),
and :class:`SceneSampler` hands it one crop of every labelled scene per step, optionally with
anomalies implanted into it (:func:`implant_anomalies`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from edge_had.io import Scene, list_scenes, load_scene, scene_sha256
from edge_had.models.adapter import SpectralAdapter
from edge_had.models.normalize import Normalization

__all__ = [
    "LabelledScene",
    "SceneBatch",
    "SceneCrop",
    "SceneSampler",
    "TileBatch",
    "TileSampler",
    "TrainingScene",
    "background_spectra",
    "implant_anomalies",
    "load_labelled_scenes",
    "load_training_scenes",
    "prepare_scene",
    "training_scenes",
]

_INPAINT_WINDOWS = (5, 9, 17, 33, 65)


@dataclass
class TrainingScene:
    """One prepared scene: ``x`` is ``K x H x W`` float32, ``background`` ``1 x H x W`` bool."""

    name: str
    x: torch.Tensor
    background: torch.Tensor
    sha256: str | None = None
    adapter_mode: str = ""
    normalization: tuple[float, float] = (0.0, 1.0)
    #: whether the scene had a ground-truth map (without one nothing is masked: its anomalies, if
    #: any, are trained on as background - a background archive's unlabelled scenes)
    ground_truth: bool = True
    #: pixels its map leaves unlabelled (``Scene.labelled``): masked, as anomalies are
    unlabelled_pixels: int = 0

    @property
    def pixels(self) -> int:
        return int(self.x.shape[1] * self.x.shape[2])


def _inpaint(cube: np.ndarray, holes: np.ndarray, source: np.ndarray, fallback: np.ndarray) -> None:
    """Fill ``cube[holes]`` in place with the mean of ``source`` pixels in growing windows."""
    remaining = holes.copy()
    weight_src = source.astype(np.float64)
    for size in _INPAINT_WINDOWS:
        if not remaining.any():
            return
        weight = ndimage.uniform_filter(weight_src, size=size, mode="constant")
        found = remaining & (weight > 1e-12)
        if not found.any():
            continue
        rows, cols = np.nonzero(found)
        for band in range(cube.shape[2]):
            plane = np.where(source, cube[:, :, band], 0.0).astype(np.float64)
            total = ndimage.uniform_filter(plane, size=size, mode="constant")
            cube[rows, cols, band] = (total[rows, cols] / weight[rows, cols]).astype(np.float32)
        remaining &= ~found
    if remaining.any():
        cube[remaining] = fallback


def prepare_scene(
    scene: Scene,
    k: int = 64,
    *,
    mask_anomalies: bool = True,
    normalization: Normalization | None = None,
    sha256: str | None = None,
    checksum: bool = True,
) -> TrainingScene:
    """Impute, normalise and resample one scene to K canonical bands (see the module docstring).
    ``sha256``: the scene file's, when known; otherwise it is computed from the file (a second
    read) when ``checksum`` - the training record needs it, the ranking phase does not."""
    normalization = Normalization() if normalization is None else normalization
    cube = np.array(scene.detection_cube(), dtype=np.float32, copy=True)
    valid = np.asarray(scene.valid, dtype=bool)
    gt = None if scene.gt is None else np.asarray(scene.gt, dtype=bool)
    if gt is not None and scene.labelled is not None:  # unlabelled pixels may be anomalies
        gt = gt | ~scene.labelled
    background = valid & ~gt if (mask_anomalies and gt is not None) else valid.copy()
    if not background.any():
        where = "" if scene.source is None else f" ({scene.source})"
        problem = f"no background pixel to train on{scene.unlabelled_detail()}"
        raise ValueError(f"scene {scene.name!r}{where}: {problem}")
    mean = cube[background].mean(axis=0, dtype=np.float64).astype(np.float32)
    cube[~valid] = mean
    if mask_anomalies and gt is not None:
        holes = valid & gt
        if holes.any():
            _inpaint(cube, holes, background, mean)
    lo, hi = normalization.fit(cube, valid)
    cube = normalization.apply(cube, lo, hi)
    wavelengths = scene.detection_wavelengths()
    adapter = SpectralAdapter.for_sensor(cube.shape[2], wavelengths, k)
    resampled = (cube.reshape(-1, cube.shape[2]) @ adapter.matrix.T.astype(np.float32)).astype(np.float32)
    x = torch.from_numpy(
        np.ascontiguousarray(resampled.reshape(cube.shape[0], cube.shape[1], k).transpose(2, 0, 1))
    )
    if checksum and sha256 is None and scene.source is not None and Path(scene.source).is_file():
        sha256 = scene_sha256(scene.source)
    return TrainingScene(
        name=scene.name,
        x=x,
        background=torch.from_numpy(background)[None].clone(),
        sha256=sha256,
        adapter_mode=adapter.mode,
        normalization=(lo, hi),
        ground_truth=gt is not None,
        unlabelled_pixels=scene.unlabelled_pixels,
    )


def _check_excluded(names: Sequence[str], exclude: Sequence[str]) -> None:
    """An excluded name that matches no scene is an error (a typo would otherwise silently train
    on the test scenes)."""
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise ValueError(f"--exclude names no scene: {unknown}; scenes are {sorted(names)}")


def training_files(folder: str | Path, exclude: Sequence[str]) -> list[Path]:
    """The scene files of ``folder`` (sorted by name) a run trains on: all but ``exclude``, each
    of which must name one of them."""
    files, excluded = list_scenes(folder), set(exclude)
    stems = [path.stem for path in files]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:  # a scene is named by its stem (--exclude, records): two files would train it twice
        names = ", ".join(path.name for path in files if path.stem in twice)
        raise ValueError(f"{folder}: more than one file per scene name ({names}); keep one of each")
    _check_excluded(stems, exclude)
    return [path for path in files if path.stem not in excluded]


def training_scenes(
    folder: str | Path | Iterable[Scene], exclude: Sequence[str] = (), interleave: str | None = None
) -> list[Scene]:
    """The scenes of ``folder`` (every scene file, sorted by name, each read once, its cube as
    stored in ``interleave`` order: :func:`~edge_had.io.load_scene`) or the in-memory ones, less
    ``exclude`` (each must name a scene). A run loads them once and prepares them for each phase
    (:func:`load_training_scenes`, :func:`load_labelled_scenes`)."""
    sources: list[Scene | Path]
    if isinstance(folder, (str, Path)):
        sources = list(training_files(folder, exclude))
    elif interleave is not None:  # in-memory scenes are (rows, cols, bands) already
        raise ValueError(f"interleave {interleave} is for scene files; in-memory scenes were given")
    else:
        scenes = list(folder)
        _check_excluded([s.name for s in scenes], exclude)
        excluded = set(exclude)
        sources = [s for s in scenes if s.name not in excluded]
    if not sources:
        raise ValueError("no training scene left after --exclude")
    return [load_scene(item, interleave=interleave) if isinstance(item, Path) else item for item in sources]


def load_training_scenes(
    folder: str | Path | Iterable[Scene],
    exclude: Sequence[str] = (),
    k: int = 64,
    mask_anomalies: bool = True,
    interleave: str | None = None,
) -> list[TrainingScene]:
    """Prepared scenes of ``folder`` (every scene file, sorted by name) or of in-memory scenes.

    ``exclude`` holds scene names (file stems, or ``Scene.name``) to leave out, e.g. a
    cross-validation fold's test scenes; ``interleave``: how the files' cubes are stored
    (:func:`training_scenes`).
    """
    scenes = training_scenes(folder, exclude, interleave)
    return [prepare_scene(scene, k, mask_anomalies=mask_anomalies) for scene in scenes]


@dataclass
class TileBatch:
    """``x``: ``N x K x t x t`` float32; ``mask``: ``N x 1 x t x t`` bool (background pixels)."""

    x: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str) -> TileBatch:
        return TileBatch(self.x.to(device), self.mask.to(device))


class _SeededSampler:
    """What both samplers share: this rank's place among ``world_size`` ranks, an own generator
    whose state is the sampler's state (checkpoint + resume), and iteration by ``sample()``."""

    def __init__(self, seed: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.rank = rank
        self.world_size = world_size
        self.generator = torch.Generator().manual_seed(int(seed))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

    def sample(self) -> Any:
        raise NotImplementedError

    def __iter__(self) -> _SeededSampler:
        return self

    def __next__(self) -> Any:
        return self.sample()


class TileSampler(_SeededSampler):
    """Random augmented square tiles from prepared scenes (see the module docstring)."""

    def __init__(
        self,
        scenes: Sequence[TrainingScene],
        tile: int = 32,
        batch: int = 16,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = True,
    ) -> None:
        if not scenes:
            raise ValueError("TileSampler needs at least one scene")
        if tile < 1 or batch < 1:
            raise ValueError(f"need tile >= 1 and batch >= 1, got tile={tile}, batch={batch}")
        super().__init__(seed, rank, world_size)
        small = [f"{s.name} ({s.x.shape[1]}x{s.x.shape[2]})" for s in scenes if min(s.x.shape[1:]) < tile]
        if small:
            raise ValueError(
                f"scenes smaller than the {tile}-pixel tile: {', '.join(small)}; use a smaller tile"
            )
        self.scenes = list(scenes)
        self.tile = tile
        self.batch = batch
        self.seed = seed
        self.augment = augment
        weights = torch.tensor([s.pixels for s in self.scenes], dtype=torch.float64)
        self.weights = weights / weights.sum()

    def sample(self) -> TileBatch:
        """The next batch of this rank (the whole global batch is drawn, see the module docstring)."""
        n = self.batch * self.world_size
        g = self.generator
        which = torch.multinomial(self.weights, n, replacement=True, generator=g)
        u = torch.rand(n, 2, generator=g, dtype=torch.float64)
        flips = torch.randint(0, 2, (n, 2), generator=g)
        turns = torch.randint(0, 4, (n,), generator=g)
        xs, masks = [], []
        for i in range(self.rank * self.batch, (self.rank + 1) * self.batch):
            scene = self.scenes[int(which[i])]
            h, w = scene.x.shape[1:]
            top = int(u[i, 0] * (h - self.tile + 1))
            left = int(u[i, 1] * (w - self.tile + 1))
            x = scene.x[:, top : top + self.tile, left : left + self.tile]
            m = scene.background[:, top : top + self.tile, left : left + self.tile]
            if self.augment:
                dims = [d for d, f in zip((2, 1), flips[i].tolist(), strict=True) if f]
                if dims:
                    x, m = torch.flip(x, dims), torch.flip(m, dims)
                turn = int(turns[i])
                if turn:
                    x, m = torch.rot90(x, turn, (1, 2)), torch.rot90(m, turn, (1, 2))
            xs.append(x)
            masks.append(m)
        return TileBatch(torch.stack(xs).contiguous(), torch.stack(masks).contiguous())


# --------------------------------------------------------------------------- labelled scenes


@dataclass
class LabelledScene:
    """A training scene as a detector sees it, with its labels (the supervised ranking phase).

    ``x``: ``K x H x W`` float32, prepared like :func:`prepare_scene` *without* inpainting (the
    anomalies are in it: they are the targets); ``valid``, ``anomalies`` and ``labelled`` (the
    pixels the map labels, :attr:`~edge_had.io.scene.Scene.labelled`): ``H x W`` bool.
    """

    name: str
    x: torch.Tensor
    valid: torch.Tensor
    anomalies: torch.Tensor
    labelled: torch.Tensor


def rankable(scene: Scene) -> bool:
    """Whether the ranking phase can use ``scene``: ground truth with at least one valid anomaly
    pixel and one valid background pixel (both labelled)."""
    if scene.gt is None:
        return False
    counted = np.asarray(scene.counted, dtype=bool)
    anomalies = int((counted & np.asarray(scene.gt, dtype=bool)).sum())
    return 0 < anomalies < int(counted.sum())


def load_labelled_scenes(
    folder: str | Path | Iterable[Scene], exclude: Sequence[str] = (), k: int = 64
) -> list[LabelledScene]:
    """The scenes of ``folder`` (less ``exclude``) that have ground truth with at least one valid
    labelled anomaly pixel and one valid labelled background pixel; ``ValueError`` when none has.
    Pixels a map leaves unlabelled (which may hide anomalies) are never ranked as background, but
    they are in the ranking's RX statistics, as in detection's."""
    scenes = []
    for scene in training_scenes(folder, exclude):
        if not rankable(scene):
            continue
        valid = np.asarray(scene.valid, dtype=bool)
        labelled = np.ones_like(valid) if scene.labelled is None else np.asarray(scene.labelled, dtype=bool)
        anomalies = valid & labelled & np.asarray(scene.gt, dtype=bool)
        prepared = prepare_scene(scene, k, mask_anomalies=False, checksum=False)
        scenes.append(
            LabelledScene(
                scene.name,
                prepared.x,
                torch.from_numpy(valid),
                torch.from_numpy(anomalies),
                torch.from_numpy(labelled),
            )
        )
    if not scenes:
        raise ValueError("no training scene has ground-truth anomalies: nothing to rank")
    return scenes


#: Implanted anomalies per crop (inclusive range), their square side in pixels (inclusive), and
#: the fraction of the donor spectrum mixed into the pixels they cover (uniform)
IMPLANT_OBJECTS = (4, 11)
IMPLANT_SIDES = (1, 3)
IMPLANT_FRACTION = (0.5, 1.0)


def background_spectra(scene: TrainingScene) -> torch.Tensor:
    """``(pixels, K)``: the spectra of a prepared scene's background pixels (implant donors)."""
    k = scene.x.shape[0]
    return scene.x.reshape(k, -1).T[scene.background.reshape(-1)]


def _check_donors(donors: Sequence[torch.Tensor], k: int) -> None:
    if not donors or any(d.ndim != 2 or d.shape[0] == 0 or d.shape[1] != k for d in donors):
        raise ValueError(f"implants need non-empty (n, {k}) donor spectra")


def implant_anomalies(
    x: torch.Tensor,
    anomalies: torch.Tensor,
    donors: Sequence[torch.Tensor],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of the ``K x H x W`` crop ``x`` with :data:`IMPLANT_OBJECTS` small square objects
    implanted, and ``anomalies`` (``H x W`` bool) with their pixels added.

    Each object: a side of :data:`IMPLANT_SIDES` pixels at a uniform position inside the crop; a
    donor set drawn uniformly from ``donors`` (``(n, K)`` spectra: the background of *other*
    training scenes) and one spectrum of it drawn uniformly; every covered pixel becomes
    ``(1 - f) x + f * spectrum`` with ``f`` uniform in :data:`IMPLANT_FRACTION` (sub-pixel to
    full-pixel targets). A spectrum from another scene is rare in this one - what RX looks for -
    without being any labelled anomaly type, so the ranking phase sees more kinds of anomaly than
    the training scenes' few. Objects may overlap each other or labelled anomalies. The number of
    draws depends only on the number of objects, never on the data.
    """
    _check_donors(donors, x.shape[0])
    _, h, w = x.shape
    x, anomalies = x.clone(), anomalies.clone()
    low, high = IMPLANT_OBJECTS
    for _ in range(int(torch.randint(low, high + 1, (1,), generator=generator))):
        side = int(torch.randint(IMPLANT_SIDES[0], IMPLANT_SIDES[1] + 1, (1,), generator=generator))
        tall, wide = min(side, h), min(side, w)  # a crop smaller than the object: clipped
        top = int(torch.randint(0, h - tall + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - wide + 1, (1,), generator=generator))
        rows, cols = slice(top, top + tall), slice(left, left + wide)
        donor = donors[int(torch.randint(0, len(donors), (1,), generator=generator))]
        spectrum = donor[int(torch.randint(0, donor.shape[0], (1,), generator=generator))]
        share = IMPLANT_FRACTION[0] + (IMPLANT_FRACTION[1] - IMPLANT_FRACTION[0]) * float(
            torch.rand(1, generator=generator, dtype=torch.float64)
        )
        x[:, rows, cols] = (1.0 - share) * x[:, rows, cols] + share * spectrum.to(x.dtype)[:, None, None]
        anomalies[rows, cols] = True
    return x, anomalies


@dataclass
class SceneCrop:
    """One crop of a labelled scene and the uniform draws that pick its background pixels."""

    x: torch.Tensor
    valid: torch.Tensor
    anomalies: torch.Tensor
    negative_draws: torch.Tensor  # (negatives,) float64 in [0, 1)
    labelled: torch.Tensor  # the pixels the map labels: only those are ranked as background


@dataclass
class SceneBatch:
    """This rank's crops; ``weight`` = world size / crops in the global batch (so that averaging
    the ranks' gradients gives the mean loss over every crop)."""

    crops: list[SceneCrop]
    weight: float

    def to(self, device: torch.device | str) -> SceneBatch:
        crops = [
            SceneCrop(
                c.x.to(device),
                c.valid.to(device),
                c.anomalies.to(device),
                c.negative_draws.to(device),
                c.labelled.to(device),
            )
            for c in self.crops
        ]
        return SceneBatch(crops, self.weight)


class SceneSampler(_SeededSampler):
    """One crop of every labelled scene per step (the whole scene when it fits in ``crop``).

    A crop always holds an anomaly: its position is drawn uniformly among the positions that
    contain one anomaly pixel picked at random. ``negatives`` background pixels are drawn with
    replacement per crop. ``implant_from``: named background spectra (``(name, (n, K))``, e.g.
    :func:`background_spectra` of every training scene); when given, every crop also gets
    :func:`implant_anomalies` with the donors of the *other* scenes (its own when it is the only
    one). Under data-parallel training the global batch (all scenes, implants included) is drawn
    on every rank and rank ``r`` keeps scenes ``r, r + world_size, ...``. Own generator,
    state_dict and load_state_dict like :class:`TileSampler`.
    """

    def __init__(
        self,
        scenes: Sequence[LabelledScene],
        crop: int = 256,
        negatives: int = 2048,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
        implant_from: Sequence[tuple[str, torch.Tensor]] | None = None,
    ) -> None:
        if crop < 8 or negatives < 1:
            raise ValueError(f"need crop >= 8 and negatives >= 1, got crop={crop}, negatives={negatives}")
        super().__init__(seed, rank, world_size)
        if len(scenes) < world_size:
            raise ValueError(
                f"the ranking phase gives every rank whole scenes: {len(scenes)} labelled scene(s) "
                f"cannot feed {world_size} ranks"
            )
        self.scenes = list(scenes)
        # (rows, cols) of every scene's anomaly pixels, the crops' anchors
        self.anomaly_pixels = [torch.nonzero(scene.anomalies, as_tuple=True) for scene in self.scenes]
        self.crop = crop
        self.negatives = negatives
        self.implant_donors: list[list[torch.Tensor]] | None = None
        if implant_from is not None:
            named = list(implant_from)
            if not named:
                raise ValueError("implant_from holds no donor scene")
            self.implant_donors = [
                [pixels for name, pixels in named if name != scene.name] or [pixels for _, pixels in named]
                for scene in self.scenes
            ]
            for scene, donors in zip(self.scenes, self.implant_donors, strict=True):
                _check_donors(donors, scene.x.shape[0])  # here, not in the middle of a run

    @staticmethod
    def crop_window(size: int, length: int, anomaly_at: int, draw: float) -> slice:
        """The ``size``-long window of an axis of ``length`` holding position ``anomaly_at``, its
        start uniform over every start that does (``draw`` uniform in [0, 1)); the whole axis
        when it is not longer than ``size``."""
        if length <= size:
            return slice(0, length)
        first = max(0, anomaly_at - size + 1)  # the last start before the window passes the pixel
        last = min(anomaly_at, length - size)  # the last start that still fits in the axis
        start = first + int(draw * (last - first + 1))
        return slice(start, start + size)

    def sample(self) -> SceneBatch:
        g = self.generator
        crops = []
        for index, (scene, (rows, cols)) in enumerate(zip(self.scenes, self.anomaly_pixels, strict=True)):
            # drawn for all scenes, kept for this rank's
            pick = int(torch.randint(0, rows.numel(), (1,), generator=g))
            u = torch.rand(2, generator=g, dtype=torch.float64).tolist()
            draws = torch.rand(self.negatives, generator=g, dtype=torch.float64)
            h, w = scene.anomalies.shape
            r = self.crop_window(self.crop, h, int(rows[pick]), u[0])
            c = self.crop_window(self.crop, w, int(cols[pick]), u[1])
            x, anomalies, valid, labelled = (
                scene.x[:, r, c],
                scene.anomalies[r, c],
                scene.valid[r, c],
                scene.labelled[r, c],
            )
            if self.implant_donors is not None:  # drawn on every rank: the generators stay in step
                x, anomalies = implant_anomalies(x, anomalies, self.implant_donors[index], g)
                anomalies &= valid  # labelled anomalies are valid already; implants may not be
            if index % self.world_size != self.rank:
                continue
            crops.append(SceneCrop(x, valid, anomalies, draws, labelled))
        return SceneBatch(crops, self.world_size / len(self.scenes))
