import math

import numpy as np
import pytest

from affectlab.data import schema
from affectlab.data.schema import LabelSpace
from affectlab.errors import LabelError


def test_canonical_order_is_affectnet():
    assert schema.EXPRESSIONS[:3] == ("neutral", "happiness", "sadness")
    assert schema.EXPRESSIONS[7] == "contempt"
    assert schema.EXPRESSIONS_WITH_OTHER[-1] == "other"
    # AffectNet-8 native codes are the canonical order
    assert [schema.expression_from_code("affectnet8", i) for i in range(8)] == list(schema.EXPRESSIONS)


@pytest.mark.parametrize(
    "dataset, code, name",
    [
        ("rafdb", 1, "surprise"),
        ("rafdb", 4, "happiness"),
        ("rafdb", 7, "neutral"),
        ("fer2013", 0, "anger"),
        ("fer2013", 3, "happiness"),
        ("fer2013", 6, "neutral"),
        ("abaw", 0, "neutral"),
        ("abaw", 1, "anger"),
        ("abaw", 4, "happiness"),
        ("abaw", 7, "other"),
        ("ckplus", 2, "contempt"),
        ("affectnet7", 6, "anger"),
    ],
)
def test_native_codes_map_by_name(dataset, code, name):
    assert schema.expression_from_code(dataset, code) == name


def test_every_native_table_maps_into_canonical_names():
    for dataset, table in schema.NATIVE_EXPRESSIONS.items():
        assert set(table.values()) <= set(schema.ALL_EXPRESSIONS), dataset
        # a bijection within each dataset
        assert len(set(table.values())) == len(table), dataset
    assert "neutral" not in schema.native_expressions("ckplus")
    assert "contempt" not in schema.native_expressions("affectnet7")
    assert len(schema.native_expressions("emotic")) == 26


def test_dropped_codes_are_none_not_errors():
    for code in (8, 9, 10):
        assert schema.expression_from_code("affectnet", code) is None
    assert schema.expression_from_code("affectnet7", 7) is None
    assert schema.expression_from_code("abaw", -1) is None
    assert schema.expression_from_code("rafdb", "4") == "happiness"


@pytest.mark.parametrize("dataset, code", [("rafdb", 0), ("rafdb", 8), ("fer2013", 7), ("affectnet", 11), ("abaw", 8)])
def test_out_of_range_code_names_value_and_dataset(dataset, code):
    with pytest.raises(LabelError) as err:
        schema.expression_from_code(dataset, code)
    assert str(code) in str(err.value) and dataset in str(err.value)
    assert err.value.dataset == dataset


def test_non_integer_and_unknown_dataset_codes():
    with pytest.raises(LabelError, match="not an integer"):
        schema.expression_from_code("rafdb", 2.5)
    with pytest.raises(LabelError, match="not an integer"):
        schema.expression_from_code("rafdb", "happy")
    with pytest.raises(LabelError, match="no expression code table"):
        schema.expression_from_code("nosuchset", 1)


def test_expression_aliases_and_unknown_names():
    assert schema.canonical_expression("Happy") == "happiness"
    assert schema.canonical_expression(" angry ") == "anger"
    assert schema.canonical_expression("sad") == "sadness"
    with pytest.raises(LabelError, match="'joyful'.*'mydata'"):
        schema.canonical_expression("joyful", "mydata")


@pytest.mark.parametrize("raw", ["AU12", "au12", "AU012", "AU 12", "au_12", 12, "12", np.int64(12)])
def test_au_names(raw):
    assert schema.au_name(raw) == "AU12"


@pytest.mark.parametrize("raw", ["AUx", "brow", 0, -3, "AU0", True, 1.5])
def test_bad_au_names(raw):
    with pytest.raises(LabelError):
        schema.au_name(raw)


def test_au_sets():
    assert len(schema.au_set("disfa12")) == 12
    assert len(schema.au_set("DISFA-8")) == 8
    assert len(schema.au_set("abaw12")) == 12
    assert schema.au_set("abaw12") == schema.AU_SETS["abaw"]
    assert schema.au_set("abaw12")[-1] == "AU26" and "AU10" in schema.au_set("abaw12")
    assert len(schema.au_set("bp4d12")) == 12
    assert len(schema.au_set("emotionet11")) == 11
    assert len(schema.au_set("CK+23")) == 23
    for name, aus in schema.AU_SETS.items():
        assert list(aus) == schema.sort_aus(aus), name
    with pytest.raises(LabelError, match="known sets"):
        schema.au_set("nope")


def test_va_scalers():
    np.testing.assert_allclose(schema.scale_va("emotic", [1, 5.5, 10]), [-1, 0, 1])
    np.testing.assert_allclose(schema.scale_va("afewva", [-10, 0, 5, 10]), [-1, 0, 0.5, 1])
    out = schema.scale_va("affectnet", [0.5, -2, -1])
    assert out[0] == 0.5 and math.isnan(out[1]) and out[2] == -1
    out = schema.scale_va("abaw", [-5, 0.25, np.nan])
    assert math.isnan(out[0]) and out[1] == 0.25 and math.isnan(out[2])
    np.testing.assert_allclose(schema.unscale_va("emotic", schema.scale_va("emotic", [2, 7])), [2, 7])


@pytest.mark.parametrize("dataset, value", [("emotic", 0), ("emotic", 11), ("afewva", 12), ("affectnet", 1.5), ("abaw", -3)])
def test_out_of_range_va(dataset, value):
    with pytest.raises(LabelError) as err:
        schema.scale_va(dataset, [0 if dataset != "emotic" else 5, value])
    assert dataset in str(err.value) and f"{value:g}" in str(err.value)


def test_check_va():
    assert schema.check_va([0.1, np.nan]).shape == (2,)
    with pytest.raises(LabelError, match=r"outside \[-1, 1\]"):
        schema.check_va([0.1, 1.7])
    with pytest.raises(LabelError, match="infinite"):
        schema.check_va([np.inf])


def test_label_space_roundtrip_and_restrict():
    space = LabelSpace(expressions=schema.EXPRESSIONS[:7], aus=["au1", "AU12"], va=True)
    assert space.aus == ("AU1", "AU12")
    assert space.tasks == ("expr", "va", "au")
    assert LabelSpace.from_dict(space.to_dict()) == space
    only = space.restrict(["va"])
    assert only.tasks == ("va",) and only.expressions == () and only.aus == ()
    assert space.expression_index("happy") == 1
    with pytest.raises(LabelError):
        space.expression_index("contempt")
    with pytest.raises(LabelError, match="unknown task"):
        space.restrict(["expr", "pose"])
    with pytest.raises(LabelError, match="duplicate"):
        LabelSpace(aus=["AU1", "au1"])


def test_expression_codes_mask_missing_and_reject_unknown():
    space = LabelSpace(expressions=("neutral", "happiness", "anger"))
    codes = schema.expression_codes(["happy", None, float("nan"), "", "anger", "neutral"], space)
    assert codes.tolist() == [1, -1, -1, -1, 2, 0]
    with pytest.raises(LabelError, match="'sadness'.*'toy'"):
        schema.expression_codes(["sadness"], space, dataset="toy")
