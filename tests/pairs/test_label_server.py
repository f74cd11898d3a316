"""`hf-dpo label`: the decision log, resuming, undo, the JSON API, and the page in a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hf_dpo.pairs.formats import SamplingError
from hf_dpo.pairs.label_server import make_server
from hf_dpo.pairs.label_store import LabelStore, decisions_path, left_is_first

XSS_PROMPT = 'Say <b>hi</b> & <script>window.__xss = "prompt"</script>'
XSS_COMPLETION = '<img src=x onerror="window.__xss = \'img\'"><script>window.__xss = "script"</script>'


def _samples(path: Path) -> Path:
    rows = [
        {"index": 0, "prompt": "What is 2 + 3?", "completions": ["5", "six"]},
        {  # the second answer was cut at max_new_tokens
            "index": 1,
            "prompt": "What is the capital of Japan?",
            "completions": ["Tokyo.", "Kyoto"],
            "finished": [True, False],
        },
        {"index": 2, "prompt": XSS_PROMPT, "completions": [XSS_COMPLETION, "plain answer"]},
        {
            "index": 3,
            "prompt": [{"role": "user", "content": "Name a color."}],
            "completions": ["red", "blue"],
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _chosen_for(store: LabelStore, pos: int, side: str) -> str:
    return store.view(pos)[side]


def test_decisions_are_logged_replayed_and_undone(tmp_path):
    samples = _samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    assert store.out == tmp_path / "s.pairs.jsonl"
    assert store.state()["current"]["index"] == 0
    left0 = _chosen_for(store, 0, "left")
    store.decide(0, "left")
    store.decide(1, "tie")
    state = store.decide(2, "right")
    assert state["done"] == 3 and state["current"]["index"] == 3
    assert state["counts"] == {"left": 1, "right": 1, "tie": 1, "skip": 0}
    log = decisions_path(store.out).read_text().splitlines()
    assert [json.loads(x)["choice"] for x in log] == ["left", "tie", "right"]
    pairs = [json.loads(x) for x in store.out.read_text().splitlines()]
    assert [p["index"] for p in pairs] == [0, 2]
    assert (
        pairs[0]["chosen"] == left0 and pairs[0]["rejected"] in ("5", "six") and pairs[0]["judge"] == "human"
    )
    assert pairs[1]["chosen"] == store.view(2)["right"]

    # A new server (after a crash) resumes from the log: same decisions, same current prompt.
    again = LabelStore(samples)
    assert again.state()["done"] == 3 and again.state()["current"]["index"] == 3
    state = again.undo()  # undoes prompt 2
    assert state["done"] == 2 and state["current"]["index"] == 2
    assert [json.loads(x)["index"] for x in again.out.read_text().splitlines()] == [0]
    assert LabelStore(samples).state()["current"]["index"] == 2  # the undo is in the log too
    again.decide(0, "right")  # already labelled: ignored, not logged twice
    assert len(decisions_path(again.out).read_text().splitlines()) == 4


def test_cut_answers_are_marked_and_their_pairs_keep_finished_flags(tmp_path):
    """An answer cut at max_new_tokens is marked in the page's state, wherever it is shown, and the pair a person
    makes of it says so (finished_chosen / finished_rejected), as the judge path's pairs do; a row of an older
    file without flags counts as finished, and flags that do not fit the completions are named."""
    store = LabelStore(_samples(tmp_path / "s.jsonl"))
    view = store.view(1)
    cut_side = "left" if view["left"] == "Kyoto" else "right"
    whole_side = "right" if cut_side == "left" else "left"
    assert view[f"{cut_side}_finished"] is False and view[f"{whole_side}_finished"] is True
    assert store.view(0)["left_finished"] is True and store.view(0)["right_finished"] is True  # no flags
    store.decide(0, "left")
    store.decide(1, cut_side)  # a person may prefer the cut answer: the pair says it was cut
    pairs = [json.loads(x) for x in store.out.read_text().splitlines()]
    assert (pairs[0]["finished_chosen"], pairs[0]["finished_rejected"]) == (True, True)
    assert (pairs[1]["chosen"], pairs[1]["finished_chosen"], pairs[1]["finished_rejected"]) == (
        "Kyoto",
        False,
        True,
    )
    store.release()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"index": 0, "prompt": "p", "completions": ["a", "b"], "finished": [True]}) + "\n"
    )
    with pytest.raises(
        SamplingError, match=r"bad\.jsonl: prompt 0 has 1 'finished' flag\(s\) for 2 completions"
    ):
        LabelStore(bad)


def test_the_page_marks_a_cut_answer_from_its_flag():
    from hf_dpo.pairs.label_page import PAGE, SCRIPT

    for side in ("left", "right"):
        assert f'<p id="{side}-cut" class="cut" hidden>Cut at max_new_tokens' in PAGE
    assert '$(side + "-cut").hidden = finished;' in SCRIPT and 'cur[side + "_finished"]' in SCRIPT


def test_conversational_prompt_pairs_and_left_right_order(tmp_path):
    store = LabelStore(_samples(tmp_path / "s.jsonl"), tmp_path / "out" / "pairs.jsonl")
    assert store.view(3)["prompt"] == [{"role": "user", "content": "Name a color."}]
    for index in range(3):
        store.decide(index, "skip")
    store.decide(3, "left")
    row = json.loads((tmp_path / "out" / "pairs.jsonl").read_text())
    assert row["prompt"] == [{"role": "user", "content": "Name a color."}]
    assert row["chosen"] == [{"role": "assistant", "content": store.view(3)["left"]}]
    # Order is random per prompt but stable: both orders occur, and a prompt always gets the same one.
    orders = {left_is_first(i, f"prompt {i}") for i in range(20)}
    assert orders == {True, False}
    assert left_is_first(5, "x") == left_is_first(5, "x")


def test_bad_inputs(tmp_path):
    (tmp_path / "one.jsonl").write_text(
        json.dumps({"index": 0, "prompt": "p", "completions": ["only"]}) + "\n"
    )
    with pytest.raises(SamplingError, match="at least 2"):
        LabelStore(tmp_path / "one.jsonl")
    samples = _samples(tmp_path / "s.jsonl")
    lines = samples.read_text().splitlines(keepends=True)
    (tmp_path / "broken.jsonl").write_text(lines[0] + '{"index": 1, "prompt"\n')
    with pytest.raises(SamplingError, match=r"broken\.jsonl, line 2: not valid JSON"):
        LabelStore(tmp_path / "broken.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    with pytest.raises(ValueError, match="choice"):
        store.decide(1, "both")
    with pytest.raises(ValueError, match="unknown prompt index"):
        store.decide(99, "left")
    # A log from other samples is refused by name, and left as it is.
    (tmp_path / "other.jsonl").write_text(
        json.dumps({"index": 7, "prompt": "q", "completions": ["a", "b"]}) + "\n"
    )
    log = decisions_path(store.out)
    shutil.copy(log, tmp_path / "other.pairs.decisions.jsonl")
    with pytest.raises(
        SamplingError, match=r"line 1: a decision on prompt 0, which .*other\.jsonl no longer holds"
    ):
        LabelStore(tmp_path / "other.jsonl")


def test_serve_says_why_prompts_are_left_out(tmp_path, capsys, monkeypatch):
    """Rows with zero or one completion are left out too since 7988305: 'all their answers are identical or
    empty' was no longer true of them."""
    from http.server import ThreadingHTTPServer

    from hf_dpo.pairs.label_server import serve

    rows = [
        {"index": 0, "prompt": "p", "completions": []},
        {"index": 1, "prompt": "p", "completions": ["only"]},
        {"index": 2, "prompt": "p", "completions": ["same", " same "]},
        {"index": 3, "prompt": "p", "completions": ["a", "b"]},
    ]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C at once: serve prints its lines, then returns

    monkeypatch.setattr(ThreadingHTTPServer, "serve_forever", stop)
    serve(samples, port=0)
    out = capsys.readouterr().out
    assert (
        "3 prompt(s) left out: fewer than 2 distinct non-empty answers (zero or one completion, or only "
        "identical or empty ones)." in out
    ), out


