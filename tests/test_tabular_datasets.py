"""wine_quality and california_housing: file formats, standardisation on the training split,
the 0.1 target scale, pools, noisy test sets and clear errors."""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED_DATA
from untied_plugins.datasets.tabular import (
    HousingParams,
    WineParams,
    california_housing,
    wine_quality,
)

from bench_core.errors import DataError
from bench_core.interfaces import RunContext

HEADER = ("fixed acidity;volatile acidity;citric acid;residual sugar;chlorides;"
          "free sulfur dioxide;total sulfur dioxide;density;pH;sulphates;alcohol;quality")


def wine_rows(n: int, shift: float = 0.0) -> list[list[float]]:
    gen = torch.Generator().manual_seed(int(shift * 10) + n)
    x = torch.rand(n, 11, generator=gen) * 10 + shift
    q = (x[:, 10] / 2).round() + 3
    return [[*map(float, row), float(qq)] for row, qq in zip(x, q)]


def write_wine(folder, name, rows, sep=";", header=True, quote=False):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [HEADER.replace(";", sep)] if header else []
    for r in rows:
        cells = [f"{v:.4f}" for v in r]
        lines.append(sep.join(f'"{c}"' if quote else c for c in cells))
    (folder / name).write_text("\n".join(lines) + "\n")


def ctx(seed=0):
    return RunContext(seed=seed, device=torch.device("cpu"))


@pytest.mark.parametrize("sep,header,quote", [(";", True, False), (",", False, False),
                                              (",", True, True)])
def test_wine_reads_both_separators_with_or_without_header(tmp_path, sep, header, quote):
    write_wine(tmp_path, "winequality-white.csv", wine_rows(200), sep, header, quote)
    data = wine_quality(WineParams(root=str(tmp_path)), ctx=ctx())
    assert data.info.task == "regression" and data.info.input_shape == (11,)
    assert len(data.x_train) + len(data.x_test) == 200 and len(data.x_test) == 40
    assert data.y_train.shape == (160, 1) and data.x_train.dtype == torch.float32


def test_wine_variants_and_standardisation_on_the_training_split(tmp_path):
    write_wine(tmp_path, "winequality-white.csv", wine_rows(300))
    write_wine(tmp_path, "winequality-red.csv", wine_rows(100, shift=5.0))
    both = wine_quality(WineParams(root=str(tmp_path), variant="both"), ctx=ctx())
    red = wine_quality(WineParams(root=str(tmp_path), variant="red"), ctx=ctx())
    assert len(both.x_train) + len(both.x_test) == 400 and len(red.x_train) == 80
    # features: zero mean, unit std on the training split; target the same, times 0.1
    assert torch.allclose(both.x_train.mean(0), torch.zeros(11), atol=1e-5)
    assert torch.allclose(both.x_train.std(0), torch.ones(11), atol=1e-4)
    assert float(both.y_train.std()) == pytest.approx(0.1, rel=1e-4)
    assert float(both.x_test.mean(0).abs().max()) > 1e-3   # test stats are not used
    scaled = wine_quality(WineParams(root=str(tmp_path), variant="both", target_scale=1.0),
                          ctx=ctx())
    assert torch.allclose(scaled.y_train * 0.1, both.y_train, atol=1e-6)


def test_pool_is_a_seeded_subset_with_the_same_scale_and_test_set(tmp_path):
    write_wine(tmp_path, "winequality-white.csv", wine_rows(300))
    full = wine_quality(WineParams(root=str(tmp_path)), ctx=ctx(3))
    pool = wine_quality(WineParams(root=str(tmp_path), train_subset=100), ctx=ctx(3))
    again = wine_quality(WineParams(root=str(tmp_path), train_subset=100), ctx=ctx(3))
    other = wine_quality(WineParams(root=str(tmp_path), train_subset=100), ctx=ctx(4))
    assert len(pool.x_train) == 100 and torch.equal(pool.x_train, again.x_train)
    assert torch.equal(pool.x_test, full.x_test)
    members = {tuple(r) for r in full.x_train.tolist()}
    assert all(tuple(r) in members for r in pool.x_train.tolist())
    assert not torch.equal(pool.x_train, other.x_train)


