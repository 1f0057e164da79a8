"""What a workshop attendee reads: the rollout board and the device table in plain words."""
from __future__ import annotations

from helpers.deploy.board import COLUMNS, RolloutBoard, plain_row
from helpers.widgets import agent_words


def test_agent_answer_in_words():
    assert agent_words(200) == "accepted" and agent_words("200") == "accepted"
    assert agent_words(406, "device offline") == "refused (406: device offline)"
    assert agent_words(None) == "" and agent_words(400) == "refused (400)"


def test_board_row_in_words():
    row = dict(zip(COLUMNS, ("pi-1", True, "fruit-v2", 3, 3, "200", "runner", "running", "1.0", "2 / want 2", 0,
                             48507, 6.8, "converged")))
    words = plain_row(row)
    assert words["update"] == "sent v3, applied" and words["device's answer"] == "accepted" and words["online"] == "yes"
    assert "desired" not in words and "reported" not in words and "last_status" not in words
    assert plain_row({**row, "reported": 2})["update"] == "sent v3, device on v2"
    assert plain_row({**row, "reported": "", "last_status": "406 device offline"})["update"] == "sent v3, not applied yet"
    assert plain_row({**row, "last_status": "406 device offline"})["device's answer"] == "refused (406: device offline)"


def test_board_table_headers_are_words():
    board = RolloutBoard(hub=None, device_ids=[])
    row = dict(zip(COLUMNS, ("pi-1", False, "fruit-v2", 3, "", "", "runner", "absent", "-", "-", "", "", None, "pending: x")))
    html = board.render([row])
    assert "sent v3, not applied yet" in html and "seconds since sent" in html and ">no<" in html
    for jargon in ("desired", "last_status", "since_apply_s"):
        assert jargon not in html
