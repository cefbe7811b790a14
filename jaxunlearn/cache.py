"""On-disk cache of variables keyed by a manifest hash; atomic and checksummed.

Files are Flax msgpack (no pickle) with a JSON sidecar holding the manifest and
the SHA-256 of the payload. A file whose checksum, format or manifest does not
match is treated as absent and rebuilt, never silently used.

:func:`enable_compilation_cache` turns on JAX's persistent compilation cache
(compiled XLA programs on disk), so a fresh process reuses the programs an
earlier one compiled.
"""

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import serialization


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of a JSON-serialisable manifest (key order does not matter)."""
    blob = json.dumps(manifest, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def versions() -> dict[str, str]:
    """Versions of the packages that can change a trained model."""
    import flax
    import optax

    import jaxunlearn

    return {
        "jaxunlearn": jaxunlearn.__version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
    }


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str, obj: Any) -> None:
    """JSON version of :func:`atomic_write_bytes` (sorted keys, indented)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    atomic_write_bytes(path, (text + "\n").encode())


def _json_default(o):
    if isinstance(o, np.ndarray | jax.Array):
        return np.asarray(o).tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def _paths(cache_dir: str, key: str) -> tuple[str, str]:
    return (
        os.path.join(cache_dir, f"{key}.msgpack"),
        os.path.join(cache_dir, f"{key}.json"),
    )


def save(
    cache_dir: str,
    manifest: Mapping[str, Any],
    variables: Any,
    info: Mapping[str, Any] | None = None,
) -> str:
    """Saves ``variables`` under the hash of ``manifest``; returns the hash.

    ``info`` (JSON-serialisable, e.g. training times) is stored beside the
    manifest and returned by :func:`load_info`; it is not part of the key.
    """
    key = manifest_hash(manifest)
    blob_path, meta_path = _paths(cache_dir, key)
    host = jax.tree.map(np.asarray, jax.device_get(variables))
    blob = serialization.msgpack_serialize(_to_plain(host))
    atomic_write_bytes(blob_path, blob)
    meta = {
        "manifest": manifest,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "info": dict(info or {}),
    }
    atomic_write_json(meta_path, meta)
    return key


def _to_plain(tree):
    if isinstance(tree, Mapping):
        return {str(k): _to_plain(v) for k, v in tree.items()}
    return tree


def load(
    cache_dir: str, manifest: Mapping[str, Any], like: Any | None = None
) -> Any | None:
    """Loads the variables cached for ``manifest``, or ``None`` when absent.

    A corrupted or mismatching entry (bad checksum, unreadable payload, other
    manifest, or a tree structure / shapes different from ``like``) is reported
    with a warning, deleted, and ``None`` is returned so the caller rebuilds.
    """
    key = manifest_hash(manifest)
    blob_path, meta_path = _paths(cache_dir, key)
    if not (os.path.exists(blob_path) and os.path.exists(meta_path)):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        with open(blob_path, "rb") as f:
            blob = f.read()
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            raise ValueError("checksum mismatch")
        if manifest_hash(meta["manifest"]) != key:
            raise ValueError("manifest mismatch")
        tree = serialization.msgpack_restore(blob)
        if like is not None:
            want = jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), like)
            got = jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), tree)
            if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
                raise ValueError("tree structure or shapes differ from the model")
    except Exception as e:  # noqa: BLE001 - any failure means "rebuild"
        warnings.warn(
            f"discarding corrupted cache entry {blob_path}: {e}", stacklevel=2
        )
        for p in (blob_path, meta_path):
            if os.path.exists(p):
                os.unlink(p)
        return None
    return tree


def load_info(cache_dir: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The ``info`` saved with the entry for ``manifest`` ({} if none)."""
    _, meta_path = _paths(cache_dir, manifest_hash(manifest))
    try:
        with open(meta_path) as f:
            return dict(json.load(f).get("info", {}))
    except (OSError, ValueError):
        return {}


DEFAULT_CACHE_DIR = ".cache/jaxunlearn"
"""The drivers' cache directory (relative to the working directory)."""

CACHE_ENV = "JAXUNLEARN_CACHE"
"""Environment variable overriding :data:`DEFAULT_CACHE_DIR` for compiled
programs (they go in its ``xla`` subdirectory)."""

NO_COMPILATION_CACHE_ENV = "JAXUNLEARN_NO_COMPILATION_CACHE"
"""Set to ``1`` to keep the drivers from enabling the compilation cache."""


def compilation_cache_disabled() -> bool:
    """True when ``$JAXUNLEARN_NO_COMPILATION_CACHE`` asks for no cache."""
    value = os.environ.get(NO_COMPILATION_CACHE_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no")


def enable_compilation_cache(path: str | None = None) -> str:
    """Turns on JAX's persistent compilation cache; returns its directory.

    Every compiled XLA program is then written to ``path`` (however short its
    compilation, however small) and read back by a later process that
    compiles the same program for the same devices, versions and flags, so a
    rerun skips compilation. Idempotent: calling it again with the same path
    does nothing; another path switches the cache there.

    The cache is trusted code: keep ``path`` private to the user (see
    ``jax.experimental.compilation_cache``).

    Args:
      path: the directory; default ``$JAXUNLEARN_CACHE/xla`` or
        ``.cache/jaxunlearn/xla`` (relative to the working directory).

    Returns:
      The absolute path of the cache directory (created if missing).
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    if path is None:
        path = os.path.join(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR, "xla")
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # -1: no minimum entry size (cache every program) and no backend override.
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if previous != path:
        jax.config.update("jax_compilation_cache_dir", path)
        if previous:  # a cache opened at the old path: reopen at the new one
            cc.reset_cache()
    return path