@pytest.fixture
def server(tmp_path):
    srv = make_server(_samples(tmp_path / "s.jsonl"), host="127.0.0.1", port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _post(url, body, content_type="application/json", origin=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", content_type)
    if origin:
        req.add_header("Origin", origin)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_http_api_and_headers(server):
    srv, base = server
    with urllib.request.urlopen(base + "/", timeout=10) as r:
        html = r.read().decode()
        csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert '<script src="/app.js"' in html
    with urllib.request.urlopen(base + "/app.js", timeout=10) as r:
        assert "innerHTML" not in r.read().decode()
    with urllib.request.urlopen(base + "/api/state", timeout=10) as r:
        assert json.loads(r.read())["current"]["index"] == 0
    state = _post(base + "/api/decide", {"index": 0, "choice": "left"}, origin=base)
    assert state["done"] == 1
    assert _post(base + "/api/undo", {})["done"] == 0
    # Cross-site writes are refused: a form post (not JSON) and a foreign Origin.
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(base + "/api/decide", {"index": 0, "choice": "left"}, content_type="text/plain")
    assert err.value.code == 415
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(base + "/api/decide", {"index": 0, "choice": "left"}, origin="http://evil.example")
    assert err.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(base + "/api/decide", {"index": 0, "choice": "nope"})
    assert err.value.code == 400
    assert srv.store.state()["done"] == 0


# ---------------------------------------------------------------- the real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI needs chromium and chromium-driver: run `make browser-deps`.")
        pytest.skip("chromium/chromedriver not installed (make browser-deps)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hf-dpo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_for(driver, condition, timeout=15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def _current_index(driver) -> str:
    return driver.find_element("tag name", "body").get_attribute("data-index")


def _press(driver, key: str, expect_done: int):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()
    _wait_for(driver, lambda d: d.find_element("id", "progress").text.startswith(f"{expect_done} / 4"))


def test_label_in_headless_chromium(server, browser):
    srv, base = server
    store = srv.store
    browser.get(base + "/")
    _wait_for(browser, lambda d: _current_index(d) == "0")
    assert browser.find_element("id", "progress").text.startswith("0 / 4")
    left0 = browser.find_element("id", "left").text
    assert not any(browser.find_element("id", f"{side}-cut").is_displayed() for side in ("left", "right"))
    _press(browser, "1", 1)  # left wins on prompt 0
    _wait_for(browser, lambda d: _current_index(d) == "1")
    # Prompt 1's "Kyoto" was cut at max_new_tokens: marked on its side only (prompt 0 had no mark).
    cut_side = "left" if browser.find_element("id", "left").text == "Kyoto" else "right"
    whole_side = "right" if cut_side == "left" else "left"
    _wait_for(browser, lambda d: d.find_element("id", f"{cut_side}-cut").is_displayed())
    assert "max_new_tokens" in browser.find_element("id", f"{cut_side}-cut").text
    assert not browser.find_element("id", f"{whole_side}-cut").is_displayed()
    _press(browser, "t", 2)  # tie on prompt 1

    # Prompt 2 carries the XSS payload: shown as text, never run, never parsed into elements.
    _wait_for(browser, lambda d: _current_index(d) == "2")
    shown = browser.find_element("id", "left").text + browser.find_element("id", "right").text
    assert XSS_COMPLETION in shown
    assert XSS_PROMPT in browser.find_element("id", "prompt").text
    assert browser.execute_script("return window.__xss === undefined")
    assert not browser.find_elements("css selector", "#prompt script, #left img, #right img, #prompt b")
    right2 = browser.find_element("id", "right").text
    _press(browser, "2", 3)  # right wins on prompt 2

    log = [json.loads(x) for x in decisions_path(store.out).read_text().splitlines()]
    assert [(d["index"], d["choice"]) for d in log] == [(0, "left"), (1, "tie"), (2, "right")]
    pairs = [json.loads(x) for x in store.out.read_text().splitlines()]
    assert [(p["index"], p["chosen"]) for p in pairs] == [(0, left0), (2, right2)]

    # Reload: the page resumes at the first unlabeled prompt.
    browser.refresh()
    _wait_for(browser, lambda d: _current_index(d) == "3")
    assert browser.find_element("id", "progress").text.startswith("3 / 4")
    assert browser.find_element("id", "prompt").text == "user: Name a color."

    # Undo the last decision: prompt 2 comes back and its pair leaves the file.
    _press(browser, "u", 2)
    _wait_for(browser, lambda d: _current_index(d) == "2")
    assert [p["index"] for p in (json.loads(x) for x in store.out.read_text().splitlines())] == [0]
    _press(browser, "s", 3)  # skip it this time
    _press(browser, "2", 4)
    _wait_for(browser, lambda d: d.find_element("id", "finished").is_displayed())
    log = [json.loads(x) for x in decisions_path(store.out).read_text().splitlines()]
    assert [(d["index"], d.get("choice", "undo")) for d in log] == [
        (0, "left"),
        (1, "tie"),
        (2, "right"),
        (2, "undo"),
        (2, "skip"),
        (3, "right"),
    ]
    assert browser.execute_script("return window.__xss === undefined")


# ---------------------------------------------------------------- a multi-turn conversation

SYSTEM = "You are a terse assistant. " + "Answer with one word. " * 20 + "Never apologise."
CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Which planet is red?"},
    {"role": "assistant", "content": "Mars."},
    {"role": "user", "content": "And the largest one?"},
]


def _conversation_samples(path: Path) -> Path:
    path.write_text(
        json.dumps({"index": 0, "prompt": CONVERSATION, "completions": ["Jupiter.", "Saturn."]}) + "\n"
    )
    return path


def test_a_conversation_is_shown_whole_and_its_pairs_keep_the_messages(tmp_path):
    """The page gets the system prompt and the earlier turns, each shortened as the report shortens context with
    its whole text beside it, then the last user turn whole; the pair written keeps the message-list prompt."""
    store = LabelStore(_conversation_samples(tmp_path / "s.jsonl"))
    view = store.view(0)
    assert [(t["role"], t["whole"]) for t in view["context"]] == [
        (m["role"], m["content"]) for m in CONVERSATION[:3]
    ]
    system = view["context"][0]["content"]
    assert (
        len(system) < 210 < len(SYSTEM)
        and system.startswith("You are a terse")
        and system.endswith("apologise.")
    )
    assert view["context"][1]["content"] == "Which planet is red?"  # short turns whole
    assert view["prompt"] == [CONVERSATION[-1]]
    store.decide(0, "left")
    (pair,) = [json.loads(x) for x in store.out.read_text().splitlines()]
    assert pair["prompt"] == CONVERSATION and pair["chosen"] == [
        {"role": "assistant", "content": view["left"]}
    ]


def test_a_conversation_in_headless_chromium(tmp_path, browser):
    srv = make_server(_conversation_samples(tmp_path / "s.jsonl"), host="127.0.0.1", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{srv.server_address[1]}/")
        _wait_for(browser, lambda d: _current_index(d) == "0")
        turns = browser.find_element("id", "turns")
        assert turns.is_displayed()
        shown = turns.text
        assert "user: Which planet is red?" in shown and "assistant: Mars." in shown
        assert "system: You are a terse" in shown and "click for the whole turn" in shown
        assert SYSTEM not in shown  # shortened until opened
        browser.find_element("css selector", "#turns summary").click()
        _wait_for(browser, lambda d: SYSTEM in d.find_element("id", "turns").text)
        assert browser.find_element("id", "prompt").text == "user: And the largest one?"
    finally:
        srv.shutdown()
        srv.server_close()
