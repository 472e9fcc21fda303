"""Codec unit tests: request bodies as the servers expect them, and every unusable answer named."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from service import oip
from service.errors import UpstreamBadResponse
from service.settings import OutputKind, WireProtocol
from service.upstream.codecs import (
    GenericCodec,
    KServeV1Codec,
    OipV2Codec,
    ScoreSpec,
    decode_generic,
    decode_kserve_v1,
    decode_oip_v2,
    decode_oip_v2_typed,
    encode_generic,
    encode_kserve_v1,
    encode_oip_v2,
    encode_oip_v2_binary,
    make_codec,
    parse_path,
    split_template,
)
from tests.fixtures_upstream import make_model

LOGITS2 = ScoreSpec(num_classes=2, kind=OutputKind.LOGITS)
SIGMOID = ScoreSpec(num_classes=2, kind=OutputKind.SIGMOID_LOGITS)


def v2_body(data: Any, shape: list[int], name: str = "output-0", **extra: Any) -> bytes:
    return orjson.dumps(
        {"outputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": data}], **extra}
    )


def bad(match: str) -> Any:
    return pytest.raises(UpstreamBadResponse, match=match)


# ---- OIP v2 -----------------------------------------------------------------------------------


def test_oip_v2_request_is_one_flat_fp32_tensor_with_batch_shape() -> None:
    x = np.array([[[0.1, 0.2], [0.3, 0.4]]], dtype=np.float32)  # [1, 2, 2]
    doc = orjson.loads(encode_oip_v2(x, "input-0"))
    assert doc == {
        "inputs": [
            {
                "name": "input-0",
                "shape": [1, 2, 2],
                "datatype": "FP32",
                "data": [0.1, 0.2, 0.3, 0.4],
            }
        ]
    }
    np.testing.assert_array_equal(
        np.asarray(doc["inputs"][0]["data"], dtype=np.float32), x.reshape(-1)
    )


def test_oip_v2_request_names_the_output_only_when_configured() -> None:
    x = np.zeros((2, 3), dtype=np.float32)
    assert orjson.loads(encode_oip_v2(x, "in", "predict_proba"))["outputs"] == [
        {"name": "predict_proba"}
    ]
    assert "outputs" not in orjson.loads(encode_oip_v2(x, "in"))


def test_oip_v2_request_casts_float64_and_non_contiguous_input_to_float32() -> None:
    x = np.arange(6, dtype=np.float64).reshape(3, 2).T  # non-contiguous [2, 3]
    doc = orjson.loads(encode_oip_v2(x, "in"))
    assert doc["inputs"][0]["shape"] == [2, 3]
    assert doc["inputs"][0]["data"] == [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]


def test_oip_v2_answer_is_reshaped_by_its_shape() -> None:
    out = decode_oip_v2(v2_body([1, 2, 3, 4, 5, 6], [3, 2]), 3, LOGITS2)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1, 2], [3, 4], [5, 6]])


def test_oip_v2_answer_accepts_nested_data() -> None:
    out = decode_oip_v2(v2_body([[1, 2], [3, 4]], [2, 2]), 2, LOGITS2)
    np.testing.assert_array_equal(out, [[1, 2], [3, 4]])


def test_oip_v2_picks_the_configured_output_among_several() -> None:
    body = orjson.dumps(
        {
            "outputs": [
                {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 1]},
                {
                    "name": "predict_proba",
                    "shape": [2, 2],
                    "datatype": "FP64",
                    "data": [0.9, 0.1, 0.2, 0.8],
                },
            ]
        }
    )
    spec = ScoreSpec(2, OutputKind.PROBABILITIES)
    np.testing.assert_array_equal(
        decode_oip_v2(body, 2, spec, "predict_proba"), [[0.9, 0.1], [0.2, 0.8]]
    )


def test_oip_v2_without_configured_name_reads_the_first_output() -> None:
    body = orjson.dumps(
        {
            "outputs": [
                {"name": "a", "shape": [1, 2], "data": [1, 2]},
                {"name": "b", "shape": [1, 2], "data": [3, 4]},
            ]
        }
    )
    np.testing.assert_array_equal(decode_oip_v2(body, 1, LOGITS2), [[1, 2]])


def test_oip_v2_missing_named_output_lists_what_was_sent() -> None:
    with bad(r"no output tensor named 'x' \(upstream sent \['output-0'\]\)"):
        decode_oip_v2(v2_body([1, 2], [1, 2]), 1, LOGITS2, "x")


def test_oip_v2_sigmoid_vector_becomes_one_column() -> None:
    out = decode_oip_v2(v2_body([0.5, -1.0, 2.0], [3]), 3, SIGMOID)
    assert out.shape == (3, 1)


def test_oip_v2_shape_that_does_not_match_data_is_rejected() -> None:
    with bad(r"has shape \[2, 2\] but 3 values"):
        decode_oip_v2(v2_body([1, 2, 3], [2, 2]), 2, LOGITS2)


def test_oip_v2_answer_without_outputs_quotes_the_server_error() -> None:
    with bad(r"no 'outputs' list \(error: 'model not ready'\)"):
        decode_oip_v2(orjson.dumps({"error": "model not ready"}), 1, LOGITS2)


def test_oip_v2_rank3_output_is_rejected() -> None:
    with bad(r"has shape \[1, 1, 2\]; expected \[N, K\]"):
        decode_oip_v2(v2_body([1, 2], [1, 1, 2]), 1, LOGITS2)


# ---- validation shared by all protocols ---------------------------------------------------------


def test_wrong_class_count_names_both_counts() -> None:
    with bad("upstream answered 3 classes, model has 2"):
        decode_oip_v2(v2_body([1, 2, 3], [1, 3]), 1, LOGITS2)


def test_sigmoid_model_rejects_two_columns() -> None:
    with bad("upstream answered 2 columns, a sigmoid_logits model expects 1"):
        decode_oip_v2(v2_body([1, 2], [1, 2]), 1, SIGMOID)


def test_wrong_row_count_is_rejected() -> None:
    with bad("upstream answered 1 rows for 2 instances"):
        decode_oip_v2(v2_body([1, 2], [1, 2]), 2, LOGITS2)


@pytest.mark.parametrize(
    ("literal", "what"), [(b"NaN", "NaN"), (b"Infinity", "inf"), (b"-Infinity", "inf")]
)
def test_non_finite_literals_are_reported_not_called_unparseable(literal: bytes, what: str) -> None:
    body = b'{"predictions": [[0.5, ' + literal + b"]]}"
    with bad(f"upstream output contains {what}$"):
        decode_kserve_v1(body, 1, LOGITS2)


def test_null_score_is_reported_as_probable_nan() -> None:
    with bad("contains null"):
        decode_kserve_v1(b'{"predictions": [[0.5, null]]}', 1, LOGITS2)


def test_non_json_body_is_unparseable_and_quoted() -> None:
    with bad(r"unparseable JSON body: .*body starts with b'<html>oops'"):
        decode_oip_v2(b"<html>oops", 1, LOGITS2)


def test_numeric_strings_are_not_accepted_as_numbers() -> None:
    with bad("is not numeric"):
        decode_kserve_v1(b'{"predictions": [["0.1", "0.9"]]}', 1, LOGITS2)


def test_booleans_are_not_accepted_as_numbers() -> None:
    with bad("is not numeric"):
        decode_kserve_v1(b'{"predictions": [[true, false]]}', 1, LOGITS2)


def test_ragged_rows_are_rejected() -> None:
    with bad("not a rectangular array"):
        decode_kserve_v1(b'{"predictions": [[1, 2], [3]]}', 2, LOGITS2)


def test_logits_declared_as_probabilities_are_caught() -> None:
    with bad(r"declares probabilities but upstream values span \[-2, 3\]"):
        decode_kserve_v1(b'{"predictions": [[-2, 3]]}', 1, ScoreSpec(2, OutputKind.PROBABILITIES))


def test_positive_values_declared_as_log_probabilities_are_caught() -> None:
    with bad("declares log_probabilities"):
        decode_kserve_v1(
            b'{"predictions": [[-0.1, 2.5]]}', 1, ScoreSpec(2, OutputKind.LOG_PROBABILITIES)
        )


# ---- KServe v1 --------------------------------------------------------------------------------


def test_kserve_v1_request_keeps_the_instance_shape() -> None:
    x = np.array([[[1, 2]], [[3, 4]]], dtype=np.float32)
    assert orjson.loads(encode_kserve_v1(x)) == {"instances": [[[1.0, 2.0]], [[3.0, 4.0]]]}


def test_kserve_v1_answer_rows() -> None:
    out = decode_kserve_v1(b'{"predictions": [[1, 2], [3, 4.5]]}', 2, LOGITS2)
    np.testing.assert_array_equal(out, [[1, 2], [3, 4.5]])


def test_kserve_v1_list_of_scalars_is_one_sigmoid_column() -> None:
    out = decode_kserve_v1(b'{"predictions": [0.3, -0.2]}', 2, SIGMOID)
    np.testing.assert_array_equal(out, [[0.3], [-0.2]])


def test_kserve_v1_answer_without_predictions_is_rejected() -> None:
    with bad(r"no 'predictions' \(error: 'boom'\)"):
        decode_kserve_v1(b'{"error": "boom"}', 1, LOGITS2)


# ---- generic ----------------------------------------------------------------------------------


def test_generic_template_replaces_every_placeholder_value_but_not_keys_or_substrings() -> None:
    template = {
        "$instances": "keep",
        "a": {"rows": "$instances"},
        "b": ["$instances", 1],
        "c": "not $instances",
    }
    x = np.array([[1.5, 2.0]], dtype=np.float32)
    doc = orjson.loads(encode_generic(x, split_template(template)))
    assert doc == {
        "$instances": "keep",
        "a": {"rows": [[1.5, 2.0]]},
        "b": [[[1.5, 2.0]], 1],
        "c": "not $instances",
    }


def test_generic_template_without_placeholder_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r'no "\$instances" value'):
        split_template({"rows": "instances"})


def test_generic_path_indexes_lists_with_integers() -> None:
    body = b'{"outputs": [{"scores": [[1, 2]]}]}'
    out = decode_generic(body, 1, LOGITS2, parse_path("outputs.0.scores"), "outputs.0.scores")
    np.testing.assert_array_equal(out, [[1, 2]])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"result": {}}', r"response path 'result.scores': no 'scores' at result \(found dict\)"),
        (b'{"result": []}', r"no 'scores' at result \(found list of 0\)"),
        (b"[1]", r"no 'result' at the top level \(found list of 1\)"),
    ],
)
def test_generic_missing_path_says_which_step(body: bytes, message: str) -> None:
    with bad(message):
        decode_generic(body, 1, LOGITS2, parse_path("result.scores"), "result.scores")


def test_generic_list_index_out_of_range_is_reported() -> None:
    with bad(r"no 2 at outputs \(found list of 1\)"):
        decode_generic(b'{"outputs": [[1, 2]]}', 1, LOGITS2, parse_path("outputs.2"), "outputs.2")


@pytest.mark.parametrize("path", ["", "a..b", ".a"])
def test_malformed_response_path_is_a_config_error(path: str) -> None:
    with pytest.raises(ValueError, match="invalid response_path"):
        parse_path(path)


# ---- factory ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "codec_type"),
    [
        (WireProtocol.OIP_V2, OipV2Codec),
        (WireProtocol.KSERVE_V1, KServeV1Codec),
        (WireProtocol.GENERIC, GenericCodec),
    ],
)
def test_make_codec_follows_the_protocol(protocol: WireProtocol, codec_type: type) -> None:
    model = make_model("http://h/x", protocol=protocol, classes=3)
    codec = make_codec(model)
    assert isinstance(codec, codec_type)
    assert codec.spec == ScoreSpec(3, OutputKind.LOGITS)


# ---- OIP v2 with binary tensor data (upstream.binary_data) --------------------------------------


def binary_answer(outputs: list[tuple[str, np.ndarray, str]], json_first: bool = False) -> bytes:
    """An answer whose outputs are raw bytes after the JSON header; its header length too."""
    entries, blobs = [], []
    if json_first:
        entries.append({"name": "labels", "shape": [1], "datatype": "INT64", "data": [1]})
    for name, values, datatype in outputs:
        blob = values.astype(oip.NUMERIC[datatype]).tobytes()
        entries.append(
            {"name": name, "shape": list(values.shape), "datatype": datatype}
            | {"parameters": {"binary_data_size": len(blob)}}
        )
        blobs.append(blob)
    header = orjson.dumps({"outputs": entries})
    return b"".join([header, *blobs]), str(len(header))


def test_binary_request_is_a_json_header_then_the_fp32_bytes() -> None:
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    body, length = encode_oip_v2_binary(x, "in", "probs")
    header = orjson.loads(body[:length])
    assert header == {
        "inputs": [
            {
                "name": "in",
                "shape": [2, 3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 24},
            }
        ],
        "outputs": [{"name": "probs", "parameters": {"binary_data": True}}],
    }
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f4"), x.reshape(-1))
    body, length = encode_oip_v2_binary(x, "in")  # no output name: every output binary
    assert orjson.loads(body[:length])["parameters"] == {"binary_data_output": True}


def test_codec_encodes_binary_only_when_configured() -> None:
    x = np.zeros((1, 2), dtype=np.float32)
    assert OipV2Codec("in", None, LOGITS2).encode(x)[1] is None
    body, length = OipV2Codec("in", None, LOGITS2, binary=True).encode(x)
    assert length is not None and len(body) == length + 8


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT32"])
def test_binary_answer_is_decoded_in_its_datatype(datatype: str) -> None:
    logits = np.array([[1.5, -2.0], [0.25, 3.0]])
    if datatype == "INT32":
        logits = np.round(logits)
    other = np.array([[9.0, 9.0], [9.0, 9.0]])
    body, length = binary_answer([("other", other, "FP64"), ("logits", logits, datatype)], True)
    scores, got = decode_oip_v2_typed(body, 2, LOGITS2, "logits", length)
    np.testing.assert_array_equal(scores, logits)
    assert got == datatype and scores.dtype == np.float64


def test_a_binary_answer_equals_the_json_one() -> None:
    logits = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    body, length = binary_answer([("output-0", logits, "FP32")])
    np.testing.assert_array_equal(
        decode_oip_v2(body, 2, LOGITS2, None, length),
        decode_oip_v2(v2_body(logits.reshape(-1).tolist(), [2, 2]), 2, LOGITS2),
    )


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b, n: (b[:-1], n), "4 bytes of binary data but shape|runs past"),
        (lambda b, n: (b[: int(n)], n), "runs past"),  # the header, but no binary data
        (lambda b, n: (b, None), "unparseable JSON"),  # binary data but no header length
        (lambda b, n: (b, str(len(b) + 1)), "Inference-Header-Content-Length"),
        (lambda b, n: (b, "x"), "Inference-Header-Content-Length"),
        (lambda b, n: (b.replace(b'"FP32"', b'"BYTES"'), n), "datatype"),
        (lambda b, n: (b.replace(b'"binary_data_size":16', b'"binary_data_size":-1'), n), "size"),
    ],
)
def test_malformed_binary_answers_are_bad_responses(mutate: Any, match: str) -> None:
    body, length = binary_answer([("output-0", np.ones((2, 2)), "FP32")])
    body, length = mutate(body, length)
    with bad(match):
        decode_oip_v2(body, 2, LOGITS2, None, length)


def test_binary_data_needs_the_v2_protocol() -> None:
    with pytest.raises(ValueError, match="binary_data is an OIP v2 extension"):
        make_model("http://h/", protocol=WireProtocol.KSERVE_V1, binary_data=True)
