"""Hardening, inputs (issue 16, items 2, 3, 4, 8, 11 and the API's unclear errors): non-finite streams, pandas
feature names and set_output, ConvergenceWarning, NumPy in/NumPy out, integers above 2^24, tensors that require
grad, negative strides, sparse/1-D/bfloat16/NA inputs.

Oracles: KMeans.fit's own error for the same data, scikit-learn's behaviour (feature names, warnings), float64.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import pixelkm
import pixelkm.nn

NAN_MESSAGE = "Input X contains NaN; remove or impute non-finite values"


def _data(n=300, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# -- item 2: NaN/inf in streams -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("form", ["array", "chunks", "npy"])
def test_fit_stream_refuses_non_finite_as_fit_does(tmp_path, bad, form):
    X = _data()
    X[123, 1] = bad
    with pytest.raises(ValueError) as fit_err:
        pixelkm.KMeans(3, random_state=0).fit(X)
    data = {"array": X, "chunks": [X[:100], X[100:200], X[200:]], "npy": str(tmp_path / "x.npy")}[form]
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(ValueError) as stream_err:
        pixelkm.fit_stream(data, 3, random_state=0, chunk_rows=64)
    assert str(stream_err.value) == str(fit_err.value)


def test_fit_stream_explicit_init_refuses_nan_chunk():
    X = _data()
    X[250] = np.nan
    with pytest.raises(ValueError, match=NAN_MESSAGE):
        pixelkm.fit_stream([X[:200], X[200:]], 3, init=X[:3].copy(), tol=0)


def test_predict_stream_refuses_nan_rows_and_centers():
    X = _data()
    C = X[:3].copy()
    Xn = X.copy()
    Xn[7] = np.nan
    with pytest.raises(ValueError, match=NAN_MESSAGE):
        pixelkm.predict_stream(Xn, C)
    C[1, 0] = np.nan
    with pytest.raises(ValueError, match="Input centers contains NaN"):
        pixelkm.predict_stream(X, C)


def test_stream_unclear_inputs_get_clear_errors():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X = _data()
    with pytest.raises(TypeError, match="sparse"):
        pixelkm.fit_stream(scipy_sparse.csr_matrix(X), 3)
    with pytest.raises(ValueError, match="centers must be 2-D"):
        pixelkm.predict_stream(X, X[0])
    # bfloat16 (no NumPy dtype): streamed as float32, which holds it exactly
    Xb = torch.from_numpy(X).to(torch.bfloat16)
    got = pixelkm.fit_stream(Xb, 3, init=Xb[:3].float().numpy(), tol=0, max_iter=5)
    ref = pixelkm.KMeans(3, init=Xb[:3].float().numpy(), tol=0, max_iter=5).fit(Xb.float().numpy())
    np.testing.assert_allclose(got.centers, ref.cluster_centers_, rtol=1e-5, atol=1e-6)


# -- item 3: pandas -----------------------------------------------------------------------------------------------


def test_feature_names_set_checked_and_named_out():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(_data(), columns=["a", "b", "c"])
    m = pixelkm.KMeans(3, random_state=0).fit(df)
    assert list(m.feature_names_in_) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="feature names should match"):
        m.predict(df[["c", "a", "b"]])
    for method in (m.transform, m.score):
        with pytest.raises(ValueError, match="feature names should match"):
            method(df[["c", "a", "b"]])
    np.testing.assert_array_equal(m.predict(df), m.labels_)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        m.predict(df.to_numpy())
    assert list(m.get_feature_names_out()) == ["kmeans0", "kmeans1", "kmeans2"]
    # the same contract as scikit-learn's KMeans
    from sklearn.cluster import KMeans as SK

    sk = SK(3, n_init=1, random_state=0).fit(df)
    assert list(sk.get_feature_names_out()) == list(m.get_feature_names_out())


def test_pipeline_set_output_pandas():
    pd = pytest.importorskip("pandas")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = pd.DataFrame(_data(), columns=["a", "b", "c"], index=np.arange(300) + 1000)
    pipe = make_pipeline(StandardScaler(), pixelkm.KMeans(4, random_state=0)).set_output(transform="pandas")
    out = pipe.fit_transform(df)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["kmeans0", "kmeans1", "kmeans2", "kmeans3"]
    assert (out.index == df.index).all()
    km = pipe[-1]
    np.testing.assert_allclose(out.to_numpy(), km.set_output(transform="default").transform(pipe[0].transform(df)))


def test_nullable_int_with_na_is_refused_clearly():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": pd.array([1, 2, None, 4] * 10, dtype="Int64"), "b": pd.array([1, 2, 3, 4] * 10)})
    with pytest.raises(ValueError, match="missing values"):
        pixelkm.KMeans(2).fit(df)


# -- item 4 ----------------------------------------------------------------------------------------------------


def _three_distinct():
    return np.repeat(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [5.0, 5.0, 5.0]]), 10, axis=0)


@pytest.mark.parametrize(
    "entry",
    ["KMeans", "kmeans", "kmeans-batched", "MiniBatchKMeans", "nn.KMeans", "fit_stream", "fit_stream-uint8"],
)
def test_fewer_distinct_points_than_clusters_warn(entry):
    from sklearn.exceptions import ConvergenceWarning

    X = _three_distinct()
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(3\) found smaller than n_clusters \(5\)"):
        if entry == "KMeans":
            pixelkm.KMeans(5, random_state=0).fit(X)
        elif entry == "kmeans":
            pixelkm.kmeans(X, 5, random_state=0)
        elif entry == "kmeans-batched":
            pixelkm.kmeans(np.stack([X, X]), 5, random_state=0)
        elif entry == "MiniBatchKMeans":
            pixelkm.MiniBatchKMeans(5, random_state=0, batch_size=16).fit(X)
        elif entry == "nn.KMeans":
            pixelkm.nn.KMeans(5, random_state=0).fit(torch.from_numpy(X))
        elif entry == "fit_stream":
            pixelkm.fit_stream([X[:15], X[15:]], 5, random_state=0)
        else:
            pixelkm.fit_stream([X[:15].astype(np.uint8), X[15:].astype(np.uint8)], 5, random_state=0)


def test_no_warning_with_enough_distinct_points():
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        pixelkm.KMeans(3, random_state=0).fit(_data())


def test_assign_update_numpy_in_numpy_out():
    X = _data()
    res = pixelkm.assign_update(X, X[:4])
    for field in (res.labels, res.min_sq_dist, res.sums, res.counts):
        assert isinstance(field, np.ndarray)
    assert isinstance(pixelkm.assign_update(torch.from_numpy(X), X[:4]).labels, torch.Tensor)
    assert float(res.inertia()) == pytest.approx(float(res.min_sq_dist.astype(np.float64).sum()))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integer_tensors_above_2_24_are_computed_in_float64(dtype):
    big = 2**24
    X = torch.tensor([[big + 1], [big + 1], [big + 3], [big + 3]], dtype=dtype)
    m = pixelkm.KMeans(2, init=X[[0, 2]].numpy().astype(np.float64)).fit(X)
    assert m.cluster_centers_.dtype == torch.float64
    assert sorted(m.cluster_centers_[:, 0].tolist()) == [big + 1, big + 3]
    assert m.inertia_ == 0.0


# -- item 8: requires_grad ---------------------------------------------------------------------------------------


def test_requires_grad_tensors_work_everywhere():
    X = torch.from_numpy(_data()).requires_grad_(True)
    C = X[:3].detach().clone().requires_grad_(True)
    w = torch.ones(300, requires_grad=True)
    m = pixelkm.KMeans(3, random_state=0).fit(X, sample_weight=w)
    ref = pixelkm.KMeans(3, random_state=0).fit(X.detach())
    assert torch.equal(m.labels_, ref.labels_)
    assert not m.cluster_centers_.requires_grad
    m.predict(X)
    m.score(X)
    m.transform(X)
    pixelkm.kmeans(X, 3, init=C)
    pixelkm.assign_update(X, C, w)
    pixelkm.MiniBatchKMeans(3, random_state=0).fit(X)
    pixelkm.nn.KMeans(3, random_state=0).fit(X)


# -- item 11 ----------------------------------------------------------------------------------------------------


def test_nn_module_on_numpy():
    X = _data()
    km = pixelkm.nn.KMeans(3, random_state=0).fit(torch.from_numpy(X))
    lab, dist = km(X)
    assert isinstance(lab, np.ndarray) and isinstance(dist, np.ndarray)
    ref_lab, ref_dist = km(torch.from_numpy(X))
    np.testing.assert_array_equal(lab, ref_lab.numpy())
    np.testing.assert_array_equal(km.predict(X), ref_lab.numpy())


def test_negative_stride_views_are_copied():
    X = _data()
    rev = X[::-1]
    m = pixelkm.KMeans(3, random_state=0).fit(rev)
    ref = pixelkm.KMeans(3, random_state=0).fit(np.ascontiguousarray(rev))
    np.testing.assert_array_equal(m.labels_, ref.labels_)
    np.testing.assert_array_equal(m.predict(X[:, ::-1][:, ::-1]), m.predict(X))
    pixelkm.assign_update(rev, rev[:3])
    pixelkm.kmeans(rev, 3, random_state=0)
    C = X[:3][::-1]
    np.testing.assert_array_equal(pixelkm.assign_update(X, C).labels, pixelkm.assign_update(X, C.copy()).labels)
