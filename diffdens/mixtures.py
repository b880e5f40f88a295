"""Exact ground truth: a Gaussian mixture diffused by a linear SDE.

If p_0 = sum_k w_k N(m_k, C_k) and p(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I), then
p_t = sum_k w_k N(alpha_t m_k, alpha_t^2 C_k + sigma_t^2 I) exactly, with score
grad log p_t(x) = -sum_k r_k(x) (alpha_t^2 C_k + sigma_t^2 I)^{-1} (x - alpha_t m_k), r_k the responsibilities.

Each C_k = U_k diag(l_k) U_k^T is eigendecomposed once at construction, so every later evaluation is matrix
products only (no Cholesky or triangular solves inside jit, which were seen to deadlock jaxlib on 2-core CPUs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import as_float_array, check_positive_int, check_key
from .sde import LinearSDE, check_sde


def _components_logpdf(x, weights, means, U, var):
    """log w_k + log N(x; means_k, U_k diag(var_k) U_k^T) for x (..., D); returns (..., K) and whitened z."""
    diff = x[..., None, :] - means  # (..., K, D)
    z = jnp.einsum("...kd,kde->...ke", diff, U)  # coordinates in each eigenbasis
    quad = jnp.sum(z**2 / var, axis=-1)
    logdet = jnp.sum(jnp.log(var), axis=-1)
    d = x.shape[-1]
    return jnp.log(weights) - 0.5 * (quad + logdet + d * jnp.log(2 * jnp.pi)), z


@jax.tree_util.register_pytree_node_class
class GaussianMixture:
    """p_0 = sum_k w_k N(m_k, C_k) with full covariances, the exact ground truth of the book.

    A pytree (its arrays are the children), so a mixture's ``score`` passed to an estimator is traced, not compiled
    in: two mixtures of the same K and D share one compilation. Methods: ``log_prob(x)`` (x (..., D) -> (...,)),
    ``sample(key, n)`` -> (n, D), ``diffuse(sde)`` -> :class:`DiffusedMixture`, ``bin_log_prob(lo, hi)`` -> the
    exact log-probability of boxes (quantized data).

    Arguments:
        weights: (K,) non-negative, summing to 1.
        means: (K, D).
        covs: (K, D, D) symmetric positive definite (eigendecomposed once, here).
    """

    _FIELDS = ("weights", "means", "covs", "eigvals", "eigvecs")

    def tree_flatten(self):
        return tuple(getattr(self, k) for k in self._FIELDS), (self.dim, self.n_components)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for k, v in zip(cls._FIELDS, children):
            setattr(obj, k, v)
        obj.dim, obj.n_components = aux
        return obj

    def __init__(self, weights, means, covs):
        w = np.asarray(weights, dtype=np.float64)
        m = np.asarray(means, dtype=np.float64)
        c = np.asarray(covs, dtype=np.float64)
        if w.ndim != 1 or w.size < 1:
            raise ValueError(f"weights must have shape (K,), got {w.shape}")
        K = w.shape[0]
        if m.ndim != 2 or m.shape[0] != K:
            raise ValueError(f"means must have shape (K, D) with K={K}, got {m.shape}")
        D = m.shape[1]
        if c.shape != (K, D, D):
            raise ValueError(f"covs must have shape (K, D, D) = {(K, D, D)}, got {c.shape}")
        for name, a in (("weights", w), ("means", m), ("covs", c)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} contains NaN or inf")
        if np.any(w < 0) or abs(w.sum() - 1) > 1e-6:
            raise ValueError(f"weights must be non-negative and sum to 1, got sum {w.sum()}")
        if not np.allclose(c, np.swapaxes(c, 1, 2), rtol=1e-10, atol=1e-12):
            raise ValueError("covs must be symmetric")
        lam, U = np.linalg.eigh(c)
        if np.any(lam <= 0):
            raise ValueError(f"covs must be positive definite (smallest eigenvalue {lam.min():.3g})")
        self.weights, self.means, self.covs = w, m, c
        self.eigvals, self.eigvecs = lam, U  # C_k = U_k diag(eigvals_k) U_k^T
        self.dim, self.n_components = D, K

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim})"

    def _params(self, dtype):
        return tuple(jnp.asarray(a, dtype=dtype) for a in (self.weights, self.means, self.eigvecs, self.eigvals))

    def _check_x(self, x, name="x"):
        x = as_float_array(x, name)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"{name} must have last dimension D={self.dim}, got shape {x.shape}")
        return x

    def log_prob(self, x: Float[Array, "*b D"]) -> Float[Array, "*b"]:
        """log p_0(x)."""
        x = self._check_x(x)
        w, m, U, lam = self._params(x.dtype)
        return logsumexp(_components_logpdf(x, w, m, U, lam)[0], axis=-1)

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n D"]:
        """n independent draws from p_0."""
        check_key(key)
        n = check_positive_int(n, "n")
        dtype = jnp.result_type(float)
        w, m, U, lam = self._params(dtype)
        kc, kz = jax.random.split(key)
        k = jax.random.categorical(kc, jnp.log(w), shape=(n,))
        z = jax.random.normal(kz, (n, self.dim), dtype=dtype)
        return m[k] + jnp.einsum("nde,ne->nd", U[k], jnp.sqrt(lam[k]) * z)

    def diffuse(self, sde: LinearSDE) -> "DiffusedMixture":
        """The exact marginal family p_t of this mixture under ``sde``."""
        return DiffusedMixture(self, sde)

    def bin_log_prob(self, lo, hi, *, n_nodes: int = 32) -> np.ndarray:
        """log of the mixture's probability of boxes, log int_{lo}^{hi} p_0(x) dx (the exact discrete log-probability
        of a quantized mixture), by tensor-product Gauss-Legendre quadrature in float64 on the host, with
        ``n_nodes`` nodes per dimension (exact to rounding when each box is at most a few component standard
        deviations wide). Cost n_nodes^D per box, so D <= 3.

        Arguments:
            lo: (n, D) the lower corners.
            hi: (n, D) the upper corners (hi > lo).
            n_nodes: quadrature nodes per dimension.

        Returns:
            (n,) float64 numpy array of log-probabilities.
        """
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        if lo.ndim != 2 or lo.shape != hi.shape or lo.shape[1] != self.dim:
            raise ValueError(f"lo and hi must have shape (n, D={self.dim}), got {lo.shape} and {hi.shape}")
        if self.dim > 3:
            raise ValueError(f"bin_log_prob integrates on a tensor grid: D <= 3, got D={self.dim}")
        if not np.all(hi > lo):
            raise ValueError("hi must exceed lo in every dimension")
        g, gw = np.polynomial.legendre.leggauss(check_positive_int(n_nodes, "n_nodes"))
        grids = np.stack(np.meshgrid(*([g] * self.dim), indexing="ij"), -1).reshape(-1, self.dim)  # (m, D)
        wts = np.prod(np.stack(np.meshgrid(*([gw] * self.dim), indexing="ij"), -1).reshape(-1, self.dim), -1)
        half, mid = (hi - lo) / 2, (hi + lo) / 2
        pts = mid[:, None, :] + half[:, None, :] * grids[None]  # (n, m, D)
        diff = pts[..., None, :] - self.means  # (n, m, K, D)
        z = np.einsum("nmkd,kde->nmke", diff, self.eigvecs)
        logc = (np.log(self.weights) - 0.5 * (np.sum(z**2 / self.eigvals, -1) + np.sum(np.log(self.eigvals), -1)
                                              + self.dim * np.log(2 * np.pi)))
        logp = np.logaddexp.reduce(logc, axis=-1)  # (n, m)
        return np.logaddexp.reduce(logp + np.log(wts), axis=-1) + np.sum(np.log(half), -1)


@jax.tree_util.register_pytree_node_class
class DiffusedMixture:
    """p_t = sum_k w_k N(alpha_t m_k, alpha_t^2 C_k + sigma_t^2 I): exact log p_t, score and samples.

    Methods: ``log_prob(x, t)`` (x (..., D) -> (...,)), ``score(x, t)`` (x (..., D) -> (..., D); the package
    convention on one point x of shape (D,) and scalar t, broadcasting over leading axes of x), ``sample(key, n, t)``
    -> (n, D), ``marginal(t)`` -> the :class:`GaussianMixture` p_t. A pytree: the mixture's arrays are traced, the SDE static.

    Arguments:
        mixture: the :class:`GaussianMixture` p_0.
        sde: the forward SDE (:class:`diffdens.LinearSDE`).
    """

    def __init__(self, mixture: GaussianMixture, sde: LinearSDE):
        check_sde(sde)
        self.mixture, self.sde = mixture, sde
        self.dim = mixture.dim

    def __repr__(self) -> str:
        return f"DiffusedMixture({self.mixture!r}, {self.sde!r})"

    def tree_flatten(self):
        return (self.mixture,), (self.sde,)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.mixture, obj.sde, obj.dim = children[0], aux[0], getattr(children[0], "dim", None)
        return obj

    def _at(self, x, t):
        x = self.mixture._check_x(x)
        self.sde.check_time(t)
        t = jnp.asarray(t, dtype=x.dtype)
        w, m, U, lam = self.mixture._params(x.dtype)
        alpha, sigma = self.sde.marginal(t)
        var = alpha**2 * lam + sigma**2  # (K, D) eigenvalues of alpha^2 C_k + sigma^2 I
        logc, z = _components_logpdf(x, w, alpha * m, U, var)
        return logc, z, U, var

    def log_prob(self, x: Float[Array, "*b D"], t) -> Float[Array, "*b"]:
        """log p_t(x)."""
        logc, *_ = self._at(x, t)
        return logsumexp(logc, axis=-1)

    def score(self, x: Float[Array, "*b D"], t) -> Float[Array, "*b D"]:
        """grad_x log p_t(x), in closed form."""
        logc, z, U, var = self._at(x, t)
        r = jax.nn.softmax(logc, axis=-1)  # (..., K)
        return -jnp.einsum("...k,kde,...ke->...d", r, U, z / var)

    def marginal(self, t: float) -> GaussianMixture:
        """p_t as a :class:`GaussianMixture` (weights w_k, means alpha_t m_k, covariances alpha_t^2 C_k +
        sigma_t^2 I) at a concrete time t, e.g. for its :meth:`GaussianMixture.bin_log_prob`."""
        self.sde.check_time(t)
        alpha, sigma = (float(v) for v in self.sde.marginal(jnp.asarray(float(t), jnp.float32)))
        m = self.mixture
        return GaussianMixture(m.weights, alpha * m.means, alpha**2 * m.covs + sigma**2 * np.eye(m.dim))

    def sample(self, key: PRNGKeyArray, n: int, t) -> Float[Array, "n D"]:
        """n draws from p_t (x_0 from the mixture, then the transition kernel)."""
        check_key(key)
        self.sde.check_time(t)
        k0, kt = jax.random.split(key)
        x0 = self.mixture.sample(k0, n)
        return self.sde.perturb(kt, x0, jnp.asarray(t, dtype=x0.dtype))[0]


def random_mixture(key: PRNGKeyArray, n_components: int, dim: int, *, spread: float = 2.0, scale: float = 0.5):
    """A reproducible random mixture: Dirichlet(2) weights, N(0, spread^2) means, covariances A A^T / D + 0.05 I
    scaled by ``scale``^2 (full, well conditioned).

    Arguments:
        key: PRNG key.
        n_components: the number of components K.
        dim: the dimension D.
        spread: the standard deviation of the means.
        scale: the scale of the covariances.

    Returns:
        :class:`GaussianMixture` with K components in D dimensions.
    """
    n_components = check_positive_int(n_components, "n_components")
    dim = check_positive_int(dim, "dim")
    kw, km, kc = jax.random.split(key, 3)
    w = np.asarray(jax.random.dirichlet(kw, 2.0 * jnp.ones(n_components)), np.float64)
    w = w / w.sum()
    means = spread * np.asarray(jax.random.normal(km, (n_components, dim)), np.float64)
    A = np.asarray(jax.random.normal(kc, (n_components, dim, dim)), np.float64) / np.sqrt(dim)
    covs = scale**2 * (A @ np.swapaxes(A, 1, 2) + 0.05 * np.eye(dim))
    return GaussianMixture(w, means, covs)


def standard_mixture(name: str) -> GaussianMixture:
    """The named test-bed mixtures used across the book.

    * ``"2d"``: three components in D=2 (chapter 1's running example).
    * ``"9d"``: six components in D=9, the setting of Premkumar 2024, Fig. 1 and Sec. 4 (the paper does
      not publish its parameters; ours are drawn once from a fixed key with :func:`random_mixture`).
    * ``"four"``: four isotropic components in D=2 on the corners of a square, the bottom-left one the heaviest, the
      setting of Karczewski et al. 2025, Fig. 6 (parameters not published; ours: means (+-2, +-2), weights
      0.4 bottom-left and 0.2 elsewhere, covariance 0.3 I).

    Arguments:
        name: ``"2d"``, ``"9d"`` or ``"four"``.

    Returns:
        :class:`GaussianMixture`.
    """
    if name == "2d":
        return GaussianMixture(
            weights=[0.5, 0.3, 0.2],
            means=[[-1.5, 0.0], [1.5, 1.0], [0.5, -1.5]],
            covs=[[[0.30, 0.15], [0.15, 0.20]], [[0.10, 0.0], [0.0, 0.40]], [[0.2, -0.1], [-0.1, 0.15]]],
        )
    if name == "9d":
        return random_mixture(jax.random.key(9), 6, 9, spread=1.5, scale=0.6)
    if name == "four":
        return GaussianMixture(
            weights=[0.4, 0.2, 0.2, 0.2],
            means=[[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]],
            covs=[0.3 * np.eye(2)] * 4,
        )
    raise ValueError(f"name must be one of ('2d', '9d', 'four'), got {name!r}")
