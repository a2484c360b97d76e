"""Decoder data preparation: z-scoring, splits by stimulus, protocols, noise ceiling, bad input."""

import numpy as np
import pytest

from napari_brain_concepts.core.decoding.prepare import (
    ncsnr_from_repeats,
    noise_ceiling,
    prepare_arrays,
    split_stimuli,
    zscore_by_session,
)
from napari_brain_concepts.core.errors import InputError


def _experiment(n_stim=40, reps=3, n_vox=30, signal_vox=10, seed=0):
    rng = np.random.default_rng(seed)
    rows = np.tile(np.arange(n_stim), reps)
    sessions = np.repeat(np.arange(reps), n_stim)
    signal = rng.standard_normal((n_stim, n_vox)) * (np.arange(n_vox) < signal_vox)
    R = signal[rows] + rng.standard_normal((len(rows), n_vox)) * 0.5
    R += 10 * sessions[:, None] + 100  # session offsets that z-scoring must remove
    E = rng.standard_normal((n_stim, 8)).astype(np.float32)
    return R.astype(np.float32), rows, sessions, E


def test_zscore_by_session():
    R, rows, sessions, _ = _experiment()
    Z = zscore_by_session(R, sessions)
    for s in np.unique(sessions):
        np.testing.assert_allclose(Z[sessions == s].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(Z[sessions == s].std(0), 1, atol=1e-4)
    R[sessions == 1, 0] = 7.0  # constant within one session → 0 there, not NaN
    Z = zscore_by_session(R, sessions)
    assert np.all(Z[sessions == 1, 0] == 0) and np.all(np.isfinite(Z))


def test_noise_ceiling_formula_and_ncsnr_from_repeats():
    np.testing.assert_allclose(noise_ceiling(np.array([1.0, 0.0]), 3), [100 * 1 / (1 + 1 / 3), 0], rtol=1e-6)
    R, rows, sessions, _ = _experiment()
    ncsnr = ncsnr_from_repeats(zscore_by_session(R, sessions), rows)
    # signal sd 1, noise sd 0.5 → ncsnr ≈ 2 where there is signal, ≈ 0 where there is none
    assert np.all(ncsnr[:10] > 1.3) and np.all(ncsnr[10:] < 0.6)


def test_split_is_by_stimulus_shared_across_subjects_and_uses_test_flags():
    shown_a, shown_b = np.arange(0, 80), np.arange(20, 100)
    tr_a, va_a, te_a = split_stimuli(100, shown_a, random_state=3)
    tr_b, va_b, te_b = split_stimuli(100, shown_b, random_state=3)
    assert not (set(tr_a) & set(te_a)) and not (set(va_a) & set(te_a)) and not (set(tr_a) & set(va_a))
    both = set(shown_a) & set(shown_b)
    assert set(te_a) & both == set(te_b) & both  # the same stimuli are test for every subject
    flags = np.zeros(100, bool)
    flags[[5, 25, 30, 31]] = True
    _, _, te = split_stimuli(100, shown_a, test_flags=flags)
    np.testing.assert_array_equal(te, [5, 25, 30, 31])


@pytest.mark.parametrize("protocol", ["mindeye", "sdc"])
def test_protocols(protocol):
    R, rows, sessions, E = _experiment()
    data = prepare_arrays(R, rows, E, sessions=sessions, protocol=protocol, random_state=1)
    assert not set(data.rows_train) & set(data.rows_test)
    assert not set(data.rows_val) & set(data.rows_test)
    if protocol == "mindeye":
        assert len(np.unique(data.rows_train)) == len(data.rows_train)  # one averaged sample per stimulus
        assert data.n_average == 3
    else:
        assert len(data.rows_train) == 3 * len(np.unique(data.rows_train))  # single trials
    np.testing.assert_array_equal(data.Y_test, E[data.rows_test])
    assert data.X_train.shape[1] == R.shape[1] and data.X_train.dtype == np.float32


def test_voxel_selection_by_noise_ceiling_and_mask():
    R, rows, sessions, E = _experiment()
    data = prepare_arrays(R, rows, E, sessions=sessions, nc_threshold=75.0)
    np.testing.assert_array_equal(data.voxels, np.arange(10))  # exactly the voxels with signal
    assert np.all(data.noise_ceiling >= 75)
    mask = np.zeros(30, bool)
    mask[5:20] = True
    data = prepare_arrays(R, rows, E, sessions=sessions, voxel_mask=mask, n_voxels=3)
    assert len(data.voxels) == 3 and np.all((data.voxels >= 5) & (data.voxels < 10))
    back = data.voxel_values(np.ones(3))
    assert back.shape == (30,) and back.sum() == 3


def test_constant_voxel_is_dropped_with_warning():
    R, rows, sessions, E = _experiment()
    R[:, 4] = 2.5
    with pytest.warns(UserWarning, match="constant"):
        data = prepare_arrays(R, rows, E, sessions=sessions)
    assert 4 not in data.voxels and list(data.dropped_constant) == [4]


def test_constant_voxels_are_named_by_their_place_in_the_mask_volume():
    """The own-data review: a mask reaching beyond the data warned with response-column numbers only."""
    R, rows, sessions, E = _experiment()
    R[:, 4] = 0.0
    mask = np.zeros((2, 5, 3), dtype=bool)
    mask.flat[np.linspace(0, mask.size - 1, R.shape[1]).astype(int)] = True
    assert mask.sum() == R.shape[1]
    ijk = tuple(int(v) for v in np.argwhere(mask)[4])
    with pytest.warns(UserWarning, match=(rf"1 of {R.shape[1]} voxel\(s\) are constant over all trials and are "
                                          rf"dropped \(first at \(i, j, k\) of the mask volume: "
                                          rf"\({ijk[0]}, {ijk[1]}, {ijk[2]}\)\); many usually mean that the mask "
                                          r"reaches beyond the data")):
        prepare_arrays(R, rows, E, sessions=sessions, mask=mask)


@pytest.mark.parametrize("case", ["nan", "inf", "rows", "embedding", "empty", "protocol", "flags", "no-repeats"])
def test_bad_input(case):
    R, rows, sessions, E = _experiment()
    kwargs = {"sessions": sessions}
    if case == "nan":
        R[2, 3] = np.nan
    elif case == "inf":
        R[0, 0] = np.inf
    elif case == "rows":
        rows = rows[:-1]
    elif case == "embedding":
        E = E[:10]
    elif case == "empty":
        kwargs["nc_threshold"] = 101.0
    elif case == "protocol":
        kwargs["protocol"] = "average"
    elif case == "flags":
        kwargs["test_flags"] = np.zeros(len(E), bool)
    else:
        R, rows, sessions = R[:40], rows[:40], sessions[:40]
        kwargs = {"sessions": sessions, "nc_threshold": 10.0}
    with pytest.raises(InputError) as err:
        prepare_arrays(R, rows, E, **kwargs)
    assert "Fix:" in str(err.value)


def test_ncsnr_from_the_study_or_from_the_training_repeats_alone():
    """NSD's own ncsnr is computed from every trial, the test images' too; Efird et al. estimate it from the
    training trials. ``decode.ncsnr_from`` chooses, and with "train" no test trial changes the selection."""
    from napari_brain_concepts.core.context import AnalysisContext
    from napari_brain_concepts.core.decoding.steps import prepare_decoded
    from napari_brain_concepts.core.synthetic import make_synthetic_study

    study = make_synthetic_study(size="tiny")
    name = study.subject_names[0]
    sub = study.subject(name)
    given = np.zeros(sub.n_voxels, np.float32)
    given[:40] = 3.0  # the study's ncsnr: these 40 voxels and no other
    sub.ncsnr = given
    ctx = AnalysisContext(study=study, store=None, params={"decode": {"nc_threshold": 20.0}})
    np.testing.assert_array_equal(prepare_decoded(ctx, name).voxels, np.arange(40))

    ctx.params["decode"]["ncsnr_from"] = "train"
    trained = prepare_decoded(ctx, name)
    test = study.stimuli.test[study.trial_rows(sub)]
    expected = noise_ceiling(ncsnr_from_repeats(zscore_by_session(sub.responses, sub.sessions)[~test],
                                                study.trial_rows(sub)[~test]), trained.n_average) >= 20.0
    np.testing.assert_array_equal(trained.voxels, np.flatnonzero(expected))
    assert 40 < len(trained.voxels) < sub.n_voxels
    # the test trials shuffled within each session: their repeats no longer agree, while each session's
    # z-scoring (of all its trials, as NSD's betas are) stays the same
    rng = np.random.default_rng(0)
    sub.responses = sub.responses.copy()
    for s in np.unique(sub.sessions):
        trials = np.flatnonzero(test & (sub.sessions == s))
        sub.responses[trials] = sub.responses[rng.permutation(trials)]
    np.testing.assert_array_equal(prepare_decoded(ctx, name).voxels, trained.voxels)