def test_noisy_test_set_is_extra_and_reproducible(tmp_path):
    write_wine(tmp_path, "winequality-white.csv", wine_rows(200))
    data = wine_quality(WineParams(root=str(tmp_path), noisy_test_std=0.3), ctx=ctx())
    clean = wine_quality(WineParams(root=str(tmp_path)), ctx=ctx())
    x_noisy, y_noisy = data.eval_sets["noisy"]
    assert torch.equal(data.x_test, clean.x_test) and torch.equal(y_noisy, data.y_test)
    assert float((x_noisy - data.x_test).std()) == pytest.approx(0.3, rel=0.1)
    again = wine_quality(WineParams(root=str(tmp_path), noisy_test_std=0.3), ctx=ctx())
    assert torch.equal(again.eval_sets["noisy"][0], x_noisy)
    assert list(data.test_sets()) == ["test", "noisy_test"]


def test_wine_errors_name_the_file_and_the_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("UNTIED_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match="winequality-white.csv not found"):
        wine_quality(WineParams(root=str(tmp_path / "nowhere")), ctx=ctx())
    rows = wine_rows(20)
    write_wine(tmp_path, "winequality-white.csv", rows)
    text = (tmp_path / "winequality-white.csv").read_text().splitlines()
    text[5] = text[5].replace(text[5].split(";")[2], "abc", 1)
    (tmp_path / "winequality-white.csv").write_text("\n".join(text))
    with pytest.raises(DataError, match=r"line 6: non-numeric cell 'abc'"):
        wine_quality(WineParams(root=str(tmp_path)), ctx=ctx())
    text[5] = "1;2;3"
    (tmp_path / "winequality-white.csv").write_text("\n".join(text))
    with pytest.raises(DataError, match="line 6: 3 columns, expected 12"):
        wine_quality(WineParams(root=str(tmp_path)), ctx=ctx())


def housing_rows(n):
    gen = torch.Generator().manual_seed(n)
    x = torch.rand(n, 9, generator=gen) * 100
    return [list(map(float, r)) for r in x]


def test_housing_from_cal_housing_data_and_from_a_csv_with_header(tmp_path):
    rows = housing_rows(150)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cal_housing.data").write_text(
        "\n".join(",".join(f"{v:.3f}" for v in r) for r in rows) + "\n")
    plain = california_housing(HousingParams(root=str(tmp_path / "a")), ctx=ctx())
    assert plain.info.input_shape == (8,) and len(plain.x_train) == 120
    cols = ("longitude,latitude,housing_median_age,total_rooms,total_bedrooms,population,"
            "households,median_income,median_house_value,ocean_proximity")
    lines = [cols] + [",".join(f"{v:.3f}" for v in r) + ",NEAR BAY" for r in rows]
    lines.append("1,2,3,4,,6,7,8,9,INLAND")        # a missing value: the row is dropped
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "housing.csv").write_text("\n".join(lines) + "\n")
    kaggle = california_housing(HousingParams(root=str(tmp_path / "b")), ctx=ctx())
    assert torch.allclose(kaggle.x_train, plain.x_train, atol=1e-5)
    (tmp_path / "b" / "housing.csv").write_text("longitude,latitude\n1,2\n")
    with pytest.raises(DataError, match="missing column"):
        california_housing(HousingParams(root=str(tmp_path / "b")), ctx=ctx())


@pytest.mark.skipif(not (SHARED_DATA / "wine-quality").is_dir(), reason="no data folder beside the repository (conftest.SHARED_DATA)")
def test_real_files_have_the_documented_sizes():
    white = wine_quality(WineParams(root=str(SHARED_DATA / "wine-quality"), test_fraction=0.5),
                         ctx=ctx())
    red = wine_quality(WineParams(root=str(SHARED_DATA / "wine-quality"), variant="red",
                                  test_fraction=0.5), ctx=ctx())
    house = california_housing(HousingParams(root=str(SHARED_DATA / "california-housing"),
                                             test_fraction=0.5), ctx=ctx())
    assert len(white.x_train) + len(white.x_test) == 4898
    assert len(red.x_train) + len(red.x_test) == 1599
    assert len(house.x_train) + len(house.x_test) == 20640
