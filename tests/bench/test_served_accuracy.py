"""The served-accuracy bookkeeping: every row scored exactly once before an AUC is taken, and
requests and answers that the server's own protocol code reads and writes."""

from __future__ import annotations

import numpy as np
import pytest

from recaccel.bench.accuracy import (
    ScoreSheet,
    ServedAccuracyError,
    chunks,
    infer_body,
    parse_scores,
)
from recaccel.data.dataset import Dataset
from recaccel.serve import protocol
from recaccel.train.metrics import evaluate


def test_a_full_sheet_gives_the_auc_of_the_scores_in_row_order() -> None:
    labels = np.array([0, 1, 0, 1, 1, 0], dtype=np.float32)
    scores = np.array([0.1, 0.9, 0.4, 0.3, 0.8, 0.2])
    sheet = ScoreSheet(len(labels))
    for rows in reversed(chunks(len(labels), 4)):  # any order of chunks
        sheet.record(rows.start, scores[rows])
    assert sheet.missing == 0
    np.testing.assert_array_equal(sheet.scores(), scores)
    assert evaluate(labels, sheet.scores()).auc == pytest.approx(8 / 9)


@pytest.mark.parametrize(
    ("start", "scores", "message"),
    [
        (2, [0.5, 0.5], "row 3 was scored twice"),
        (4, [0.5, 0.5, 0.5], "do not fit 6 rows"),
        (-1, [0.5], "do not fit"),
        (0, [[0.5, 0.5]], "do not fit"),
        (0, [np.nan], "not finite"),
    ],
)
def test_a_row_scored_twice_out_of_range_or_not_a_number_is_refused(
    start: int, scores: list[float], message: str
) -> None:
    sheet = ScoreSheet(6)
    sheet.record(3, np.array([0.5]))
    with pytest.raises(ServedAccuracyError, match=message):
        sheet.record(start, np.array(scores))


def test_no_auc_while_rows_are_missing() -> None:
    sheet = ScoreSheet(5)
    sheet.record(0, np.zeros(3))
    assert sheet.missing == 2
    with pytest.raises(ServedAccuracyError, match="2 of 5 rows not scored"):
        sheet.scores()
    with pytest.raises(ServedAccuracyError):
        ScoreSheet(0)


def test_chunks_cover_every_row_once() -> None:
    assert chunks(2500, 1000) == [slice(0, 1000), slice(1000, 2000), slice(2000, 2500)]
    assert chunks(3, 1000) == [slice(0, 3)]
    with pytest.raises(ServedAccuracyError):
        chunks(10, 0)


def _metadata_inputs(dataset: Dataset) -> list[dict[str, object]]:
    return protocol.model_metadata("m", ["1"], dataset.schema)["inputs"]  # type: ignore[no-any-return]


def test_the_request_is_the_test_rows_exactly_as_the_server_decodes_them(
    tiny_dataset: Dataset,
) -> None:
    batch = tiny_dataset.test.features(slice(0, 17))
    body, json_length = infer_body(batch, _metadata_inputs(tiny_dataset), "auc-0")
    decoded = protocol.parse_infer_request(body, json_length)
    assert decoded.id == "auc-0"
    assert decoded.parameters["timeout"] >= 10_000_000  # µs: a large batch is not refused
    assert [o.name for o in decoded.outputs] == ["score"] and decoded.outputs[0].binary
    served = protocol.features_from_inputs(decoded.inputs, tiny_dataset.schema, 10_000)
    for sent, got in zip(batch.as_tuple(), served.as_tuple(), strict=True):
        np.testing.assert_array_equal(sent.numpy(), got)


@pytest.mark.parametrize("binary", [True, False])
def test_scores_are_read_from_binary_and_json_answers(tiny_dataset: Dataset, binary: bool) -> None:
    body, json_length = infer_body(
        tiny_dataset.test.features(slice(0, 5)), _metadata_inputs(tiny_dataset), "r"
    )
    request = protocol.parse_infer_request(body, json_length)
    request.outputs = [protocol.RequestedOutput("score", binary)]
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5], dtype=np.float32)
    answer, headers = protocol.encode_infer_response("m", "1", "r", {"score": scores}, request)
    got = parse_scores(answer, headers.get(protocol.HEADER_LENGTH), rows=5)
    np.testing.assert_allclose(got, scores)
    with pytest.raises(ServedAccuracyError, match="5 scores for 6 rows"):
        parse_scores(answer, headers.get(protocol.HEADER_LENGTH), rows=6)


@pytest.mark.parametrize(
    "answer",
    [b"not json", b'{"outputs": []}', b'{"outputs": [{"name": "score", "datatype": "BYTES"}]}'],
)
def test_a_malformed_answer_is_an_error_not_a_score(answer: bytes) -> None:
    with pytest.raises(ServedAccuracyError):
        parse_scores(answer, None, rows=1)
