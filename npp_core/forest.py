"""Fast fitting and compiled evaluation of scikit-learn regression forests.

``RandomForestRegressor.predict`` costs ~60 ns of CPU per pixel and tree
(a 500-tree forest over 10⁶ pixels: ~32 s CPU, ~30 s wall on 2 cores);
predicting a raster with four or five forests is the slowest step of the
attribution. Here the fitted trees are flattened once into contiguous node arrays (:class:`FlatForest`,
breadth-first so that siblings are adjacent and a step is
``child + (x > threshold)``) and evaluated by a numba kernel that runs
tree-major over blocks of 512 pixels in parallel (``prange``, GIL released):
the block is transposed feature-major (float32, L1-resident together with one
tree), the top levels of each tree are walked in lockstep over the whole block
(independent loads, no branches), then only the pixels not yet on a leaf are
walked on, compacted branch-free every two levels. Indices are unsigned so
that numba emits no negative-index wraparound code in the inner loops.

The kernel reproduces scikit-learn's decision rule exactly: features are cast
to float32 (as scikit-learn does before evaluating a tree) and a sample goes
left when ``float32(x) <= threshold64``; the float32 threshold stored here is
the largest float32 not above the float64 one, which decides identically.
Only single-output regression forests fitted without missing values are
supported; rows with a non-finite feature are returned as NaN (a pixel
undefined in any driver has no prediction).

Measured (``bench/bench_forest.py``, 500 trees fitted on 1000 x 12 samples):
~13–22 ns of CPU per pixel and tree, 3.2–4.8x less CPU and 3.2–4.5x less wall time
(2 shared cores) than scikit-learn's ``predict(n_jobs=2)``, identical results
(same float32 decisions; trees summed in float64 in tree order).

Fitting: :class:`FastRandomForestRegressor` is scikit-learn's
``RandomForestRegressor`` (same parameters, same trees, same random streams,
bit-identical ``estimators_samples_``, ``oob_prediction_`` and ``oob_score_``;
``tests/test_forest.py``) without most of its per-tree Python overhead, which
runs with the GIL held and so serialises the threaded fit: ~0.25 ms per tree
for ``clone``/``set_params``/``get_params``, and ~0.26 ms for every
``RandomState(seed)`` created per tree (twice in ``fit``, once more for the
OOB rows and once per ``estimators_samples_`` access; the constructor first
seeds itself from OS entropy). Measured on the sample's 1000 x 12 samples
with 500 trees: see ``bench/bench_forest.py``.

Permutation importance: :func:`predict_trees_permuted` evaluates, for many
trees at once (parallel), each tree on its out-of-bag rows and on copies with
one column group permuted, without building the copies.

Out of scope: classification forests, multi-output forests, NaN routing.
"""
from __future__ import annotations

import itertools
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit, prange
from scipy.sparse import issparse
from joblib import effective_n_jobs
from sklearn.base import _fit_context
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import r2_score
from sklearn.tree import DecisionTreeRegressor
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

__all__ = [
    "ForestError",
    "FlatForest",
    "FastRandomForestRegressor",
    "flatten_forest",
    "predict_forest",
    "predict_trees",
    "predict_trees_permuted",
]

#: Exclusive upper bound of the per-tree seeds scikit-learn draws (``np.iinfo(np.int32).max``).
_MAX_INT = np.iinfo(np.int32).max

#: Pixels per parallel work item of the prediction kernel.
_BLOCK = 512
#: Tree levels walked in lockstep over a whole block before unfinished pixels are compacted.
_LOCKSTEP = 10
#: Levels walked between two compactions of the unfinished pixels of a block.
_EVERY = 2


class ForestError(ValueError):
    """A forest or feature matrix that cannot be evaluated, with the fix."""


