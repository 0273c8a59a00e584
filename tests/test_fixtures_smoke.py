from sensecf.blackbox import BlackBox, build_pipeline


def test_tiny_run_fixture_is_a_valid_cohort(tiny_run):
    df, spec = tiny_run.load_cohort()
    stages = df[["awake_pct", "light_pct", "deep_pct", "rem_pct"]].sum(axis=1)
    assert (stages.round(1) == 100.0).all()
    assert set(df.split) == {"train", "test"}
    assert spec.feature("glucose_mean").min == df[df.split == "train"].glucose_mean.min()


def test_blackbox_roundtrip(tiny_run, tmp_path):
    df, spec = tiny_run.load_cohort()
    train = df[df.split == "train"]
    bb = BlackBox(build_pipeline(spec, seed=0).fit(train[spec.names], train.high_stress), spec)
    bb.save(tmp_path / "m.skops")
    again = BlackBox.load(tmp_path / "m.skops", spec)
    assert (again.predict_proba(df) == bb.predict_proba(df)).all()
