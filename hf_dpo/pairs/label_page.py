"""The labelling page: HTML, CSS and the script, served by `label_server` as /, /app.css and /app.js.

Data only ever reaches the page as JSON from /api/* and is put into the DOM as text (`textContent`, text nodes; no innerHTML
anywhere), and the server's Content-Security-Policy allows no inline script, so text from a model can never run
as code.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hf-dpo label</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/app.css"><script src="/app.js" defer></script></head>
<body>
<header><strong>hf-dpo label</strong> <span id="progress">loading...</span>
<progress id="bar" value="0" max="1"></progress></header>
<main id="main">
  <section id="prompt-box"><h2>Prompt <small id="pairinfo"></small></h2>
    <div id="context" hidden><h3>Earlier in the conversation</h3><div id="turns"></div></div>
    <div id="prompt"></div></section>
  <section id="pair">
    <article><h2>1 &middot; left</h2><div id="left" class="completion"></div>
      <p id="left-cut" class="cut" hidden>Cut at max_new_tokens: it stopped without an end token.</p>
      <button id="pick-left">Left is better (1)</button></article>
    <article><h2>2 &middot; right</h2><div id="right" class="completion"></div>
      <p id="right-cut" class="cut" hidden>Cut at max_new_tokens: it stopped without an end token.</p>
      <button id="pick-right">Right is better (2)</button></article>
  </section>
  <nav><button id="tie">Tie (t)</button> <button id="skip">Skip (s)</button>
    <button id="undo">Undo (u)</button></nav>
</main>
<p id="finished" hidden>All prompts are labelled. The pairs are in <code id="out"></code>.</p>
<p id="status" role="status"></p>
</body></html>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; max-width: 1200px; }
header { display: flex; gap: 1rem; align-items: center; }
#prompt { white-space: pre-wrap; background: #f4f4f8; padding: .75rem; border-radius: 6px; }
#context { color: #444; margin-bottom: .5rem; }
#context h3 { font-size: .9rem; margin: 0 0 .25rem; }
#turns > div, #turns > details { white-space: pre-wrap; border-left: 3px solid #ccd; padding: .2rem .6rem; margin: .2rem 0; }
#turns summary { cursor: pointer; }
#pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; margin: 1rem 0; }
.completion { white-space: pre-wrap; border: 1px solid #ccc; border-radius: 6px; padding: .75rem; min-height: 6rem; }
.turn-role { font-weight: bold; }
button { margin-top: .5rem; padding: .4rem .8rem; }
#status { color: #a00; }
.cut { color: #a00; font-weight: bold; margin: .25rem 0; }
.completion.unfinished { border-color: #a00; border-style: dashed; }
"""

SCRIPT = """
"use strict";
let state = null;
let busy = false;
const $ = (id) => document.getElementById(id);

function turnDiv(tag, role, content) {
  const el = document.createElement(tag);
  if (role) {
    const label = document.createElement("span");
    label.className = "turn-role";
    label.textContent = role + ": ";
    el.append(label);
  }
  el.append(content);  // a text node, never parsed as HTML
  return el;
}

function render(s) {
  state = s;
  $("progress").textContent = s.done + " / " + s.total + " pairs labelled (left/right " +
    (s.counts.left + s.counts.right) + ", tie " + s.counts.tie + ", skip " + s.counts.skip + ")";
  $("bar").max = s.total; $("bar").value = s.done;
  $("undo").disabled = !s.can_undo;
  $("out").textContent = s.out;
  const cur = s.current;
  $("main").hidden = cur === null;
  $("finished").hidden = cur !== null;
  if (cur === null) return;
  // The system prompt and earlier turns: each shortened as the report shows it, its whole text one click away.
  $("context").hidden = cur.context.length === 0;
  $("turns").replaceChildren(...cur.context.map((turn) => {
    if (turn.content === turn.whole) return turnDiv("div", turn.role, turn.content);
    const details = document.createElement("details");
    const summary = turnDiv("summary", turn.role, turn.content);
    summary.append(" (" + turn.whole.length + " characters: click for the whole turn)");
    details.append(summary, turnDiv("div", "", turn.whole));
    return details;
  }));
  $("prompt").replaceChildren(...cur.prompt.map((turn) => turnDiv("div", turn.role, turn.content)));
  for (const side of ["left", "right"]) {
    $(side).textContent = cur[side];
    const finished = cur[side + "_finished"];
    $(side).classList.toggle("unfinished", !finished);
    $(side + "-cut").hidden = finished;
  }
  $("pairinfo").textContent = cur.pairs > 1 ?
    "(pair " + cur.pair + " of " + cur.pairs + ": every answer of this prompt is shown)" : "";
  document.body.dataset.index = String(cur.index);
}

async function call(path, body) {
  if (busy) return;
  busy = true;
  try {
    const r = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const data = await r.json();
    if (!r.ok) { $("status").textContent = "Error: " + data.error; return; }
    $("status").textContent = "";
    render(data);
  } catch (e) {
    $("status").textContent = "Not saved: the server is unreachable (" + e + "). Restart hf-dpo label.";
  } finally { busy = false; }
}

function undo() {
  // The decision this page showed as the last one: the server refuses when another tab decided since.
  if (state) call("/api/undo", {item: state.last});
}

function decide(choice) {
  if (state && state.current) {
    call("/api/decide", {index: state.current.index, item: state.current.item, choice: choice});
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("pick-left").addEventListener("click", () => decide("left"));
  $("pick-right").addEventListener("click", () => decide("right"));
  $("tie").addEventListener("click", () => decide("tie"));
  $("skip").addEventListener("click", () => decide("skip"));
  $("undo").addEventListener("click", undo);
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key.toLowerCase();
    if (k === "1" || k === "arrowleft") decide("left");
    else if (k === "2" || k === "arrowright") decide("right");
    else if (k === "t") decide("tie");
    else if (k === "s") decide("skip");
    else if (k === "u") undo();
  });
  call("/api/state");
});
"""