@dataclass(frozen=True)
class FlatForest:
    """All nodes of a fitted forest in flat arrays, laid out for branch-free traversal.

    Nodes are renumbered breadth-first per tree so that the right child of a
    split node always follows its left child (``right = child + 1``). A leaf
    points to itself with an infinite threshold, so a walk of exactly
    ``depth[t]`` steps from the root of tree ``t`` ends on the right leaf for
    every sample; the walk has no data-dependent branch.

    Attributes
    ----------
    child : ndarray of int32, shape (n_nodes,)
        Global index of the left child (leaf: the node itself).
    feature : ndarray of int32, shape (n_nodes,)
        Column of ``X`` tested at the node (leaf: 0).
    threshold : ndarray of float32, shape (n_nodes,)
        Largest float32 not above scikit-learn's float64 threshold, so that
        ``x32 <= threshold`` decides exactly as scikit-learn's
        ``float64(x32) <= threshold64`` does; ``+inf`` at leaves.
    value : ndarray of float64, shape (n_nodes,)
        Node prediction (leaf mean of the target, target units).
    roots : ndarray of int64, shape (n_trees,)
        Global index of each tree's root.
    depth : ndarray of int64, shape (n_trees,)
        Depth (edges from root to deepest leaf) of each tree.
    n_features : int
        Number of columns the forest was fitted on.
    """

    child: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: np.ndarray
    n_features: int

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return int(self.roots.shape[0])


@njit(cache=True, nogil=True)
def _renumber(left, right, feature, threshold, value, offsets):
    """Breadth-first renumbering of every tree (sibling pairs adjacent)."""
    n_nodes = left.shape[0]
    n_trees = offsets.shape[0] - 1
    child = np.empty(n_nodes, dtype=np.int32)
    feat = np.zeros(n_nodes, dtype=np.int32)
    thr = np.empty(n_nodes, dtype=np.float64)
    val = np.empty(n_nodes, dtype=np.float64)
    depth = np.zeros(n_trees, dtype=np.int64)
    queue = np.empty(n_nodes, dtype=np.int64)
    level = np.zeros(n_nodes, dtype=np.int64)
    for t in range(n_trees):
        base = offsets[t]
        size = offsets[t + 1] - base
        # queue[k] = old local id of the node that gets new local id k
        queue[base] = 0
        level[base] = 0
        head = 0
        tail = 1
        while head < tail:
            old = queue[base + head]
            new = base + head
            val[new] = value[base + old]
            if left[base + old] == -1:
                child[new] = new
                thr[new] = np.inf
            else:
                child[new] = base + tail
                feat[new] = feature[base + old]
                thr[new] = threshold[base + old]
                queue[base + tail] = left[base + old]
                queue[base + tail + 1] = right[base + old]
                level[base + tail] = level[base + head] + 1
                level[base + tail + 1] = level[base + head] + 1
                if level[base + head] + 1 > depth[t]:
                    depth[t] = level[base + head] + 1
                tail += 2
            head += 1
        if tail != size:
            raise ValueError("tree is not a binary tree reachable from its root")
    return child, feat, thr, val, depth


def _threshold32(thr64: np.ndarray) -> np.ndarray:
    """Largest float32 not above each float64 threshold (``+inf`` stays ``+inf``).

    For every float32 ``x``: ``x <= t32`` ⇔ ``float64(x) <= t64`` (no float32
    lies in ``(t32, t64]``), so the kernel may compare in float32.
    """
    thr32 = thr64.astype(np.float32)
    above = thr32.astype(np.float64) > thr64
    thr32[above] = np.nextafter(thr32[above], np.float32(-np.inf))
    return thr32


def flatten_forest(model) -> FlatForest:
    """Flatten a fitted single-output ``RandomForestRegressor`` into node arrays.

    Parameters
    ----------
    model : sklearn.ensemble.RandomForestRegressor
        Fitted, single output (any forest of ``DecisionTreeRegressor`` in
        ``estimators_`` works).

    Returns
    -------
    FlatForest
        Node arrays with global indices; see :class:`FlatForest`.

    Raises
    ------
    ForestError
        If the model is not fitted, is multi-output or not a regression forest.
    """
    estimators = getattr(model, "estimators_", None)
    if not estimators:
        raise ForestError(
            f"model {type(model).__name__}: not a fitted forest (no estimators_); call fit() first."
        )
    n_outputs = getattr(model, "n_outputs_", 1)
    if n_outputs != 1:
        raise ForestError(
            f"model: {n_outputs} outputs; only single-output regression forests are supported, "
            "fit one forest per target."
        )
    lefts, rights, feats, thrs, vals = [], [], [], [], []
    offsets = [0]
    for est in estimators:
        tree = est.tree_
        value = np.asarray(tree.value)
        if value.ndim != 3 or value.shape[1] != 1 or value.shape[2] != 1:
            raise ForestError(
                f"model: tree value array has shape {value.shape}; expected (nodes, 1, 1) of a "
                "regression tree. Use a RandomForestRegressor."
            )
        lefts.append(np.asarray(tree.children_left, dtype=np.int64))
        rights.append(np.asarray(tree.children_right, dtype=np.int64))
        feats.append(np.asarray(tree.feature, dtype=np.int64))
        thrs.append(np.asarray(tree.threshold, dtype=np.float64))
        vals.append(value[:, 0, 0].astype(np.float64))
        offsets.append(offsets[-1] + int(tree.node_count))
    if offsets[-1] >= np.iinfo(np.int32).max:
        raise ForestError(f"model: {offsets[-1]} nodes do not fit int32 indices; use fewer or smaller trees.")
    child, feat, thr64, val, depth = _renumber(
        np.concatenate(lefts), np.concatenate(rights), np.concatenate(feats),
        np.concatenate(thrs), np.concatenate(vals), np.asarray(offsets, dtype=np.int64),
    )
    return FlatForest(
        child=child, feature=feat, threshold=_threshold32(thr64), value=val,
        roots=np.asarray(offsets[:-1], dtype=np.int64), depth=depth,
        n_features=int(model.n_features_in_),
    )


