"""Scene readers and the synthetic pushbroom generator; one convention: :class:`Scene`."""

from edge_had.io.readers import SCENE_SUFFIXES, list_scenes, load_mask, load_scene, scene_sha256, sha256_file
from edge_had.io.scene import Scene, make_scene

__all__ = [
    "SCENE_SUFFIXES",
    "Scene",
    "list_scenes",
    "load_mask",
    "load_scene",
    "make_scene",
    "scene_sha256",
    "sha256_file",
]
