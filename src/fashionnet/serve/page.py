"""The page at `/`: one self-contained HTML file (no CDN, no build step, works offline).

Choose, drop or paste a photo, or draw on the canvas; the page shows the picture, the 28x28 view
the model saw and the top five classes as bars, the top one in #result. The server fills in
__FACTS__ (class names, image size, model id) when it serves the page.
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fashionnet: what is this garment?</title>
<link rel="icon" href="data:,">
<style>
  :root { font-family: system-ui, sans-serif; font-size: 17px; line-height: 1.45; color: #111;
          background: #fafafa; }
  body { max-width: 980px; margin: 0 auto; padding: 12px 16px 40px; }
  h1 { font-size: 1.5rem; margin: .4rem 0 .2rem; }
  p.lead { margin: 0 0 1rem; color: #333; }
  .grid { display: grid; gap: 18px; align-items: start;
          grid-template-columns: repeat(auto-fit, minmax(min(300px, 100%), 1fr)); }
  .inputs { display: grid; gap: 18px; }
  .card { background: #fff; border: 1px solid #ddd; border-radius: 10px; padding: 14px; }
  .card h2 { font-size: 1.05rem; margin: 0 0 .6rem; }
  #drop { display: block; border: 2px dashed #888; border-radius: 10px; padding: 18px;
          text-align: center; cursor: pointer; background: #fff; }
  #drop.over { border-color: #0a58ca; background: #eef4ff; }
  #file { font-size: 1rem; margin-top: .5rem; max-width: 100%; }
  canvas { border: 1px solid #888; border-radius: 6px; touch-action: none; background: #fff;
           width: 100%; max-width: 220px; aspect-ratio: 1; display: block; }
  button { font-size: 1rem; padding: .45rem .9rem; margin: .5rem .4rem 0 0; border-radius: 6px;
           border: 1px solid #0a58ca; background: #0a58ca; color: #fff; cursor: pointer; }
  button.plain { background: #fff; color: #0a58ca; }
  :focus-visible { outline: 3px solid #f59f00; outline-offset: 2px; }
  .pictures { display: flex; gap: 14px; align-items: flex-end; flex-wrap: wrap; }
  .pictures figure { margin: 0; }
  .pictures { margin-top: .8rem; }
  .pictures img { max-width: 180px; max-height: 180px; border: 1px solid #ccc; display: block; }
  #view { width: 112px; height: 112px; image-rendering: pixelated; background: #000; }
  figcaption { font-size: .85rem; color: #444; }
  #result { font-size: 1.4rem; font-weight: 700; min-height: 1.6em; margin: .4rem 0; }
  .bar { display: grid; grid-template-columns: 8.5em 1fr 4em; gap: 8px; align-items: center;
         margin: 4px 0; }
  .bar .track { background: #e9ecef; border-radius: 4px; height: 16px; overflow: hidden; }
  .bar .fill { background: #0a58ca; height: 100%; }
  .bar .pct { text-align: right; font-variant-numeric: tabular-nums; }
  #status { color: #555; min-height: 1.4em; }
  #status.error { color: #b00020; font-weight: 600; }
  footer { margin-top: 1.5rem; font-size: .9rem; color: #444; }
</style>
</head>
<body>
<h1>What is this garment?</h1>
<p class="lead">A fashionnet model sorts pictures of clothes, shoes and bags into
<span id="classes"></span>. Choose a photo, drop one here, paste one (Ctrl+V) or draw.</p>
<div class="grid">
  <div class="inputs">
  <section class="card" aria-labelledby="pick-title">
    <h2 id="pick-title">A photo</h2>
    <label id="drop" for="file">Drop a picture here, or choose one:<br>
      <input type="file" id="file" accept="image/*">
    </label>
  </section>
  <section class="card" aria-labelledby="draw-title">
    <h2 id="draw-title">Or draw</h2>
    <canvas id="canvas" width="280" height="280"
            aria-label="drawing area: draw a garment with the mouse, a finger or a pen"></canvas>
    <button id="classify-drawing" type="button">Classify drawing</button>
    <button id="clear" type="button" class="plain">Clear</button>
  </section>
  </div>
  <section class="card" aria-labelledby="answer-title">
    <h2 id="answer-title">Answer</h2>
    <p id="status" role="status" aria-live="polite">No picture yet.</p>
    <div id="result" aria-live="polite"></div>
    <div id="bars"></div>
    <div class="pictures">
      <figure><img id="picture" alt="the picture sent" hidden><figcaption>your picture
        </figcaption></figure>
      <figure><img id="view" alt="the 28 by 28 view the model saw" hidden><figcaption>what the
        model saw</figcaption></figure>
    </div>
  </section>
</div>
<footer>Model <span id="model"></span> &middot; <a href="/v1/model/card">model card</a>
  &middot; <a href="/v1/model">facts (JSON)</a> &middot; <a href="/docs">API</a></footer>
<script>
"use strict";
const facts = __FACTS__;
const $ = (id) => document.getElementById(id);
$("classes").textContent = facts.classes.join(", ");
$("model").textContent = facts.model;

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function classify(blob, name) {
  $("picture").src = URL.createObjectURL(blob);
  $("picture").hidden = false;
  say("Classifying " + name + "...");
  const form = new FormData();
  form.append("file", blob, name);
  let response, data;
  try {
    response = await fetch("/v1/predict?top_k=5&view=true", { method: "POST", body: form });
    data = await response.json();
  } catch (e) {
    say("The server did not answer: " + e, true);
    return;
  }
  if (!response.ok) {
    say(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail), true);
    $("result").textContent = "";
    $("bars").textContent = "";
    return;
  }
  show(data.predictions[0], name);
}

function show(prediction, name) {
  $("view").src = prediction.view;
  $("view").hidden = false;
  const best = prediction.top[0];
  $("result").textContent = best["class"];
  say(name + ": " + best["class"] + ", " + (100 * best.probability).toFixed(1) + "%");
  const bars = $("bars");
  bars.textContent = "";
  for (const pick of prediction.top) {
    const row = document.createElement("div");
    row.className = "bar";
    const label = document.createElement("span");
    label.textContent = pick["class"];
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = (100 * pick.probability).toFixed(1) + "%";
    track.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = (100 * pick.probability).toFixed(1) + "%";
    row.append(label, track, pct);
    bars.appendChild(row);
  }
}

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) classify(file, file.name);
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const file = e.dataTransfer.files[0];
  if (file) classify(file, file.name);
});
document.addEventListener("paste", (e) => {
  for (const item of e.clipboardData.items) {
    if (item.type.startsWith("image/")) {
      classify(item.getAsFile(), "pasted image");
      return;
    }
  }
});

const canvas = $("canvas");
const ctx = canvas.getContext("2d");
function clearCanvas() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}
clearCanvas();
let drawing = false;
function at(e) {
  const box = canvas.getBoundingClientRect();
  return [(e.clientX - box.left) * canvas.width / box.width,
          (e.clientY - box.top) * canvas.height / box.height];
}
canvas.addEventListener("pointerdown", (e) => {
  drawing = true;
  canvas.setPointerCapture(e.pointerId);
  ctx.beginPath();
  ctx.moveTo(...at(e));
});
canvas.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  ctx.lineWidth = 18;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#222";
  ctx.lineTo(...at(e));
  ctx.stroke();
});
canvas.addEventListener("pointerup", () => { drawing = false; });
$("clear").addEventListener("click", clearCanvas);
$("classify-drawing").addEventListener("click", () => {
  canvas.toBlob((blob) => classify(blob, "drawing"), "image/png");
});
</script>
</body>
</html>
"""