@njit(cache=True, nogil=True, parallel=True)
def _predict_kernel(x32, ok, child, foff, threshold, value, roots, depth, block, lockstep, every):
    """Tree-major walk over pixel blocks.

    ``child`` and ``foff`` (``feature * block``) are uint32 and the loop
    indices unsigned, so numba emits no negative-index wraparound code in the
    inner loops (that alone halves their cost).
    """
    n, p = x32.shape
    n_trees = roots.shape[0]
    out = np.empty(n, dtype=np.float64)
    n_blocks = (n + block - 1) // block
    ublock = np.uint64(block)
    for b in prange(n_blocks):
        start = b * block
        m = min(n, start + block) - start
        acc = np.zeros(block, dtype=np.float64)
        node = np.empty(block, dtype=np.uint32)
        act = np.empty(block, dtype=np.uint32)
        # the block feature-major (xt[f * block + i]); padding lanes of the
        # last block hold 0.0, are walked like any pixel and discarded
        xt = np.zeros(p * block, dtype=np.float32)
        for i in range(m):
            for f in range(p):
                xt[f * block + i] = x32[start + i, f]
        for t in range(n_trees):
            root = np.uint32(roots[t])
            d = depth[t]
            for i in range(ublock):
                node[i] = root
            # the top levels in lockstep over the whole block: independent
            # loads, no branch (leaves point to themselves) ...
            l0 = min(lockstep, d)
            for _ in range(l0):
                for i in range(ublock):
                    k = node[i]
                    node[i] = child[k] + np.uint32(xt[foff[k] + i] > threshold[k])
            # ... then only the pixels not yet on a leaf, compacted (without a
            # branch) every `every` levels, until the tree's depth
            if l0 < d:
                na = np.uint64(0)
                for i in range(ublock):
                    act[na] = i
                    na += np.uint64(child[node[i]] != node[i])
                lv = l0
                while na > 0 and lv < d:
                    s = min(every, d - lv)
                    for _ in range(s):
                        for j in range(na):
                            i = act[j]
                            k = node[i]
                            node[i] = child[k] + np.uint32(xt[foff[k] + np.uint64(i)] > threshold[k])
                    lv += s
                    nn = np.uint64(0)
                    for j in range(na):
                        i = act[j]
                        act[nn] = i
                        nn += np.uint64(child[node[i]] != node[i])
                    na = nn
            for i in range(ublock):
                acc[i] += value[node[i]]
        for i in range(m):
            out[start + i] = acc[i] / n_trees if ok[start + i] else np.nan
    return out


@njit(cache=True, nogil=True, parallel=True)
def _per_tree_kernel(x32, child, feature, threshold, value, roots, depth):
    n = x32.shape[0]
    n_trees = roots.shape[0]
    out = np.empty((n_trees, n), dtype=np.float64)
    for t in prange(n_trees):
        for i in range(n):
            k = roots[t]
            for _ in range(depth[t]):
                k = child[k] + (x32[i, feature[k]] > threshold[k])
            out[t, i] = value[k]
    return out


