"""Layout convention: per-mode blocks as dense operators on the flattened event.

Each dense operator is compared with an independent construction: ``np.kron`` for blocks, the
elementwise product for scalars and ``scipy.fft.dctn``/``idctn`` for the DCT basis.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.fft import dctn, idctn

import gddim_numerics as gd
from gddim_numerics.layout import basis_matrix, dense_operator, event_size, validate_event_shape

VP = gd.VPSDE.linear()
CLD = gd.CLD()
BDM = gd.BDM((4, 4))
DENSE = gd.ConstantCoefficientSDE(
    np.array([[-1.0, 0.5, 0.0], [0.0, -2.0, 1.0], [0.3, 0.0, -1.5]]), np.eye(3), initial_covariance=0.01 * np.eye(3)
)


@pytest.mark.parametrize(
    "diffusion, event_shape",
    [(VP, ()), (VP, (5,)), (VP, (2, 3, 4)), (CLD, (2,)), (CLD, (3, 2)), (CLD, (2, 2, 2)), (DENSE, (3,)),
     (DENSE, (2, 3)), (BDM, (4, 4)), (BDM, (1, 4, 4)), (BDM, (3, 4, 4))],
)
def test_valid_event_shapes_are_returned_as_int_tuples(diffusion, event_shape):
    out = validate_event_shape(diffusion, [np.int64(n) for n in event_shape])
    assert out == event_shape and all(type(n) is int for n in out)


@pytest.mark.parametrize(
    "diffusion, event_shape, needle",
    [(CLD, (2, 3), "block axis of size k = 2"), (CLD, (), "block axis"), (DENSE, (3, 2), "k = 3"),
     (BDM, (4, 5), "image axes (4, 4)"), (BDM, (4,), "image axes"), (BDM, (16,), "image axes"),
     (VP, (0, 3), "positive ints"), (VP, (2.0,), "positive ints"), (VP, 3, "positive ints")],
)
def test_invalid_event_shapes_name_shape_and_expectation(diffusion, event_shape, needle):
    with pytest.raises(ValueError, match="event_shape") as info:
        validate_event_shape(diffusion, event_shape)
    assert needle in str(info.value)


def test_mats_of_the_wrong_structure_are_refused():
    with pytest.raises(ValueError, match=r"\(\.\.\., 1, 2, 2\)"):
        dense_operator(CLD, np.ones((1, 3, 3)), (3, 2))
    with pytest.raises(ValueError, match="mats"):
        dense_operator(BDM, np.ones(16), (4, 4))


def test_scalar_diffusion_gives_multiple_of_identity():
    c = VP.covariance(np.array([0.3, 0.7]))  # (2, 1, 1, 1)
    op = dense_operator(VP, c, (2, 3))
    assert op.shape == (2, 6, 6)
    np.testing.assert_array_equal(op, c[:, 0, 0, 0, None, None] * np.eye(6))


@pytest.mark.parametrize("diffusion, event_shape", [(CLD, (3, 2)), (DENSE, (2, 3)), (CLD, (2, 2, 2))])
def test_block_diffusion_is_kron_with_identity_on_the_last_axis(diffusion, event_shape):
    blocks = diffusion.gddim_factor(np.array([0.2, 0.9]))  # (2, 1, k, k)
    op = dense_operator(diffusion, blocks, event_shape)
    k = diffusion.block_size
    copies = event_size(event_shape) // k
    for i in range(2):
        np.testing.assert_array_equal(op[i], np.kron(np.eye(copies), blocks[i, 0]))
    x = np.random.default_rng(1).standard_normal(event_shape)
    applied = np.einsum("ij,...j->...i", blocks[1, 0], x)
    np.testing.assert_allclose((op[1] @ x.ravel()).reshape(event_shape), applied, rtol=0, atol=1e-14)  # measured 5.6e-17


@pytest.mark.parametrize("event_shape", [(4, 4), (2, 4, 4)])
def test_dct_diffusion_matches_scipy_dctn(event_shape):
    d = BDM.mean_coefficient(np.array([0.1, 0.5, 0.9]))  # (3, 16, 1, 1)
    op = dense_operator(BDM, d, event_shape)
    x = np.random.default_rng(2).standard_normal(event_shape)
    for i in range(3):
        y = dctn(x, type=2, norm="ortho", axes=(-2, -1))
        expected = idctn(d[i, :, 0, 0].reshape(4, 4) * y, type=2, norm="ortho", axes=(-2, -1))
        np.testing.assert_allclose((op[i] @ x.ravel()).reshape(event_shape), expected, rtol=0, atol=1e-13)  # measured 8.9e-16


@pytest.mark.parametrize("diffusion, event_shape", [(VP, (3,)), (CLD, (3, 2)), (BDM, (2, 4, 4)), (DENSE, (2, 3))])
def test_basis_matrix_is_orthogonal_and_block_diagonalizes(diffusion, event_shape):
    v = basis_matrix(diffusion, event_shape)
    n = event_size(event_shape)
    np.testing.assert_allclose(v.T @ v, np.eye(n), rtol=0, atol=1e-14)  # measured 4.4e-16
    blocks = diffusion.covariance(0.4)
    in_modes = v.T @ dense_operator(diffusion, blocks, event_shape) @ v
    k, m = diffusion.block_size, diffusion.n_modes
    expected = np.kron(np.eye(n // (m * k)), _block_diag(blocks))
    np.testing.assert_allclose(in_modes, expected, rtol=0, atol=1e-14)  # measured 2.8e-16


def _block_diag(blocks):
    m, k, _ = blocks.shape
    out = np.zeros((m * k, m * k))
    for i in range(m):
        out[i * k:(i + 1) * k, i * k:(i + 1) * k] = blocks[i]
    return out


@given(seed=st.integers(0, 2**32 - 1), which=st.sampled_from(["cld", "dense", "bdm"]))
def test_dense_operator_is_an_algebra_homomorphism(seed, which):
    """``dense(A B) = dense(A) dense(B)``, ``dense(A^T) = dense(A)^T``, ``dense(I) = I``."""
    diffusion, event_shape = {"cld": (CLD, (3, 2)), "dense": (DENSE, (2, 3)), "bdm": (BDM, (2, 4, 4))}[which]
    m, k = diffusion.shape
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, m, k, k))
    da, db = (dense_operator(diffusion, x, event_shape) for x in (a, b))
    np.testing.assert_allclose(dense_operator(diffusion, a @ b, event_shape), da @ db, rtol=0, atol=1e-12)  # measured 3.9e-16
    np.testing.assert_allclose(dense_operator(diffusion, np.swapaxes(a, -1, -2), event_shape), da.T, rtol=0, atol=1e-13)  # measured 1.3e-16
    eye = np.broadcast_to(np.eye(k), (m, k, k))
    np.testing.assert_allclose(dense_operator(diffusion, eye, event_shape), np.eye(event_size(event_shape)),
                               rtol=0, atol=1e-14)  # measured 4.4e-16