def _as_float32(X: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ForestError(
            f"X: shape {X.shape}; expected (n_pixels, {n_features}) with the columns in the order "
            "the forest was fitted on."
        )
    x32 = np.ascontiguousarray(X, dtype=np.float32)
    ok = np.isfinite(x32).all(axis=1)
    return x32, ok


def _flat(model) -> FlatForest:
    return model if isinstance(model, FlatForest) else flatten_forest(model)


def predict_forest(model, X: np.ndarray) -> np.ndarray:
    """Predict a regression forest with the compiled kernel (parallel over pixels).

    Equal to ``model.predict(X)`` to rounding (≤ 1e-12 relative; the tree sum is
    accumulated in float64 in tree order) for finite rows.

    Parameters
    ----------
    model : RandomForestRegressor or FlatForest
        A fitted single-output forest, or its :func:`flatten_forest` result
        (flatten once when predicting many blocks).
    X : ndarray, shape (n, n_features)
        Features in the fitting column order and units. Cast to float32 like
        scikit-learn does.

    Returns
    -------
    ndarray of float64, shape (n,)
        Mean of the tree predictions, in target units; NaN for rows with any
        non-finite feature.
    """
    flat = _flat(model)
    x32, ok = _as_float32(X, flat.n_features)
    if x32.shape[0] == 0:
        return np.empty(0, dtype=np.float64)
    if flat.n_features * _BLOCK >= 2**32:
        raise ForestError(
            f"model: {flat.n_features} features; the kernel supports fewer than {2**32 // _BLOCK}. "
            "Fit the forest on fewer drivers."
        )
    foff = flat.feature.astype(np.uint32) * np.uint32(_BLOCK)
    return _predict_kernel(
        x32, ok, flat.child.view(np.uint32), foff, flat.threshold, flat.value, flat.roots, flat.depth,
        _BLOCK, _LOCKSTEP, _EVERY,
    )


def predict_trees(model, X: np.ndarray) -> np.ndarray:
    """Every tree's prediction for every row (for OOB and permutation work).

    Parameters
    ----------
    model : RandomForestRegressor or FlatForest
    X : ndarray, shape (n, n_features), finite

    Returns
    -------
    ndarray of float64, shape (n_trees, n)
        ``out[t, i]`` = prediction of tree ``t`` for row ``i`` (target units).
    """
    flat = _flat(model)
    x32, ok = _as_float32(X, flat.n_features)
    if not ok.all():
        raise ForestError("X: contains NaN or infinite values; per-tree prediction needs finite rows.")
    return _per_tree_kernel(x32, flat.child, flat.feature, flat.threshold, flat.value, flat.roots, flat.depth)


@njit(cache=True, nogil=True, parallel=True)
def _permuted_kernel(x32, trees, rows, row_off, perms, perm_off, groups, grp_off, out_off, member,
                     child, feature, threshold, value, roots):
    out = np.empty(out_off[-1], dtype=np.float64)
    for j in prange(trees.shape[0]):
        r0 = row_off[j]
        r = row_off[j + 1] - r0
        g0 = grp_off[j]
        g = grp_off[j + 1] - g0
        p0 = perm_off[j]
        o0 = out_off[j]
        root = roots[trees[j]]
        for k in range(g + 1):
            for i in range(r):
                node = root
                while child[node] != node:
                    f = feature[node]
                    src = i
                    if k > 0 and member[groups[g0 + k - 1], f]:
                        src = perms[p0 + (k - 1) * r + i]
                    node = child[node] + (x32[rows[r0 + src], f] > threshold[node])
                out[o0 + k * r + i] = value[node]
    return out


def predict_trees_permuted(
    flat: FlatForest,
    X: np.ndarray,
    trees: Sequence[int],
    rows: Sequence[np.ndarray],
    perms: Sequence[np.ndarray],
    groups: Sequence[np.ndarray],
    member: np.ndarray,
) -> list[np.ndarray]:
    """Per-tree predictions of chosen rows, as they are and with column groups permuted among them.

    For item ``j``, tree ``t = trees[j]`` and its rows ``R = rows[j]``:
    row 0 of the result is ``estimators_[t].predict(X[R])`` and row ``k + 1``
    is ``estimators_[t].predict(Xp)`` with ``Xp = X[R].copy()`` and
    ``Xp[:, c] = X[R][perms[j][k], c]`` for every column ``c`` with
    ``member[groups[j][k], c]`` (permutation importance: scikit-learn's
    decisions and leaf values, exactly), without building the copies.
    Items are evaluated in parallel.

    Parameters
    ----------
    flat : FlatForest
    X : ndarray, shape (n, n_features), finite
        Cast to float32 like scikit-learn does.
    trees : sequence of int, length J
        Tree of each item.
    rows : sequence of ndarray of int, J arrays of shape (r_j,)
        Rows of ``X`` evaluated by item ``j`` (e.g. the tree's out-of-bag rows).
    perms : sequence of ndarray of int, J arrays of shape (g_j, r_j)
        Permutations of ``0 .. r_j - 1``, one per permuted group.
    groups : sequence of ndarray of int, J arrays of shape (g_j,)
        Row of ``member`` describing each permuted group.
    member : ndarray of bool, shape (G, n_features)
        ``member[q, c]``: column ``c`` belongs to group ``q``.

    Returns
    -------
    list of ndarray of float64, J arrays of shape (g_j + 1, r_j)
        Predictions in target units.
    """
    x32, ok = _as_float32(X, flat.n_features)
    if not ok.all():
        raise ForestError("X: contains NaN or infinite values; per-tree prediction needs finite rows.")
    J = len(trees)
    if not (len(rows) == len(perms) == len(groups) == J):
        raise ForestError("trees, rows, perms, groups: need one entry per item (equal lengths).")
    member = np.ascontiguousarray(member, dtype=np.bool_)
    if member.ndim != 2 or member.shape[1] != flat.n_features:
        raise ForestError(f"member: shape {member.shape}; need (n_groups, {flat.n_features}).")
    tr = np.asarray(trees, dtype=np.int64).reshape(J)
    if J and (tr.min() < 0 or tr.max() >= flat.n_trees):
        raise ForestError(f"trees: indices must be in 0 .. {flat.n_trees - 1}.")
    r = np.array([np.size(v) for v in rows], dtype=np.int64)
    g = np.array([np.size(v) for v in groups], dtype=np.int64)
    row_off = np.zeros(J + 1, dtype=np.int64)
    grp_off = np.zeros(J + 1, dtype=np.int64)
    perm_off = np.zeros(J + 1, dtype=np.int64)
    out_off = np.zeros(J + 1, dtype=np.int64)
    np.cumsum(r, out=row_off[1:])
    np.cumsum(g, out=grp_off[1:])
    np.cumsum(g * r, out=perm_off[1:])
    np.cumsum((g + 1) * r, out=out_off[1:])
    cat = lambda parts: np.concatenate([np.asarray(v, dtype=np.int64).ravel() for v in parts]) if J else np.empty(0, np.int64)  # noqa: E731
    rows_c, perms_c, groups_c = cat(rows), cat(perms), cat(groups)
    if rows_c.size and (rows_c.min() < 0 or rows_c.max() >= x32.shape[0]):
        raise ForestError(f"rows: indices must be rows of X (0 .. {x32.shape[0] - 1}).")
    if perms_c.size != perm_off[-1] or any(
        np.size(pm) and (np.min(pm) < 0 or np.max(pm) >= n) for pm, n in zip(perms, r)
    ):
        raise ForestError("perms: item j needs shape (len(groups[j]), len(rows[j])) with values in 0 .. len(rows[j]) - 1.")
    if groups_c.size and (groups_c.min() < 0 or groups_c.max() >= member.shape[0]):
        raise ForestError(f"groups: indices must be rows of member (0 .. {member.shape[0] - 1}).")
    out = _permuted_kernel(
        x32, tr, rows_c, row_off, perms_c, perm_off, groups_c, grp_off, out_off, member,
        flat.child, flat.feature, flat.threshold, flat.value, flat.roots,
    )
    return [out[out_off[j]:out_off[j + 1]].reshape(g[j] + 1, r[j]) for j in range(J)]


# --------------------------------------------------------------------------- fitting
class _SeededStates(threading.local):
    """One reusable ``RandomState`` per thread.

    ``RandomState(seed)`` costs ~0.26 ms (its constructor first seeds the bit
    generator from OS entropy, then with the legacy seed); ``.seed(seed)`` on
    an existing one reaches the identical state in microseconds.
    """

    def __init__(self) -> None:
        self.rs = np.random.RandomState(0)

    def get(self, seed: int) -> np.random.RandomState:
        self.rs.seed(seed)
        return self.rs


_STATES = _SeededStates()


def _bootstrap_indices(seed: int, n_samples: int, n_draws: int) -> np.ndarray:
    """In-bag rows of one tree, drawn as scikit-learn draws them (``randint(0, n, n_draws)``, int32)."""
    return _STATES.get(seed).randint(0, n_samples, n_draws).astype(np.int32)


class FastRandomForestRegressor(RandomForestRegressor):
    """``RandomForestRegressor`` without most of the per-tree Python overhead of ``fit``.

    Same constructor and parameters, and for the common case (dense finite
    ``X``, single-output ``y``, no ``sample_weight``, ``bootstrap=True``,
    ``max_samples=None``, no ``warm_start``, default ``oob_score``) the same
    trees, ``estimators_samples_``, ``oob_prediction_``, ``oob_score_`` and
    fitted attributes as scikit-learn's ``RandomForestRegressor``
    (scikit-learn 1.9; checked bit for bit in ``tests/test_forest.py``). Any
    other case is passed to scikit-learn's own ``fit``.

    What differs is only how the same computations are driven:

    * the unfitted trees are copies of one prototype made by scikit-learn's
      ``_make_estimator`` (clone + the forest's tree parameters), each with its
      seed drawn by ``random_state.randint(np.iinfo(np.int32).max)`` from the
      forest's ``RandomState`` in tree order, as scikit-learn's
      ``_set_random_states`` does (saves ``get_params``/``inspect.signature``
      per tree);
    * the ``RandomState`` objects seeded with a tree's seed (for its bootstrap
      draw ``randint(0, n, n)`` and for its splitter) are re-seeded
      per-thread instances rather than new ones (each new one costs ~0.26 ms
      of OS entropy with the GIL held); the tree keeps its integer seed;
    * the trees are fitted by ``DecisionTreeRegressor._fit`` with the
      bootstrap counts as ``sample_weight`` (as scikit-learn's forest does) in
      a pool of ``n_jobs`` threads pulling trees in order;
    * out-of-bag predictions sum the compiled per-tree predictions of the
      OOB rows (:func:`predict_trees_permuted` without permutation:
      scikit-learn's exact decisions and leaf values) in tree order in
      float64, then divide by the OOB counts, as scikit-learn does.
    """

    def _make_estimator(self, append: bool = True, random_state=None):
        # inside fit(): the first call makes the prototype with scikit-learn's own
        # method (clone + set_params of the forest's tree parameters, no seed)
        proto = self.__dict__.get("_npp_tree_proto")
        if proto is None:
            proto = super()._make_estimator(append=False, random_state=None)
            if type(proto) is not DecisionTreeRegressor:  # a custom tree class: no shortcut
                return super()._make_estimator(append=append, random_state=random_state)
            if "_npp_tree_proto" in self.__dict__:
                self._npp_tree_proto = proto
        est = DecisionTreeRegressor.__new__(DecisionTreeRegressor)
        est.__dict__.update(proto.__dict__)
        if random_state is not None:
            # as scikit-learn's _set_random_states: one randint(MAX_INT) per
            # parameter named *random_state (a tree has exactly one)
            est.random_state = check_random_state(random_state).randint(_MAX_INT)
        if append:
            self.estimators_.append(est)
        return est

    def _fast_path(self, X, y, sample_weight) -> bool:
        """True when :meth:`fit` reproduces scikit-learn's fit with its own loop."""
        if sample_weight is not None or issparse(X) or issparse(y):
            return False
        if self.warm_start or not self.bootstrap or self.max_samples is not None or callable(self.oob_score):
            return False
        if self.criterion == "poisson" or self.monotonic_cst is not None or self.verbose:
            return False
        if self.estimator is not None and type(self.estimator) is not DecisionTreeRegressor:
            return False
        X = np.asarray(X)
        y = np.asarray(y)
        return X.ndim == 2 and y.ndim == 1 and X.dtype.kind in "fiub" and bool(np.isfinite(X).all())

    def fit(self, X, y, sample_weight=None):
        """Fit exactly like ``RandomForestRegressor.fit`` (see the class docstring).

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Drivers (cast to float32, as scikit-learn does).
        y : array-like, shape (n_samples,)
            Target (float64).
        sample_weight : array-like, shape (n_samples,), optional
            Passed to scikit-learn's own ``fit``.

        Returns
        -------
        self
        """
        self._npp_tree_proto = None
        try:
            if self._fast_path(X, y, sample_weight):
                return self._fit_trees(X, y)
            return super().fit(X, y, sample_weight=sample_weight)
        finally:
            self.__dict__.pop("_npp_tree_proto", None)

    @_fit_context(prefer_skip_nested_validation=True)
    def _fit_trees(self, X, y):
        X, y = validate_data(
            self, X, y, multi_output=True, accept_sparse="csc", dtype=np.float32, ensure_all_finite=False
        )
        y = np.reshape(np.atleast_1d(y), (-1, 1))
        y = np.ascontiguousarray(y, dtype=np.float64)
        n_samples = X.shape[0]
        self._n_samples, self.n_outputs_ = y.shape
        self._sample_weight = None
        self._n_samples_bootstrap = n_samples  # max_samples=None: n draws
        self._validate_estimator()
        random_state = check_random_state(self.random_state)
        self.estimators_ = []
        trees = [self._make_estimator(append=False, random_state=random_state) for _ in range(self.n_estimators)]
        counts: list[np.ndarray | None] = [None] * len(trees)
        next_tree = itertools.count()
        failed = threading.Event()

        def work() -> None:
            # threads take trees in order; DepthFirstTreeBuilder.build releases the GIL
            while not failed.is_set() and (t := next(next_tree)) < len(trees):
                tree = trees[t]
                seed = tree.random_state
                c = np.bincount(_bootstrap_indices(seed, n_samples, n_samples), minlength=n_samples)
                tree.random_state = _STATES.get(seed)  # what check_random_state(seed) would return
                try:
                    tree._fit(X, y, sample_weight=c, check_input=False, missing_values_in_feature_mask=None)
                except BaseException:
                    failed.set()
                    raise
                finally:
                    tree.random_state = seed
                counts[t] = c

        n_threads = max(1, min(effective_n_jobs(self.n_jobs), len(trees)))
        if n_threads == 1:
            work()
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                for f in [pool.submit(work) for _ in range(n_threads)]:
                    f.result()
        self.estimators_.extend(trees)
        if self.oob_score:
            self._set_oob_from_counts(X, y, counts)
        return self

    def _get_estimators_indices(self):
        if not self.bootstrap or getattr(self, "_sample_weight", None) is not None:
            yield from super()._get_estimators_indices()
            return
        for tree in self.estimators_:
            yield _bootstrap_indices(tree.random_state, self._n_samples, self._n_samples_bootstrap)

    def _set_oob_score_and_attributes(self, X, y, scoring_function=None):
        if (
            issparse(X)
            or self.n_outputs_ != 1
            or getattr(self, "_sample_weight", None) is not None
            or not np.isfinite(X).all()
        ):
            return super()._set_oob_score_and_attributes(X, y, scoring_function=scoring_function)
        n = y.shape[0]
        counts = [np.bincount(idx, minlength=n) for idx in self._get_estimators_indices()]
        self._set_oob_from_counts(X, y, counts, scoring_function)

    def _set_oob_from_counts(self, X, y, counts, scoring_function=None) -> None:
        n_samples = y.shape[0]
        unsampled = [np.flatnonzero(c == 0) for c in counts]
        none = np.empty(0, dtype=np.int64)
        # each tree on its OOB rows only (no group permuted)
        per_tree = predict_trees_permuted(
            flatten_forest(self), X, range(len(unsampled)), unsampled,
            [none.reshape(0, u.size) for u in unsampled], [none] * len(unsampled),
            np.zeros((1, X.shape[1]), dtype=bool),
        )
        oob_pred = np.zeros((n_samples, 1, 1), dtype=np.float64)
        n_oob_pred = np.zeros((n_samples, 1), dtype=np.int64)
        for rows, pred in zip(unsampled, per_tree):  # tree order, as scikit-learn sums
            oob_pred[rows, 0, 0] += pred[0]
            n_oob_pred[rows, 0] += 1
        if (n_oob_pred == 0).any():
            warnings.warn(
                "Some inputs do not have OOB scores. This probably means too few trees were used "
                "to compute any reliable OOB estimates.",
                UserWarning,
            )
            n_oob_pred[n_oob_pred == 0] = 1
        oob_pred[..., 0] /= n_oob_pred[..., [0]]
        self.oob_prediction_ = oob_pred.squeeze(axis=1).squeeze(axis=-1)
        self.oob_score_ = (scoring_function or r2_score)(y, self.oob_prediction_)
